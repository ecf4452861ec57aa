"""Open local shard files: the ones kept between reads (a process-wide, bounded, in-use-safe
LRU) and the ones a single read uses.

Row gathers touch hundreds of shards per batch; opening and closing each file every time
costs more than reading the few kilobytes wanted from it. A reader that caches shard
indexes also keeps the shard's file open: the descriptor then shows the same version as
the cached index, even if another writer replaces the file meanwhile. A read-only array's
reader checks at every read that the shard's path still names that file, unchanged
(:func:`file_signature`), and reopens it otherwise; a reader whose owner opted in to
unchecked indexes (the feature store) reads the kept version until it is reopened.

Descriptors are shared by threads (``pread`` has no file position); one in use is never
closed under its user: eviction and invalidation close it when its last user returns it.
A read holds at most :attr:`ShardFiles.limit` shard files at once (:func:`in_groups`), and
a descriptor returned while the pool is over its bound is closed, so reads of any number
of shards stay within the process's descriptor limit.

A kept descriptor holds its file's disk space after the file is deleted: deleting or
replacing a node through torchzarr closes the ones below it at once (:func:`forget_deleted`),
and a read that finds a shard's file replaced or gone closes the one it kept.
"""

from __future__ import annotations

import itertools
import os
import resource
from collections import OrderedDict
from collections.abc import Collection, Iterable, Iterator, Sequence
from typing import Any, TypeVar

from torchzarr.errors import StoreError
from torchzarr.forksafe import new_lock
from torchzarr.storage.fileio import FileSignature, file_signature
from torchzarr.storage.key_names import confined_key
from torchzarr.storage.locations import location

__all__ = [
    "OpenShards",
    "ShardFiles",
    "forget_deleted",
    "in_groups",
    "open_shards",
]

T = TypeVar("T")

# Every os.open of a shard gets a new serial: a serial names one open file, so an index read
# through it stays valid for as long as that descriptor is the one handed out.
_serials = itertools.count(1)


