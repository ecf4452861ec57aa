"""Partial reads of sharded arrays: a shard's index first, then only the inner chunks needed."""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from stat import S_ISDIR
from typing import Any, TypeVar

import numpy as np

from torchzarr import telemetry
from torchzarr.codecs.sharding import EMPTY, ShardIndex, ShardingCodec
from torchzarr.core.fastpath import local_root
from torchzarr.core.shard_cache import read_cached, touched_count
from torchzarr.core.shard_files import in_groups
from torchzarr.core.shard_pieces import (
    Piece,
    PieceFetcher,
    SizedShardFiles,
    coalesce,
    plan_region,
    plan_rows,
    plan_scatter,
)
from torchzarr.core.shard_writes import chunks_per_key, note_rewrite, writing
from torchzarr.core.shard_writes import quiet as _quiet
from torchzarr.core.shard_writes import stamp as _stamp
from torchzarr.core.shard_writes import writes_to as _writes_to
from torchzarr.errors import BoundsError, ChunkDecodeError, StoreError
from torchzarr.storage.base import ByteRange
from torchzarr.storage.fileio import FileSignature, file_signature, read_bytes
from torchzarr.storage.locations import location

__all__ = ["ShardReader", "chunks_per_key", "coalesce", "sharding_codec", "writing"]

_INDEX_CACHE_ENTRIES = 4096

#: optimistic reads of a sharded array before one that holds this process's writes off
_READ_TRIES = 3

T = TypeVar("T")
#: a cached shard index: (index, serial of the descriptor it was read through (0: not
#: local), signature of the shard file when it was read (None: not local))
_Cached = tuple[ShardIndex, int, FileSignature | None]


def _always() -> bool:
    return True


def _summed(counts: Iterable[tuple[int, int, int]]) -> tuple[int, int, int]:
    """The sum of the ``(inner chunks fetched, not stored, bytes fetched)`` of parts of a read."""
    fetched = missing = nbytes = 0
    for chunks, absent, size in counts:
        fetched, missing, nbytes = fetched + chunks, missing + absent, nbytes + size
    return fetched, missing, nbytes


def sharding_codec(pipeline: Any) -> ShardingCodec | None:
    """The (evolved) sharding codec of a v3 pipeline when it is the whole serialisation."""
    codec = getattr(pipeline, "array_bytes", None)
    if isinstance(codec, ShardingCodec) and not pipeline.array_array and not pipeline.bytes_bytes:
        return codec
    return None


