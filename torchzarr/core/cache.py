"""The decoded-chunk cache: a byte-bounded LRU shared by every reader of the process."""

from __future__ import annotations

import itertools
import os
import secrets
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from torchzarr import telemetry
from torchzarr.arguments import flag, whole_number
from torchzarr.config import config
from torchzarr.core import cache_args
from torchzarr.core.cache_args import Entry as _Entry
from torchzarr.core.cache_args import where as _where
from torchzarr.core.layout_cache import CacheKey, Layout, LayoutCache
from torchzarr.core.shard_files import forget_deleted
from torchzarr.errors import ArgumentTypeError, InvalidArgumentError
from torchzarr.forksafe import new_lock
from torchzarr.storage.changes import on_keys_replaced
from torchzarr.storage.locations import location
from torchzarr.tensors import cuda_available

__all__ = [
    "ChunkCache",
    "LayoutCache",
    "default_cache",
    "invalidate_everywhere",
    "invalidate_outside_everywhere",
    "invalidate_tree_everywhere",
    "keys_replaced_everywhere",
    "register_cache",
]

_Shard = tuple[str, tuple[int, ...]]  # (location, shard coords)


def _is_inner(coords: tuple[Any, ...]) -> bool:
    """True for the (shard coords, inner coords) of a sharded array's inner chunk."""
    return bool(coords) and type(coords[0]) is tuple


def _grid_coords(coords: tuple[Any, ...]) -> tuple[int, ...]:
    """The coords in the array's chunk grid: of the shard, for an inner chunk."""
    return coords[0] if _is_inner(coords) else coords


