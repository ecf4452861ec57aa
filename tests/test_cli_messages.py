"""The ``torchzarr`` command's words: warnings as one line, counts, help, and the errors of
a node of the wrong kind or a file where a directory must be."""

from __future__ import annotations

import re

import numcodecs
import numpy as np
import pytest
import torch
import zarr

import torchzarr as tz
from torchzarr.cli import main
from torchzarr.errors import GroupNotFoundError, StoreError


def _run(capsys, *argv):
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def test_rechunk_of_a_sharded_array_to_v2_warns_once_in_one_line_naming_its_option(
    tmp_path, capsys
):
    tz.create_array(tmp_path / "sh.zarr", data=torch.arange(16), chunks=(2,), shards=(8,))
    args = ["rechunk", tmp_path / "sh.zarr", tmp_path / "v2.zarr", "--zarr-format", 2]
    status, out, err = _run(capsys, *args)
    assert status == 0 and out.startswith("wrote / of ")
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("torchzarr rechunk: warning: Zarr v2 has no")
    assert "pass --chunks (such as the shard shape)" in err and "chunks=" not in err
    assert "UserWarning" not in err and "from_array" not in err
    assert tz.open_array(tmp_path / "v2.zarr", mode="r")[:].tolist() == list(range(16))


def test_rechunk_refuses_a_v2_filter_v3_cannot_hold_in_its_options_words(tmp_path, capsys):
    values = np.arange(12, dtype="i4")
    filters = [numcodecs.Shuffle(4), numcodecs.Delta(dtype="i4")]  # no trailing bytes filter
    zarr.create_array(
        tmp_path / "v2.zarr", data=values, chunks=(4,), zarr_format=2, filters=filters
    )
    args = ["rechunk", tmp_path / "v2.zarr", tmp_path / "v3.zarr", "--zarr-format", 3]
    status, _, err = _run(capsys, *args)
    assert status == 1 and "the source's filter Shuffle" in err and "compressors=" not in err
    assert "leave out --zarr-format 3 to keep Zarr v2" in err
    assert not (tmp_path / "v3.zarr").exists()


def test_consolidate_of_an_array_says_it_is_an_array_and_which_group_to_consolidate(
    tmp_path, capsys
):
    tz.open_group(tmp_path / "g.zarr", mode="w").create_array("a/x", shape=(2,), dtype="int8")
    status, _, err = _run(capsys, "consolidate", tmp_path / "g.zarr", "--path", "a/x")
    assert status == 1 and "'a/x' in LocalStore(" in err
    assert "is an array, not a group: consolidate the group holding it, 'a'" in err
    with pytest.raises(GroupNotFoundError, match=r"'/' in .* is an array, not a group: the st"):
        tz.consolidate_metadata(
            tz.create_array(tmp_path / "a.zarr", shape=(2,), dtype="int8").store
        )
    with pytest.raises(GroupNotFoundError, match=r"no group at 'b' in .* to consolidate"):
        tz.consolidate_metadata(tmp_path / "g.zarr", path="b")


@pytest.mark.parametrize("below", ["", "sub/x.zarr"])
def test_writes_into_a_file_name_the_file_in_the_way_not_a_temporary_file(tmp_path, capsys, below):
    (tmp_path / "f.txt").write_text("hello")
    dest = tmp_path / "f.txt" / below if below else tmp_path / "f.txt"
    tz.create_array(tmp_path / "src.zarr", data=torch.arange(4), chunks=(2,))
    said = f"{str(tmp_path / 'f.txt')!r} is a file, not a directory"
    for argv in (
        ["copy", tmp_path / "src.zarr", dest],
        ["demo", dest, "--rows", 2],
        ["rechunk", tmp_path / "src.zarr", dest, "--chunks", 4],
    ):
        status, _, err = _run(capsys, *argv)
        assert status == 1 and said in err and "cannot write '" in err, err
        assert ".partial" not in err and "Errno" not in err
    with pytest.raises(
        StoreError, match=r"cannot write 'zarr\.json' to LocalStore.*is a file, not"
    ):
        tz.open_group(dest, mode="w")
    with pytest.raises(
        StoreError, match=r"cannot write '[a/]*zarr\.json' .*f\.txt' is a file, not"
    ):
        tz.create_array(dest, path="a", shape=(2,), dtype="int8")
    assert (tmp_path / "f.txt").read_text() == "hello"


def test_a_key_whose_file_stands_where_a_directory_must_be_is_named(tmp_path):
    store = tz.LocalStore(tmp_path)
    store.set("a", b"x")
    with pytest.raises(StoreError, match=r"cannot write 'a/b' .*/a' is a file, not a directory"):
        store.set("a/b", b"y")
    assert store.get("a") == b"x" and sorted(store.list_prefix("")) == ["a"]


def test_a_store_that_is_a_file_says_so_when_nothing_is_found(tmp_path, capsys):
    (tmp_path / "file.txt").write_text("hello")
    tz.create_array(tmp_path / "x.zarr", shape=(2,), dtype="int8")
    for command in ("info", "tree", "bench", "consolidate"):
        status, _, err = _run(capsys, command, tmp_path / "file.txt")
        assert status == 1 and err.endswith(" (it is a file, not a directory)\n"), err
    status, _, err = _run(capsys, "info", tmp_path / "file.txt" / "x")
    assert status == 1 and f"({str(tmp_path / 'file.txt')!r} is a file, not a directory)" in err
    for missing in (tmp_path / "missing", tmp_path / "x.zarr"):  # no file: no note
        status, _, err = _run(capsys, "info", missing, "--path", "nope")
        assert status == 1 and "no array or group at" in err and "is a file" not in err


def test_counts_of_one_are_singular(tmp_path, capsys):
    root = tz.open_group(tmp_path / "g.zarr", mode="w")
    root.create_array("x", data=torch.arange(4), chunks=(4,))
    status, out, _ = _run(capsys, "consolidate", tmp_path / "g.zarr")
    assert status == 0 and "consolidated the metadata of 1 node into /" in out
    status, out, _ = _run(capsys, "bench", tmp_path / "g.zarr", "--path", "x", "--threads", 1)
    assert status == 0 and "1 chunk read, 1 thread)" in out
    status, out, _ = _run(capsys, "copy", tmp_path / "g.zarr", tmp_path / "c.zarr", "--path", "x")
    assert status == 0 and out.startswith("copied 2 keys")
    status, out, _ = _run(capsys, "copy", tmp_path / "g.zarr", tmp_path / "d.zarr", "--path", "x/c")
    assert status == 0 and out.startswith("copied 1 key (")
    status, out, _ = _run(capsys, "demo", tmp_path / "demo.zarr", "--rows", 1)
    assert status == 0 and out.startswith("wrote 1 image and labels")


def test_help_is_plain_text_and_describes_every_rechunk_option(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "The torchzarr command: info, tree" in out and "``" not in out
    with pytest.raises(SystemExit):
        main(["rechunk", "--help"])
    out = capsys.readouterr().out
    assert re.search(r"--zarr-format \{2,3\}\s+Zarr format of the new array \(default: keep\)", out)
