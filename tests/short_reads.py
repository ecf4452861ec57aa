"""Make every read system call return at most a few bytes, as Linux does past 0x7ffff000
bytes a call (0x7fff0000 with 64 KiB pages) and some file systems (FUSE with
``direct_io``) at any size, without writing gigabytes."""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from typing import Any

import pytest

from torchzarr.storage import fileio

LIMIT = 1000


def _first_bytes(buffers: Sequence[Any], limit: int) -> list[memoryview]:
    """The leading ``limit`` bytes of ``buffers`` (views of them, in order)."""
    views, left = [], limit
    for buffer in buffers:
        view = memoryview(buffer).cast("B")[:left]
        if len(view):
            views.append(view)
        left -= len(view)
        if left == 0:
            break
    return views


def cap_reads(
    monkeypatch: pytest.MonkeyPatch, limit: int = LIMIT, *, most_per_call: int | None = LIMIT
) -> list[int]:
    """Cap ``os.read``, ``os.pread``, ``os.readv`` and ``os.preadv`` at ``limit`` bytes a
    call; the list returned grows by one for each call cut short (or asking only up to the
    cap, as torchzarr's reads then do).

    ``most_per_call``: the most that torchzarr asks of one call (0x7ffff000, Linux's cap
    with 4 KiB pages) scaled down to this, with the request past which it takes no short
    read for the end of the file (1 GiB) scaled alike, to half of it: ``limit`` below it
    plays a kernel with larger pages. None leaves both as they are, far above ``limit``:
    a file system that returns reads of any size in pieces. A ``readv`` or ``preadv`` of
    buffers that add up to more than torchzarr's most per call fails with ``EINVAL``, as
    macOS fails past ``INT_MAX``.
    """
    if most_per_call is not None:
        monkeypatch.setattr(fileio, "_MOST_PER_CALL", most_per_call)
        monkeypatch.setattr(fileio, "_SHORT_IS_END", most_per_call // 2)
    cut: list[int] = []
    read, pread, readv, preadv = os.read, os.pread, os.readv, os.preadv

    def note(asked: int) -> int:
        if asked >= limit:
            cut.append(asked)
        return min(asked, limit)

    def vector(buffers: Sequence[Any]) -> list[memoryview]:
        asked = sum(memoryview(b).nbytes for b in buffers)
        if asked > fileio._MOST_PER_CALL:
            raise OSError(errno.EINVAL, f"{asked} bytes in one vectored read")
        note(asked)
        return _first_bytes(buffers, limit)

    monkeypatch.setattr(os, "read", lambda fd, n: read(fd, note(n)))
    monkeypatch.setattr(os, "pread", lambda fd, n, offset: pread(fd, note(n), offset))
    monkeypatch.setattr(os, "readv", lambda fd, buffers: readv(fd, vector(buffers)))
    monkeypatch.setattr(
        os,
        "preadv",
        lambda fd, buffers, offset, flags=0: preadv(fd, vector(buffers), offset, flags),
    )
    return cut
