"""Writing new files: past the page cache (``O_DIRECT``) with a buffered fallback, early writeback.

A large file written through the page cache first lands in memory: on a host where that
memory is cold (just handed back to a hypervisor, or taken from other caches) filling it
can cost more than the disk write itself, and a checkpoint's bytes then evict the data a
training job reads. ``O_DIRECT`` sends the bytes from the buffer straight to the device.
It needs buffer addresses, file offsets and lengths aligned to the device's block size,
so the bytes go through a page-aligned per-thread bounce buffer (unless the source is
already aligned), the tail is padded to a whole block and the file truncated back to its
length. Where the file system refuses ``O_DIRECT`` (tmpfs on older kernels, some network
file systems, macOS) the file is written the usual way.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import mmap
import os
import threading
from typing import Any

import numpy as np

from torchzarr.storage.base import Buffer
from torchzarr.storage.buffers import flat

__all__ = ["DIRECT_MIN_BYTES", "open_new", "start_writeback", "write_new"]

#: Alignment of addresses, offsets and lengths: a page, a multiple of any block size in use.
ALIGN = 4096
#: Values below this size are written buffered: a small direct write waits on the device.
DIRECT_MIN_BYTES = 1 << 20
_BOUNCE_BYTES = 8 << 20
_DIRECT_FLAG = getattr(os, "O_DIRECT", 0)
_local = threading.local()


def _bounce() -> memoryview:
    view = getattr(_local, "bounce", None)
    if view is None:
        view = _local.bounce = memoryview(mmap.mmap(-1, _BOUNCE_BYTES))
    return view


def open_new(path: str, *, direct: bool) -> tuple[int, bool]:
    """Create ``path`` (it must not exist) for writing: ``(fd, whether O_DIRECT is on)``.

    Example:
        >>> import os, tempfile
        >>> fd, direct = open_new(os.path.join(tempfile.mkdtemp(), "f"), direct=False)
        >>> direct
        False
        >>> os.close(fd)
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    if direct and _DIRECT_FLAG:
        try:
            return os.open(path, flags | _DIRECT_FLAG, 0o666), True
        except OSError as err:
            if err.errno != errno.EINVAL:
                raise
            # The file system refuses O_DIRECT; Linux creates the file before it checks.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
    return os.open(path, flags, 0o666), False


def _write_buffered(fd: int, view: memoryview) -> None:
    while view:
        view = view[os.write(fd, view) :]


def _write_direct(fd: int, view: memoryview) -> None:
    """Write ``view`` at offset 0 of the empty file ``fd`` opened with O_DIRECT."""
    size = len(view)
    start = 0
    if size and np.frombuffer(view, np.uint8).ctypes.data % ALIGN == 0:
        body = size - size % ALIGN  # aligned source: its whole blocks go out as they are
        while start < body:
            written = os.write(fd, view[start : min(body, start + (64 << 20))])
            if written % ALIGN:
                raise OSError(errno.EINVAL, "short direct write")
            start += written
    bounce = _bounce()
    while start < size:
        count = min(len(bounce), size - start)
        bounce[:count] = view[start : start + count]
        padded = -(-count // ALIGN) * ALIGN
        bounce[count:padded] = bytes(padded - count)
        if os.write(fd, bounce[:padded]) != padded:
            raise OSError(errno.EINVAL, "short direct write")
        start += count
    if os.fstat(fd).st_size != size:
        os.ftruncate(fd, size)  # the tail went out padded to a whole block


def write_new(fd: int, value: Buffer, *, direct: bool) -> None:
    """Write all of ``value`` into the new, empty file ``fd`` (from :func:`open_new`).

    With ``direct`` (the file was opened with ``O_DIRECT``) the bytes go past the page
    cache; if the device refuses the alignment, the file is rewritten the usual way.
    Durability still needs an ``fsync`` (the device's cache and the file's size).

    Example:
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "f")
        >>> fd, direct = open_new(path, direct=True)
        >>> write_new(fd, b"x" * 5000, direct=direct)
        >>> os.close(fd)
        >>> os.path.getsize(path)
        5000
    """
    view = memoryview(flat(memoryview(value)))  # bytes in C order, whatever the buffer
    if direct and len(view) >= DIRECT_MIN_BYTES:
        try:
            _write_direct(fd, view)
            return
        except OSError as err:
            if err.errno != errno.EINVAL:
                raise
            os.ftruncate(fd, 0)  # start over, through the page cache
            os.lseek(fd, 0, os.SEEK_SET)
    if direct:
        import fcntl  # POSIX only, as O_DIRECT is

        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~_DIRECT_FLAG)
    _write_buffered(fd, view)


_SYNC_FILE_RANGE_WRITE = 2  # Linux


@functools.cache
def _sync_file_range() -> Any:
    try:
        call = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None  # not Linux
    call.argtypes = [ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint]
    call.restype = ctypes.c_int
    return call


def start_writeback(fd: int) -> None:
    """Start writing ``fd``'s dirty pages to disk now, without waiting for it (Linux).

    A later ``fsync`` then finds most of the file already on its way: writers that stage
    many files and flush them together (``LocalStore.set_many``) overlap the disk with the
    work that produces the next files. Elsewhere, or where the file system refuses, nothing
    happens.

    Example:
        >>> import os, tempfile
        >>> fd, _ = open_new(os.path.join(tempfile.mkdtemp(), "f"), direct=False)
        >>> write_new(fd, b"abc", direct=False)
        >>> start_writeback(fd)
        >>> os.close(fd)
    """
    call = _sync_file_range()
    if call is not None:
        call(fd, 0, 0, _SYNC_FILE_RANGE_WRITE)  # a hint: its errors change nothing