class ShardReader:
    """Reads parts of shards: index, then byte ranges.

    Indexes are kept between reads of a read-only local array (each checked against its
    shard file at every read) and of an array whose owner called :meth:`keep_indexes`;
    otherwise each read fetches the indexes it needs.
    """

    def __init__(self, source: Any, codec: ShardingCodec) -> None:
        self.source = source
        self.codec = codec
        self.spec = source.pipeline.spec
        self.inner = codec.inner_pipeline(self.spec)
        self.inner_shape = codec.chunk_shape
        self.inner_per_shard = math.prod(codec.chunks_per_shard(self.spec.shape))
        self.index_nbytes = codec.index_nbytes(self.spec)
        # local shards are read through descriptors (pread), one open per shard and read
        self._root = local_root(source.store) if hasattr(os, "preadv") else None
        # shard key -> (index, serial of the open file it was read through (0: not local),
        # signature of that file when the index was read (None: not local)). A read-only
        # local array keeps indexes between reads and checks each against its file's
        # signature at every read; other stores read them per read unless an owner opts in
        # (keep_indexes: kept unchecked).
        self._cache: OrderedDict[str, _Cached] | None = (
            OrderedDict() if source.store.read_only and self._root is not None else None
        )
        self._trusted = False  # keep_indexes: cached indexes are used without checking
        self._lock = threading.Lock()
        self._identity = location(source.store.identity, source.path)
        self._writes_seen = _writes_to(self._identity)
        # inner chunks of whole rows (every axis but the first spans the shard): row gathers
        self._row_chunks = bool(self.spec.shape) and (
            tuple(self.inner_shape[1:]) == tuple(self.spec.shape[1:])
        )
        self.pieces = PieceFetcher(source.store, self.inner)

    def keep_indexes(self) -> None:
        """Keep shard indexes between reads, whatever the store, and use them unchecked.

        Safe against writes made through torchzarr in this process (every write drops the
        cached indexes); shards that other writers (another library, another process)
        rewrite are seen once the caller opens the array afresh: for owners that
        document a single writer and a refresh, such as the feature store. Without it a
        read-only local array checks each kept index against its file at every read, and
        other arrays read the indexes afresh at every read.

        Example:
            >>> reader.keep_indexes()  # doctest: +SKIP
        """
        with self._lock:
            self._trusted = True
            if self._cache is None:
                self._cache = OrderedDict()

    def forget(self, keys: list[str]) -> None:
        """Tell every reader in the process that these shards were rewritten."""
        note_rewrite(self._identity)
        if self._cache is not None:
            with self._lock:
                for key in keys:
                    self._cache.pop(key, None)

    @contextlib.contextmanager
    def _files(self) -> Iterator[SizedShardFiles | None]:
        """The local shard files of one read (None for other stores), closed after it.

        A reader that caches indexes keeps its files open between reads (the process-wide
        ``open_shards``), so a cached index and the file it describes stay together.
        """
        if self._root is None:
            yield None
            return
        files = SizedShardFiles(self._root, self._cache is not None, _writes_to(self._identity))
        with files:
            yield files

    def indexes(
        self, keys: list[str], files: SizedShardFiles | None = None
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
        telemetry.add(bytes_fetched=sum(len(raw) for raw in raws if raw is not None))
        for key, raw in zip(missing, raws, strict=True):
            if raw is None:
                found[key] = None
                continue
            if len(raw) != n:
                raise ChunkDecodeError(
                    f"shard {key!r} is {len(raw)} bytes, shorter than its {n}-byte index"
                )
            index = found[key] = self.codec.decode_index(raw, self.spec, key)
            self._keep(key, index, 0, writes, None)
        return found

    def _local_indexes(
        self, keys: list[str], files: SizedShardFiles, writes: int
    ) -> dict[str, ShardIndex | None]:
        """The indexes of local shards, each read through the descriptor of ``files``.

        A kept index is used when it was read through that very descriptor (same serial)
        and, unless kept unchecked, the file at the shard's path still has the signature
        it had then: the kept descriptor holds the file open, so its inode cannot be
        reused, and an equal signature means the path still names that file, unchanged.
        Otherwise (also when the pool closed the file meanwhile: its inode may then name
        another file, with timestamps too coarse to tell) the file is reopened and its
        index read again.
        """
        found: dict[str, ShardIndex | None] = {}
        n = self.index_nbytes
        at_end = self.codec.index_location == "end"
        checked = not self._trusted
        read = 0
        for key in keys:
            with self._lock:
                entry = self._cached(key)
            if entry is not None and checked and files.signature(key) != entry[2]:
                entry = None  # replaced or changed since its index was read
            held = files.open(key, reopen=entry is None)
            if held is None:
                self._drop(key)
                found[key] = None
                continue
            fd, serial = held
            if entry is not None and serial and entry[1] == serial:  # read through this file
                found[key] = entry[0]
                if entry[2] is not None:  # the size in its signature: that file's
                    files.sizes[key] = entry[2][2]
                continue
            try:
                # taken before the index is read: a change after it shows at the next read
                stat = os.fstat(fd)
                size = stat.st_size
                signature = file_signature(stat)
                if S_ISDIR(stat.st_mode):  # no shard there, as the store's own reads see it
                    self._drop(key)
                    found[key] = None
                    continue
                # a file shorter than the index: no pread at a negative offset
                raw = b"" if size < n else read_bytes(fd, n, size - n if at_end else 0, needed=n)
            except OSError as err:
                raise StoreError(f"cannot read shard {key!r} in {files.root}: {err}") from err
            if len(raw) != n:
                raise ChunkDecodeError(
                    f"shard {key!r} is {size} bytes, shorter than its {n}-byte index"
                )
            read += n
            files.sizes[key] = size
            index = found[key] = self.codec.decode_index(raw, self.spec, key, size)
            self._keep(key, index, serial, writes, signature)
        if read:
            telemetry.add(bytes_fetched=read)
        return found

    def _cached(self, key: str) -> _Cached | None:
        """A cached index with its file's serial and signature (hold the lock)."""
        if self._cache is None or key not in self._cache:
            return None
        self._cache.move_to_end(key)
        return self._cache[key]

    def _drop(self, key: str) -> None:
        """Forget the cached index of a shard that is no longer stored."""
        if self._cache is not None:
            with self._lock:
                self._cache.pop(key, None)

    def _keep(
        self,
        key: str,
        index: ShardIndex,
        serial: int,
        writes: int,
        signature: FileSignature | None,
    ) -> None:
        """Cache an index unless a write in this process happened since the read began."""
        if self._cache is not None and writes == _writes_to(self._identity):
            with self._lock:
                self._cache[key] = (index, serial, signature)
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

        With a cache on the source, inner chunks come from it where held and go into it
        when fetched (:func:`~torchzarr.core.shard_cache.read_cached`); the projections
        may then cover whole shards too.
        """
        start = time.perf_counter()
        if self.source.cache is not None:
            counts = self._consistent(
                lambda files, settled: _summed(
                    read_cached(self, group, out, run_parallel, files, settled)
                    for group in in_groups(projections, files)
                )
            )
        else:
            counts = self._consistent(
                lambda files, _: _summed(
                    self._read(group, out, run_parallel, files)
                    for group in in_groups(projections, files)
                )
            )
        self._count(*counts, time.perf_counter() - start)

    def _consistent(self, attempt: Callable[[SizedShardFiles | None, Callable[[], bool]], T]) -> T:
        """``attempt(files, settled)`` (a read of shard indexes, then of inner chunks), run
        so that each shard's index and inner chunks come from one version of it.

        Local shards are read through one descriptor each: one version by construction
        (an attempt that reads many takes them in groups, :func:`in_groups`, so that it
        holds a bounded number of files open).
        Other stores are read optimistically while no write to the array in this process
        is in progress, and again when the write count moved meanwhile (also when a piece
        failed to decode: it may have been cut from a newer shard at an older offset);
        ``settled()`` tells the attempt whether it may keep what it read (in a cache).
        After ``_READ_TRIES`` the read holds this process's writes to the array off. A
        shard that another process rewrites meanwhile is outside what this can see.
        """
        if self._root is not None:
            with self._files() as files:
                return attempt(files, _always)
        identity = self._identity
        for _ in range(_READ_TRIES):
            begun = _stamp(identity)
            if begun is None:  # a write in progress: wait for it below
                break

            def settled(begun: int = begun) -> bool:
                return _writes_to(identity) == begun

            try:
                result = attempt(None, settled)
            except ChunkDecodeError:
                if settled():
                    raise  # no write overlapped: the shard is damaged
                continue
            if settled():
                return result
        with _quiet(identity):
            return attempt(None, _always)

    def _read(
        self, projections: Sequence[Any], out: np.ndarray, run_parallel: Any, files: Any
    ) -> tuple[int, int, int]:
        """Read without a cache; returns (inner chunks fetched, not stored, bytes fetched)."""
        keys = [self.source.key(p.chunk_coords) for p in projections]
        indexes = self.indexes(keys, files)
        pieces: list[Piece] = []
        finish: list[tuple[Any, np.ndarray, Any]] = []
        missing = 0  # inner chunks read as fill: not stored
        for p, key in zip(projections, keys, strict=True):
            index = indexes[key]
            if index is None:
                out[p.out_selection] = self.spec.fill_value
                missing += touched_count(p.chunk_selection, self.inner_shape, self.spec.shape)
                continue
            rows = self._rows(p.chunk_selection)
            if rows is not None:
                missing += plan_rows(self, p, key, index, rows, pieces, finish)
            elif all(isinstance(s, slice) for s in p.out_selection) and all(
                isinstance(s, slice | int) for s in p.chunk_selection
            ):
                view = out[(*p.out_selection, Ellipsis)]  # a view, also when 0-d
                missing += plan_scatter(self, p, key, index, view, pieces)
            else:
                missing += plan_region(self, p, key, index, pieces, finish)
        fetched = self.pieces.fetch(pieces, run_parallel, files)
        for p, source, selection in finish:
            out[p.out_selection] = source[selection]
        return len(pieces), missing, fetched

    def _count(self, chunks: int, missing: int, fetched: int, seconds: float) -> None:
        """Tell telemetry what a read fetched and decoded; its chunks are inner chunks."""
        telemetry.add(
            chunks_fetched=chunks,
            chunks_missing=missing,
            bytes_fetched=fetched,
            bytes_decoded=chunks * self.inner.spec.nbytes,
            decode_seconds=seconds,
        )

    def gather_rows(self, rows: np.ndarray, out: np.ndarray, run_parallel: Any) -> bool:
        """Fill ``out[i]`` with row ``rows[i]`` of the whole array (int64, any order, repeats).

        The plan is vectorised over all shards at once: only the touched inner chunks are
        fetched (through the shard indexes, kept as for :meth:`read`), into one compact
        buffer, then one ``take`` lays the rows out. Returns False, doing nothing, when shards or inner chunks do not
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
        start = time.perf_counter()
        counts = self._consistent(
            lambda files, _: self._gather_rows(rows, out, run_parallel, files)
        )
        self._count(*counts, time.perf_counter() - start)
        return True

    def _gather_rows(
        self, rows: np.ndarray, out: np.ndarray, run_parallel: Any, files: Any
    ) -> tuple[int, int, int]:
        shape = tuple(self.source.metadata.shape)
        step, per_shard = self.inner_shape[0], self.spec.shape[0] // self.inner_shape[0]
        inner = rows // step
        touched = np.unique(inner)
        shards, first = np.unique(touched // per_shard, return_index=True)
        tail = (0,) * (len(shape) - 1)
        keys = [self.source.key((s, *tail)) for s in shards.tolist()]
        buf = np.empty((touched.size, *self.inner_shape), dtype=self.spec.dtype)
        local = touched % per_shard
        bounds = [*first.tolist(), touched.size]
        empty = int(EMPTY)
        fill = self.spec.fill_value
        fetched = count = 0
        for group in in_groups(range(len(keys)), files):  # shards, a bounded few files open
            indexes = self.indexes([keys[k] for k in group], files)
            pieces: list[Piece] = []
            for k in group:
                key, lo, hi = keys[k], bounds[k], bounds[k + 1]
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
            fetched += self.pieces.fetch(pieces, run_parallel, files)
            count += len(pieces)
        flat = buf.reshape(-1, *self.inner_shape[1:])
        position = np.searchsorted(touched, inner) * step + rows % step
        if out.flags.c_contiguous and out.dtype == flat.dtype:
            np.take(flat, position, axis=0, out=out)
        else:
            out[...] = flat[position]
        return count, touched.size - count, fetched

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
