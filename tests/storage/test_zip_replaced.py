"""A zip that another writer replaced or rewrote at its path is read afresh by a new open in
the same process, as zarr-python does; a zip this process writes stays shared by its stores."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import zarr

import torchzarr as tz
from torchzarr.storage.zip import ZipStore


def _zip(path: Path, entries: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        for name, value in entries.items():
            zf.writestr(name, value)


def _replace(path: Path, entries: dict[str, bytes]) -> None:
    """Write a new zip beside ``path`` and rename it over it (a new file)."""
    _zip(path.with_name("new.zip"), entries)
    os.replace(path.with_name("new.zip"), path)


def _rewrite_in_place(path: Path, entries: dict[str, bytes]) -> None:
    """Write the zip again into the same file, of the same size, with a later timestamp."""
    before = os.stat(path)
    _zip(path, entries)
    assert (os.stat(path).st_ino, os.stat(path).st_size) == (before.st_ino, before.st_size)
    later = before.st_mtime_ns + 1_000_000_000
    os.utime(path, ns=(later, later))  # as a writer a second later leaves it


def _delete_and_recreate(path: Path, entries: dict[str, bytes]) -> None:
    os.unlink(path)
    _zip(path, entries)


CHANGES = {
    "replaced": _replace,
    "rewritten in place": _rewrite_in_place,
    "deleted and made again": _delete_and_recreate,
}


@pytest.mark.parametrize("change", sorted(CHANGES))
@pytest.mark.parametrize("mode", ["r", "a"])
def test_a_new_store_reads_the_zip_now_at_its_path(tmp_path, change, mode):
    path = tmp_path / "data.zip"
    _zip(path, {"k": b"old value", "gone": b"1"})  # the same size as the new one
    first = ZipStore(path, mode=mode)
    assert first.get("k") == b"old value"
    CHANGES[change](path, {"k": b"new value", "made": b"2"})
    second = ZipStore(path, mode=mode)
    assert second.get("k") == b"new value"  # neither the old value nor a CRC-32 error
    assert sorted(second.list_prefix("")) == ["k", "made"]
    # a store in use reads the new file too once a new open found it changed
    assert first.get("k") == b"new value"
    if mode == "a":  # writes go to the new file
        second.set("written", b"3")
        second.close()
        assert sorted(zipfile.ZipFile(path).namelist()) == ["k", "made", "written"]
    first.close()


def test_a_new_open_of_an_array_reads_a_zip_replaced_since(tmp_path):
    path, source = tmp_path / "a.zip", tmp_path / "a.zarr"
    for values in (np.arange(16, dtype="i4"), np.arange(16, dtype="i4") + 1000):
        z = zarr.create_array(source, shape=(16,), chunks=(4,), dtype="i4", overwrite=True)
        z[:] = values
        with zipfile.ZipFile(tmp_path / "new.zip", "w") as zf:
            for file in sorted(source.rglob("*")):
                if file.is_file():
                    zf.write(file, file.relative_to(source).as_posix())
        os.replace(tmp_path / "new.zip", path)
        np.testing.assert_array_equal(tz.open_array(f"zip://{path}", mode="r")[:].numpy(), values)


def test_a_zip_missing_at_the_first_read_is_read_once_made(tmp_path):
    path = tmp_path / "later.zip"
    assert ZipStore(path).get("k") is None
    _zip(path, {"k": b"made"})
    assert ZipStore(path).get("k") == b"made"


def test_stores_of_a_zip_this_process_writes_share_what_it_wrote(tmp_path):
    path = tmp_path / "w.zip"
    _zip(path, {"k": b"1"})
    writer = ZipStore(path, mode="a")
    mark = writer.savepoint()
    writer.set("k", b"2")
    assert ZipStore(path).get("k") == b"2"  # this process's own writes are no replacement
    writer.set("more", b"3")
    assert ZipStore(path, mode="a").get("more") == b"3"
    assert writer.roll_back(mark)  # the archive the savepoint was taken on is still the one
    assert ZipStore(path).get("k") == b"1"
    writer.set("after", b"4")
    _replace(path, {"other": b"5"})  # another writer's change under this one's is not seen
    assert ZipStore(path).get("after") == b"4"
    writer.close()


def test_a_zip_rolled_back_by_this_process_is_not_read_again(tmp_path):
    path = tmp_path / "r.zip"
    with ZipStore(path, mode="w") as writer:
        writer.set("a", b"1")
    writer = ZipStore(path, mode="a")
    mark = writer.savepoint()
    writer.set("b", b"2")
    assert writer.roll_back(mark)  # the file is cut and its directory written: no change left
    later = writer.savepoint()
    assert ZipStore(path).get("a") == b"1"  # a new open
    writer.set("c", b"3")
    assert writer.roll_back(later)  # still the archive the savepoint was taken on
    writer.close()
