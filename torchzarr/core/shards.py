"""Partial reads of sharded arrays: a shard's index first, then only the inner chunks needed."""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from typing import Any

import numpy as np

from torchzarr.codecs.sharding import ShardIndex, ShardingCodec
from torchzarr.errors import ChunkDecodeError
from torchzarr.storage.base import ByteRange

__all__ = ["ShardReader", "coalesce", "sharding_codec"]

#: byte ranges closer than this are fetched as one request
COALESCE_GAP = 1 << 16
_INDEX_CACHE_ENTRIES = 4096

# Writes to sharded arrays per store identity in this process: a reader drops its cached
# indexes when the count moved, so a write through any Array is seen by every reader, and a
# read that overlapped a write does not cache the index it fetched before the write.
_shard_writes: dict[str, int] = {}
_shard_writes_lock = threading.Lock()


def _writes_to(identity: str) -> int:
    with _shard_writes_lock:
        return _shard_writes.get(identity, 0)


def sharding_codec(pipeline: Any) -> ShardingCodec | None:
    """The (evolved) sharding codec of a v3 pipeline when it is the whole serialisation."""
    codec = getattr(pipeline, "array_bytes", None)
    if isinstance(codec, ShardingCodec) and not pipeline.array_array and not pipeline.bytes_bytes:
        return codec
    return None


def coalesce(ranges: list[tuple[int, int]], gap: int = COALESCE_GAP) -> list[tuple[int, int]]:
    """Merge ``(offset, nbytes)`` ranges whose gaps are at most ``gap`` bytes.

    Example:
        >>> coalesce([(0, 10), (12, 5), (1000, 4)], gap=8)
        [(0, 17), (1000, 4)]
    """
    merged: list[tuple[int, int]] = []
    for start, size in sorted(ranges):
        if merged and start <= merged[-1][0] + merged[-1][1] + gap:
            first, length = merged[-1]
            merged[-1] = (first, max(length, start + size - first))
        else:
            merged.append((start, size))
    return merged


