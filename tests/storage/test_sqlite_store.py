"""SQLiteStore: the store contract, URLs, read-only databases and one query per batch."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
import torch

import torchzarr as tz
from torchzarr.errors import ReadOnlyError, StoreError, UnknownStoreError
from torchzarr.storage.base import ByteRange, Store
from torchzarr.storage.registry import resolve_store
from torchzarr.storage.sqlite import SQLiteStore
from torchzarr.testing.store_contract import StoreContract


class TestSQLiteStore(StoreContract):
    def make_store(self, tmp_path: Path) -> Store:
        return SQLiteStore(tmp_path / "data.db")


def test_url_opens_sqlite(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path}/arrays.db"
    arr = tz.create_array(url, shape=(6,), dtype=torch.int32, chunks=(4,))
    arr[:] = torch.arange(6, dtype=torch.int32)
    store = resolve_store(url, mode="r")
    assert isinstance(store, SQLiteStore) and store.read_only
    assert torch.equal(tz.open_array(url)[:], torch.arange(6, dtype=torch.int32))
    with pytest.raises(ReadOnlyError, match=r"arrays\.db"):
        store.set("x", b"1")
    # plain sqlite3 sees one row per key
    rows = sqlite3.connect(tmp_path / "arrays.db").execute("SELECT key FROM zarr").fetchall()
    assert sorted(r[0] for r in rows) == ["c/0", "c/1", "zarr.json"]


def test_bad_urls_name_the_url(tmp_path: Path) -> None:
    with pytest.raises(UnknownStoreError, match="sqlite://"):
        resolve_store("sqlite://", mode="a")
    with pytest.raises(UnknownStoreError, match="nope"):
        resolve_store(f"sqlite://{tmp_path}/x.db", mode="a", storage_options={"nope": 1})


@pytest.mark.parametrize("read_only", [True, False])
def test_missing_database_reads_as_empty(tmp_path: Path, read_only: bool) -> None:
    store = SQLiteStore(tmp_path / "none.db", read_only=read_only)
    assert store.get("a") is None and store.get_many(["a"]) == {"a": None}
    assert store.get_range("a", ByteRange(0, 1)) is None
    assert list(store.list_prefix("")) == [] and not store.exists("a")
    if not read_only:
        store.delete("a")  # nothing to delete: still no file
    assert not (tmp_path / "none.db").exists()


def test_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match=r"junk\.db"):
        SQLiteStore(path).set("a", b"1")


def test_get_many_is_one_query_per_batch(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "d.db")
    store.set_many({f"k/{i}": b"v" for i in range(1200)})
    statements: list[str] = []
    conn = store._conn()
    assert conn is not None
    conn.set_trace_callback(statements.append)
    got = store.get_many([f"k/{i}" for i in range(1200)] + ["missing"])
    assert sum(v == b"v" for v in got.values()) == 1200 and got["missing"] is None
    assert len([s for s in statements if s.startswith("SELECT")]) == 3  # 500 keys a query


def test_prefix_listing_with_unusual_characters(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "d.db")
    for key in ("a%/1", "a_/2", "a/3", "a\uffff/4", "b"):
        store.set(key, b"x")
    assert sorted(store.list_prefix("a%")) == ["a%/1"]
    assert sorted(store.list_prefix("a_/")) == ["a_/2"]
    assert sorted(store.list_prefix("a\uffff")) == ["a\uffff/4"]
    assert len(list(store.list_prefix("a"))) == 4


@pytest.mark.parametrize("name", ["run%20a.db", "a?b#c.db", "50% off.db", "ü.db"])
def test_read_only_paths_with_uri_characters(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    writer = SQLiteStore(path)
    writer.set("k", b"value")
    writer.close()
    decoy = SQLiteStore(tmp_path / name.replace("%20", " "))  # what '%20' decodes to
    if decoy.path != str(path):
        decoy.set("k", b"another database")
        decoy.close()
    assert SQLiteStore(path, read_only=True).get("k") == b"value"
    assert resolve_store(f"sqlite://{path}", mode="r").get("k") == b"value"


def _connection_of_a_short_thread(store: SQLiteStore) -> sqlite3.Connection:
    seen: list[sqlite3.Connection | None] = []
    thread = threading.Thread(target=lambda: (store.get("k"), seen.append(store._conn())))
    thread.start()
    thread.join()
    assert seen[0] is not None
    return seen[0]


def test_connections_of_finished_threads_are_closed(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "d.db")
    store.set("k", b"v")
    ready, resume = threading.Event(), threading.Event()
    reads: list[bytes | None] = []
    held: list[sqlite3.Connection | None] = []

    def long_lived() -> None:
        held.append(store._conn())
        ready.set()
        resume.wait()
        reads.append(store.get("k"))
        held.append(store._conn())

    worker = threading.Thread(target=long_lived, daemon=True)
    worker.start()
    ready.wait()
    try:
        finished = [_connection_of_a_short_thread(store) for _ in range(50)]
    finally:
        resume.set()
    worker.join()
    # this thread, the long-lived one and the last short one (closed at the next open)
    assert len(store._all) <= 3
    for conn in finished[:-1]:
        with pytest.raises(sqlite3.ProgrammingError, match="closed"):
            conn.execute("SELECT 1")
    assert reads == [b"v"] and held[0] is held[1]  # a live thread keeps its connection
    store.close()
    assert len(store._all) == 0


def test_repeated_copies_into_a_database_hold_few_connections(tmp_path: Path) -> None:
    from torchzarr.storage import MemoryStore, copy_keys

    source = MemoryStore({f"k{i}": b"x" for i in range(50)})
    store = SQLiteStore(tmp_path / "d.db")
    for _ in range(10):  # each copy writes from a new pool of 4 threads
        copy_keys(source, store, overwrite=True, jobs=4)
    assert len(store._all) <= 4 + 1 and len(list(store.list_prefix(""))) == 50


def _written_by_another_client(path: Path) -> SQLiteStore:
    SQLiteStore(path).set("blob", b"\x00\xff")
    conn = sqlite3.connect(path)  # as the sqlite3 shell stores '...' literals and numbers
    conn.execute('INSERT INTO zarr VALUES (\'zarr.json\', \'{"node_type": "group", "é": 1}\')')
    conn.execute("INSERT INTO zarr VALUES ('n', 42), ('r', 4.5)")
    conn.commit()
    conn.close()
    return SQLiteStore(path, read_only=True)


def test_values_other_clients_wrote_as_text_are_their_utf8_bytes(tmp_path: Path) -> None:
    store = _written_by_another_client(tmp_path / "d.db")
    text = '{"node_type": "group", "é": 1}'.encode()
    assert store.get("zarr.json") == text and store.getsize("zarr.json") == len(text)
    assert store.get_many(["zarr.json", "blob"]) == {"zarr.json": text, "blob": b"\x00\xff"}
    assert store.get_range("zarr.json", ByteRange(-3)) == text[-3:]
    assert store.getsize("blob") == 2 and store.get_range("blob", ByteRange(1)) == b"\xff"


@pytest.mark.parametrize(("key", "kind"), [("n", "INTEGER"), ("r", "REAL")])
@pytest.mark.parametrize("read", ["get", "get_many", "getsize", "get_range"])
def test_numbers_other_clients_wrote_are_refused_by_key(
    tmp_path: Path, key: str, kind: str, read: str
) -> None:
    store = _written_by_another_client(tmp_path / "d.db")
    calls = {
        "get": lambda: store.get(key),
        "get_many": lambda: store.get_many(["blob", key]),
        "getsize": lambda: store.getsize(key),
        "get_range": lambda: store.get_range(key, ByteRange(0, 1)),
    }
    with pytest.raises(StoreError, match=f"'{key}'.*SQLite {kind}"):
        calls[read]()
    assert store.exists(key)
