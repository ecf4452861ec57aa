"""Partial reads of sharded arrays: a shard's index first, then only the inner chunks needed."""

from __future__ import annotations

import bisect
import itertools
import os
import threading
from collections import OrderedDict
from typing import Any

import numpy as np

from torchzarr.codecs import fast_decode
from torchzarr.codecs.pipeline import decode_error
from torchzarr.codecs.sharding import EMPTY, ShardIndex, ShardingCodec
from torchzarr.config import config
from torchzarr.core.fastpath import (
    is_raw,
    local_root,
    needs_swap,
    read_buffer,
    scratch_buffer,
    zstd_codec,
)
from torchzarr.core.shard_files import open_shards
from torchzarr.errors import ChunkDecodeError
from torchzarr.storage.base import ByteRange

__all__ = ["ShardReader", "coalesce", "sharding_codec"]

#: byte ranges closer than this are fetched as one request
COALESCE_GAP = 1 << 16
_INDEX_CACHE_ENTRIES = 4096
#: raw (uncompressed) local pieces up to this many bytes are read on the calling thread
_INLINE_RAW_BYTES = 8 << 20

# Writes to sharded arrays per store identity in this process: a reader drops its cached
# indexes when the count moved, so a write through any Array is seen by every reader, and a
# read that overlapped a write does not cache the index it fetched before the write.
_shard_writes: dict[str, int] = {}
_shard_writes_lock = threading.Lock()


def _writes_to(identity: str) -> int:
    with _shard_writes_lock:
        return _shard_writes.get(identity, 0)


