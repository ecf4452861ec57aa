"""SQLiteStore: the store contract, URLs, read-only databases and one query per batch."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import torch
from store_values import StoreValueChecks

import torchzarr as tz
from torchzarr.errors import InvalidKeyError, ReadOnlyError, StoreError, UnknownStoreError
from torchzarr.storage.base import ByteRange, Store
from torchzarr.storage.registry import resolve_store
from torchzarr.storage.sqlite import SQLiteStore
from torchzarr.testing.store_contract import StoreContract


class TestSQLiteStore(StoreContract, StoreValueChecks):
    def make_store(self, tmp_path: Path) -> Store:
        return SQLiteStore(tmp_path / "data.db")


def test_a_row_over_sqlites_length_limit_is_refused_by_key(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "data.db")
    store.set("a/zarr.json", b"{}")
    held = store._conn()  # this thread's connection, with a limit small enough to test
    assert held is not None
    held.connection.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 1000)
    with pytest.raises(StoreError, match=r"'big' in .*1001 bytes.*limit of 1000 bytes") as caught:
        store.set_many({"a/zarr.json": b"{}", "big": bytes(994)})  # 993 fit beside its key
    assert "a/zarr.json" not in str(caught.value)
    store.set_many({"a/zarr.json": b"[]", "big": bytes(993)})  # the largest row it takes
    assert store.getsize("big") == 993 and store.get("a/zarr.json") == b"[]"
    store.close()


def test_a_failed_transaction_names_every_key_it_wrote(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "data.db")
    store.set("a/zarr.json", b"{}")
    with sqlite3.connect(tmp_path / "data.db") as other:  # another client's rule
        other.execute(
            "CREATE TRIGGER no_b BEFORE INSERT ON zarr WHEN NEW.key = 'b' "
            "BEGIN SELECT RAISE(ABORT, 'no b here'); END"
        )
    with pytest.raises(StoreError, match=r"cannot write 'a/zarr.json', 'b' in .*no b here"):
        store.set_many({"a/zarr.json": b"[]", "b": b"1"})
    assert store.get("a/zarr.json") == b"{}"
    store.close()


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
    held = store._conn()
    assert held is not None
    held.connection.set_trace_callback(statements.append)
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
    seen: list[sqlite3.Connection] = []

    def use() -> None:
        store.get("k")
        held = store._conn()
        assert held is not None
        seen.append(held.connection)

    thread = threading.Thread(target=use)
    thread.start()
    thread.join()
    return seen[0]


def test_connections_of_finished_threads_are_closed(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "d.db")
    store.set("k", b"v")
    ready, resume = threading.Event(), threading.Event()
    reads: list[bytes | None] = []
    held: list[object] = []

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


_CLOSE_RACE = """
import sys, threading
from torchzarr.errors import StoreError
from torchzarr.storage.base import ByteRange
from torchzarr.storage.sqlite import SQLiteStore

store = SQLiteStore(sys.argv[1])
values = {f"k/{i}": bytes([i]) * 1000 for i in range(50)}
store.set_many(values)
wrong, clean_errors = [], []

def work(worker):
    for round_ in range(400):
        key = f"k/{round_ % 50}"
        try:
            got = [
                store.get(key) == values[key],
                store.get_range(key, ByteRange(10, 5)) == values[key][10:15],
                store.get_many([key, "k/0"]) == {key: values[key], "k/0": values["k/0"]},
                store.getsize(key) == 1000,
                len(list(store.list_prefix("k/"))) == 50,
            ]
            store.set(f"w/{worker}", bytes([round_ % 256]))
            got.append(store.get(f"w/{worker}") == bytes([round_ % 256]))
            if not all(got):
                wrong.append((worker, round_, got))
        except StoreError as err:
            clean_errors.append(repr(err))

workers = [threading.Thread(target=work, args=(n,)) for n in range(4)]
for worker in workers:
    worker.start()
closes = 0
while any(worker.is_alive() for worker in workers):
    store.close()
    closes += 1
for worker in workers:
    worker.join()
