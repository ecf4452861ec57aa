"""SQLiteStore.get_range opens a blob per read; memory stays bounded over many reads."""

from __future__ import annotations

import gc
import os
import threading
import tracemalloc
from pathlib import Path

import pytest

import torchzarr.storage.sqlite as sqlite_module
from torchzarr.errors import StoreError
from torchzarr.storage.base import ByteRange
from torchzarr.storage.sqlite import SQLiteStore

VALUES = {f"k/{i}": bytes((i + j) % 256 for j in range(4096)) for i in range(8)}


def _range(i: int) -> tuple[str, ByteRange, bytes]:
    key = f"k/{i % 8}"
    start, length = (i * 37) % 4000, 1 + i % 90
    return key, ByteRange(start, length), VALUES[key][start : start + length]


@pytest.mark.parametrize("read_only", [False, True])
def test_many_ranged_reads_keep_python_memory_bounded(tmp_path: Path, read_only: bool) -> None:
    # Python's sqlite3 keeps an entry (~90 B) for every blob a connection ever opened
    writer = SQLiteStore(tmp_path / "d.db")
    writer.set_many(VALUES)
    store = SQLiteStore(writer.path, read_only=True) if read_only else writer
    for i in range(100):
        store.get_range(*_range(i)[:2])
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(20_000):
            store.get_range(*_range(i)[:2])
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # unbounded: ~2 MB; bounded: at most one connection's worth of blobs (~0.4 MB)
    assert grown < 1_000_000, f"{grown} bytes more after 20000 ranged reads"
    store.close()
    writer.close()


@pytest.mark.parametrize("read_only", [False, True])
def test_reads_from_two_threads_stay_right_across_connection_replacements(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, read_only: bool
) -> None:
    monkeypatch.setattr(sqlite_module, "_BLOBS", 50, raising=False)
    writer = SQLiteStore(tmp_path / "d.db")
    writer.set_many(VALUES)
    store = SQLiteStore(writer.path, read_only=True) if read_only else writer
    wrong: list[object] = []
    connections: dict[int, dict[int, object]] = {0: {}, 1: {}}  # kept alive: ids stay unique

    def work(worker: int) -> None:
        try:
            for i in range(worker, 1200, 2):
                key, byte_range, expected = _range(i)
                got = store.get_range(key, byte_range)
                if got != expected:
                    wrong.append((worker, i, got, expected))
                if i % 100 == worker:  # other calls on the same connection in between
                    if store.get(key) != VALUES[key] or store.getsize(key) != 4096:
                        wrong.append((worker, i, "get"))
                    if not read_only:
                        store.set(f"w/{worker}", bytes([i % 256]))
                        if store.get(f"w/{worker}") != bytes([i % 256]):
                            wrong.append((worker, i, "set"))
                held = store._conn()
                assert held is not None
                connections[worker][id(held)] = held
        except BaseException as err:  # reported below
            wrong.append((worker, repr(err)))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == []
    # 600 ranged reads a thread, 50 blobs a connection: each thread replaced its connection
    assert all(len(ids) >= 10 for ids in connections.values()), connections
    # a replaced connection is closed, not left open: this thread's, and the two threads'
    assert len(store._all) <= 3
    if not read_only:  # the new connection opened before the old closed: the WAL stays
        assert os.path.exists(f"{store.path}-wal")
    store.close()
    writer.close()


def test_a_connection_that_cannot_be_replaced_keeps_reading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_module, "_BLOBS", 3, raising=False)
    store = SQLiteStore(tmp_path / "d.db")
    store.set_many(VALUES)
    first = store._conn()
    for i in range(3):
        assert store.get_range(*_range(i)[:2]) == _range(i)[2]

    def refuse() -> None:
        raise StoreError("cannot open")

    monkeypatch.setattr(store, "_connect", refuse)
    for i in range(10):
        assert store.get_range(*_range(i)[:2]) == _range(i)[2]
    assert store._conn() is first
    monkeypatch.undo()
    monkeypatch.setattr(sqlite_module, "_BLOBS", 3, raising=False)
    for i in range(3):
        store.get_range(*_range(i)[:2])
    assert store._conn() is not first and first is not None and first.closed
    store.close()