def _touched(
    selection: tuple[Any, ...], inner: tuple[int, ...], shard: tuple[int, ...]
) -> list[tuple[int, ...]]:
    """Inner chunks a chunk selection reaches (a superset is fine, a subset is not)."""
    arrays = [s for s in selection if isinstance(s, np.ndarray) and s.ndim == 1]
    if len(arrays) >= 2 and len(arrays) == len(selection):  # pointwise (vindex)
        coords = np.stack([a // k for a, k in zip(selection, inner, strict=True)], axis=1)
        return [tuple(int(v) for v in row) for row in np.unique(coords, axis=0)]
    per_axis: list[list[int]] = []
    for item, k, extent in zip(selection, inner, shard, strict=True):
        if isinstance(item, slice):
            picks = range(*item.indices(extent))
            if not picks:
                return []
            if picks.step > k:
                per_axis.append(sorted({i // k for i in picks}))
            else:
                per_axis.append(list(range(picks[0] // k, picks[-1] // k + 1)))
        elif isinstance(item, np.ndarray):
            per_axis.append(np.unique(item.reshape(-1) // k).tolist())
        else:
            per_axis.append([int(item) // k])
    return [tuple(c) for c in itertools.product(*per_axis)]


class ShardReader:
    """Reads parts of shards: index (cached when the store is read-only), then byte ranges."""

    def __init__(self, source: Any, codec: ShardingCodec) -> None:
        self.source = source
        self.codec = codec
        self.spec = source.pipeline.spec
        self.inner = codec.inner_pipeline(self.spec)
        self.inner_shape = codec.chunk_shape
        self.index_nbytes = codec.index_nbytes(self.spec)
        self._cache: OrderedDict[str, ShardIndex] | None = (
            OrderedDict() if source.store.read_only else None
        )
        self._lock = threading.Lock()
        self._identity = source.store.identity
        self._writes_seen = _writes_to(self._identity)

    def forget(self, keys: list[str]) -> None:
        """Tell every reader in the process that these shards were rewritten."""
        with _shard_writes_lock:
            _shard_writes[self._identity] = _shard_writes.get(self._identity, 0) + 1
        if self._cache is not None:
            with self._lock:
                for key in keys:
                    self._cache.pop(key, None)

    def indexes(self, keys: list[str]) -> dict[str, ShardIndex | None]:
        """The index of each shard; None for a shard that is not stored."""
        found: dict[str, ShardIndex | None] = {}
        missing = []
        writes = _writes_to(self._identity)
        with self._lock:
            if self._cache is not None and writes != self._writes_seen:
                self._cache.clear()
                self._writes_seen = writes
            for key in keys:
                if self._cache is not None and key in self._cache:
                    self._cache.move_to_end(key)
                    found[key] = self._cache[key]
                else:
                    missing.append(key)
        if not missing:
            return found
        n = self.index_nbytes
        where = ByteRange(-n) if self.codec.index_location == "end" else ByteRange(0, n)
        raws = self.source.store.get_ranges([(key, where) for key in missing])
        for key, raw in zip(missing, raws, strict=True):
            if raw is None:
                found[key] = None
                continue
            if len(raw) != n:
                raise ChunkDecodeError(
                    f"shard {key!r} is {len(raw)} bytes, shorter than its {n}-byte index"
                )
            index = self.codec.decode_index(raw, self.spec, key)
            found[key] = index
            if self._cache is not None and writes == _writes_to(self._identity):
                with self._lock:
                    self._cache[key] = index
                    while len(self._cache) > _INDEX_CACHE_ENTRIES:
                        self._cache.popitem(last=False)
        return found

    def read(self, projections: list[Any], out: np.ndarray, run_parallel: Any) -> None:
        """Fill ``out`` for projections that each cover part of one shard."""
        keys = [self.source.key(p.chunk_coords) for p in projections]
        indexes = self.indexes(keys)
        plans: list[tuple[Any, str, np.ndarray, list[tuple[tuple[int, ...], int, int]]]] = []
        requests: list[tuple[str, ByteRange]] = []
        spans: dict[str, list[tuple[int, int]]] = {}
        fill = self.spec.fill_value
        for p, key in zip(projections, keys, strict=True):
            index = indexes[key]
            if index is None:
                out[p.out_selection] = fill
                continue
            scratch = np.empty(self.spec.shape, dtype=self.spec.dtype)
            wanted = []
            for coords in _touched(p.chunk_selection, self.inner_shape, self.spec.shape):
                region = self._region(coords)
                stored = index.get(coords)
                if stored is None:
                    scratch[region] = fill
                else:
                    wanted.append((coords, *stored))
            plans.append((p, key, scratch, wanted))
            merged = coalesce([(off, size) for _, off, size in wanted])
            spans[key] = merged
            requests.extend((key, ByteRange(off, size)) for off, size in merged)
        blobs = self.source.store.get_ranges(requests) if requests else []
        fetched: dict[tuple[str, int], bytes] = {}
        for (key, rng), blob in zip(requests, blobs, strict=True):
            if blob is None:
                raise ChunkDecodeError(f"shard {key!r} vanished while it was being read")
            fetched[(key, rng.start)] = blob
        tasks = []
        for _p, key, scratch, wanted in plans:
            for coords, off, size in wanted:
                start = max(s for s, _ in spans[key] if s <= off)
                blob = fetched[(key, start)]
                piece = memoryview(blob)[off - start : off - start + size]
                if len(piece) != size:
                    raise ChunkDecodeError(f"inner chunk {coords} of shard {key!r} is truncated")
                tasks.append((key, coords, piece, scratch))

        def decode(task: tuple[str, tuple[int, ...], memoryview, np.ndarray]) -> None:
            key, coords, piece, scratch = task
            target = scratch[self._region(coords)]
            if target.flags.c_contiguous:
                self.inner.decode(piece, out=target, key=f"{key}[{coords}]")
            else:
                target[...] = self.inner.decode(piece, key=f"{key}[{coords}]")

        run_parallel(decode, tasks, cost=lambda _: self.inner.spec.nbytes)
        for p, _key, scratch, _wanted in plans:
            out[p.out_selection] = scratch[p.chunk_selection]

    def _region(self, coords: tuple[int, ...]) -> tuple[slice, ...]:
        return tuple(
            slice(c * k, (c + 1) * k) for c, k in zip(coords, self.inner_shape, strict=True)
        )
