"""SQLite's WAL mode and read-only places: leaving it at a writer's close, reading past it.

A database in WAL mode needs a ``-shm`` file beside it even to be read; SQLite cannot make
one in a directory this process may not write (a read-only mount, another user's folder),
so a plain read-only connection fails there ("unable to open database file"). A database
in rollback-journal mode (``journal_mode=DELETE``) needs nothing beside it to be read.
:func:`leave_wal` puts a database back in that mode when a writer closes it;
:func:`connect_read_only` reads one still in WAL mode when that is safe (see there).
"""

from __future__ import annotations

import os
import sqlite3
import urllib.parse

from torchzarr.errors import StoreError

__all__ = ["IN_WAL", "connect_read_only", "in_wal_mode", "leave_wal"]

_CANTOPEN = 14  # SQLITE_CANTOPEN, the primary code of "unable to open database file"

#: the databases (store identities) a writable connection of this process put in WAL
#: mode, until a close() puts them back in rollback-journal mode (:func:`leave_wal`)
IN_WAL: set[str] = set()
if hasattr(os, "register_at_fork"):  # a forked child put nothing in WAL mode yet
    os.register_at_fork(after_in_child=IN_WAL.clear)


def leave_wal(path: str) -> bool:
    """Put the database at ``path`` back in rollback-journal mode, if no other connection
    (of any process) uses it: its WAL is checkpointed into the file and deleted first, so
    nothing is lost. False, changing nothing, when another uses it (every connection that
    has read a database in WAL mode holds it until it closes), when it cannot be opened
    for writing, or when there is no file at ``path``; never waits for a lock.

    Example:
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "w.db")
        >>> conn = sqlite3.connect(path)
        >>> conn.execute("PRAGMA journal_mode=WAL").fetchone()
        ('wal',)
        >>> conn.execute("PRAGMA user_version").fetchone()  # a read: it holds the WAL open
        (0,)
        >>> leave_wal(path)
        False
        >>> conn.close()
        >>> leave_wal(path), in_wal_mode(path)
        (True, False)
    """
    try:  # mode=rw: never creates a file (a database deleted meanwhile stays deleted)
        conn = sqlite3.connect(_uri(path, "rw"), uri=True, timeout=0, check_same_thread=False)
    except sqlite3.Error:
        return False
    try:
        conn.execute("PRAGMA busy_timeout = 0")  # another connection holds it: leave it
        mode = conn.execute("PRAGMA journal_mode=DELETE").fetchone()[0]
        return str(mode).lower() == "delete"
    except sqlite3.Error:  # SQLITE_BUSY: another connection has the database open
        return False
    finally:
        conn.close()


def in_wal_mode(path: str) -> bool:
    """Whether the database file at ``path`` is in WAL mode (bytes 18 and 19 of its header
    are 2); False for a file that cannot be read.

    Example:
        >>> in_wal_mode("/nonexistent.db")
        False
    """
    try:
        with open(path, "rb") as f:
            header = f.read(20)
    except OSError:
        return False
    return header[18:20] == b"\x02\x02"


def connect_read_only(path: str, timeout: float) -> sqlite3.Connection:
    """A read-only connection to the database at ``path``.

    A database in WAL mode, in a directory this process cannot write, with no ``-shm``
    beside it, cannot be opened so. Then, when no ``-wal`` file is beside it either (no
    writer has it open, and none ended leaving writes the file lacks: every commit is in
    the file), it is opened ``immutable``: SQLite reads the file without locks and without
    looking for changes. That is safe for a finished database, what a read-only place
    holds; a writer elsewhere (a process that may write the directory) changing it while
    such a connection is open may make it read stale or inconsistent data. With a
    ``-wal`` file beside it, whose commits only SQLite's ``-shm`` index can tell apart,
    :class:`StoreError` names the path, the cause and the remedies.

    Example:
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "r.db")
        >>> sqlite3.connect(path).execute("CREATE TABLE t (x)").connection.close()
        >>> connect_read_only(path, 1.0).execute("SELECT count(*) FROM t").fetchone()
        (0,)
    """
    conn = sqlite3.connect(_uri(path, "ro"), uri=True, timeout=timeout, check_same_thread=False)
    try:
        conn.execute("PRAGMA schema_version").fetchone()  # reads the file: finds a WAL
        return conn
    except sqlite3.OperationalError as err:
        conn.close()
        code = getattr(err, "sqlite_errorcode", None)
        folder = os.path.dirname(path) or "."
        if code is None or code & 0xFF != _CANTOPEN or os.access(folder, os.W_OK):
            raise
        if not in_wal_mode(path):
            raise
        if os.path.exists(path + "-wal"):
            raise StoreError(
                f"cannot open SQLite database {path!r} read-only: it is in WAL mode, in "
                f"{folder!r}, a directory this process cannot write, so SQLite cannot make "
                f"the -shm file it needs, and the -wal file beside it may hold commits the "
                "database file lacks (a writer has it open, or ended without closing it). "
                "Have its writer close it (SQLiteStore.close() leaves a database out of WAL "
                "mode, readable from anywhere), or open it, or a copy of it with its -wal "
                "file, where this process may write"
            ) from err
    # no -wal: every commit is in the file; SQLite must neither lock nor look for a WAL
    return sqlite3.connect(
        _uri(path, "ro") + "&immutable=1", uri=True, timeout=timeout, check_same_thread=False
    )


def _uri(path: str, mode: str) -> str:
    return "file:" + urllib.parse.quote(path) + "?mode=" + mode  # '%', '?', '#'...
