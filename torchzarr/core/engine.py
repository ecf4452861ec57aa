"""Fetch, decode and scatter chunks on one bounded thread pool; encode and store on write."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from torchzarr import telemetry
from torchzarr.codecs.chunks import is_all_fill
from torchzarr.config import config
from torchzarr.core import tiles
from torchzarr.core.cache import ChunkCache, LayoutCache, invalidate_everywhere
from torchzarr.core.chunking import check_chunks_fit, check_stored_chunks_fit, fits_in_memory
from torchzarr.core.fast_write import reusing_encoder
from torchzarr.core.fastpath import ChunkReader, local_root
from torchzarr.core.indexing import basic_indexer
from torchzarr.core.layouts import chunk_layout, edge_chunks
from torchzarr.core.pool import group_by_cost, run_parallel
from torchzarr.core.shard_update import shard_updater
from torchzarr.core.shards import ShardReader, chunks_per_key, sharding_codec, writing
from torchzarr.core.slabs import slab_shape, slabs
from torchzarr.errors import MetadataError
from torchzarr.forksafe import LockTable
from torchzarr.storage.locations import location

__all__ = [
    "BATCH_CHUNKS",
    "ChunkSource",
    "chunks_per_batch",
    "is_all_fill",
    "read_into",
    "run_parallel",
    "write_from",
]

#: the most chunks (shards, of a sharded array) one batch of a read or write handles, however
#: small they are: each costs some hundred bytes of bookkeeping while its batch is in flight
BATCH_CHUNKS = 65536


def chunks_per_batch(chunk_nbytes: int) -> int:
    """How many chunks of ``chunk_nbytes`` decoded bytes one batch of a read or write takes:
    ``config.io_batch_bytes`` of them, at least one and at most :data:`BATCH_CHUNKS`.

    Example:
        >>> chunks_per_batch(64 << 20), chunks_per_batch(1)  # 256 MiB; tiny chunks: the cap
        (4, 65536)
    """
    return max(1, min(BATCH_CHUNKS, config.io_batch_bytes // max(chunk_nbytes, 1)))


@dataclass(frozen=True, eq=False)
class ChunkSource:
    """Everything the engine needs to reach an array's chunks."""

    store: Any  # torchzarr.storage.base.Store
    path: str
    metadata: Any  # torchzarr.metadata.base.ArrayMetadata
    pipeline: Any  # torchzarr.codecs.pipeline.ChunkPipeline
    chunk_cache: ChunkCache | None = None

    @cached_property
    def cache(self) -> LayoutCache | None:
        """The decoded-chunk cache as this array's readers use it (chunks decoded under its
        metadata only: a handle of an array since replaced keeps apart), or None."""
        if self.chunk_cache is None:
            return None
        codec = sharding_codec(self.pipeline)
        meta, inner = self.metadata, None if codec is None else tuple(codec.chunk_shape)
        edges = edge_chunks(tuple(meta.shape), tuple(meta.chunk_shape), inner)
        return LayoutCache(self.chunk_cache, chunk_layout(meta, self.pipeline), edges)

    def key(self, chunk_coords: tuple[int, ...]) -> str:
        """The store key of a chunk."""
        name = self.metadata.chunk_key(chunk_coords)
        return f"{self.path}/{name}" if self.path else name

    def stored_chunks(self, keys: Iterable[str] | None = None) -> dict[str, tuple[int, ...]]:
        """The chunk keys among ``keys`` (by default, the store's keys under the array),
        each with its chunk coordinates; metadata documents and other keys are left out."""
        prefix = f"{self.path}/" if self.path else ""
        listed = self.store.list_prefix(prefix) if keys is None else keys
        encoding, ndim = self.metadata.chunk_key_encoding, len(self.metadata.shape)
        chunks = {}
        for key in listed:
            try:
                chunks[key] = encoding.decode(key[len(prefix) :], ndim)
            except MetadataError:
                continue  # a metadata document, not a chunk
        return chunks

    @cached_property
    def shard_reader(self) -> ShardReader | None:
        """Partial-shard reader when the array is sharded, else None."""
        codec = sharding_codec(self.pipeline)
        if codec is None:
            return None
        # the reader gets a copy of this source, without its cached reader: one back to
        # this object would be a cycle, keeping a dropped cache alive until a collection
        return ShardReader(dataclasses.replace(self), codec)


