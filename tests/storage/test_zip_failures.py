"""ZipStore when writing fails: a full disk midway through an entry or its directory, and a
zip file this process may not write.

A full disk is stood in for by a file size limit (``RLIMIT_FSIZE``, with ``SIGXFSZ``
ignored): a write past it fails with ``EFBIG`` after writing what fits, as one past the
free space fails with ``ENOSPC``. The limit is held only around the calls that should fail.
"""

from __future__ import annotations

import errno
import io
import os
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch
import zip_faults
from zip_faults import entries, room_left

import torchzarr as tz
from torchzarr.errors import ReadOnlyError, StoreError
from torchzarr.storage import zip_archive
from torchzarr.storage.zip import ZipStore

resource = pytest.importorskip("resource")
signal = pytest.importorskip("signal")
if not hasattr(signal, "SIGXFSZ"):  # pragma: no cover - platforms without file size limits
    pytest.skip("no SIGXFSZ", allow_module_level=True)

ENTRIES = {f"k/{i}": bytes([i]) * 100_000 for i in range(5)}


def make_zip(path: Path) -> Path:
    return zip_faults.make_zip(path, ENTRIES)


def assert_fails_for_lack_of_room(excinfo: pytest.ExceptionInfo[Any], key: str, path: Path) -> None:
    err = excinfo.value
    assert type(err) is StoreError
    assert repr(key) in str(err) and str(path) in str(err)
    assert isinstance(err.__cause__, OSError) and err.__cause__.errno == errno.EFBIG


def test_a_write_that_fails_midway_leaves_the_zip_whole_while_the_disk_stays_full(
    tmp_path: Path,
) -> None:
    path = make_zip(tmp_path / "full.zip")
    store = ZipStore(path, mode="a")
    with room_left(path, 50_000):
        with pytest.raises(StoreError) as excinfo:
            store.set("big", b"x" * 200_000)
        assert_fails_for_lack_of_room(excinfo, "big", path)
        assert entries(path) == ENTRIES  # a whole zip again at once: a crash loses nothing
        assert not store.exists("big") and store.get("k/4") == ENTRIES["k/4"]
        store.close()  # rewrites the directory it had: there is room for that
    assert entries(path) == ENTRIES


def test_a_store_goes_on_after_a_failed_write_once_there_is_room(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "again.zip")
    store = ZipStore(path, mode="a")
    with room_left(path, 50_000), pytest.raises(StoreError, match="'big'"):
        store.set("big", b"x" * 200_000)
    assert not store.exists("big") and sorted(store.list_prefix("")) == sorted(ENTRIES)
    store.set("other", b"z")
    store.set("big", b"y" * 1000)
    assert store.get("big") == b"y" * 1000
    store.close()
    assert entries(path) == {**ENTRIES, "other": b"z", "big": b"y" * 1000}


def test_an_overwrite_that_fails_keeps_the_old_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rewrites: list[str] = []
    monkeypatch.setattr(zip_archive, "rewrite_live", lambda path, live: rewrites.append("!"))
    path = make_zip(tmp_path / "over.zip")
    store = ZipStore(path, mode="a")
    with room_left(path, 50_000):
        for key in [*ENTRIES, *ENTRIES]:  # written, each would leave its old value dead
            with pytest.raises(StoreError, match=repr(key)):
                store.set(key, b"new" * 100_000)
    assert store.get("k/0") == ENTRIES["k/0"]
    store.close()
    assert not rewrites  # nothing was replaced: no dead bytes to rewrite the file without
    with zipfile.ZipFile(path) as zf:
        assert sorted(zf.namelist()) == sorted(ENTRIES)  # no duplicate, no half entry
    assert entries(path) == ENTRIES


def test_a_failed_write_to_a_new_zip_then_deletes_leave_a_whole_directory(tmp_path: Path) -> None:
    path = tmp_path / "new.zip"
    store = ZipStore(path, mode="w")
    for key, value in ENTRIES.items():
        store.set(key, value)
    with room_left(path, 10_000), pytest.raises(StoreError, match="'big'"):
        store.set("big", b"x" * 100_000)
    for key in ("k/1", "k/2", "k/3"):  # the directory written next is shorter
        store.delete(key)
    store.close()
    assert entries(path) == {"k/0": ENTRIES["k/0"], "k/4": ENTRIES["k/4"]}