class ChunkCache:
    """An LRU of decoded chunks bounded by ``max_bytes`` (0: keeps nothing), which counts
    the chunks' bytes, not the ~500 bytes of bookkeeping each entry also takes.

    With ``pinned=True`` (and CUDA present) chunks live in page-locked host memory, up to
    ``max_pinned_bytes`` (past that cap they are ordinary memory), and reads through the
    cache of up to ``max_pinned_bytes`` return page-locked tensors (``read(out=...)``
    fills the tensor given), which copy to the GPU with ``non_blocking=True``. Without CUDA, and in processes other than the
    one that made the cache (DataLoader workers), both stay ordinary memory.

    Sharded arrays cache inner chunks, keyed ``(shard coords, inner coords)``; invalidating
    a shard's coords drops its inner chunks.

    Example:
        >>> cache = ChunkCache(max_bytes=1 << 20)
        >>> cache.put(("mem", "a", (0,)), np.zeros(4))
        >>> cache.get(("mem", "a", (0,))).shape, cache.hits
        ((4,), 1)
    """

    def __init__(
        self, max_bytes: int = 256 << 20, *, pinned: bool = False, max_pinned_bytes: int = 64 << 20
    ) -> None:
        max_bytes = whole_number("ChunkCache max_bytes", max_bytes, 0)
        max_pinned_bytes = whole_number("ChunkCache max_pinned_bytes", max_pinned_bytes, 0)
        pinned = flag("ChunkCache pinned", pinned)  # "no" or 0 would be read as a truth value
        self._max_bytes = max_bytes
        self._pinned_asked = pinned  # what a copy in another process asks for
        self.pinned = pinned and cuda_available()
        self.max_pinned_bytes = max_pinned_bytes
        # (chunk, pinned, the layout it was decoded under) by where it lies
        self._entries: OrderedDict[_Entry, tuple[np.ndarray, bool, Layout]] = OrderedDict()
        # the inner chunks held of each shard: a write of the shard drops them all
        self._inner: dict[_Shard, set[tuple[int, ...]]] = {}
        self._nbytes = 0
        self._pinned_bytes = 0
        self._lock = new_lock()
        # bumped by every invalidation: a reader that fetched before a write finished must
        # not put what it decoded back after the write dropped it
        self._generation = 0
        self.hits = 0
        self.misses = 0
        # what names this cache in pickles: unique across processes and runs
        self._token = f"{os.getpid()}:{next(_CACHE_NUMBERS)}:{secrets.token_hex(8)}"
        self._home = os.getpid()  # pinned memory only here, never in workers (see _copy_in)
        with _named_lock:
            _named[self._token] = self  # found again when a pickle of it comes back here

    def __reduce__(self) -> tuple[Any, ...]:
        # its settings, never its chunks: pickled handles (DataLoader workers, copies) read
        # through this cache in its process, and through one cache of the same settings,
        # shared by all of them, in another
        settings = (self._max_bytes, self._pinned_asked, self.max_pinned_bytes)
        return _cache_named, (self._token, *settings)

    @property
    def nbytes(self) -> int:
        """Bytes held now."""
        return self._nbytes

    @property
    def pins_reads(self) -> bool:
        """Whether reads through this cache return pinned tensors (see the class docstring)."""
        return self.pinned and os.getpid() == self._home

    @property
    def max_bytes(self) -> int:
        """The budget: bytes this cache may hold."""
        return self._max_bytes

    def resize(self, max_bytes: int) -> None:
        """Change the budget; evict the least recently used chunks down to a lowered one.

        Example:
            >>> cache = ChunkCache(max_bytes=64)
            >>> cache.put(("mem", "a", (0,)), np.zeros(4))
            >>> cache.put(("mem", "a", (1,)), np.zeros(4))
            >>> cache.resize(32)
            >>> len(cache), cache.max_bytes
            (1, 32)
        """
        self._set_budget(whole_number("ChunkCache max_bytes", max_bytes, 0))

    def _set_budget(self, max_bytes: int) -> None:
        with self._lock:
            self._max_bytes = max_bytes
            self._evict()

    def _evict(self) -> None:
        """Drop the least recently used chunks until within budget (hold the lock)."""
        while self._nbytes > self._max_bytes and self._entries:
            self._pop(next(iter(self._entries)))

    @property
    def generation(self) -> int:
        """Take this before fetching; pass it to ``put`` as ``since``."""
        return self._generation

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: CacheKey, *, layout: Layout = None) -> np.ndarray | None:
        """The cached chunk, or None (counted as a hit or a miss).

        With a ``layout`` (see :func:`chunk_layout`), a chunk put under another one is a
        miss: it was decoded for an array since replaced, or by a handle of the old one.
        """
        where = _where(key)
        with self._lock:
            entry = self._entries.get(where)
            if entry is not None and layout is not None and entry[2] != layout:
                entry = None
            if entry is None:
                self.misses += 1
            else:
                self._entries.move_to_end(where)
                self.hits += 1
        if entry is None:
            telemetry.add("cache", cache_misses=1)
        else:
            telemetry.add("cache", cache_hits=1)
        return None if entry is None else entry[0]

    def _copy_in(self, chunk: np.ndarray) -> tuple[np.ndarray, bool]:
        room = self._pinned_bytes + chunk.nbytes <= self.max_pinned_bytes
        # pinned only in the process that made the cache: a DataLoader worker's batches
        # reach the main process through shared memory, and pinning there would start
        # CUDA in each worker
        home = os.getpid() == self._home
        if self.pinned and room and home and cuda_available():
            buf = torch.empty(chunk.nbytes, dtype=torch.uint8, pin_memory=True).numpy()
            held = buf.view(chunk.dtype).reshape(chunk.shape)
            held[...] = chunk
            return held, True
        held = np.array(chunk, copy=True)
        return held, False

    def put(
        self,
        key: CacheKey,
        chunk: np.ndarray,
        *,
        since: int | None = None,
        layout: Layout = None,
    ) -> None:
        """Keep a copy of ``chunk``, decoded under ``layout``, in place of what was held
        there; evict the least recently used to stay within budget.

        With ``since`` (the ``generation`` read before the chunk was fetched), the chunk is
        dropped instead if any write invalidated this cache in between: it may be stale.
        """
        if not isinstance(chunk, np.ndarray):
            raise ArgumentTypeError(f"a cached chunk is a numpy array, got {type(chunk)}")
        since = cache_args.since(since)
        budget = self.max_bytes
        if not budget or chunk.nbytes > budget:
            return
        held, pinned = self._copy_in(chunk)
        held.flags.writeable = False
        where = _where(key)
        with self._lock:
            if since is not None and since != self._generation:
                return
            self._pop(where)
            self._entries[where] = (held, pinned, layout)
            self._nbytes += held.nbytes
            self._pinned_bytes += held.nbytes if pinned else 0
            coords = where[1]
            if _is_inner(coords):
                self._inner.setdefault((where[0], coords[0]), set()).add(coords[1])
            self._evict()

    def _pop(self, where: _Entry) -> None:
        """Drop one entry if held (hold the lock)."""
        entry = self._entries.pop(where, None)
        if entry is None:
            return
        self._nbytes -= entry[0].nbytes
        if entry[1]:
            self._pinned_bytes -= entry[0].nbytes
        coords = where[1]
        if _is_inner(coords):
            shard = (where[0], coords[0])
            held = self._inner.get(shard)
            if held is not None:
                held.discard(coords[1])
                if not held:
                    del self._inner[shard]

    def invalidate(self, identity: str, path: str, coords: list[tuple[int, ...]]) -> None:
        """Drop the given chunks of one array (after a write); for a sharded array, the
        inner chunks of the given shards. ``identity`` is the store's (``store.identity``).

        Example:
            >>> cache = ChunkCache()
            >>> cache.put(("mem", "x", (0,)), np.zeros(2))
            >>> cache.invalidate("mem", "x", [(0,)])
            >>> len(cache)
            0
        """
        cache_args.chunk_coords(coords)
        where = cache_args.place("invalidate", identity, path)
        with self._lock:
            self._generation += 1
            for c in coords:
                self._pop((where, c))
                for inner in self._inner.pop((where, c), ()):
                    self._pop((where, (c, inner)))

    def invalidate_tree(self, identity: str, path: str) -> None:
        """Drop every chunk of the node at ``path`` and of the nodes below it (after the
        node was deleted or replaced).

        Example:
            >>> cache = ChunkCache()
            >>> cache.put(("mem", "g/x", (0,)), np.zeros(2))
            >>> cache.invalidate_tree("mem", "g")
            >>> len(cache)
            0
        """
        top = cache_args.place("invalidate_tree", identity, path)
        below = top if top.endswith("/") else top + "/"
        self._drop_where(lambda where, _: where == top or where.startswith(below))

    def invalidate_outside(self, identity: str, path: str, grid: Sequence[int]) -> None:
        """Drop the chunks of one array lying outside the chunk grid ``grid`` (after the
        array shrank: those chunks were deleted).

        Example:
            >>> cache = ChunkCache()
            >>> cache.put(("mem", "x", (0,)), np.zeros(2))
            >>> cache.put(("mem", "x", (3,)), np.zeros(2))
            >>> cache.invalidate_outside("mem", "x", (2,))
            >>> len(cache)
            1
        """
        top = cache_args.place("invalidate_outside", identity, path)
        grid = cache_args.grid_shape(grid)
        self._drop_where(
            lambda where, coords: (
                where == top
                and any(c >= g for c, g in zip(_grid_coords(coords), grid, strict=False))
            )
        )

    def _drop_where(self, doomed: Callable[[str, tuple[Any, ...]], bool]) -> None:
        with self._lock:
            self._generation += 1
            for where in [w for w in self._entries if doomed(*w)]:
                self._pop(where)

    def clear(self) -> None:
        """Drop everything and zero the counters."""
        with self._lock:
            self._generation += 1
            self._entries.clear()
            self._inner.clear()
            self._nbytes = self._pinned_bytes = 0
            self.hits = self.misses = 0

    def __repr__(self) -> str:
        return (
            f"ChunkCache({self._nbytes}/{self.max_bytes} bytes, {len(self._entries)} chunks, "
            f"hits={self.hits}, misses={self.misses}{', pinned' if self.pinned else ''})"
        )


