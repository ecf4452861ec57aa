"""A SQLite database deleted or replaced at its path (``os.replace`` of a new version) while
a store has it open: as LMDBStore, writes go to the file at the path (made again when it was
deleted), reads notice within a second, and a new open reads the new file, never the old
one's ``-wal`` that SQLite leaves beside it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import torchzarr as tz
from torchzarr.storage import sqlite
from torchzarr.storage.sqlite import SQLiteStore


def _publish(path: Path, values: dict[str, bytes]) -> None:
    """Write a new database beside ``path``, close it, and rename it over ``path``."""
    new = SQLiteStore(path.with_name("new.db"))
    new.set_many(values)
    new.close()
    os.replace(path.with_name("new.db"), path)


def test_a_new_open_reads_the_replacing_file_not_the_old_ones_wal(tmp_path: Path) -> None:
    path = tmp_path / "run.db"
    old = SQLiteStore(path)
    old.set_many({"a": b"old", "gone": b"old"})  # in the old file's -wal, not checkpointed
    _publish(path, {"a": b"new"})
    fresh = SQLiteStore(path, read_only=True)
    assert fresh.get("a") == b"new" and fresh.get("gone") is None
    assert sorted(fresh.list_prefix("")) == ["a"]
    assert SQLiteStore(path).get("a") == b"new"


def test_arrays_of_a_replaced_database_read_the_new_version(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path}/run.db"
    old = tz.create_array(url, shape=(4,), dtype=torch.int32, chunks=(2,))
    old[:] = 1
    new = tz.create_array(f"sqlite://{tmp_path}/new.db", shape=(4,), dtype=torch.int32)
    new[:] = 7
    new.store.close()
    os.replace(tmp_path / "new.db", tmp_path / "run.db")
    assert tz.open_array(url, mode="r")[:].tolist() == [7, 7, 7, 7]


def test_a_write_after_a_replace_goes_to_the_file_at_the_path(tmp_path: Path) -> None:
    path = tmp_path / "run.db"
    old = SQLiteStore(path)
    old.set_many({"a": b"old", "b": b"old"})
    _publish(path, {"a": b"new"})
    old.set("c", b"late")  # never to the file replaced, nor over the new one's rows
    old.close()
    assert SQLiteStore(path).get_many(["a", "b", "c"]) == {"a": b"new", "b": None, "c": b"late"}


def test_reads_notice_a_replaced_file_within_a_second(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "run.db"
    reader = SQLiteStore(path, read_only=True)
    SQLiteStore(path).set("a", b"old")
    assert reader.get("a") == b"old"
    _publish(path, {"a": b"new"})
    monkeypatch.setattr(sqlite, "_RECHECK", 0.0)  # the second has passed
    assert reader.get("a") == b"new"


def test_a_write_after_the_file_was_deleted_makes_it_again(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    store = SQLiteStore(path)
    store.set_many({"a": b"1", "b": b"1"})
    os.remove(path)  # its -wal and -shm stay: a new file must not read them
    store.set("a", b"2")
    assert path.exists()
    assert SQLiteStore(path, read_only=True).get_many(["a", "b"]) == {"a": b"2", "b": None}


def test_reads_of_a_deleted_file_read_as_empty(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "x.db"
    store = SQLiteStore(path, read_only=True)
    SQLiteStore(path).set("a", b"1")
    assert store.get("a") == b"1"
    for name in os.listdir(tmp_path):
        os.remove(tmp_path / name)
    monkeypatch.setattr(sqlite, "_RECHECK", 0.0)
    assert store.get("a") is None and list(store.list_prefix("")) == []
    assert not path.exists()


_OLD_WRITER = """
import sys
from torchzarr.storage.sqlite import SQLiteStore
old = SQLiteStore(sys.argv[1])
old.set("a", b"old")
print("ready", flush=True)
sys.stdin.readline()  # replaced meanwhile
old.set("late", b"1")
print(old.get("a").decode(), flush=True)
"""


def test_a_writer_in_another_process_writes_to_the_replacing_file(tmp_path: Path) -> None:
    path = tmp_path / "run.db"
    writer = subprocess.Popen(
        [sys.executable, "-c", _OLD_WRITER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout is not None and writer.stdin is not None
        assert writer.stdout.readline().strip() == "ready"
        _publish(path, {"a": b"new"})
        writer.stdin.write("go\n")
        writer.stdin.flush()
        assert writer.stdout.readline().strip() == "new"
    finally:
        writer.communicate(timeout=120)
    assert SQLiteStore(path).get_many(["a", "late"]) == {"a": b"new", "late": b"1"}