# one inner chunk to fetch: (shard key, offset, nbytes, target view, inner coords)
_Piece = tuple[str, int, int, np.ndarray, tuple[int, ...]]


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
        # inner chunks of whole rows (every axis but the first spans the shard): row gathers
        self._row_chunks = bool(self.spec.shape) and (
            tuple(self.inner_shape[1:]) == tuple(self.spec.shape[1:])
        )
        self._raw = is_raw(self.inner) and not needs_swap(self.inner)
        self._zstd = zstd_codec(self.inner)  # inner chunks of one zstd frame: the lean decode

    def keep_indexes(self) -> None:
        """Cache shard indexes although the store is writable.

        Safe against writes made in this process (every write drops the cached indexes);
        writes by other processes are seen once the caller opens the array afresh.

        Example:
            >>> reader.keep_indexes()  # doctest: +SKIP
        """
        with self._lock:
            if self._cache is None:
                self._cache = OrderedDict()

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
        root = local_root(self.source.store) if self._cache is not None else None
        if root is not None:  # a kept file may be an older version than this index
            for key in missing:
                open_shards.discard(f"{root}/{key}")
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
        """Fill ``out`` for projections that each cover part of one shard.

        Selections of whole rows (an index array or slice on axis 0, slices elsewhere, inner
        chunks spanning every axis but the first) are planned with numpy and decoded into a
        compact buffer of just the touched inner chunks; others decode into a shard-sized
        scratch. Local files are read with one descriptor per shard and ``preadv`` straight
        into the buffer when the inner chunks are raw bytes.
        """
        keys = [self.source.key(p.chunk_coords) for p in projections]
        indexes = self.indexes(keys)
        pieces: list[_Piece] = []
        finish: list[tuple[Any, np.ndarray, Any]] = []
        for p, key in zip(projections, keys, strict=True):
            index = indexes[key]
            if index is None:
                out[p.out_selection] = self.spec.fill_value
                continue
            rows = self._rows(p.chunk_selection)
            if rows is None:
                finish.append(self._plan_region(p, key, index, pieces))
            else:
                finish.append(self._plan_rows(p, key, index, rows, pieces))
        self._fetch(pieces, run_parallel)
        for p, source, selection in finish:
            out[p.out_selection] = source[selection]

    def gather_rows(self, rows: np.ndarray, out: np.ndarray, run_parallel: Any) -> bool:
        """Fill ``out[i]`` with row ``rows[i]`` of the whole array (int64, any order, repeats).

        The plan is vectorised over all shards at once: only the touched inner chunks are
        fetched (with cached shard indexes), into one compact buffer, then one ``take``
        lays the rows out. Returns False, doing nothing, when shards or inner chunks do not
        span every axis but the first (the caller then reads through the engine).

        Example:
            >>> reader.gather_rows(np.array([3, 70]), out, run_parallel)  # doctest: +SKIP
            True
        """
        shape = tuple(self.source.metadata.shape)
        if not self._row_chunks or tuple(self.spec.shape[1:]) != shape[1:]:
            return False
        if rows.size and (rows.min() < 0 or rows.max() >= shape[0]):
            raise IndexError(f"rows {rows.min()}..{rows.max()} outside 0..{shape[0] - 1}")
        step, per_shard = self.inner_shape[0], self.spec.shape[0] // self.inner_shape[0]
        inner = rows // step
        touched = np.unique(inner)
        shards, first = np.unique(touched // per_shard, return_index=True)
        tail = (0,) * (len(shape) - 1)
        keys = [self.source.key((s, *tail)) for s in shards.tolist()]
        indexes = self.indexes(keys)
        buf = np.empty((touched.size, *self.inner_shape), dtype=self.spec.dtype)
        local = touched % per_shard
        bounds = [*first.tolist(), touched.size]
        empty = int(EMPTY)
        pieces: list[_Piece] = []
        fill = self.spec.fill_value
        for k, key in enumerate(keys):
            lo, hi = bounds[k], bounds[k + 1]
            index = indexes[key]
            if index is None:
                buf[lo:hi] = fill
                continue
            entries = index.entries.reshape(-1, 2)[local[lo:hi]].tolist()
            for j, (off, size) in enumerate(entries, lo):
                if off == empty and size == empty:
                    buf[j] = fill
                else:
                    pieces.append((key, off, size, buf[j], (int(local[j]), *tail)))
        self._fetch(pieces, run_parallel)
        flat = buf.reshape(-1, *self.inner_shape[1:])
        position = np.searchsorted(touched, inner) * step + rows % step
        if out.flags.c_contiguous and out.dtype == flat.dtype:
            np.take(flat, position, axis=0, out=out)
        else:
            out[...] = flat[position]
        return True

    def _rows(self, selection: tuple[Any, ...]) -> np.ndarray | None:
        """The rows of a selection of whole inner-chunk rows, else None."""
        if not self._row_chunks or not selection:
            return None
        first, rest = selection[0], selection[1:]
        if not all(isinstance(s, slice) for s in rest):
            return None
        if isinstance(first, slice):
            return np.arange(*first.indices(self.spec.shape[0]), dtype=np.int64)
        if isinstance(first, np.ndarray) and first.ndim == 1 and first.dtype.kind in "iu":
            return first.astype(np.int64, copy=False)
        return None

    def _plan_rows(
        self, p: Any, key: str, index: ShardIndex, rows: np.ndarray, pieces: list[_Piece]
    ) -> tuple[Any, np.ndarray, Any]:
        step = self.inner_shape[0]
        inner = rows // step
        touched = np.unique(inner)
        entries = index.entries.reshape(-1, 2)[touched]
        buf = np.empty((touched.size, *self.inner_shape), dtype=self.spec.dtype)
        absent = (entries[:, 0] == EMPTY) & (entries[:, 1] == EMPTY)
        if absent.any():
            buf[absent] = self.spec.fill_value
        tail = (0,) * (len(self.inner_shape) - 1)
        present = np.flatnonzero(~absent)
        for j, c, (off, size) in zip(
            present.tolist(), touched[present].tolist(), entries[present].tolist(), strict=True
        ):
            pieces.append((key, off, size, buf[j], (c, *tail)))
        flat = buf.reshape(-1, *self.inner_shape[1:])
        position = np.searchsorted(touched, inner) * step + rows % step
        return p, flat, (position, *p.chunk_selection[1:])

    def _plan_region(
        self, p: Any, key: str, index: ShardIndex, pieces: list[_Piece]
    ) -> tuple[Any, np.ndarray, Any]:
        scratch = np.empty(self.spec.shape, dtype=self.spec.dtype)
        for coords in _touched(p.chunk_selection, self.inner_shape, self.spec.shape):
            region = self._region(coords)
            stored = index.get(coords)
            if stored is None:
                scratch[region] = self.spec.fill_value
            else:
                pieces.append((key, *stored, scratch[region], coords))
        return p, scratch, p.chunk_selection

    def _fetch(self, pieces: list[_Piece], run_parallel: Any) -> None:
        """Fetch and decode every piece into its target."""
        if not pieces:
            return
        store = self.source.store
        root = local_root(store)
        if root is not None and hasattr(os, "preadv"):
            base = root
            by_key: dict[str, list[_Piece]] = {}
            for piece in pieces:
                by_key.setdefault(piece[0], []).append(piece)
            if self._raw and sum(piece[2] for piece in pieces) <= _INLINE_RAW_BYTES:
                # raw pieces are a pread each: threads would only pass the GIL around
                for key, group in by_key.items():
                    self._read_file(base, key, group)
                return
            # Raw pieces: one task per shard (a pread each). Encoded pieces: runs of a
            # shard's pieces, so that the inner chunks of one shard decode on all threads.
            if self._raw:
                groups = list(by_key.items())
            else:
                nbytes = self.inner.spec.nbytes
                share = min(config.task_bytes, len(pieces) * nbytes // max(1, config.threads))
                run = max(1, share // max(1, nbytes))
                groups = [
                    (key, group[i : i + run])
                    for key, group in by_key.items()
                    for i in range(0, len(group), run)
                ]
            run_parallel(
                lambda group: self._read_file(base, *group),
                groups,
                cost=lambda group: len(group[1]) * self.inner.spec.nbytes,
            )
            return
        spans: dict[str, list[tuple[int, int]]] = {}
        for key, off, size, _, _ in pieces:
            spans.setdefault(key, []).append((off, size))
        requests = [
            (key, ByteRange(off, size))
            for key, ranges in spans.items()
            for off, size in coalesce(ranges)
        ]
        starts: dict[str, list[int]] = {}
        for key, rng in requests:
            starts.setdefault(key, []).append(rng.start)  # ascending: coalesce sorts
        blobs = store.get_ranges(requests)
        fetched: dict[tuple[str, int], bytes] = {}
        for (key, rng), blob in zip(requests, blobs, strict=True):
            if blob is None:
                raise ChunkDecodeError(f"shard {key!r} vanished while it was being read")
            fetched[(key, rng.start)] = blob
        tasks = []
        for key, off, size, target, coords in pieces:
            at = starts[key]
            start = at[bisect.bisect_right(at, off) - 1]
            view = memoryview(fetched[(key, start)])[off - start : off - start + size]
            if len(view) != size:
                raise ChunkDecodeError(f"inner chunk {coords} of shard {key!r} is truncated")
            tasks.append((key, coords, view, target))
        run_parallel(lambda task: self._decode(*task), tasks, cost=lambda _: self.inner.spec.nbytes)

    def _read_file(self, root: str, key: str, pieces: list[_Piece]) -> None:
        """Read one local shard's pieces through one file descriptor.

        A reader that caches shard indexes keeps the file open too (``shard_files``): the
        descriptor shows the version the cached index describes.
        """
        path = f"{root}/{key}"  # keys come from the metadata
        keep = self._cache is not None
        try:
            if keep:
                fd = open_shards.acquire(path, _writes_to(self._identity))
            else:
                fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise ChunkDecodeError(f"shard {key!r} vanished while it was being read") from None
        decode = self._decode if self._zstd is None else self._zstd_decoder()
        try:
            for _, off, size, target, coords in pieces:
                if self._raw and size == target.nbytes and target.flags.c_contiguous:
                    got = os.preadv(fd, [target.data.cast("B")], off)
                    if got != size:
                        raise ChunkDecodeError(
                            f"inner chunk {coords} of shard {key!r} is truncated"
                        )
                    continue
                data = read_buffer(size)  # reused memory: fresh bytes would land on new pages
                if os.preadv(fd, [data], off) != size:
                    raise ChunkDecodeError(f"inner chunk {coords} of shard {key!r} is truncated")
                decode(key, coords, data, target)
        finally:
            if keep:
                open_shards.release(path, fd)
            else:
                os.close(fd)

    def _zstd_decoder(self) -> Any:
        """``_decode`` for inner chunks that are one zstd frame each, bound for one thread."""
        decompress = fast_decode.zstd_decompressor()
        spec = self.inner.spec
        nbytes, dtype, shape = spec.nbytes, spec.dtype, spec.shape

        def decode(key: str, coords: tuple[int, ...], data: Any, target: np.ndarray) -> None:
            contiguous = target.flags.c_contiguous
            into = target if contiguous else scratch_buffer(nbytes)
            try:
                decompress(data, into.__array_interface__["data"][0], nbytes)
            except ChunkDecodeError as err:
                raise decode_error(err, self._zstd, f"{key}[{coords}]") from err
            if not contiguous:
                target[...] = into.view(dtype).reshape(shape)

        return decode

    def _decode(self, key: str, coords: tuple[int, ...], data: Any, target: np.ndarray) -> None:
        inner = self.inner
        if target.flags.c_contiguous:
            inner.decode(data, out=target, key=f"{key}[{coords}]")
        elif inner.supports_direct_decode:  # into reused scratch, then one copy
            spec = inner.spec
            chunk = scratch_buffer(spec.nbytes).view(spec.dtype).reshape(spec.shape)
            target[...] = inner.decode(data, out=chunk, key=f"{key}[{coords}]")
        else:
            target[...] = inner.decode(data, key=f"{key}[{coords}]")

    def _region(self, coords: tuple[int, ...]) -> tuple[slice, ...]:
        return tuple(
            slice(c * k, (c + 1) * k) for c, k in zip(coords, self.inner_shape, strict=True)
        )
