"""Read-only SQLite connections (plain or immutable), and the error for a WAL database in a read-only place.

A database in WAL mode, as :class:`~torchzarr.storage.sqlite.SQLiteStore` leaves one, is
read through a ``-shm`` (and a ``-wal``) file beside it, which SQLite makes when missing;
in a directory this process cannot write it cannot, and a plain read-only connection
fails ("unable to open database file"). :func:`connect_read_only` turns that failure into
a :class:`StoreError` naming the cause and the remedies. Nothing here opens the database
file outside SQLite: closing any descriptor of a file drops every POSIX lock this process
holds on it, those of SQLite's other connections included.
"""

from __future__ import annotations

import os
import shlex
import sqlite3
import urllib.parse

from torchzarr.errors import StoreError

__all__ = ["connect_read_only"]

_CANTOPEN = 14  # SQLITE_CANTOPEN, the primary code of "unable to open database file"


def connect_read_only(path: str, timeout: float, immutable: bool = False) -> sqlite3.Connection:
    """A read-only connection (``mode=ro``) to the database at ``path``, its first page read.

    With ``immutable``, SQLite's ``immutable=1``: it reads the file without locks and never
    looks for changes or for a ``-wal`` file, which is right only for a database nothing
    writes while the connection is open (see ``docs/storage.md``). Without it, a database
    in WAL mode in a directory this process cannot write (symlinks resolved: SQLite keeps
    ``-wal`` and ``-shm`` beside the file a link leads to) raises :class:`StoreError`
    naming the path, the cause and the remedies; any other failure raises
    ``sqlite3.Error``.

    Example:
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "r.db")
        >>> sqlite3.connect(path).execute("CREATE TABLE t (x)").connection.close()
        >>> connect_read_only(path, 1.0).execute("SELECT count(*) FROM t").fetchone()
        (0,)
        >>> connect_read_only(path, 1.0, immutable=True).execute("SELECT 1 FROM t").fetchall()
        []
    """
    uri = "file:" + urllib.parse.quote(path) + "?mode=ro"  # quoted: '%', '?', '#'...
    if immutable:
        if _wal_size(os.path.realpath(path)):
            raise StoreError(
                f"cannot open SQLite database {path!r} immutable: the -wal file beside it "
                "holds commits the database file lacks (a reader closed it last, or a writer "
                "has it open), which immutable=True would not see. Open it without "
                "immutable, or switch it out of WAL mode once where it is writable "
                f"(sqlite3 {shlex.quote(os.path.realpath(path))} 'PRAGMA journal_mode=DELETE')"
            )
        uri += "&immutable=1"
    conn = sqlite3.connect(uri, uri=True, timeout=timeout, check_same_thread=False)
    try:
        conn.execute("PRAGMA schema_version").fetchone()  # reads the file: finds a WAL
    except sqlite3.Error as err:
        conn.close()
        cause = _wal_in_read_only_place(path, err)
        if cause is not None:
            raise cause from err
        raise
    return conn


def _wal_size(real: str) -> int:
    """The size of the ``-wal`` file beside the database file ``real`` (0 when none): a
    stat, which opens nothing (closing a descriptor of the database would drop SQLite's
    locks on it)."""
    try:
        return os.stat(real + "-wal").st_size
    except OSError:
        return 0


def _wal_in_read_only_place(path: str, err: sqlite3.Error) -> StoreError | None:
    """The error to raise for ``err``, a first read that failed, when it says SQLite could
    not make the files a WAL database is read through; None for any other failure.

    The file opened, so "unable to open database file" at its first read is about the
    files beside it. The header is not read to tell WAL mode for sure (that would open the
    file outside SQLite): the message says what that failure means for a WAL database.
    """
    code = getattr(err, "sqlite_errorcode", None)
    if code is None or code & 0xFF != _CANTOPEN:
        return None
    real = os.path.realpath(path)
    folder = os.path.dirname(real)
    if os.access(folder, os.W_OK):
        return None
    file = "" if real == path else f" (the file {real!r} its symlink leads to)"
    text = (
        f"cannot open SQLite database {path!r}{file} read-only ({err}): a database in WAL "
        "mode, as SQLiteStore leaves one, needs a -shm file beside the database even to be "
        f"read, and SQLite cannot make one in {folder!r}, a directory this process cannot "
        "write. "
    )
    delete = f"sqlite3 {shlex.quote(real)} 'PRAGMA journal_mode=DELETE'"
    if _wal_size(real):
        return StoreError(
            text + "The -wal file beside it may hold commits the database file lacks (a "
            "writer has it open, or ended without checkpointing), which immutable=True "
            f"would not see. Switch it out of WAL mode once where it is writable ({delete}, "
            "which moves those commits into the file), or copy it with its -wal file to a "
            "place this process may write and read it there"
        )
    return StoreError(
        text + "Open it with immutable=True (SQLiteStore(path, read_only=True, "
        "immutable=True), or storage_options={'immutable': True} with mode='r') if nothing "
        "writes it while it is open; or switch it out of WAL mode once where it is writable "
        f"({delete}); or copy it, with its -wal file if it has one, to a place this process "
        "may write and read it there"
    )
