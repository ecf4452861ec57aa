"""A zip that another writer replaced or rewrote at its path is read afresh by a new open in
the same process, as zarr-python does, while stores already open keep reading the version they
first read; a zip this process writes stays shared by its stores."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

import torchzarr as tz
from torchzarr.errors import StoreError
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
    if change != "rewritten in place":  # a store in use keeps the file it read (its inode)
        assert first.get("k") == b"old value"
        assert sorted(first.list_prefix("")) == ["gone", "k"]
    if mode == "a":  # writes go to the new file, also those of a store of the old one
        second.set("written", b"3")
        first.set("also", b"4")
        second.close()
        assert sorted(zipfile.ZipFile(path).namelist()) == ["also", "k", "made", "written"]
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


def test_stores_of_a_zip_this_process_writes_share_what_it_wrote(tmp_path, caplog):
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
    _replace(path, {"other": b"5"})  # another writer's file replaces this one's, unclosed
    with caplog.at_level("WARNING", logger="torchzarr"):
        assert ZipStore(path).get("other") == b"5"  # the file at the path is read
    assert "writes not yet closed went with the old file" in caplog.text
    assert ZipStore(path).get("after") is None
    writer.set("later", b"6")  # and written to
    writer.close()
    with zipfile.ZipFile(path) as zf:
        assert sorted(zf.namelist()) == ["later", "other"]


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


def _append_without_closing(path: Path, entries: dict[str, bytes]) -> zipfile.ZipFile:
    """Another writer's append whose directory is not written yet: no whole zip for now."""
    writer = zipfile.ZipFile(path, "a")
    for name, value in entries.items():
        writer.writestr(name, value)
    assert writer.fp is not None
    writer.fp.flush()
    assert not zipfile.is_zipfile(path)
    return writer


def test_a_zip_another_writer_is_appending_to_reads_as_it_last_was_whole(tmp_path):
    path = tmp_path / "w.zip"
    _zip(path, {"k": b"1"})
    open_store = ZipStore(path)
    assert open_store.get("k") == b"1"
    writer = _append_without_closing(path, {"more": b"x" * 3000})
    assert ZipStore(path).get("k") == b"1"  # a new open: the version this process holds
    assert open_store.get("k") == b"1"  # a store already open goes on reading
    with pytest.raises(StoreError, match="not a zip file"):  # one writer per zip
        ZipStore(path, mode="a").set("mine", b"2")
    assert open_store.get("k") == b"1"
    writer.close()
    assert ZipStore(path).get("more") == b"x" * 3000  # whole again: a new open reads it
    assert open_store.get("more") is None and open_store.get("k") == b"1"


def test_a_zip_being_written_that_this_process_never_read_is_an_error(tmp_path):
    path = tmp_path / "w.zip"
    _zip(path, {"k": b"1"})
    writer = _append_without_closing(path, {"more": b"x" * 3000})
    with pytest.raises(StoreError, match=r"not a zip file.*another writer may be appending"):
        ZipStore(path).get("k")
    writer.close()
    assert ZipStore(path).get("more") == b"x" * 3000


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no os.fork")
def test_a_forked_child_reads_what_its_parent_had_written_while_the_parent_appends(tmp_path):
    path = tmp_path / "f.zip"
    _zip(path, {"k": b"before the fork"})
    assert ZipStore(path).get("k") == b"before the fork"  # open in the parent, read only
    appended_r, appended_w = os.pipe()
    answer_r, answer_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.read(appended_r, 1)
        try:
            answer = repr(ZipStore(path).get("k"))
        except Exception as err:
            answer = f"{type(err).__name__}: {err}"
        os.write(answer_w, answer.encode())
        os._exit(0)
    writer = ZipStore(path, mode="a")
    writer.set("new", b"x" * 3000)  # its directory is written when it closes
    os.write(appended_w, b"!")
    os.waitpid(pid, 0)
    os.close(answer_w)
    with os.fdopen(answer_r, "rb") as answer:
        got = answer.read().decode()
    for fd in (appended_r, appended_w):
        os.close(fd)
    writer.close()
    assert got == repr(b"before the fork")


def test_an_array_open_before_its_zip_was_replaced_reads_its_own_values(tmp_path):
    path, staged = tmp_path / "a.zip", tmp_path / "staged.zip"

    def publish(dtype: str, values: np.ndarray) -> None:
        with ZipStore(staged, mode="w") as store:
            array = tz.create_array(store, shape=(8,), chunks=(4,), dtype=dtype, compressors=None)
            array[:] = values
        os.replace(staged, path)

    publish("i4", np.arange(8, dtype="i4"))
    old = tz.open_array(f"zip://{path}", mode="r")
    assert old[:].tolist() == list(range(8))
    publish("f4", np.full(8, 0.5, dtype="f4"))  # another writer's new version, by rename
    new = tz.open_array(f"zip://{path}", mode="r")
    assert new.dtype == torch.float32 and new[:].tolist() == [0.5] * 8
    assert old[:].tolist() == list(range(8))  # never the new bytes read as int32