class _SharedCache(ChunkCache):
    """The process-wide cache: its budget is ``tz.config.cache_bytes`` as set now, read at
    each use (a lowered one evicts down to it at once)."""

    def __init__(self) -> None:
        super().__init__(config.cache_bytes)

    def __reduce__(self) -> tuple[Any, ...]:
        return default_cache, ()  # the shared cache of the process it reaches

    def _follow_config(self) -> int:
        budget = config.cache_bytes
        if budget != self._max_bytes:
            self._set_budget(budget)  # validated by config
        return budget

    def resize(self, max_bytes: int) -> None:
        """Refused: the shared cache's budget is ``tz.config.cache_bytes`` (a resize would be
        undone at its next use); set that instead.

        Example:
            >>> default_cache().resize(1 << 20)  # doctest: +ELLIPSIS
            Traceback (most recent call last):
            ...
            torchzarr.errors.InvalidArgumentError: ...tz.config.cache_bytes = 1048576...
        """
        raise InvalidArgumentError(
            f"the shared cache follows tz.config.cache_bytes; set tz.config.cache_bytes = "
            f"{max_bytes} (or use tz.config.set(cache_bytes=...)) instead of resizing it"
        )

    @property
    def max_bytes(self) -> int:
        return self._follow_config()

    def get(self, key: CacheKey, *, layout: Layout = None) -> np.ndarray | None:
        self._follow_config()  # a lowered budget evicts before the lookup
        return super().get(key, layout=layout)


