"""Reads of open files that stop only where the file ends, and what tells one file from another.

A ``read``, ``readv``, ``pread`` or ``preadv`` may return fewer bytes than asked for with
more of the file still to come: Linux returns at most ``INT_MAX & PAGE_MASK`` bytes per call
(0x7ffff000 with 4 KiB pages, 0x7fff0000 with 64 KiB pages), and some file systems (FUSE
with ``direct_io``) return less at any size. So the functions here ask one call for at most
:data:`_MOST_PER_CALL` bytes and read on:

- until a call returns nothing, while fewer than ``needed`` bytes are in (what a caller
  knows the file holds: a raw chunk of known size, a shard index, a zip entry);
- past that, a call that returns fewer bytes than it asked for met the end of the file if it
  asked for less than 1 GiB (Linux cuts no read of a regular file so short), which saves a
  small chunk read the extra call that would return nothing; a larger one reads on. A file
  system that cuts small reads too is read right only up to the ``needed`` bytes.

One call does it in the common case: the request met, or a short read taken as the end.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

__all__ = ["FileSignature", "file_signature", "path_signature", "read_bytes", "read_into"]

#: what tells one version of a file from another: (device, inode, size, mtime ns, ctime ns)
FileSignature = tuple[int, int, int, int, int]

# the most one call asks for: Linux's largest cap; also under INT_MAX, past which macOS
# refuses a readv (EINVAL), and os.read/os.pread allocate the whole request up front
_MOST_PER_CALL = 0x7FFFF000
# a call asking for this much may come back short (a lower cap) with more of the file to
# come; below _MOST_PER_CALL, so that one call of less never asks for more than that
_SHORT_IS_END = 1 << 30


def read_into(
    fd: int, buffers: Sequence[Any], offset: int | None = None, *, needed: int = 0
) -> int:
    """Fill ``buffers`` in turn from ``fd`` (at ``offset``, else from the file position)
    until they are full or the file ends; the bytes read.

    ``needed``: how many of the bytes the caller knows the file holds (see the module):
    short reads before them never end the file.

    Example:
        >>> import tempfile
        >>> fd, path = tempfile.mkstemp()
        >>> os.write(fd, b"abcdef")
        6
        >>> first, second = bytearray(4), bytearray(4)
        >>> read_into(fd, [first, second], 0, needed=6), bytes(first), bytes(second[:2])
        (6, b'abcd', b'ef')
        >>> os.close(fd); os.unlink(path)
    """
    asked = 0
    for buffer in buffers:
        asked += memoryview(buffer).nbytes
    if asked < _SHORT_IS_END:  # one call in the common case: all read, or the end met
        got = os.readv(fd, buffers) if offset is None else os.preadv(fd, buffers, offset)
        if got >= needed or not got:
            return got
        return _read_on(fd, buffers, offset, got, needed)
    return _read_on(fd, buffers, offset, 0, needed)


def _read_on(fd: int, buffers: Sequence[Any], offset: int | None, got: int, needed: int) -> int:
    """:func:`read_into` of what ``buffers`` hold past their first ``got`` bytes, read."""
    views = [view for view in (memoryview(b).cast("B") for b in buffers) if len(view)]
    _drop(views, got)
    while views:
        batch, asked = _first_bytes(views, _MOST_PER_CALL)
        n = os.readv(fd, batch) if offset is None else os.preadv(fd, batch, offset + got)
        got += n
        if not n or (n < asked and got >= needed and asked < _SHORT_IS_END):
            break  # the end of the file
        _drop(views, n)
    return got


def _first_bytes(views: list[memoryview], limit: int) -> tuple[list[memoryview], int]:
    """The leading views of ``views`` holding up to ``limit`` bytes (the last one cut), and
    how many bytes they hold."""
    batch, total = [], 0
    for view in views:
        if total + len(view) > limit:
            batch.append(view[: limit - total])
            return batch, limit
        batch.append(view)
        total += len(view)
    return batch, total


def _drop(views: list[memoryview], n: int) -> None:
    """Drop the leading ``n`` bytes of ``views``, filled: the next call starts past them."""
    while n:
        if n >= len(views[0]):
            n -= len(views.pop(0))
        else:
            views[0], n = views[0][n:], 0


def read_bytes(fd: int, size: int, offset: int | None = None, *, needed: int = 0) -> bytes:
    """Up to ``size`` bytes of ``fd`` (at ``offset``, else from the file position): fewer
    only where the file ends. ``needed``: as for :func:`read_into`.

    Example:
        >>> import tempfile
        >>> fd, path = tempfile.mkstemp()
        >>> os.write(fd, b"abcdef")
        6
        >>> read_bytes(fd, 4, 1, needed=4), read_bytes(fd, 100, 0)
        (b'bcde', b'abcdef')
        >>> os.close(fd); os.unlink(path)
    """
    parts: list[bytes] = []
    got = 0
    if size < _SHORT_IS_END:  # one call in the common case: all read, or the end met
        data = os.read(fd, size) if offset is None else os.pread(fd, size, offset)
        if len(data) >= needed or not data:
            return data
        parts, got = [data], len(data)
    while got < size:
        asked = min(size - got, _MOST_PER_CALL)
        part = os.read(fd, asked) if offset is None else os.pread(fd, asked, offset + got)
        parts.append(part)
        got += len(part)
        if not part or (len(part) < asked and got >= needed and asked < _SHORT_IS_END):
            break  # the end of the file
    return parts[0] if len(parts) == 1 else b"".join(parts)


def file_signature(stat: os.stat_result) -> FileSignature:
    """The :data:`FileSignature` of a file's ``os.stat``/``os.fstat`` result.

    A writer that replaces the file (a new inode) or rewrites it in place (a new size or
    modification time; a new change time, which no writer can set back) changes it.

    Example:
        >>> import tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "f")
        >>> open(path, "wb").write(b"abc")
        3
        >>> file_signature(os.stat(path))[2]  # the size
        3
    """
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


def path_signature(path: str) -> FileSignature | None:
    """The :data:`FileSignature` of the file now at ``path``, or None when there is none.

    Example:
        >>> path_signature("/no/such/file") is None
        True
    """
    try:
        return file_signature(os.stat(path))
    except OSError:
        return None


def is_file_at(fd: int, path: str) -> bool:
    """Whether the open file ``fd`` is the file now at ``path`` (not deleted or replaced).

    Example:
        >>> import tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "f")
        >>> fd = os.open(path, os.O_CREAT | os.O_RDWR)
        >>> is_file_at(fd, path), os.remove(path), is_file_at(fd, path), os.close(fd)
        (True, None, False, None)
    """
    try:
        here, now = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (now.st_dev, now.st_ino)
