"""Make every read system call return at most a few bytes, as Linux does past 0x7ffff000
bytes a call (and some file systems sooner), without writing gigabytes."""

from __future__ import annotations

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


def cap_reads(monkeypatch: pytest.MonkeyPatch, limit: int = LIMIT) -> list[int]:
    """Cap ``os.read``, ``os.pread``, ``os.readv`` and ``os.preadv`` at ``limit`` bytes a
    call, as Linux caps them at 0x7ffff000; the list returned grows by one for each call cut
    short (or asking only up to the cap, as torchzarr's reads then do)."""
    monkeypatch.setattr(fileio, "_MOST_PER_CALL", limit)
    cut: list[int] = []
    read, pread, readv, preadv = os.read, os.pread, os.readv, os.preadv

    def note(asked: int) -> int:
        if asked >= limit:
            cut.append(asked)
        return min(asked, limit)

    monkeypatch.setattr(os, "read", lambda fd, n: read(fd, note(n)))
    monkeypatch.setattr(os, "pread", lambda fd, n, offset: pread(fd, note(n), offset))

    def capped_readv(fd: int, buffers: Sequence[Any]) -> int:
        note(sum(memoryview(b).nbytes for b in buffers))
        return readv(fd, _first_bytes(buffers, limit))

    def capped_preadv(fd: int, buffers: Sequence[Any], offset: int, flags: int = 0) -> int:
        note(sum(memoryview(b).nbytes for b in buffers))
        return preadv(fd, _first_bytes(buffers, limit), offset, flags)

    monkeypatch.setattr(os, "readv", capped_readv)
    monkeypatch.setattr(os, "preadv", capped_preadv)
    return cut