# -- reads ----------------------------------------------------------------------------------
def read_into(source: ChunkSource, projections: Iterable[Any], out: np.ndarray) -> None:
    """Read the chunks of ``projections`` into ``out`` (storage dtype, C order).

    Chunks are fetched in batches bounded by ``config.io_batch_bytes`` and
    :data:`BATCH_CHUNKS`; missing chunks become the fill value without any decode.
    """
    if not _read_tiled(source, projections, out):
        _read_projections(source, projections, out)
    telemetry.add("read", reads=1, bytes_delivered=out.nbytes)


def _read_projections(source: ChunkSource, projections: Iterable[Any], out: np.ndarray) -> None:
    spec = source.pipeline.spec
    per_batch = chunks_per_batch(spec.nbytes)
    batch: list[Any] = []
    for projection in projections:
        batch.append(projection)
        if len(batch) >= per_batch:
            _read_batch(source, batch, out, spec.fill_value)
            batch = []
    if batch:
        _read_batch(source, batch, out, spec.fill_value)


def _read_tiled(source: ChunkSource, indexer: Any, out: np.ndarray) -> bool:
    """Read a slice selection of many small local chunks in tiles; False where that does
    not apply (the caller then reads projection by projection)."""
    unit_spans = getattr(indexer, "unit_spans", None)
    spans = unit_spans() if unit_spans is not None else None
    root = local_root(source.store) if fits_in_memory(source.pipeline.spec.nbytes) else None
    if spans is None or root is None or source.shard_reader is not None:
        return False
    spec = source.pipeline.spec
    chunk_shape = tuple(spec.shape)
    full = out.view()
    full.shape = tuple(stop - start for start, stop in spans)  # dropped int axes come back
    reader = ChunkReader(source, full, spec.fill_value, root=root)
    box = tiles.interior(spans, chunk_shape)
    if box is None or not tiles.applies(reader, box, spans):
        return False
    offsets = [start for start, _ in spans]
    counts = [hi - lo for lo, hi in box]  # at most BATCH_CHUNKS whole chunks at a time
    part = slab_shape(counts, [1] * len(counts), 1, chunks_per_batch(spec.nbytes))
    with telemetry.timed("decode_seconds"):
        for piece in slabs(counts, part):
            sub = [(lo + s.start, lo + s.stop) for (lo, _), s in zip(box, piece, strict=True)]
            tiles.read_tiles(reader, sub, offsets, run_parallel, config.threads)
    telemetry.add(
        chunks_fetched=reader.chunks,
        chunks_missing=reader.missing,
        bytes_fetched=reader.bytes_fetched,
        bytes_decoded=reader.chunks * spec.nbytes,
    )
    inner = [(lo * k, hi * k) for (lo, hi), k in zip(box, chunk_shape, strict=True)]
    for edge in tiles.split_edges(spans, inner):
        region = tuple(slice(a - o, b - o) for (a, b), o in zip(edge, offsets, strict=True))
        selection = tuple(slice(a, b) for a, b in edge)
        edge_indexer = basic_indexer(selection, source.metadata.shape, chunk_shape)
        _read_projections(source, edge_indexer, full[region])
    return True


def _from_cache(source: ChunkSource, batch: list[Any], out: np.ndarray) -> list[Any]:
    """Serve what the cache holds; return the projections still to read."""
    cache = source.cache
    if cache is None:
        return batch
    identity = source.store.identity
    rest = []
    for p in batch:
        chunk = cache.get((identity, source.path, p.chunk_coords))
        if chunk is None:
            rest.append(p)
        else:
            out[p.out_selection] = chunk[p.chunk_selection]
    return rest


