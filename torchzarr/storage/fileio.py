"""Reads of open files that stop only where the file ends, and what tells one file from another.

A ``read``, ``readv``, ``pread`` or ``preadv`` may return fewer bytes than asked for with
more of the file still to come: Linux returns at most 0x7ffff000 bytes (just under 2 GiB)
per call. So the functions here read on while a call returns that many; a call that returns
fewer than it asked for (or than that cap) met the end of the file, as it does for regular
files, and saves the extra call that would return nothing (a tenth of the time of reading
a small chunk file).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

__all__ = ["FileSignature", "file_signature", "path_signature", "read_bytes", "read_into"]

#: what tells one version of a file from another: (device, inode, size, mtime ns, ctime ns)
FileSignature = tuple[int, int, int, int, int]

# the most one call reads (Linux's cap); a larger request would allocate (os.read,
# os.pread) its whole size before the file says how much it holds
_MOST_PER_CALL = 0x7FFFF000


def read_into(fd: int, buffers: Sequence[Any], offset: int | None = None) -> int:
    """Fill ``buffers`` in turn from ``fd`` (at ``offset``, else from the file position)
    until they are full or the file ends; the bytes read.

    Example:
        >>> import tempfile
        >>> fd, path = tempfile.mkstemp()
        >>> os.write(fd, b"abcdef")
        6
        >>> first, second = bytearray(4), bytearray(4)
        >>> read_into(fd, [first, second], 0), bytes(first), bytes(second[:2])
        (6, b'abcd', b'ef')
        >>> os.close(fd); os.unlink(path)
    """
    views = [view for view in (memoryview(b).cast("B") for b in buffers) if len(view)]
    got = 0
    while views:
        asked = min(sum(len(view) for view in views), _MOST_PER_CALL)
        n = os.readv(fd, views) if offset is None else os.preadv(fd, views, offset + got)
        got += n
        if n < asked:  # the end of the file
            break
        while n:  # drop the buffers filled, start the next call where this one stopped
            if n >= len(views[0]):
                n -= len(views.pop(0))
            else:
                views[0], n = views[0][n:], 0
    return got


def read_bytes(fd: int, size: int, offset: int | None = None) -> bytes:
    """Up to ``size`` bytes of ``fd`` (at ``offset``, else from the file position): fewer
    only where the file ends.

    Example:
        >>> import tempfile
        >>> fd, path = tempfile.mkstemp()
        >>> os.write(fd, b"abcdef")
        6
        >>> read_bytes(fd, 4, 1), read_bytes(fd, 100, 0)
        (b'bcde', b'abcdef')
        >>> os.close(fd); os.unlink(path)
    """
    parts: list[bytes] = []
    got = 0
    while got < size:
        ask = min(size - got, _MOST_PER_CALL)
        part = os.read(fd, ask) if offset is None else os.pread(fd, ask, offset + got)
        parts.append(part)
        got += len(part)
        if len(part) < ask:  # the end of the file
            break
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