print(closes, wrong[:3], clean_errors[:3])
assert not wrong
"""


def test_closing_while_other_threads_run_queries_neither_crashes_nor_misreads(
    tmp_path: Path,
) -> None:
    # in a subprocess: a connection freed under a running query kills the interpreter
    done = subprocess.run(
        [sys.executable, "-c", _CLOSE_RACE, str(tmp_path / "d.db")],
        capture_output=True,
        text=True,
        timeout=600,  # a deadline for a hang, not a timing
    )
    assert done.returncode == 0, done.stderr[-3000:]
    closes, wrong, clean_errors = done.stdout.split(" ", 2)
    assert int(closes) > 0 and wrong == "[]" and clean_errors.strip() == "[]"


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


def test_text_in_a_utf16_database_reads_as_its_utf16_bytes(tmp_path: Path) -> None:
    path = tmp_path / "utf16.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA encoding = 'UTF-16le'")
    conn.execute("CREATE TABLE zarr (key TEXT PRIMARY KEY NOT NULL, value BLOB NOT NULL)")
    conn.execute("INSERT INTO zarr VALUES ('zarr.json', '{\"é\": 1}')")
    conn.commit()
    conn.close()
    store = SQLiteStore(path, read_only=True)
    text = '{"é": 1}'.encode("utf-16-le")  # the database's text encoding, as documented
    assert store.get("zarr.json") == text and store.getsize("zarr.json") == len(text)
    assert store.get_range("zarr.json", ByteRange(2, 4)) == text[2:6]


def _utf16_store(tmp_path: Path, encoding: str) -> SQLiteStore:
    """A store of a new database in ``encoding`` (UTF-16le or UTF-16be)."""
    path = tmp_path / "utf16.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA encoding = '{encoding}'")
    conn.execute("CREATE TABLE other (x)")  # fixes the encoding before the store's table
    conn.close()
    return SQLiteStore(path)


@pytest.mark.parametrize("encoding", ["UTF-16le", "UTF-16be"])
def test_prefixes_in_a_utf16_database_list_and_delete_exactly_their_keys(
    tmp_path: Path, encoding: str
) -> None:
    store = _utf16_store(tmp_path, encoding)
    # UTF-16 sorts unlike code points: 'Я' (U+042F) is 2F 04 in UTF-16LE, between '/' and
    # '0'; 'ǿ' (U+01FF, FF 01) sorts above its code-point successor 'Ȁ' (00 02)
    keys = ["a/zarr.json", "a/c/0", "aЯ/zarr.json", "a0", "ǿ/zarr.json", "\U0001f600/x", "b"]
    # prefixes whose grown bytes would spell U+FFFF (LE) or U+FFFE (BE), which SQLite
    # stores as U+FFFD: such a bound made the range empty
    keys += ["\ufeff/zarr.json", "x\ufeff", "\ufffd/zarr.json", "y\ufffd"]
    store.set_many({key: b"1" for key in keys})
    assert sorted(store.list_prefix("ǿ")) == ["ǿ/zarr.json"]
    for prefix in ("\ufeff", "x\ufeff", "\ufffd", "y\ufffd"):
        assert sorted(store.list_prefix(prefix)) == [k for k in keys if k.startswith(prefix)]
    assert sorted(store.list_prefix("\U0001f600")) == ["\U0001f600/x"]
    assert store.list_dir("a") == (["zarr.json"], ["c"])
    assert sorted(store.list_prefix("a")) == ["a/c/0", "a/zarr.json", "a0", "aЯ/zarr.json"]
    store.delete_prefix("a/")
    assert sorted(store.list_prefix("")) == sorted(set(keys) - {"a/zarr.json", "a/c/0"})
    store.delete_prefix("ǿ")
    assert "ǿ/zarr.json" not in set(store.list_prefix(""))
    store.delete_prefix("x\ufeff")
    assert "x\ufeff" not in set(store.list_prefix(""))
    store.close()


@pytest.mark.parametrize("encoding", ["UTF-16le", "UTF-16be"])
def test_keys_a_utf16_database_would_store_as_another_are_refused_by_name(
    tmp_path: Path, encoding: str
) -> None:
    store = _utf16_store(tmp_path, encoding)
    store.set("x/\ufffd", b"kept")  # what SQLite makes of U+FFFE and U+FFFF there
    for bad in ("x/\uffff", "x/\ufffe"):
        calls: list[tuple[Any, tuple[Any, ...]]] = [
            (store.set, (bad, b"other")),
            (store.set_many, ({"ok": b"1", bad: b"other"},)),
            (store.get, (bad,)),
            (store.get_many, (["ok", bad],)),
            (store.get_range, (bad, ByteRange(0, 1))),
            (store.exists, (bad,)),
            (store.getsize, (bad,)),
            (store.delete, (bad,)),
        ]
        for call, args in calls:
            with pytest.raises(InvalidKeyError, match=rf"key {re.escape(repr(bad))} .*UTF-16"):
                call(*args)
        for call in (lambda p: list(store.list_prefix(p)), store.delete_prefix):
            with pytest.raises(InvalidKeyError, match=rf"prefix {re.escape(repr(bad))} .*UTF"):
                call(bad)
    assert list(store.list_prefix("")) == ["x/\ufffd"] and store.get("x/\ufffd") == b"kept"
    store.close()


def test_a_utf8_database_keeps_keys_with_uffff_and_ufffe_apart(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "d.db")
    keys = {"x/\uffff": b"1", "x/\ufffe": b"2", "x/\ufffd": b"3"}
    store.set_many(keys)
    assert store.get_many(list(keys)) == keys and sorted(store.list_prefix("x/\uffff")) == [
        "x/\uffff"
    ]
    store.delete_prefix("x/\ufffe")
    assert sorted(store.list_prefix("x/")) == ["x/\ufffd", "x/\uffff"]
    store.close()


def test_read_errors_name_the_keys(tmp_path: Path) -> None:
    path = tmp_path / "odd.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE zarr (key TEXT PRIMARY KEY NOT NULL)")  # no value column
    conn.close()
    store = SQLiteStore(path, read_only=True)
    for call, named in [
        (lambda: store.get("a/zarr.json"), "'a/zarr.json'"),
        (lambda: store.get_many(["a/c/0", "a/c/1"]), "'a/c/0', 'a/c/1'"),
        (lambda: store.getsize("a/c/0"), "'a/c/0'"),
        (lambda: store.get_range("a/c/0", ByteRange(0, 1)), "'a/c/0'"),
    ]:
        with pytest.raises(StoreError, match=rf"cannot read {named} (in|from) SQLiteStore"):
            call()


def test_a_node_deleted_in_a_utf16_database_leaves_its_siblings(tmp_path: Path) -> None:
    path = tmp_path / "utf16.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA encoding = 'UTF-16le'")
    conn.execute("CREATE TABLE other (x)")
    conn.close()
    group = tz.open_group(f"sqlite://{path}", mode="w")
    group.create_array("a", data=torch.arange(3))
    group.create_array("aЯ", data=torch.arange(3))
    del group["a"]
    assert sorted(group.keys()) == ["aЯ"]
    assert torch.equal(group["aЯ"][:], torch.arange(3))


def test_prefix_queries_use_the_key_index(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "d.db")
    store.set_many({"a/0": b"1", "b/0": b"2"})
    held = store._conn()
    assert held is not None
    statements: list[str] = []
    held.connection.set_trace_callback(statements.append)
    assert list(store.list_prefix("a/")) == ["a/0"]
    store.delete_prefix("b")
    held.connection.set_trace_callback(None)
    queries = [s for s in statements if s.startswith(("SELECT key", "DELETE"))]
    assert len(queries) == 2
    for query in queries:
        plan = held.connection.execute("EXPLAIN QUERY PLAN " + query).fetchall()
        assert "(key>? AND key<?)" in str(plan), plan


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


def test_a_database_through_a_symlink_has_the_identity_of_its_file(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    direct = SQLiteStore(tmp_path / "real" / "d.db")
    linked = SQLiteStore(tmp_path / "link" / "d.db")
    assert direct.identity == linked.identity
    assert str(tmp_path / "link" / "d.db") in repr(linked)  # errors name the path given
    assert SQLiteStore(tmp_path / "real" / "e.db").identity != direct.identity


@pytest.mark.parametrize(
    ("timeout", "error"),
    [
        ("x", tz.errors.ArgumentTypeError),
        (True, tz.errors.ArgumentTypeError),
        (None, tz.errors.ArgumentTypeError),
        (float("nan"), tz.errors.InvalidArgumentError),
        (float("inf"), tz.errors.InvalidArgumentError),
        (-1, tz.errors.InvalidArgumentError),
    ],
)
def test_timeout_is_a_finite_number_of_seconds_checked_when_made(tmp_path: Path, timeout, error):
    with pytest.raises(error, match="timeout must be a"):
        SQLiteStore(tmp_path / "t.db", timeout=timeout)
    assert not (tmp_path / "t.db").exists()
    assert SQLiteStore(tmp_path / "t.db", timeout=0).timeout == 0.0


def test_a_bad_timeout_names_the_store_path_and_the_url(tmp_path: Path) -> None:
    path = str(tmp_path / "t.db")
    with pytest.raises(tz.errors.InvalidArgumentError, match="timeout must be") as made:
        SQLiteStore(path, timeout=-1)
    assert f"SQLiteStore({path!r})" in str(made.value)
    url = f"sqlite://{path}"
    with pytest.raises(tz.errors.InvalidArgumentError, match="timeout must be") as opened:
        tz.open_group(url, mode="a", storage_options={"timeout": -1})
    assert str(opened.value).startswith(f"cannot open {url!r}: ") and path in str(opened.value)


def test_immutable_needs_read_only_and_the_error_names_both(tmp_path: Path) -> None:
    path = str(tmp_path / "i.db")
    with pytest.raises(
        tz.errors.InvalidArgumentError, match="immutable=True needs read_only"
    ) as made:
        SQLiteStore(path, immutable=True)
    assert f"SQLiteStore({path!r})" in str(made.value)
    with pytest.raises(tz.errors.ArgumentTypeError, match="immutable"):
        SQLiteStore(path, read_only=True, immutable="yes")
    url = f"sqlite://{path}"
    with pytest.raises(tz.errors.InvalidArgumentError, match="needs read_only=True") as opened:
        tz.open_group(url, mode="a", storage_options={"immutable": True})
    assert str(opened.value).startswith(f"cannot open {url!r}: ")
    assert not (tmp_path / "i.db").exists()


def test_immutable_rides_pickles_repr_equality_with_read_only_and_urls(tmp_path: Path) -> None:
    import pickle

    path = tmp_path / "i.db"
    writer = SQLiteStore(path)
    writer.set("a", b"1")
    writer.close()
    store = SQLiteStore(path, read_only=True, immutable=True, timeout=2)
    again = pickle.loads(pickle.dumps(store))
    assert again.immutable and again.read_only and again.timeout == 2.0 and again == store
    assert store != SQLiteStore(path, read_only=True) and repr(store).endswith(", immutable)")
    assert store.identity == writer.identity  # the same data
    assert store.with_read_only(True).immutable and store.with_read_only(True) == store
    assert not store.with_read_only(False).immutable
    opened = resolve_store(f"sqlite://{path}", mode="r", storage_options={"immutable": True})
    assert isinstance(opened, SQLiteStore) and opened == store
    assert opened.get("a") == b"1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["i.db"]  # no -wal, no -shm made
    opened.close()


def test_immutable_refuses_a_database_whose_wal_a_reader_left_holding_commits(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "d.db")
    writer = SQLiteStore(path)
    tz.create_array(writer, data=torch.arange(10), chunks=(3,))
    reader = SQLiteStore(path, read_only=True)
    assert tz.open_array(reader, mode="r")[:].tolist() == list(range(10))
    writer.close()
    reader.close()  # the reader closes last: a read-only connection never checkpoints
    assert (tmp_path / "d.db-wal").stat().st_size > 0
    with pytest.raises(StoreError, match="holds commits the database file lacks"):
        tz.open_array(SQLiteStore(path, read_only=True, immutable=True), mode="r")
    assert tz.open_array(SQLiteStore(path, read_only=True), mode="r")[:].tolist() == list(range(10))
