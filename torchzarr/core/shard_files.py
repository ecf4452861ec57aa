"""Open local shard files kept between reads: one process-wide, bounded, in-use-safe LRU.

Row gathers touch hundreds of shards per batch; opening and closing each file every time
costs more than reading the few kilobytes wanted from it. A reader that caches shard
indexes (so it already accepts seeing the version of a shard it first read, until a write
in this process or a reopen) also keeps the shard's file open: the descriptor then shows
the same version as the cached index, even if another process replaces the file meanwhile.

Descriptors are shared by threads (``pread`` has no file position); one in use is never
closed under its user: eviction and invalidation close it when its last user returns it.
"""

from __future__ import annotations

import os
import resource
from collections import OrderedDict

from torchzarr.forksafe import new_lock

__all__ = ["OpenShards", "open_shards"]


def _default_limit() -> int:
    """A quarter of the process's descriptor limit, between 64 and 4096."""
    try:
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (OSError, ValueError):
        soft = 1024
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 16
    return max(64, min(4096, soft // 4))


class OpenShards:
    """Descriptors of shard files by path and version, least recently used closed first.

    Example:
        >>> import tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "shard")
        >>> open(path, "wb").write(b"abc")
        3
        >>> files = OpenShards(limit=2)
        >>> fd = files.acquire(path, version=0)
        >>> os.pread(fd, 2, 1)
        b'bc'
        >>> files.release(path, fd)
        >>> files.acquire(path, version=0) == fd  # still open: no second open
        True
        >>> files.release(path, fd)
    """

    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit if limit is not None else _default_limit()
        self._lock = new_lock()
        # path -> [fd, version, users]
        self._open: OrderedDict[str, list[int]] = OrderedDict()
        # descriptors dropped while in use: fd -> users left
        self._doomed: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._open)

    def acquire(self, path: str, version: int) -> int:
        """A descriptor of ``path`` opened at ``version`` (an older one is reopened)."""
        with self._lock:
            entry = self._open.get(path)
            if entry is not None and entry[1] == version:
                entry[2] += 1
                self._open.move_to_end(path)
                return entry[0]
        fd = os.open(path, os.O_RDONLY)  # raises FileNotFoundError for the caller
        with self._lock:
            entry = self._open.get(path)
            if entry is not None and entry[1] == version:  # another thread opened it too
                os.close(fd)
                entry[2] += 1
                return entry[0]
            if entry is not None:
                self._drop(path)
            self._open[path] = [fd, version, 1]
            self._evict()
        return fd

    def release(self, path: str, fd: int) -> None:
        """Give back ``fd``, which :meth:`acquire` returned for ``path``."""
        with self._lock:
            entry = self._open.get(path)
            if entry is not None and entry[0] == fd:
                entry[2] -= 1
            elif fd in self._doomed:  # dropped while in use: the last user closes it
                self._doomed[fd] -= 1
                if self._doomed[fd] <= 0:
                    del self._doomed[fd]
                    os.close(fd)

    def discard(self, path: str) -> None:
        """Close (or close once returned) the descriptor kept for exactly ``path``."""
        with self._lock:
            if path in self._open:
                self._drop(path)

    def forget(self, prefix: str = "") -> None:
        """Close (or close once returned) every descriptor of a path below ``prefix``."""
        with self._lock:
            for path in [p for p in self._open if p.startswith(prefix)]:
                self._drop(path)

    def _drop(self, path: str) -> None:
        fd, _, users = self._open.pop(path)
        if users > 0:
            self._doomed[fd] = self._doomed.get(fd, 0) + users
        else:
            os.close(fd)

    def _evict(self) -> None:
        if len(self._open) <= self.limit:
            return
        for path in list(self._open):
            if len(self._open) <= self.limit:
                return
            if self._open[path][2] == 0:
                self._drop(path)

    def _after_fork(self) -> None:
        """In a forked child no thread uses a descriptor: count none in use."""
        for entry in self._open.values():
            entry[2] = 0
        for fd in self._doomed:
            os.close(fd)
        self._doomed.clear()


#: The process's open shard files (every ShardReader that caches indexes uses it).
open_shards = OpenShards()

if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=open_shards._after_fork)