_default: ChunkCache | None = None
_default_lock = new_lock()
# every cache an array reads through, held weakly: a cache is freed with the last handle
# using it (pruned here when found dead, under the lock, never from a GC callback)
_all_caches: list[weakref.ref[ChunkCache]] = []


def default_cache() -> ChunkCache:
    """The process-wide cache, made on first use; its budget follows
    ``tz.config.cache_bytes`` (changes take effect at its next use; 0 turns caching off),
    so its ``resize`` is refused: set that setting instead.

    Example:
        >>> default_cache() is default_cache()
        True
    """
    global _default
    with _default_lock:
        if _default is None:
            _default = _SharedCache()
            _all_caches.append(weakref.ref(_default))  # held by _default: never dead
        return _default


_CACHE_NUMBERS = itertools.count()
_named: weakref.WeakValueDictionary[str, ChunkCache] = weakref.WeakValueDictionary()
_named_lock = new_lock()


def _cache_named(token: str, max_bytes: int, pinned: bool, max_pinned_bytes: int) -> ChunkCache:
    """The cache a pickled :class:`ChunkCache` stands for: itself in its own process (or a
    forked copy of it), else one made with its settings, shared by what else names it (its
    chunks pageable: pinned memory stays in the process that made the cache)."""
    with _named_lock:
        found = _named.get(token)
    if found is None:
        made = ChunkCache(max_bytes, pinned=pinned, max_pinned_bytes=max_pinned_bytes)
        made.pinned = False
        with _named_lock:
            del _named[made._token]
            made._token = token
            found = _named.setdefault(token, made)
    register_cache(found)  # writes in this process invalidate it
    return found


def register_cache(cache: ChunkCache) -> None:
    """Make writes in this process invalidate ``cache`` too (done for caches arrays use)."""
    with _default_lock:
        if not any(c is cache for c in _live_caches()):
            _all_caches.append(weakref.ref(cache))


def _live_caches() -> list[ChunkCache]:
    """The registered caches still alive; the dead ones are dropped (hold the lock)."""
    live, kept = [], []
    for ref in _all_caches:
        cache = ref()
        if cache is not None:
            live.append(cache)
            kept.append(ref)
    _all_caches[:] = kept
    return live


def _caches() -> list[ChunkCache]:
    with _default_lock:
        return _live_caches()


def invalidate_everywhere(identity: str, path: str, coords: list[tuple[int, ...]]) -> None:
    """Drop written chunks from every cache in use in this process."""
    for cache in _caches():
        cache.invalidate(identity, path, coords)


def invalidate_tree_everywhere(identity: str, path: str) -> None:
    """Drop the chunks of a deleted or replaced node (and its subtree) from every cache in
    use in this process, and close the shard files kept open below it.

    Example:
        >>> invalidate_tree_everywhere("memory://x@0", "group/array")
    """
    forget_deleted(identity, path)
    for cache in _caches():
        cache.invalidate_tree(identity, path)


def keys_replaced_everywhere(identity: str, path: str) -> None:
    """Drop from every cache in use in this process the chunks of the nodes at, below and
    above ``path``, after raw writes (``storage.copy_keys``, a zip truncated) replaced keys
    below it: the keys below ``x/c`` are chunks of the array ``x`` above.

    Example:
        >>> cache = ChunkCache()
        >>> register_cache(cache)
        >>> cache.put(("mem", "x", (0,)), np.zeros(2))
        >>> keys_replaced_everywhere("mem", "x/c")
        >>> len(cache)
        0
    """
    top = location(identity, path)
    below = top if top.endswith("/") else top + "/"

    def doomed(where: str, _: tuple[Any, ...]) -> bool:  # at, below or above ``top``
        return where == top or where.startswith(below) or below.startswith(where.rstrip("/") + "/")

    forget_deleted(identity, path)
    for cache in _caches():
        cache._drop_where(doomed)


on_keys_replaced(keys_replaced_everywhere)  # raw key writes (storage.copy_keys, zip "w")


def invalidate_outside_everywhere(identity: str, path: str, grid: Sequence[int]) -> None:
    """Drop an array's chunks outside the chunk grid ``grid`` from every cache in use in
    this process (after a resize deleted them).

    Example:
        >>> invalidate_outside_everywhere("memory://x@0", "array", (4, 2))
    """
    for cache in _caches():
        cache.invalidate_outside(identity, path, grid)