def test_an_array_whose_zip_another_store_closed_after_a_replace_is_refused(tmp_path):
    path, staged = tmp_path / "a.zip", tmp_path / "staged.zip"
    with ZipStore(path, mode="w") as store:
        tz.create_array(store, data=torch.arange(8, dtype=torch.float32), chunks=(4,))
    with ZipStore(staged, mode="w") as store:
        tz.create_array(store, data=torch.arange(100, 108, dtype=torch.int32), chunks=(4,))
    old = tz.open_array(ZipStore(path), mode="r")
    other = ZipStore(path)
    other.get("zarr.json")  # shares the archive the array reads
    os.replace(staged, path)
    other.close()  # lets that archive go: its version is no longer at the path
    with pytest.raises(StoreError, match="replaced or rewritten by another writer"):
        old[:]  # never the int32 chunks read as float32
    assert tz.open_array(ZipStore(path), mode="r")[:].tolist() == list(range(100, 108))


@pytest.mark.parametrize("replaced_after", [None, 1, 3])
def test_arrays_of_a_zip_this_process_closed_and_reopened_again_and_again_read_on(
    tmp_path, replaced_after
):
    path = tmp_path / "a.zip"
    with ZipStore(path, mode="w") as store:
        tz.create_array(store, data=torch.arange(8, dtype=torch.float32), chunks=(4,))
    reader = tz.open_array(ZipStore(path), mode="r")
    reader[:]  # holds the first version
    writer_store = ZipStore(path, mode="a")
    writer = tz.open_array(writer_store, mode="r+")
    for cycle in range(1, 4):  # each close lets a version go; the next open carries it on
        writer[:4] = float(-cycle)
        writer_store.close()
        if cycle == replaced_after:  # another writer's file at the path: not carried on
            with ZipStore(tmp_path / "other.zip", mode="w") as other:
                tz.create_array(other, data=torch.arange(8, dtype=torch.int32), chunks=(4,))
            os.replace(tmp_path / "other.zip", path)
            break
    if replaced_after is None:
        assert reader[:].tolist() == [-3.0] * 4 + [4.0, 5.0, 6.0, 7.0]
    else:
        with pytest.raises(StoreError, match="replaced or rewritten by another writer"):
            reader[:]


def test_arrays_of_a_zip_closed_by_another_store_of_this_process_read_on(tmp_path):
    path = tmp_path / "a.zip"
    with ZipStore(path, mode="w") as store:
        tz.create_array(store, data=torch.arange(8, dtype=torch.float32), chunks=(4,))
    reader = tz.open_array(ZipStore(path), mode="r")
    writer_store = ZipStore(path, mode="a")
    writer = tz.open_array(writer_store, mode="r+")
    writer[:4] = -1.0
    writer_store.close()  # this process's own change: the reader reads it
    assert reader[:].tolist() == [-1.0] * 4 + [4.0, 5.0, 6.0, 7.0]


@pytest.mark.parametrize("replaced", [False, True])
def test_writes_after_a_zip_with_unclosed_writes_was_deleted_go_to_a_new_file(tmp_path, replaced):
    path = tmp_path / "out.zip"
    tz.open_group(path, mode="w").attrs["run"] = 1  # the first run's zip, not closed
    os.remove(path)  # the user clears the old output
    if replaced:  # or another tool wrote a zip there since
        other = zarr.storage.ZipStore(path, mode="w")
        zarr.open_group(other, mode="w").attrs["other"] = 2
        other.close()
    group = tz.open_group(path, mode="w")  # the second run, in the same process
    group["x"] = torch.arange(3)
    group.store.close()
    with zipfile.ZipFile(path) as zf:  # on disk, at the path: not in the deleted file
        assert "x/zarr.json" in zf.namelist()
    assert tz.open_group(path, mode="r")["x"][:].tolist() == [0, 1, 2]
    assert "run" not in tz.open_group(path, mode="r").attrs


@pytest.mark.parametrize("replaced", [False, True])
def test_a_handle_that_wrote_writes_to_the_file_now_at_the_path_after_a_delete(
    tmp_path, replaced, caplog
):
    path = tmp_path / "out.zip"
    group = tz.open_group(path, mode="w")
    group.attrs["run"] = 1  # written, not closed
    os.remove(path)
    if replaced:
        _zip(path, {"other": b"5"})
    with caplog.at_level("WARNING", logger="torchzarr"):
        group.store.set("x", b"1")  # the same handle writes on
    assert "went with the old file" in caplog.text and "zip:" not in caplog.text
    group.store.close()
    with zipfile.ZipFile(path) as zf:
        assert sorted(zf.namelist()) == (["other", "x"] if replaced else ["x"])


def test_close_never_rewrites_another_writers_file_from_its_own_entries(tmp_path, caplog):
    path = tmp_path / "w.zip"
    writer = ZipStore(path, mode="w")
    for i in range(5):  # dead bytes outweigh the live ones: close would rewrite the file
        writer.set("k", b"x" * 1000 + bytes([i]))
    _replace(path, {"other": b"5"})
    with caplog.at_level("WARNING", logger="torchzarr"):
        writer.close()
    assert "went with the old file" in caplog.text
    with zipfile.ZipFile(path) as zf:  # the other writer's zip, whole
        assert zf.namelist() == ["other"] and zf.read("other") == b"5"
