"""Partial reads of sharded arrays: a shard's index first, then only the inner chunks needed."""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import numpy as np

from torchzarr.codecs.sharding import EMPTY, ShardIndex, ShardingCodec
from torchzarr.core.cache import location
from torchzarr.core.fastpath import direct_target, local_root
from torchzarr.core.indexing import basic_indexer
from torchzarr.core.shard_files import ShardFiles
from torchzarr.core.shard_pieces import Piece, PieceFetcher, Region, coalesce
from torchzarr.errors import BoundsError, ChunkDecodeError, StoreError
from torchzarr.storage.base import ByteRange

__all__ = ["ShardReader", "coalesce", "sharding_codec"]

_INDEX_CACHE_ENTRIES = 4096

# Writes to sharded arrays per array location (store identity and path) in this process: a
# reader drops its cached indexes when the count moved, so a write through any Array (however
# its store was rooted) is seen by every reader, and a read that overlapped a write does not
# cache the index it fetched before the write.
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
        # shard key -> (index, serial of the open file it was read through; 0: not local)
        self._cache: OrderedDict[str, tuple[ShardIndex, int]] | None = (
            OrderedDict() if source.store.read_only else None
        )
        self._lock = threading.Lock()
        self._identity = location(source.store.identity, source.path)
        self._writes_seen = _writes_to(self._identity)
        # inner chunks of whole rows (every axis but the first spans the shard): row gathers
        self._row_chunks = bool(self.spec.shape) and (
            tuple(self.inner_shape[1:]) == tuple(self.spec.shape[1:])
        )
        self._pieces = PieceFetcher(source.store, self.inner)
        # local shards are read through descriptors (pread), one open per shard and read
        self._root = local_root(source.store) if hasattr(os, "preadv") else None

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

    @contextlib.contextmanager
    def _files(self) -> Iterator[ShardFiles | None]:
        """The local shard files of one read (None for other stores), closed after it.

        A reader that caches indexes keeps its files open between reads (the process-wide
        ``open_shards``), so a cached index and the file it describes stay together.
        """
        if self._root is None:
            yield None
            return
        with ShardFiles(self._root, self._cache is not None, _writes_to(self._identity)) as f:
            yield f

    def indexes(
        self, keys: list[str], files: ShardFiles | None = None
    ) -> dict[str, ShardIndex | None]:
        """The index of each shard; None for a shard that is not stored.

        Local shards (``files`` given) are read through the descriptor their pieces are
        read through next, so that both come from the same version of the file.
        """
        writes = _writes_to(self._identity)
        with self._lock:
            if self._cache is not None and writes != self._writes_seen:
                self._cache.clear()
                self._writes_seen = writes
        if files is not None:
            return self._local_indexes(keys, files, writes)
        found: dict[str, ShardIndex | None] = {}
        missing = []
        with self._lock:
            for key in keys:
                entry = self._cached(key)
                if entry is not None:
                    found[key] = entry[0]
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
            index = found[key] = self.codec.decode_index(raw, self.spec, key)
            self._keep(key, index, 0, writes)
        return found

    def _local_indexes(
        self, keys: list[str], files: ShardFiles, writes: int
    ) -> dict[str, ShardIndex | None]:
        found: dict[str, ShardIndex | None] = {}
        n = self.index_nbytes
        for key in keys:
            with self._lock:
                entry = self._cached(key)
            held = files.open(key, reopen=entry is None)
            if held is None:
                found[key] = None
                continue
            fd, serial = held
            if entry is not None and serial and entry[1] == serial:  # read through this file
                found[key] = entry[0]
                continue
            try:
                size = os.fstat(fd).st_size
                raw = os.pread(fd, n, size - n if self.codec.index_location == "end" else 0)
            except OSError as err:
                raise StoreError(f"cannot read shard {key!r} in {files.root}: {err}") from err
            if size < n or len(raw) != n:
                raise ChunkDecodeError(
                    f"shard {key!r} is {size} bytes, shorter than its {n}-byte index"
                )
            index = found[key] = self.codec.decode_index(raw, self.spec, key)
            self._keep(key, index, serial, writes)
        return found

    def _cached(self, key: str) -> tuple[ShardIndex, int] | None:
        """A cached index and its file's serial (hold the lock)."""
        if self._cache is None or key not in self._cache:
            return None
        self._cache.move_to_end(key)
        return self._cache[key]

    def _keep(self, key: str, index: ShardIndex, serial: int, writes: int) -> None:
        """Cache an index unless a write in this process happened since the read began."""
        if self._cache is not None and writes == _writes_to(self._identity):
            with self._lock:
                self._cache[key] = (index, serial)
                while len(self._cache) > _INDEX_CACHE_ENTRIES:
                    self._cache.popitem(last=False)

    def read(self, projections: list[Any], out: np.ndarray, run_parallel: Any) -> None:
        """Fill ``out`` for projections that each cover part of one shard.

        Selections of whole rows (an index array or slice on axis 0, slices elsewhere, inner
        chunks spanning every axis but the first) are planned with numpy and decoded into a
        compact buffer of just the touched inner chunks. Other basic selections (ints and
        slices) put each inner chunk straight into its part of ``out``: decoded in place
        where that part is contiguous, else through reused scratch. The rest (index arrays)
        decode into a shard-sized scratch. Local files are read with one descriptor per run
        of pieces and one ``preadv`` per run of adjacent pieces (straight into the target
        when the inner chunks are raw bytes).
        """
        with self._files() as files:
            self._read(projections, out, run_parallel, files)

    def _read(self, projections: list[Any], out: np.ndarray, run_parallel: Any, files: Any) -> None:
        keys = [self.source.key(p.chunk_coords) for p in projections]
        indexes = self.indexes(keys, files)
        pieces: list[Piece] = []
        finish: list[tuple[Any, np.ndarray, Any]] = []
        for p, key in zip(projections, keys, strict=True):
            index = indexes[key]
            if index is None:
                out[p.out_selection] = self.spec.fill_value
                continue
            rows = self._rows(p.chunk_selection)
            if rows is not None:
                finish.append(self._plan_rows(p, key, index, rows, pieces))
            elif all(isinstance(s, slice) for s in p.out_selection) and all(
                isinstance(s, slice | int) for s in p.chunk_selection
            ):
                view = out[(*p.out_selection, Ellipsis)]  # a view, also when 0-d
                self._plan_scatter(p, key, index, view, pieces)
            else:
                finish.append(self._plan_region(p, key, index, pieces))
        self._pieces.fetch(pieces, run_parallel, files)
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
            raise BoundsError(f"rows {rows.min()}..{rows.max()} outside 0..{shape[0] - 1}")
        with self._files() as files:
            self._gather_rows(rows, out, run_parallel, files)
        return True

    def _gather_rows(
        self, rows: np.ndarray, out: np.ndarray, run_parallel: Any, files: Any
    ) -> None:
        shape = tuple(self.source.metadata.shape)
        step, per_shard = self.inner_shape[0], self.spec.shape[0] // self.inner_shape[0]
        inner = rows // step
        touched = np.unique(inner)
        shards, first = np.unique(touched // per_shard, return_index=True)
        tail = (0,) * (len(shape) - 1)
        keys = [self.source.key((s, *tail)) for s in shards.tolist()]
        indexes = self.indexes(keys, files)
        buf = np.empty((touched.size, *self.inner_shape), dtype=self.spec.dtype)
        local = touched % per_shard
        bounds = [*first.tolist(), touched.size]
        empty = int(EMPTY)
        pieces: list[Piece] = []
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
        self._pieces.fetch(pieces, run_parallel, files)
        flat = buf.reshape(-1, *self.inner_shape[1:])
        position = np.searchsorted(touched, inner) * step + rows % step
        if out.flags.c_contiguous and out.dtype == flat.dtype:
            np.take(flat, position, axis=0, out=out)
        else:
            out[...] = flat[position]

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
        self, p: Any, key: str, index: ShardIndex, rows: np.ndarray, pieces: list[Piece]
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

    def _plan_scatter(
        self, p: Any, key: str, index: ShardIndex, view: np.ndarray, pieces: list[Piece]
    ) -> None:
        """Plan a basic selection of a shard: each inner chunk lands in ``view`` (the shard's
        part of the output) directly, straight from the decoder where its region is
        contiguous, with no shard-sized scratch and no second copy."""
        inner, fill = self.inner_shape, self.spec.fill_value
        size = self.inner.spec.nbytes // self.inner.spec.dtype.itemsize
        for ip in basic_indexer(p.chunk_selection, self.spec.shape, inner):
            stored = index.get(ip.chunk_coords)
            if stored is None:
                view[ip.out_selection] = fill
                continue
            target = direct_target(view, ip, inner, size)
            if target is None:
                target = Region(view[(*ip.out_selection, Ellipsis)], ip.chunk_selection)
            pieces.append((key, *stored, target, ip.chunk_coords))

    def _plan_region(
        self, p: Any, key: str, index: ShardIndex, pieces: list[Piece]
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

    def _region(self, coords: tuple[int, ...]) -> tuple[slice, ...]:
        return tuple(
            slice(c * k, (c + 1) * k) for c, k in zip(coords, self.inner_shape, strict=True)
        )