def _read_batch(source: ChunkSource, batch: list[Any], out: np.ndarray, fill: Any) -> None:
    reader = source.shard_reader
    per_chunk = 1  # what telemetry counts as chunks: the inner chunks of a sharded array
    if reader is not None:
        # Whole shards are read in one piece (a shard rewritten meanwhile by another
        # process is then seen whole, old or new) and decoded by the sharding codec,
        # unless a cache is attached: its unit is the inner chunk, all go through it.
        cached = source.cache is not None
        partial = batch if cached else [p for p in batch if not p.is_complete_chunk]
        if partial:
            reader.read(partial, out, run_parallel)  # counts its own telemetry
            if len(partial) == len(batch):
                return
            batch = [p for p in batch if p.is_complete_chunk]
        per_chunk = reader.inner_per_shard
    batch = _from_cache(source, batch, out)
    if not batch:
        return
    generation = source.cache.generation if source.cache is not None else None
    # a chunk too large to hold is read only if stored (local reads set its buffer aside)
    root = local_root(source.store) if fits_in_memory(source.pipeline.spec.nbytes) else None
    fetched = None
    if root is None:  # local files are read inside the decoding tasks instead
        keys = [source.key(p.chunk_coords) for p in batch]
        with telemetry.timed("fetch_seconds"):
            fetched = source.store.get_many(keys)
        check_stored_chunks_fit(fetched, source.pipeline.spec, source.store)
    chunks = ChunkReader(source, out, fill, root=root, fetched=fetched, generation=generation)
    with telemetry.timed("decode_seconds"):
        chunks.run(batch, run_parallel)
    telemetry.add(  # a shard read whole decodes all its inner chunks (fill where not stored)
        chunks_fetched=chunks.chunks * per_chunk,
        chunks_missing=chunks.missing * per_chunk,
        bytes_fetched=chunks.bytes_fetched,
        bytes_decoded=chunks.chunks * source.pipeline.spec.nbytes,
    )


# -- writes ---------------------------------------------------------------------------------
def write_from(
    source: ChunkSource,
    projections: Iterable[Any],
    value: np.ndarray,
    *,
    write_empty_chunks: bool = False,
) -> None:
    """Write ``value`` (already broadcast to the selection's shape) through ``projections``.

    Whole chunks are encoded from the data alone; partly covered chunks are read, modified
    and rewritten. A chunk that ends up all fill value is deleted instead of stored, except
    in a v2 array without one (``null``): there a chunk not stored is undefined, and
    zarr-python 2 reads it as whatever memory held, so zeros are stored as any values.
    ``projections`` are taken a batch at a time (:func:`chunks_per_batch`).
    """
    if source.metadata.fill_value is None:  # v2 null
        write_empty_chunks = True
    per_batch = chunks_per_batch(source.pipeline.spec.nbytes)
    # telemetry counts one write however many batches it takes; a chunk of a sharded array
    # is an inner chunk: a shard stored (or deleted) counts all of its inner chunks
    per_chunk = chunks_per_key(source)
    done = _Stored()
    try:
        with writing(source):  # shard readers of this process read again, not a torn shard
            pending = iter(projections)
            while batch := list(itertools.islice(pending, per_batch)):
                done.add(_write_batch(source, batch, value, write_empty_chunks))
    except BaseException:
        telemetry.add(None, **done.amounts(per_chunk))  # the batches a failed write did store
        raise
    telemetry.add("write", writes=1, **done.amounts(per_chunk))


@dataclass
class _Stored:
    """What a write stored: chunks (or shards) written and deleted, and the bytes written."""

    written: int = 0
    deleted: int = 0
    nbytes: int = 0

    def add(self, other: _Stored) -> None:
        self.written += other.written
        self.deleted += other.deleted
        self.nbytes += other.nbytes

    def amounts(self, per_chunk: int) -> dict[str, int]:
        """The telemetry counters, each stored unit counting ``per_chunk`` chunks."""
        return {
            "chunks_written": self.written * per_chunk,
            "chunks_deleted": self.deleted * per_chunk,
            "bytes_written": self.nbytes,
        }


# Writes of a chunk (or a whole shard) run under the chunk's own lock, by location (one chunk
# reached through stores rooted at its group or at its array takes one lock), so two threads
# writing one chunk, in part or whole, never lose each other's writes, and writes of other
# chunks never wait on them.
_CHUNK_LOCKS = LockTable()


@contextlib.contextmanager
def _locked(store: Any, keys: Sequence[str]) -> Iterator[None]:
    identity = store.identity
    wanted = sorted({location(identity, key) for key in keys})  # one order: no deadlock
    with contextlib.ExitStack() as stack:
        for where in wanted:
            stack.enter_context(_CHUNK_LOCKS[where])
        yield


def _write_batch(
    source: ChunkSource, batch: Sequence[Any], value: np.ndarray, write_empty_chunks: bool
) -> _Stored:
    keys = [source.key(p.chunk_coords) for p in batch]
    partial_keys = [k for p, k in zip(batch, keys, strict=True) if not p.is_complete_chunk]
    # every key, not only those read-modify-written: a whole chunk stored while another
    # thread's read-modify-write of it is in flight would be overwritten by its stale copy
    try:
        with _locked(source.store, keys):
            return _modify_and_store(source, batch, keys, partial_keys, value, write_empty_chunks)
    finally:  # a batch that failed part way may have stored some of its chunks
        if source.shard_reader is not None:
            source.shard_reader.forget(keys)
        invalidate_everywhere(source.store.identity, source.path, [p.chunk_coords for p in batch])


