"""ZipStore: closing a zip while other threads read or write stores of the same path.

Each race is made deterministic: the closing call runs at the worst moment of the other
operation (monkeypatched in), instead of hoping that threads interleave badly.
"""

from __future__ import annotations

import os
import threading
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch

import torchzarr as tz
from torchzarr.errors import StoreError
from torchzarr.storage import zip as zip_module
from torchzarr.storage import zip_archive
from torchzarr.storage.zip import ZipStore


def _entries(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        assert zf.testzip() is None
        return {name: zf.read(name) for name in zf.namelist()}


def test_a_read_in_flight_survives_a_close(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "r.zip"
    with ZipStore(path, mode="w") as store:
        store.set("k", b"value" * 100)
    junk = tmp_path / "junk"
    junk.write_bytes(b"J" * 1000)
    real_pread = zip_archive.Archive._pread
    opened: list[int] = []

    def close_first(self: Any, key: str, size: int, offset: int) -> bytes:
        if not opened:  # another thread closes the zip between the lookup and the read,
            ZipStore(path).close()
            opened.append(os.open(junk, os.O_RDONLY))  # a file opened meanwhile: same fd?
        return real_pread(self, key, size, offset)

    monkeypatch.setattr(zip_archive.Archive, "_pread", close_first)
    reader = ZipStore(path)
    try:
        assert reader.get("k") == b"value" * 100
        assert reader.get("k") == b"value" * 100  # the next read reopens the zip
    finally:
        os.close(opened[0])
        reader.close()


def test_reads_in_flight_survive_a_close_that_rewrites_the_zip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "rw.zip"
    values = {f"k/{i}": bytes([i]) * (100 + i) for i in range(20)}
    with ZipStore(path, mode="w") as store:
        for key in values:
            store.set(key, b"old" * 100)
    writer = ZipStore(path, mode="a")
    for key, value in values.items():  # dead bytes now outweigh the live ones
        writer.set(key, value)
    rewrites: list[str] = []
    real_rewrite = zip_archive.rewrite_live
    monkeypatch.setattr(
        zip_archive,
        "rewrite_live",
        lambda path, live: rewrites.append(path) or real_rewrite(path, live),
    )
    real_pread = zip_archive.Archive._pread

    def close_first(self: Any, key: str, size: int, offset: int) -> bytes:
        if not rewrites:  # another thread closes (and rewrites) the zip amid a get_many
            writer.close()
        return real_pread(self, key, size, offset)

    monkeypatch.setattr(zip_archive.Archive, "_pread", close_first)
    assert ZipStore(path).get_many(list(values)) == values  # the whole batch, none corrupt
    assert rewrites == [str(path)]
    assert _entries(path) == values


@pytest.mark.parametrize("operation", ["write", "delete"])
def test_a_write_after_a_close_reopens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, operation: str
) -> None:
    path = tmp_path / "w.zip"
    writer = ZipStore(path, mode="w")
    writer.set("old", b"1")
    real = getattr(zip_archive.Archive, operation)
    closed: list[bool] = []

    def close_first(self: Any, *args: Any) -> bool:
        if not closed:  # another thread closes the archive this store just fetched
            closed.append(True)
            ZipStore(path).close()
        return bool(real(self, *args))

    monkeypatch.setattr(zip_archive.Archive, operation, close_first)
    if operation == "write":
        writer.set("new", b"2")
    else:
        writer.delete("old")
    writer.close()
    expected = {"old": b"1", "new": b"2"} if operation == "write" else {}
    assert _entries(path) == expected


class _WatchedLock:
    """A lock that records whether a thread had to wait for it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.waited = threading.Event()

    def __enter__(self) -> None:
        if not self.lock.acquire(blocking=False):
            self.waited.set()
            self.lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self.lock.release()


def test_no_store_reopens_a_zip_before_its_close_wrote_the_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "c.zip"
    with ZipStore(path, mode="w") as store:
        store.set("a", b"1")
    writer, closer = ZipStore(path, mode="a"), ZipStore(path, mode="a")
    writer.set("b", b"2")  # after the directory written by the first close
    lock = _WatchedLock()
    monkeypatch.setattr(zip_module, "_path_locks", {writer.identity: lock})
    real_close = zip_archive.Archive.close
    errors: list[BaseException] = []
    done = threading.Event()

    def write_c() -> None:
        try:
            writer.set("c", b"3")
        except BaseException as err:  # pragma: no cover - the failure being tested for
            errors.append(err)
        finally:
            done.set()

    def racing_close(self: Any) -> None:
        # another thread writes while this archive is being closed: it must wait for the
        # close (else it appends to a file whose directory is not written yet)
        monkeypatch.setattr(zip_archive.Archive, "close", real_close)
        thread = threading.Thread(target=write_c)
        thread.start()
        while not (lock.waited.wait(0.01) or done.is_set()):
            pass
        real_close(self)

    monkeypatch.setattr(zip_archive.Archive, "close", racing_close)
    closer.close()
    done.wait(10)
    writer.close()
    assert errors == []
    assert _entries(path) == {"a": b"1", "b": b"2", "c": b"3"}


def test_closing_one_zip_does_not_hold_up_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow, other = tmp_path / "slow.zip", tmp_path / "other.zip"
    stalled = ZipStore(slow, mode="w")
    stalled.set("a", b"1")
    entered, release = threading.Event(), threading.Event()
    real_close = zip_archive.Archive.close

    def stalling_close(self: Any) -> None:  # a directory write that takes its time
        if self.path == str(slow):
            entered.set()
            assert release.wait(30)
        real_close(self)

    monkeypatch.setattr(zip_archive.Archive, "close", stalling_close)
    closing = threading.Thread(target=stalled.close)
    closing.start()
    try:
        assert entered.wait(30)
        done = threading.Event()

        def use_other() -> None:
            with ZipStore(other, mode="w") as store:
                store.set("b", b"2")
            done.set()

        threading.Thread(target=use_other, daemon=True).start()
        finished = done.wait(30)  # a deadline, not a timing: it hangs if the test fails
    finally:
        release.set()
        closing.join()
    assert finished
    assert _entries(other) == {"b": b"2"} and _entries(slow) == {"a": b"1"}


_HOLDER = """
import sys, torch, torchzarr as tz
arr = tz.open_array(sys.argv[1], mode="r+")
arr[0:4] = 1.0
print("writing", flush=True)
sys.stdin.readline()
arr.store.close()
print("closed", flush=True)  # and still alive: the close, not the exit, lets others write
sys.stdin.readline()
"""


def test_a_second_writer_process_is_refused_until_the_first_closes(tmp_path):
    import subprocess
    import sys

    path = str(tmp_path / "a.zip")
    tz.create_array(path, shape=(8,), chunks=(4,), dtype=torch.float32).store.close()
    mine = tz.open_array(path, mode="r+")  # opened while the zip is whole, as the holder's
    assert mine[:].tolist() == [0.0] * 8
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, path],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "writing"
        with pytest.raises(StoreError, match="another writer has it open"):
            mine[4:8] = 2.0  # both would close their directory: one's entries lost
        assert holder.stdin is not None
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "closed"
        again = tz.open_array(path, mode="r+")
        again[4:8] = 2.0
        again.store.close()
        assert tz.open_array(path)[:].tolist() == [1.0] * 4 + [2.0] * 4
    finally:
        holder.kill()
        holder.wait(60)


def test_a_writer_of_this_process_whose_file_changed_lets_a_new_writer_lock_it(tmp_path):
    import time

    path = str(tmp_path / "a.zip")
    with ZipStore(path, "w") as first:
        first.set("a", b"1")
    writer = ZipStore(path, "a")
    mark = writer.savepoint()  # a writer archive with nothing pending
    writer.set("b", b"2")
    assert writer.roll_back(mark)
    later = time.time() + 5
    os.utime(path, (later, later))  # a backup tool touched the file
    other = ZipStore(path, "a")
    other.set("c", b"3")  # its archive replaces the first, whose lock goes with it
    writer.set("d", b"4")
    writer.close()
    other.close()
    assert sorted(zipfile.ZipFile(path).namelist()) == ["a", "c", "d"]