def test_a_failed_write_without_room_for_the_directory_says_so_and_close_writes_it(
    tmp_path: Path,
) -> None:
    path = make_zip(tmp_path / "many.zip")
    store = ZipStore(path, mode="a")
    appended = {f"n/{i}": b"n" for i in range(2000)}  # a directory longer than the room left
    for key, value in appended.items():
        store.set(key, value)
    with room_left(path, 5_000), pytest.raises(StoreError, match="until a close") as excinfo:
        store.set("big", b"x" * 100_000)
    assert_fails_for_lack_of_room(excinfo, "big", path)
    assert store.get("n/1999") == b"n"  # this process still reads every entry
    store.close()
    assert entries(path) == {**ENTRIES, **appended}


def test_a_failed_write_with_room_for_the_directory_does_not_say_it_is_missing(
    tmp_path: Path,
) -> None:
    path = make_zip(tmp_path / "few.zip")
    store = ZipStore(path, mode="a")
    with room_left(path, 50_000), pytest.raises(StoreError) as excinfo:
        store.set("big", b"x" * 200_000)
    assert "until a close" not in str(excinfo.value)
    assert entries(path) == ENTRIES  # readable by others at once
    store.close()


def test_a_close_without_room_for_the_directory_raises_and_a_later_close_writes_it(
    tmp_path: Path,
) -> None:
    path = make_zip(tmp_path / "dir.zip")
    store = ZipStore(path, mode="a")
    store.set("small", b"s")  # over the old directory: the new one must be written
    with room_left(path, 0):
        with pytest.raises(StoreError, match="'more'"):
            store.set("more", b"m" * 1000)
        with pytest.raises(StoreError, match=r"directory of zip .*dir\.zip.*stays open") as info:
            store.close()
        assert isinstance(info.value.__cause__, OSError)
    assert ZipStore(path).get("small") == b"s"  # still open in this process
    store.close()
    assert entries(path) == {**ENTRIES, "small": b"s"}