def _default_limit() -> int:
    """A quarter of the process's descriptor limit, 4096 at most (and at least one).

    No larger floor: under a low limit a pool of, say, 64 files would take half of it or
    more, and a read's files (up to as many again) the rest.
    """
    try:
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (OSError, ValueError):
        soft = 1024
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 16
    return max(1, min(4096, soft // 4))


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
        # path -> [fd, version, users, serial]
        self._open: OrderedDict[str, list[int]] = OrderedDict()
        # descriptors dropped while in use: fd -> users left
        self._doomed: dict[int, int] = {}
        # path -> the same with the root's symlinks resolved (what deletions name), and
        # the roots resolved so far
        self._real: dict[str, str] = {}
        self._real_roots: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self._open)

    def acquire(self, path: str, version: int) -> int:
        """A descriptor of ``path`` opened at ``version`` (an older one is reopened)."""
        return self.acquire_serial(path, version)[0]

    def acquire_serial(self, path: str, version: int, root: str = "") -> tuple[int, int]:
        """Like :meth:`acquire`, with the serial of the ``os.open`` behind the descriptor
        (equal serials: the same open file, so the same version of its contents).

        ``root``: the directory ``path`` lies in, as the reader names it (its symlinks are
        resolved once, so that :meth:`forget` finds the file under its real path too).
        """
        with self._lock:
            entry = self._open.get(path)
            if entry is not None and entry[1] == version:
                entry[2] += 1
                self._open.move_to_end(path)
                return entry[0], entry[3]
        fd = os.open(path, os.O_RDONLY)  # raises FileNotFoundError for the caller
        serial = next(_serials)
        real = self._resolved(path, root)
        with self._lock:
            entry = self._open.get(path)
            if entry is not None and entry[1] == version:  # another thread opened it too
                os.close(fd)
                entry[2] += 1
                return entry[0], entry[3]
            if entry is not None:
                self._drop(path)
            self._open[path] = [fd, version, 1, serial]
            self._real[path] = real
            self._evict()
        return fd, serial

    def release(self, path: str, fd: int) -> None:
        """Give back ``fd``, which :meth:`acquire` returned for ``path``.

        When the pool is past its bound (while reads held more than :attr:`limit`), the
        return of a descriptor's last user closes idle ones, oldest first, so the pool
        comes back within the bound.
        """
        with self._lock:
            entry = self._open.get(path)
            if entry is not None and entry[0] == fd:
                entry[2] -= 1
                if entry[2] <= 0 and len(self._open) > self.limit:
                    self._evict()
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

    def forget(self, prefix: str = "", paths: Collection[str] | None = None) -> None:
        """Close (or close once returned) every descriptor of a path below ``prefix`` (as
        opened, or with its root's symlinks resolved); with ``paths``, only those of them
        named there."""
        with self._lock:
            for path in [
                p
                for p, real in self._real.items()
                if (p.startswith(prefix) or real.startswith(prefix))
                and (paths is None or p in paths or real in paths)
            ]:
                self._drop(path)

    def _resolved(self, path: str, root: str) -> str:
        """``path`` with ``root`` (its start) resolved, each root once."""
        if not root or not path.startswith(root):
            return path
        real = self._real_roots.get(root)
        if real is None:
            if len(self._real_roots) >= 4096:
                self._real_roots.clear()
            real = self._real_roots[root] = os.path.realpath(root)
        return real + path[len(root) :]

    def _drop(self, path: str) -> None:
        self._real.pop(path, None)
        fd, _, users, _ = self._open.pop(path)
        if users > 0:
            self._doomed[fd] = self._doomed.get(fd, 0) + users
        else:
            os.close(fd)

    def _evict(self) -> None:
        """Close idle descriptors, least recently used first, down to :attr:`limit`.

        Each pass stops at the first idle entry: the oldest ones are idle as a rule (a
        read's own descriptors were acquired last), so evicting costs no scan of the pool.
        """
        while len(self._open) > self.limit:
            idle = next((path for path, entry in self._open.items() if entry[2] == 0), None)
            if idle is None:
                return
            self._drop(idle)

    def _after_fork(self) -> None:
        """In a forked child no thread uses a descriptor: count none in use."""
        for entry in self._open.values():
            entry[2] = 0
        for fd in self._doomed:
            os.close(fd)
        self._doomed.clear()
        self._evict()


#: The process's open shard files (every ShardReader that caches indexes uses it).
open_shards = OpenShards()


def forget_deleted(identity: str, path: str, keys: Iterable[str] | None = None) -> None:
    """Close the shard files kept open in this process (:data:`open_shards`) below the node
    at ``path`` of the store named ``identity``, or only those of the store's ``keys``:
    they were deleted or replaced, and a kept descriptor would hold their disk space. Only
    local directories (``file://`` identities) keep any; one in use by a read is closed
    when the read gives it back.

    Example:
        >>> forget_deleted("file:///data/g.zarr", "old_array")
        >>> forget_deleted("file:///data/g.zarr", "x", keys=["x/c/0", "x/c/1"])
    """
    if not len(open_shards) or not identity.startswith("file:///"):
        return
    where = location(identity, path)
    if keys is None:
        open_shards.forget(where[len("file://") :].rstrip("/") + "/")
        return
    root = location(identity, "")[len("file://") :].rstrip("/")
    open_shards.forget(root + "/", paths={f"{root}/{key}" for key in keys})


class ShardFiles:
    """The local shard files one read uses, each opened once: a shard's index and its inner
    chunks are then read from the same version of the file, even if another process
    replaces it meanwhile.

    With ``keep`` the descriptors come from (and go back to) the process-wide
    :data:`open_shards`, opened at ``version``; else they are opened here and closed by
    :meth:`close`. A read of more than :attr:`limit` shards takes them in groups
    (:func:`in_groups`), giving back each group's files before the next opens.

    Example:
        >>> import tempfile
        >>> root = tempfile.mkdtemp()
        >>> open(os.path.join(root, "s0"), "wb").write(b"abc")
        3
        >>> with ShardFiles(root, keep=False) as files:
        ...     fd, serial = files.open("s0")
        ...     os.pread(files.fd("s0"), 3, 0), files.open("missing")
        (b'abc', None)
    """

    def __init__(self, root: str, keep: bool, version: int = 0) -> None:
        self.root, self.keep, self.version = root, keep, version
        #: the most shard files a read holds at once: the bound of the process-wide pool
        self.limit = max(1, open_shards.limit)
        self._fds: dict[str, tuple[int, int]] = {}

    def open(self, key: str, reopen: bool = False) -> tuple[int, int] | None:
        """``(descriptor, serial)`` of shard ``key``, or None when it is not stored.

        ``reopen`` opens the file afresh rather than take one kept open (which may show an
        older version): for a shard whose index this reader has not read yet.
        """
        held = self._fds.get(key)
        if held is not None:
            return held
        path = f"{self.root}/{confined_key(key)}"  # never a file outside the root
        try:
            if self.keep:
                if reopen:
                    open_shards.discard(path)
                held = open_shards.acquire_serial(path, self.version, self.root)
            else:
                held = os.open(path, os.O_RDONLY), 0
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as err:
            raise StoreError(f"cannot open shard {key!r} in {self.root}: {err}") from err
        self._fds[key] = held
        return held

    def signature(self, key: str) -> FileSignature | None:
        """The :data:`FileSignature` of the file now at shard ``key``'s path (one
        ``os.stat``), or None when there is none or it cannot be read."""
        try:
            return file_signature(os.stat(f"{self.root}/{confined_key(key)}"))
        except OSError:
            return None

    def fd(self, key: str) -> int:
        """The descriptor :meth:`open` gave for ``key``."""
        return self._fds[key][0]

    def close(self) -> None:
        """Give back (or close) every descriptor of this read."""
        fds, self._fds = self._fds, {}
        for key, (fd, _) in fds.items():
            if self.keep:
                open_shards.release(f"{self.root}/{key}", fd)
            else:
                os.close(fd)

    def __enter__(self) -> ShardFiles:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def in_groups(items: Sequence[T], files: ShardFiles | None) -> Iterator[Sequence[T]]:
    """``items`` (one shard each) in groups of at most ``files.limit``; the files a group
    opened are given back when the caller asks for the next group. A read of any number
    of local shards then holds a bounded number of descriptors, and still reads each
    shard's index and inner chunks through one. Without ``files`` (not a local store),
    all items as one group.

    Example:
        >>> import tempfile
        >>> files = ShardFiles(tempfile.mkdtemp(), keep=False)
        >>> files.limit = 2
        >>> [list(group) for group in in_groups(range(5), files)]
        [[0, 1], [2, 3], [4]]
    """
    if files is None or len(items) <= files.limit:
        yield items
        return
    for start in range(0, len(items), files.limit):
        yield items[start : start + files.limit]
        files.close()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=open_shards._after_fork)
