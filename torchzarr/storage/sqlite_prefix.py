"""The SQL that selects the keys under a prefix, for the database's text encoding.

SQLite compares TEXT byte by byte in the database's encoding. In UTF-8 that is code-point
order, so ``key >= prefix AND key < bound`` selects exactly the keys starting with
``prefix`` (and the primary-key index finds them). In UTF-16 it is not: in UTF-16LE
``'aЯ'`` (``61 00 2F 04``) sorts between ``'a/'`` (``61 00 2F 00``) and ``'a0'``. So the
range here is one valid in the database's byte order, and an exact ``substr`` test keeps
only the keys that start with the prefix, whatever the encoding. A UTF-16 database stores
U+FFFE and U+FFFF as U+FFFD, so keys holding them are refused there (:func:`refuse_in_utf16`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any

from torchzarr.errors import InvalidKeyError

__all__ = ["prefix_bound", "refuse_in_utf16", "under_prefix", "utf16_database"]

_CODECS = {"utf-8": "utf-8", "utf-16le": "utf-16-le", "utf-16be": "utf-16-be"}


def under_prefix(
    conn: sqlite3.Connection, statement: str, prefix: str
) -> tuple[str, tuple[Any, ...]]:
    """``statement`` on table ``zarr`` restricted to the keys starting with ``prefix``,
    and its parameters: an index range valid in ``conn``'s text encoding, and an exact test.

    Example:
        >>> conn = sqlite3.connect(":memory:")
        >>> under_prefix(conn, "DELETE FROM zarr", "a/")
        ('DELETE FROM zarr WHERE key >= ? AND key < ?', ('a/', 'a0'))
        >>> under_prefix(conn, "SELECT key FROM zarr", "")
        ('SELECT key FROM zarr', ())
    """
    if not prefix:
        return statement, ()
    encoding = str(conn.execute("PRAGMA encoding").fetchone()[0]).lower()
    codec = _CODECS.get(encoding, "utf-8")
    bound = prefix_bound(prefix, codec)
    if bound is not None and codec == "utf-8":  # the range is exact: no test per row
        return f"{statement} WHERE key >= ? AND key < ?", (prefix, bound)
    exact = (len(prefix), prefix)  # substr counts characters (code points), as len() does
    if bound is None:
        return f"{statement} WHERE key >= ? AND substr(key, 1, ?) = ?", (prefix, *exact)
    return f"{statement} WHERE key >= ? AND key < ? AND substr(key, 1, ?) = ?", (
        prefix,
        bound,
        *exact,
    )


def prefix_bound(prefix: str, codec: str = "utf-8") -> str | None:
    """A string whose encoding in ``codec`` sorts (byte-wise) above that of every string
    starting with ``prefix``; the smallest one in UTF-8. None when none is found cheaply.

    Example:
        >>> prefix_bound("a/"), prefix_bound("a", "utf-16-le"), prefix_bound("a", "utf-16-be")
        ('a0', 'š', 'b')
        >>> prefix_bound("\\U0010ffff") is None
        True
    """
    if not prefix:
        return None
    if codec == "utf-8":  # UTF-8 sorts as code points: the next code point bounds it
        last = ord(prefix[-1]) + 1
        if 0xD800 <= last <= 0xDFFF:
            last = 0xE000  # surrogates are not valid UTF-8
        return None if last > 0x10FFFF else prefix[:-1] + chr(last)
    # UTF-16: the encoding's bytes with the last one that can grow grown by one, padded to
    # whole code units. Where that does not decode (a lone surrogate), or holds U+FFFE or
    # U+FFFF (which SQLite stores as U+FFFD: an empty range), the bound of a shorter
    # prefix, which bounds every string starting with this one too
    while prefix:
        data = prefix.encode(codec).rstrip(b"\xff")
        if data:
            grown = data[:-1] + bytes([data[-1] + 1])
            grown += b"\x00" * (len(grown) % 2)
            try:
                bound = grown.decode(codec)
            except UnicodeDecodeError:
                bound = ""
            if bound and "\ufffe" not in bound and "\uffff" not in bound:
                return bound
        prefix = prefix[:-1]
    return None


def utf16_database(conn: sqlite3.Connection) -> bool:
    """Whether ``conn``'s database stores text as UTF-16 (``PRAGMA encoding``).

    Example:
        >>> utf16_database(sqlite3.connect(":memory:"))
        False
    """
    return str(conn.execute("PRAGMA encoding").fetchone()[0]).lower().startswith("utf-16")


def refuse_in_utf16(names: Iterable[str], where: object, kind: str = "key") -> None:
    """Raise :class:`InvalidKeyError` naming the first of ``names`` (keys, or a prefix) that
    holds U+FFFE or U+FFFF, which SQLite converts to U+FFFD when it stores text as UTF-16:
    such a key would be stored (and found) as another one.

    Example:
        >>> refuse_in_utf16(["a/zarr.json", "b\ufffd"], "SQLiteStore('u16.db')")
        >>> refuse_in_utf16(["a/\uffff"], "SQLiteStore('u16.db')")
        Traceback (most recent call last):
        ...
        torchzarr.errors.InvalidKeyError: key 'a/\uffff' cannot be used in SQLiteStore('u16.db'), a UTF-16 database: SQLite stores U+FFFE and U+FFFF as U+FFFD there, so it would name another key
    """
    for name in names:
        if "\ufffe" in name or "\uffff" in name:
            raise InvalidKeyError(
                f"{kind} {name!r} cannot be used in {where}, a UTF-16 database: SQLite "
                "stores U+FFFE and U+FFFF as U+FFFD there, so it would name another key"
            )