def test_a_checkpoint_save_that_fails_leaves_the_previous_one_loadable(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.zip"
    tz.save_checkpoint({"w": torch.arange(10.0)}, str(path))
    with room_left(path, 1 << 20), pytest.raises(StoreError, match=r"ckpt\.zip"):
        tz.save_checkpoint({"w": torch.ones(4 << 20)}, str(path))
    assert torch.equal(tz.load_checkpoint(str(path))["w"], torch.arange(10.0))
    tz.save_checkpoint({"w": torch.ones(3)}, str(path))
    assert torch.equal(tz.load_checkpoint(str(path))["w"], torch.ones(3))


def test_a_zip_that_cannot_be_restored_is_left_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = make_zip(tmp_path / "lost.zip")
    store = ZipStore(path, mode="a")

    def cannot_cut(zf: zipfile.ZipFile, size: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(zip_archive, "cut_file", cannot_cut)
    with room_left(path, 50_000), pytest.raises(StoreError, match="cannot be restored") as info:
        store.set("big", b"x" * 200_000)
    assert "'big'" in str(info.value) and isinstance(info.value.__cause__, OSError)
    assert store.get("k/1") == ENTRIES["k/1"]  # this process still reads what it indexed
    store.close()  # writes nothing to a file in an unknown state
    with pytest.raises(StoreError, match=r"lost\.zip"):  # the next write reopens it as it is
        store.set("k/9", b"9")


def refuse_writes_to(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``path`` a file this process may not write (root ignores the mode bits, so
    opening it for writing is refused as the operating system would)."""
    path.chmod(0o444)
    if not os.access(path, os.W_OK):
        return
    real_open = io.open

    def open_(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if isinstance(file, (str, os.PathLike)) and os.fspath(file) == str(path) and mode != "rb":
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(io, "open", open_)


def test_a_zip_file_not_writable_reads_in_mode_a_and_refuses_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "ro.zip"
    group = tz.open_group(str(path), mode="w")
    group.create_array("a", shape=(4,), dtype=torch.int32, chunks=(2,))[:] = torch.arange(4)
    ZipStore(path).close()
    before = path.read_bytes()
    refuse_writes_to(path, monkeypatch)
    try:
        group = tz.open_group(str(path))  # mode "a", as LocalStore on a read-only directory
        assert torch.equal(group["a"][:], torch.arange(4, dtype=torch.int32))
        store = ZipStore(path, mode="a")
        with pytest.raises(ReadOnlyError, match=r"ro\.zip"):
            store.set("b", b"1")
        assert store.get("a/zarr.json") is not None  # reads go on after the refused write
        store.close()
    finally:
        path.chmod(0o644)
    assert path.read_bytes() == before


def test_a_zip_whose_folder_cannot_be_made_on_a_read_only_file_system_refuses_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def makedirs(name: Any, *args: Any, **kwargs: Any) -> None:
        raise OSError(errno.EROFS, "Read-only file system", str(name))

    monkeypatch.setattr(os, "makedirs", makedirs)
    store = ZipStore(tmp_path / "missing" / "new.zip", mode="a")
    with pytest.raises(ReadOnlyError, match=r"new\.zip.*cannot make its folder"):
        store.set("a", b"1")


def test_a_zip_on_a_read_only_file_system_reads_in_mode_a_and_refuses_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "rofs.zip"
    tz.create_array(str(path), data=torch.arange(4, dtype=torch.int32), chunks=(2,))
    ZipStore(path).close()
    before = path.read_bytes()
    real_open = os.open

    def open_(file: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        # EROFS, as a read-only mount answers even root: no PermissionError
        if os.fspath(file) == str(path) and flags & (os.O_WRONLY | os.O_RDWR):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(file, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", open_)
    arr = tz.open_array(str(path))  # mode "a"
    assert torch.equal(arr[:], torch.arange(4, dtype=torch.int32))
    with pytest.raises(ReadOnlyError, match=r"rofs\.zip.*Read-only file system"):
        arr[0] = 5
    store = ZipStore(path, mode="a")
    with pytest.raises(ReadOnlyError, match=r"rofs\.zip"):
        store.set("b", b"1")
    assert store.get("zarr.json") is not None  # reads go on after the refused write
    store.close()
    monkeypatch.undo()
    assert path.read_bytes() == before


def test_a_zip_that_cannot_be_restored_keeps_no_writer_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from torchzarr.errors import StoreError
    from torchzarr.storage import zip_archive
    from torchzarr.storage.zip import ZipStore

    path = str(tmp_path / "a.zip")
    store = ZipStore(path, "a")
    store.set("a", b"1")

    def no_room(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    def broken_disk(zf: Any, at: int) -> None:
        raise OSError(errno.EIO, "I/O error")

    with monkeypatch.context() as patch:
        patch.setattr(zipfile.ZipFile, "writestr", no_room)
        patch.setattr(zip_archive, "cut_file", broken_disk)
        with pytest.raises(StoreError, match="cannot be restored"):
            store.set("b", b"2")
    with pytest.raises(StoreError) as later:  # the file is broken: said so, not "a writer"
        ZipStore(path, "a").set("c", b"3")
    assert "another writer" not in str(later.value)


def test_a_key_over_the_zip_name_limit_is_refused_naming_it_before_anything_is_written(
    tmp_path: Path,
) -> None:
    path = tmp_path / "names.zip"
    store = ZipStore(path, mode="a")
    too_long = "a/" + "x" * 0xFFFE  # 65,536 bytes: an entry's name holds 65,535
    with pytest.raises(StoreError, match=r"'a/xxx.*\.\.\.' to ZipStore.*65,536 bytes.*65,535"):
        store.set(too_long, b"v")
    assert not path.exists()  # refused before the zip was opened for writing
    with pytest.raises(StoreError, match="65,535 bytes per entry name"):
        store.set_many({"k/0": b"0", "é" * 0x8000: b"1"})  # two UTF-8 bytes a character
    assert not path.exists()  # every name checked before the first entry
    longest = too_long[:-1]
    store.set(longest, b"v")
    store.close()
    assert ZipStore(path).get(longest) == b"v"
    assert zipfile.ZipFile(path).namelist() == [longest]