def _modify_and_store(
    source: ChunkSource,
    batch: Sequence[Any],
    keys: list[str],
    partial_keys: list[str],
    value: np.ndarray,
    write_empty_chunks: bool,
) -> _Stored:
    pipeline = source.pipeline
    spec = pipeline.spec
    sharding = sharding_codec(pipeline)  # then a write builds inner chunks, not the shard
    built = spec if sharding is None else sharding.inner_spec(spec)
    check_chunks_fit(built, f"array /{source.path} in {source.store!r}")
    existing = source.store.get_many(partial_keys) if partial_keys else {}
    update_shard = shard_updater(sharding, spec)

    def chunk_of(task: tuple[Any, str]) -> np.ndarray | bytes | None:
        """The chunk's new content (a shard written in part: encoded), or None when it is
        all fill value (then deleted)."""
        projection, key = task
        region = value[projection.out_selection] if projection.is_complete_chunk else None
        data = None if projection.is_complete_chunk else existing.get(key)
        if region is not None and region.shape == spec.shape:
            chunk = region  # a whole interior chunk: encoded from the data as it lies
        elif update_shard is not None:  # only the inner chunks the write reaches, encoded
            shard, stored = update_shard(data, projection, value, key)
            return shard if stored or write_empty_chunks else None
        elif data is None:
            chunk = np.full(spec.shape, spec.fill_value, dtype=spec.dtype)
            chunk[projection.chunk_selection] = value[projection.out_selection]
        else:
            chunk = np.array(pipeline.decode(data, key=key), dtype=spec.dtype, copy=True)
            chunk[projection.chunk_selection] = value[projection.out_selection]
        if not write_empty_chunks and is_all_fill(chunk, spec.fill_value, spec.data_type):
            return None
        return chunk

    def build(task: tuple[Any, str]) -> tuple[str, bytes | None]:
        chunk = chunk_of(task)
        if chunk is None or isinstance(chunk, bytes):
            return task[1], chunk
        return task[1], pipeline.encode(chunk)

    tasks = list(zip(batch, keys, strict=True))
    store = source.store
    sizes: list[tuple[str, int | None]] = []
    if local_root(store) is None:
        results = run_parallel(build, tasks, cost=lambda _: spec.nbytes)
        to_store = {key: data for key, data in results if data is not None}
        if to_store:
            store.set_many(to_store)
        sizes = [(key, None if data is None else len(data)) for key, data in results]
    else:  # local files: each task writes what it encoded, so file I/O overlaps encoding
        # Durable stores: tasks stage their files unflushed; all are flushed together, then
        # renamed into place, at the end (one flush per file per task would wait on the disk
        # while encoding could go on).
        # Each chunk is written as soon as it is encoded, from the thread's reused buffer
        # where the codec allows (fresh output per chunk lands on new pages).
        staging = bool(store.fsync)
        staged: list[Any] = []
        encode = reusing_encoder(pipeline) or pipeline.encode

        def build_and_store(group: list[tuple[Any, str]]) -> list[tuple[str, int | None]]:
            sizes: list[tuple[str, int | None]] = []
            for task in group:
                key, chunk = task[1], chunk_of(task)
                if chunk is None:
                    sizes.append((key, None))
                    continue
                data = chunk if isinstance(chunk, bytes) else encode(chunk)
                if staging:
                    staged.extend(store.stage_many({key: data}))
                else:
                    store.set(key, data)
                sizes.append((key, len(data)))
            return sizes

        groups = group_by_cost(tasks, lambda _: spec.nbytes, config.task_bytes, config.threads)
        try:
            for part in run_parallel(build_and_store, groups, cost=lambda g: len(g) * spec.nbytes):
                sizes.extend(part)
        except BaseException:
            store.discard(staged)
            raise
        store.publish(staged)
    to_delete = [key for key, size in sizes if size is None]
    if to_delete:
        store.delete_many(to_delete)
    return _Stored(
        written=len(sizes) - len(to_delete),
        deleted=len(to_delete),
        nbytes=sum(size for _, size in sizes if size is not None),
    )
