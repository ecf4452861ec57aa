"""The file at a SQLiteStore's path, and the ``-wal`` and ``-shm`` files SQLite keeps beside it.

SQLite finds a database's write-ahead log and its index by name (the database's path with
``-wal`` and ``-shm``), not by the file they belong to. When the database file is deleted
or replaced (``os.replace`` of a new version) while a connection has it open, SQLite's last
close leaves them in place, and the next connection to the file now at the path reads the
old file's log over it (old data, or pages of another layout). :func:`remove_sidecars`
removes those of the file gone, once this process has closed its connections to it.
"""

from __future__ import annotations

import contextlib
import os

__all__ = ["FileId", "file_at", "remove_sidecars", "sidecars_at"]

#: (device, inode) of a file
FileId = tuple[int, int]
_SUFFIXES = ("-wal", "-shm")


def file_at(path: str) -> FileId | None:
    """(device, inode) of the file at ``path`` now; None when there is none.

    Example:
        >>> import tempfile
        >>> file_at(tempfile.mkdtemp() + "/missing.db") is None
        True
    """
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_dev, found.st_ino


def sidecars_at(path: str) -> dict[str, FileId]:
    """The ``-wal`` and ``-shm`` files beside the database ``path`` now, by suffix.

    Example:
        >>> import sqlite3, tempfile
        >>> path = tempfile.mkdtemp() + "/a.db"
        >>> conn = sqlite3.connect(path, isolation_level=None)
        >>> conn.execute("PRAGMA journal_mode=WAL").fetchall()
        [('wal',)]
        >>> _ = conn.execute("CREATE TABLE t (x)")
        >>> sorted(sidecars_at(path))
        ['-shm', '-wal']
    """
    found = {suffix: file_at(path + suffix) for suffix in _SUFFIXES}
    return {suffix: at for suffix, at in found.items() if at is not None}


def remove_sidecars(path: str, recorded: dict[str, FileId]) -> None:
    """Remove the ``-wal`` and ``-shm`` beside ``path`` that are still the files
    ``recorded`` (by :func:`sidecars_at` while this process's connections to the database
    file gone had them open), never another file put there since.

    Example:
        >>> import tempfile
        >>> path = tempfile.mkdtemp() + "/a.db"
        >>> open(path + "-wal", "wb").close()
        >>> remove_sidecars(path, sidecars_at(path)); sidecars_at(path)
        {}
    """
    for suffix, was in recorded.items():
        if file_at(path + suffix) == was:
            with contextlib.suppress(OSError):
                os.remove(path + suffix)
