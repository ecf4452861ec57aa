"""The size of the row SQLite makes of a key and a value, checked against its length limit.

SQLite refuses a row (its record: a header, the key's UTF-8 and the value) longer than its
``SQLITE_LIMIT_LENGTH``, by default 1,000,000,000 bytes, with "string or blob too big",
which names no row. :func:`check_row_sizes` refuses such a row before a write, naming its key.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from torchzarr.errors import StoreError
from torchzarr.storage.base import Buffer

__all__ = ["check_row_sizes", "row_bytes"]


def check_row_sizes(
    store: object, conn: sqlite3.Connection, rows: Sequence[tuple[str, Buffer]]
) -> None:
    """Raise a ``StoreError`` naming the first key whose row is over the connection's limit.

    Example:
        >>> conn = sqlite3.connect(":memory:")
        >>> _ = conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 1000)
        >>> check_row_sizes("SQLiteStore('x.db')", conn, [("a", b"1"), ("b", bytes(996))])
        Traceback (most recent call last):
        ...
        torchzarr.errors.StoreError: cannot write 'b' in SQLiteStore('x.db'): its value of 996 bytes makes a row of 1001 bytes with its key, over SQLite's limit of 1000 bytes per row (SQLITE_MAX_LENGTH; use smaller chunks or shards, or another store)
    """
    most = conn.getlimit(sqlite3.SQLITE_LIMIT_LENGTH)
    for key, value in rows:
        size = row_bytes(len(key.encode()), len(value))
        if size > most:
            raise StoreError(
                f"cannot write {key!r} in {store}: its value of {len(value)} bytes makes a row "
                f"of {size} bytes with its key, over SQLite's limit of {most} bytes per row "
                "(SQLITE_MAX_LENGTH; use smaller chunks or shards, or another store)"
            )


def row_bytes(key_bytes: int, value_bytes: int) -> int:
    """The size of the record of a row of a key and a value: a header (its own size, then
    each column's serial type, as varints), the key's UTF-8 and the value.

    Example:
        >>> row_bytes(1, 995), row_bytes(100, 895)
        (1000, 1000)
    """
    types = _varint_bytes(13 + 2 * key_bytes) + _varint_bytes(12 + 2 * value_bytes)
    return _varint_bytes(types + 1) + types + key_bytes + value_bytes


def _varint_bytes(n: int) -> int:
    """Bytes of SQLite's varint of ``n``: 7 bits a byte, and 8 in a ninth."""
    return 9 if n >= 1 << 56 else max(1, -(-n.bit_length() // 7))
