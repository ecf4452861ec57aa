"""Errors of a path that is a file, or lies below one: opening finds nothing there and
says why; a zip cannot be made there and names the file in the way."""

from __future__ import annotations

import functools
import re

import pytest
import torch

import torchzarr as tz
from torchzarr.errors import ArrayNotFoundError, GroupNotFoundError, NodeNotFoundError, StoreError


@pytest.mark.parametrize("below", ["", "x.zarr", "a/b.zarr"])
def test_opening_a_file_or_below_one_says_it_is_a_file(tmp_path, below):
    (tmp_path / "file.txt").write_text("hello")
    path = tmp_path / "file.txt" / below if below else tmp_path / "file.txt"
    note = (
        "(it is a file, not a directory)"
        if not below
        else (f"({str(tmp_path / 'file.txt')!r} is a file, not a directory)")
    )
    for opener, error in [
        (tz.open_group, GroupNotFoundError),
        (tz.open, NodeNotFoundError),
        (tz.open_array, ArrayNotFoundError),
    ]:
        for mode in ("r", "r+"):
            with pytest.raises(error) as caught:
                opener(path, mode=mode)
            assert type(caught.value) is error and str(caught.value).endswith(note)
    with pytest.raises(GroupNotFoundError, match=re.escape(note)):
        tz.consolidate_metadata(path)
    with pytest.raises(NodeNotFoundError, match=re.escape(note)):
        tz.open(f"file://{path}", mode="r")
    assert (tmp_path / "file.txt").read_text() == "hello"


def test_nothing_found_where_no_file_is_in_the_way_adds_no_note(tmp_path):
    tz.create_array(tmp_path / "x.zarr", shape=(2,), dtype="int8")
    for path in (tmp_path / "missing", tmp_path / "missing" / "deeper", tmp_path / "x.zarr"):
        with pytest.raises(NodeNotFoundError) as caught:
            tz.open(path, mode="r", path="nope")
        assert "is a file" not in str(caught.value)
    with pytest.raises(NodeNotFoundError) as caught:
        tz.open("memory://no-file-note", mode="r")
    assert "is a file" not in str(caught.value)


def test_a_zip_below_a_file_names_the_file_in_the_way(tmp_path):
    (tmp_path / "file.txt").write_text("hello")
    said = f": {str(tmp_path / 'file.txt')!r} is a file, not a directory"
    for zipped in (tmp_path / "file.txt" / "a.zip", tmp_path / "file.txt" / "d" / "a.zip"):
        store = tz.ZipStore(str(zipped), mode="w")
        with pytest.raises(StoreError) as caught:
            store.set("zarr.json", b"{}")
        assert str(caught.value).endswith(said) and "Errno" not in str(caught.value)
        for attempt in (
            functools.partial(tz.open, str(zipped), mode="w"),
            functools.partial(tz.open, f"zip://{zipped}", mode="w"),
            functools.partial(tz.create_array, str(zipped), shape=(2,), dtype="int8"),
            functools.partial(tz.save_checkpoint, {"w": torch.zeros(2)}, str(zipped)),
        ):
            with pytest.raises(StoreError) as caught:
                attempt()
            assert str(caught.value).endswith(said) and "Errno" not in str(caught.value)
    assert (tmp_path / "file.txt").read_text() == "hello"


def test_a_zip_without_its_directory_yet_says_it_is_not_whole(tmp_path):
    # a writer appending: entries begun, the central directory not written yet
    path = tmp_path / "growing.zip"
    path.write_bytes(b"PK\x03\x04" + bytes(200))
    with pytest.raises(StoreError, match="not a whole zip: another writer may be appending"):
        list(tz.ZipStore(str(path), mode="r").list_prefix(""))  # the zip opens at first use
