"""``SQLiteStore``: keys and values in one SQLite table (stdlib sqlite3, WAL, one connection a thread)."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from functools import cached_property
from typing import Any, TypeVar

from torchzarr.errors import InvalidArgumentError, StoreError
from torchzarr.storage.base import (
    Buffer,
    ByteRange,
    Store,
    keys_named,
    validate_key,
    validate_prefix,
)
from torchzarr.storage.buffers import as_buffer
from torchzarr.storage.key_names import listed_keys
from torchzarr.storage.sqlite_forks import (
    FORKS,
    Connection,
    check_forked,
    check_not_forking,
    running,
)
from torchzarr.storage.sqlite_prefix import refuse_in_utf16, under_prefix, utf16_database
from torchzarr.storage.sqlite_rows import check_row_sizes
from torchzarr.storage.sqlite_wal import connect_read_only
from torchzarr.storage.store_args import flag, local_path, seconds, settings_of

__all__ = ["SQLiteStore"]

_T = TypeVar("_T")
# SQL and its parameters, or what makes them from the connection (see sqlite_prefix)
_Statement = str | Callable[[sqlite3.Connection], tuple[str, Sequence[Any]]]
_BATCH = 500  # bound parameters per statement, well under SQLite's limit
# blobs a connection opens before it is replaced (see SQLiteStore._conn): ~100 B each
_BLOBS = 4096
_SCHEMA = "CREATE TABLE IF NOT EXISTS zarr (key TEXT PRIMARY KEY NOT NULL, value BLOB NOT NULL)"
_UPSERT = "INSERT INTO zarr (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value"
# Other SQLite clients may store TEXT (the sqlite3 shell's '...' literals): its bytes, in
# the database's text encoding (UTF-8 unless it was created as UTF-16), are the value.
# Both expressions leave a BLOB as it is: length() of the bare column reads the size from
# the row header, where a CAST would load the whole value.
_VALUE = "CASE typeof(value) WHEN 'text' THEN CAST(value AS BLOB) ELSE value END"
_SIZE = "CASE typeof(value) WHEN 'text' THEN length(CAST(value AS BLOB)) ELSE length(value) END"


class SQLiteStore(Store):
    """A SQLite database file holding a table ``zarr(key, value)``.

    Each thread uses its own connection, opened on first use (again after a fork); the
    database runs in WAL mode, so readers never block the writer. Every ``set`` is one
    atomic statement and ``set_many``/``delete_many`` one transaction. ``get_many`` is one
    query per batch of keys; ``get_range`` reads only the requested bytes (incremental blob
    I/O).

    Args:
        path: the database file (created on the first write).
        read_only: refuse writes; a missing database reads as an empty store.
        timeout: seconds a connection waits for a lock held by another writer.
        immutable: with ``read_only``, open the database with SQLite's ``immutable=1``: it
            reads without locks and never looks for changes or a ``-wal`` file, so a
            database in WAL mode reads from a directory this process cannot write. Only
            for a database nothing writes while it is open: a writer changing it meanwhile
            can make reads return torn values (see ``docs/storage.md``).

    Example:
        >>> import os, tempfile
        >>> store = SQLiteStore(os.path.join(tempfile.mkdtemp(), "data.db"))
        >>> store.set_many({"a/0": b"xyz", "a/1": b"w"})
        >>> store.get_many(["a/0", "b"]), store.get_range("a/0", ByteRange(1, 1))
        ({'a/0': b'xyz', 'b': None}, b'y')
        >>> store.close()  # finished: nothing writes it any more
        >>> SQLiteStore(store.path, read_only=True, immutable=True).get("a/1")
        b'w'
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        read_only: bool = False,
        timeout: float = 30.0,
        immutable: bool = False,
    ) -> None:
        self.path = local_path("path", path)
        with settings_of(f"SQLiteStore({self.path!r})"):
            self.read_only = flag("read_only", read_only)
            self.timeout = seconds("timeout", timeout)
            self.immutable = flag("immutable", immutable)
            if self.immutable and not self.read_only:
                raise InvalidArgumentError(
                    "immutable=True needs read_only=True (mode='r' for a URL): SQLite reads "
                    "an immutable database without locks, which only a reader may do"
                )
        self._reset()

    def _reset(self) -> None:
        self._local = threading.local()
        # every connection open, with the thread it belongs to
        self._all: dict[Connection, weakref.ref[threading.Thread]] = {}
        # held to open, register or close connections (and by a fork in progress)
        self._lock = threading.Lock()
        check_forked()
        check_not_forking(self)
        with FORKS.lock:  # waits for a fork in progress, which would not see this store
            FORKS.stores[id(self)] = self

    def __repr__(self) -> str:
        flags = ", read-only" if self.read_only else ""
        return f"SQLiteStore({self.path!r}{flags}{', immutable' if self.immutable else ''})"

    def _key(self) -> tuple[str, bool, bool]:
        return self.path, self.read_only, self.immutable

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SQLiteStore) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    @cached_property
    def identity(self) -> str:
        # symlinks resolved (once), as LocalStore does: a file reached through a link is the same
        return "sqlite://" + os.path.realpath(self.path)

    def __getstate__(self) -> dict[str, Any]:
        state = {"path": self.path, "read_only": self.read_only, "timeout": self.timeout}
        return {**state, "immutable": self.immutable}

    def __setstate__(self, state: dict[str, Any]) -> None:
        SQLiteStore.__init__(self, **state)

    def with_read_only(self, read_only: bool = True) -> SQLiteStore:
        """This database read-only (``immutable`` kept) or writable (``immutable`` dropped).

        Example:
            >>> reader = SQLiteStore("d.db", read_only=True, immutable=True)
            >>> reader.with_read_only(True).immutable, reader.with_read_only(False).immutable
            (True, False)
        """
        immutable = self.immutable and read_only  # only a reader may be immutable
        return SQLiteStore(
            self.path, read_only=read_only, timeout=self.timeout, immutable=immutable
        )

    def close(self) -> None:
        """Close this process's connections; each thread reconnects on its next call.

        Safe while other threads use the store: a statement running on a connection
        finishes before the connection closes, and the thread's next call reconnects.
        Every store does the same just before the process forks (see ``docs/storage.md``).
        The database stays in WAL mode; the last writable connection to it (of any
        process) to close checkpoints its WAL into the file and removes the ``-wal`` and
        ``-shm`` files (a read-only one never does).

        Example:
            >>> import os, tempfile
            >>> store = SQLiteStore(os.path.join(tempfile.mkdtemp(), "c.db"))
            >>> store.set("a", b"1"); store.close()
            >>> sorted(os.listdir(os.path.dirname(store.path)))  # no -wal, no -shm
            ['c.db']
        """
        check_forked()
        check_not_forking(self)
        with self._lock:
            self._close_connections()

    def _close_connections(self) -> None:
        """Close every connection, waiting for the statement running on each (holds _lock).

        A connection stays listed until it is closed: a fork sees one that failed to close.
        """
        self._local = threading.local()
        while self._all:
            held = next(iter(self._all))
            held.close()
            del self._all[held]

    # -- connections ------------------------------------------------------------------------
    def _using(
        self,
        work: Callable[[sqlite3.Connection], _T],
        create: bool = False,
        names: Sequence[str] = (),
        kind: str = "key",
        blobs: int = 0,
    ) -> _T | None:
        """``work(connection)`` on this thread's connection, which no ``close`` closes meanwhile.

        None, without a call, while the file does not exist, unless ``create`` (a write):
        reading or deleting in a store nothing was written to leaves no file. ``names``
        (keys, or a prefix: ``kind``) are refused where the database cannot store them.
        ``blobs``: how many blobs ``work`` opens at most (see :meth:`_conn`).
        """
        while True:
            held = self._conn(create)
            if held is None:
                return None
            if held.utf16:
                refuse_in_utf16(names, self, kind)
            with held.lock:
                if not held.closed:
                    held.blobs += blobs
                    return work(held.connection)
            # closed by another thread since it was looked up: the next lookup reconnects

    def _conn(self, create: bool = False) -> Connection | None:
        """This thread's open connection, connecting if it has none (see :meth:`_using`).

        One that has opened ``_BLOBS`` blobs is replaced by a new one (same settings) here,
        between two calls, where it runs no statement or transaction: Python's sqlite3 keeps
        an entry for every blob a connection opened, closed ones too, until it closes.
        """
        check_forked()
        held: Connection | None = getattr(self._local, "conn", None)
        stale = None  # this thread's connection, open, to replace
        if held is not None and not held.closed:
            if held.blobs < _BLOBS:
                return held
            stale = held
        if (self.read_only or not create) and not os.path.exists(self.path):
            return stale
        check_not_forking(self)
        # opened and registered under the lock: close() and a fork see every connection
        with self._lock:
            try:
                held = self._connect()  # first: a last close would drop the WAL
            except StoreError:
                if stale is None:
                    raise
                stale.blobs = 0  # it still works: keep it, and try again later
                return stale
            finished = [old for old in self._all if old is stale or not running(self._all[old])]
            for old in finished:  # no thread can use them any more
                old.close()
                del self._all[old]
            self._all[held] = weakref.ref(threading.current_thread())
            self._local.conn = held
        return held

    def _connect(self) -> Connection:
        """A new connection to the database, in WAL mode when writable (a read-only one:
        ``sqlite_wal.connect_read_only``, whose StoreError passes through)."""
        if self.identity in FORKS.unsafe:
            raise StoreError(
                f"cannot open {self} in this process: it was forked without Python's fork "
                "handlers (a fork() from C code?) while the parent had the database open, and "
                "SQLite cannot use a database safely across such a fork; open it in a process "
                "started another way (multiprocessing 'spawn', or os.fork())"
            )
        try:
            if self.read_only:
                conn = connect_read_only(self.path, self.timeout, self.immutable)
            else:
                os.makedirs(os.path.dirname(self.path), exist_ok=True)
                conn = sqlite3.connect(self.path, timeout=self.timeout, check_same_thread=False)
            conn.isolation_level = None  # autocommit; transactions are explicit
            if not self.read_only:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")  # WAL: atomic, fsync at checkpoints
                conn.execute(_SCHEMA)
            utf16 = utf16_database(conn)
        except sqlite3.Error as err:
            raise StoreError(f"cannot open SQLite database {self.path!r}: {err}") from err
        return Connection(conn, utf16)

    def _query(
        self,
        what: str,
        sql: _Statement,
        params: Sequence[Any] = (),
        names: Sequence[str] = (),
        kind: str = "key",
    ) -> list[Any]:
        """The rows of ``sql``; an error says it could not ``what`` (then the keys ``names``,
        named only when it happens: reads are the hot path)."""

        def fetch(conn: sqlite3.Connection) -> list[Any]:
            try:
                text, args = sql(conn) if callable(sql) else (sql, params)
                return conn.execute(text, args).fetchall()
            except sqlite3.Error as err:
                if isinstance(err, sqlite3.OperationalError) and "no such table" in str(err):
                    return []  # a database nothing was written to yet
                doing = f"{what} {keys_named(list(names))}" if names and kind == "key" else what
                raise StoreError(f"cannot {doing} in {self}: {err}") from err

        return self._using(fetch, names=names, kind=kind) or []

    # -- reads --------------------------------------------------------------------------------
    def _bytes(self, key: str, value: Any) -> bytes:
        """A stored value as bytes: refused when another client stored a number or NULL."""
        if isinstance(value, bytes):
            return value
        raise self._not_bytes(key, {int: "integer", float: "real"}.get(type(value), "null"))

    def _not_bytes(self, key: str, kind: str) -> StoreError:
        return StoreError(
            f"cannot read {key!r} from {self}: its value is an SQLite {kind.upper()}, "
            "not a BLOB or TEXT (written by another client?)"
        )

    def get(self, key: str) -> bytes | None:
        sql = f"SELECT {_VALUE} FROM zarr WHERE key = ?"
        rows = self._query("read", sql, (validate_key(key),), [key])
        return self._bytes(key, rows[0][0]) if rows else None

    def get_many(self, keys: Sequence[str]) -> dict[str, bytes | None]:
        unique = [validate_key(key) for key in dict.fromkeys(keys)]
        out: dict[str, bytes | None] = dict.fromkeys(unique)
        for i in range(0, len(unique), _BATCH):
            batch = unique[i : i + _BATCH]
            sql = f"SELECT key, {_VALUE} FROM zarr WHERE key IN ({','.join('?' * len(batch))})"
            for key, value in self._query("read", sql, batch, batch):
                out[key] = self._bytes(key, value)
        return out

    def get_range(self, key: str, byte_range: ByteRange) -> bytes | None:
        validate_key(key)
        read = lambda conn: self._read_range(conn, key, byte_range)  # noqa: E731
        return self._using(read, names=[key], blobs=1)

    def _read_range(
        self, conn: sqlite3.Connection, key: str, byte_range: ByteRange
    ) -> bytes | None:
        try:
            # one read transaction: the row cannot change between the lookup and the read
            conn.execute("BEGIN")
            try:
                sql = f"SELECT rowid, typeof(value), {_SIZE} FROM zarr WHERE key = ?"
                row = conn.execute(sql, (key,)).fetchone()
                if row is None:
                    return None
                rowid, kind, size = row
                if kind not in ("blob", "text"):
                    raise self._not_bytes(key, kind)
                start = (
                    max(size + byte_range.start, 0) if byte_range.start < 0 else byte_range.start
                )
                start = min(start, size)
                end = size if byte_range.length is None else min(start + byte_range.length, size)
                if start >= end:
                    return b""
                with conn.blobopen("zarr", "value", rowid, readonly=True) as blob:
                    blob.seek(start)
                    return blob.read(end - start)
            finally:
                if conn.in_transaction:  # else SQLite ended it on an error, which goes on
                    conn.execute("COMMIT")
        except sqlite3.OperationalError as err:
            if "no such table" in str(err):
                return None
            raise StoreError(f"cannot read {key!r} from {self}: {err}") from err
        except sqlite3.Error as err:
            raise StoreError(f"cannot read {key!r} from {self}: {err}") from err

    def exists(self, key: str) -> bool:
        sql = "SELECT 1 FROM zarr WHERE key = ?"
        return bool(self._query("read", sql, (validate_key(key),), [key]))

    def getsize(self, key: str) -> int | None:
        sql = f"SELECT typeof(value), {_SIZE} FROM zarr WHERE key = ?"
        rows = self._query("read", sql, (validate_key(key),), [key])
        if not rows:
            return None
        kind, size = rows[0]
        if kind not in ("blob", "text"):
            raise self._not_bytes(key, kind)
        return int(size)

    # -- writes -------------------------------------------------------------------------------
    def _transaction(
        self,
        what: str,
        sql: _Statement,
        rows: Sequence[Sequence[Any]],
        check: Callable[[sqlite3.Connection], None] | None = None,
        names: Sequence[str] = (),
        kind: str = "key",
    ) -> None:
        def write(conn: sqlite3.Connection) -> None:
            if check is not None:
                check(conn)
            try:
                if callable(sql):  # one statement, made for this connection
                    text, one = sql(conn)
                    many: Sequence[Sequence[Any]] = [one]
                else:
                    text, many = sql, rows
                conn.execute("BEGIN IMMEDIATE")
                try:
                    conn.executemany(text, many)
                    conn.execute("COMMIT")
                except BaseException:
                    # SQLite rolls back by itself on some errors (a full disk): a ROLLBACK
                    # then fails, and its error would hide the one that matters
                    if conn.in_transaction:
                        with contextlib.suppress(sqlite3.Error):
                            conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as err:
                raise StoreError(f"cannot {what} in {self}: {err}") from err

        self._using(write, create=True, names=names, kind=kind)  # writable stores connect

    def set(self, key: str, value: Buffer) -> None:
        self.set_many({key: value})

    def set_many(self, items: Mapping[str, Buffer]) -> None:
        for key in items:
            self._check_writable(key)
        rows = [(validate_key(key), as_buffer(self, key, value)) for key, value in items.items()]
        if rows:  # an error of the transaction names its keys
            check = lambda conn: check_row_sizes(self, conn, rows)  # noqa: E731
            keys = [key for key, _ in rows]
            self._transaction(f"write {keys_named(keys)}", _UPSERT, rows, check, keys)

    def delete(self, key: str) -> None:
        self.delete_many([key])

    def delete_many(self, keys: Iterable[str]) -> None:
        keys = list(keys)
        for key in keys:
            self._check_writable(key)
        rows = [(validate_key(key),) for key in keys]
        if rows and self._conn() is not None:  # no file yet: nothing to delete
            sql, names = "DELETE FROM zarr WHERE key = ?", [key for (key,) in rows]
            self._transaction(f"delete {keys_named(names)}", sql, rows, names=names)

    def delete_prefix(self, prefix: str) -> None:
        """Remove every key starting with ``prefix`` in one statement, names no key can
        spell included (other tools wrote them; listings skip them)."""
        self._check_writable(prefix or "/")
        validate_prefix(prefix)
        if self._conn() is None:  # no file yet: nothing to delete
            return
        # one range of the key index, valid in the database's text encoding, and an exact test
        where = lambda conn: under_prefix(conn, "DELETE FROM zarr", prefix)  # noqa: E731
        self._transaction(f"delete {prefix or '/'!r}", where, [], names=[prefix], kind="prefix")

    # -- listing ------------------------------------------------------------------------------
    def list_prefix(self, prefix: str) -> Iterator[str]:
        validate_prefix(prefix)
        where = lambda conn: under_prefix(conn, "SELECT key FROM zarr", prefix)  # noqa: E731
        rows = self._query(f"list {prefix or '/'!r}", where, names=[prefix], kind="prefix")
        return iter(listed_keys((key for (key,) in rows), prefix, self.path, "SQLiteStore"))
