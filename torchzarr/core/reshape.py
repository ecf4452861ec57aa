"""Changing an array's shape: what resize deletes or resets, and what append writes."""

from __future__ import annotations

import itertools
import math
import operator
from typing import Any

import numpy as np

from torchzarr import telemetry
from torchzarr.config import config
from torchzarr.core import engine
from torchzarr.core.attributes import logical_data_type
from torchzarr.core.cache import invalidate_outside_everywhere
from torchzarr.core.chunking import check_chunks_fit
from torchzarr.core.indexing import basic_indexer, chunk_grid_shape
from torchzarr.core.layouts import chunk_layout
from torchzarr.core.shard_files import forget_deleted
from torchzarr.core.shards import chunks_per_key, writing
from torchzarr.errors import ArgumentTypeError, SelectionError, ShapeMismatchError
from torchzarr.forksafe import LockTable
from torchzarr.storage.base import ByteRange
from torchzarr.storage.locations import location
from torchzarr.tensors import as_storage_array, tensor_from_storage

__all__ = ["append_along", "clear_outside"]

# More chunk keys than this to try in the removed region: list the stored keys instead
# (a huge, sparsely written grid would take hours to enumerate)
_ENUMERATE_MAX = 1 << 14


def clear_outside(source: engine.ChunkSource, old: tuple[int, ...], new: tuple[int, ...]) -> None:
    """Before shrinking from ``old`` to ``new``: delete chunks left wholly outside, and reset
    the part of cut edge chunks past the new edge to the fill value, so that growing the
    array again shows fill, not stale values."""
    with writing(source):  # shard readers of this process read again, not a torn shard
        _clear_outside(source, old, new)


def _clear_outside(source: engine.ChunkSource, old: tuple[int, ...], new: tuple[int, ...]) -> None:
    chunks = tuple(source.metadata.chunk_shape)
    old_grid = chunk_grid_shape(old, chunks)
    new_grid = chunk_grid_shape(new, chunks)
    # Cut edge chunks first: a rewrite refused (a stored shard too big for memory) leaves
    # the array as it was, not with the chunks outside deleted and the shape kept (a store
    # failing part way may have reset some of the cut part, all past the new end).
    fill = np.asarray(source.pipeline.spec.fill_value, dtype=source.pipeline.spec.dtype)
    for axis, (o, n, k) in enumerate(zip(old, new, chunks, strict=True)):
        if n < o and n % k:
            end = min(o, new_grid[axis] * k)
            region = tuple(
                slice(n, end) if a == axis else slice(0, min(old[a], new_grid[a] * chunks[a]))
                for a in range(len(old))
            )
            indexer = basic_indexer(region, old, chunks)
            projections = list(indexer)
            nbytes = math.prod(chunks) * source.pipeline.spec.dtype.itemsize
            if source.metadata.fill_value is None or nbytes >= config.io_batch_bytes:
                # v2 null (writes store even zeros), or chunks (shards) that might not fit
                # in memory: ask which are stored first; a small one never written is read
                # as missing by the rewrite itself, at no extra request
                projections = _stored(source, projections)
            if projections:
                engine.write_from(source, projections, np.broadcast_to(fill, indexer.shape))
    if any(n < o for o, n in zip(old_grid, new_grid, strict=True)):
        doomed = _doomed_keys(source, old_grid, new_grid)
        try:
            if doomed:
                source.store.delete_many(doomed)
        finally:  # a deletion that failed part way may have deleted some
            if doomed and source.shard_reader is not None:
                source.shard_reader.forget(doomed)
                forget_deleted(source.store.identity, source.path, doomed)
            invalidate_outside_everywhere(source.store.identity, source.path, new_grid)
        if doomed:  # one write, as the engine counts one: each shard counts its inner chunks
            deleted = len(doomed) * chunks_per_key(source)
            telemetry.add("write", writes=1, chunks_deleted=deleted)


def _stored(source: engine.ChunkSource, projections: list[Any]) -> list[Any]:
    """The ``projections`` whose chunk (or shard) is stored: asked with a one-byte read
    each, in one batch, not by reading whole chunks (a shard may be bigger than memory)."""
    keys = [source.key(p.chunk_coords) for p in projections]
    found = source.store.get_ranges([(key, ByteRange(0, 1)) for key in keys])
    return [p for p, got in zip(projections, found, strict=True) if got is not None]


def _doomed_keys(
    source: engine.ChunkSource, old_grid: tuple[int, ...], new_grid: tuple[int, ...]
) -> list[str]:
    """The keys of the chunks of ``old_grid`` outside ``new_grid`` to delete: every one of
    them when they are few, else those the store lists under the array."""
    kept = math.prod(min(o, n) for o, n in zip(old_grid, new_grid, strict=True))
    if math.prod(old_grid) - kept > _ENUMERATE_MAX:
        return _stored_outside(source, new_grid)
    doomed: set[str] = set()
    for axis, (n_old, n_new) in enumerate(zip(old_grid, new_grid, strict=True)):
        if n_new < n_old:
            ranges = [range(g) for g in old_grid]
            ranges[axis] = range(n_new, n_old)
            doomed.update(source.key(c) for c in itertools.product(*ranges))
    return sorted(doomed)


def _stored_outside(source: engine.ChunkSource, grid: tuple[int, ...]) -> list[str]:
    """The stored chunk keys of the array whose coordinates lie outside ``grid``."""
    return sorted(
        key
        for key, coords in source.stored_chunks().items()
        if any(c >= g for c, g in zip(coords, grid, strict=True))
    )


_SHAPE_LOCKS = LockTable(reentrant=True)  # by location: one per array, however reached


def shape_lock(array: Any) -> Any:
    """The lock of ``array``'s shape in this process (reentrant): resizes and appends through
    any handle take it, and only they: the groups above are not locked while the array's
    chunks are cleared or written. The node locks (``nodes.node_lock``) are taken inside
    it, never the other way round: nothing holding a node lock resizes or appends."""
    return _SHAPE_LOCKS[location(array.store.identity, array.path)]


def stored_shape(array: Any) -> tuple[int, ...]:
    """``array``'s shape as stored now, before the handle resizes or appends to it (read
    under the array's node lock: a same-kind replacement in progress is waited for, never
    seen half done).

    Raises:
        ArrayNotFoundError: the array was deleted, or replaced by a group, since the handle
            was opened: its chunks are neither brought back nor cleared among the group's.
        ShapeMismatchError: the array was replaced, since the handle was opened, by one
            whose chunks it would misread or miswrite (another dtype, number of dimensions,
            chunk shape or codecs).
    """
    stored = array._stored_metadata()
    if chunk_layout(stored) != chunk_layout(array.metadata):
        raise ShapeMismatchError(
            f"cannot resize or append to array {array.name} through this handle: since it "
            "was opened, the array was replaced by one whose chunks decode otherwise (now "
            f"shape {tuple(stored.shape)}, dtype {logical_data_type(stored).name}, chunks "
            f"{tuple(stored.chunk_shape)}, codecs {stored.codec_names}, fill value "
            f"{stored.to_json().get('fill_value')!r}); open the array again"
        )
    return tuple(stored.shape)


def resize_from(array: Any, old: tuple[int, ...], new: tuple[int, ...]) -> None:
    """Resize ``array`` from ``old``, its shape as stored; hold :func:`shape_lock`."""
    clear_outside(array._source, old, new)
    array._commit_metadata(lambda metadata: metadata.evolve(shape=new))


def append_along(array: Any, data: Any, axis: int) -> tuple[int, ...]:
    """Grow ``array`` along ``axis`` by ``data``'s extent and write ``data`` there.

    ``data`` is converted first: data the array cannot take is refused before its shape
    changes. The rows are written before the grown shape is: a write that fails all the
    same resets what it wrote past the old end, and leaves the shape as it was.
    """
    try:
        given = operator.index(axis)  # ints and numpy ints, never 1.0
    except TypeError:
        raise ArgumentTypeError(f"axis must be an int, got {axis!r}") from None
    values = as_storage_array(data, array.data_type)
    dt = array.data_type  # written back as a tensor of the array's dtype: bits stay bits
    as_written = tensor_from_storage(values, dt) if dt.is_reinterpreted else values
    data_shape = values.shape
    ndim = array.ndim
    if ndim == 0:
        raise SelectionError("cannot append to a 0-d array")
    axis = given + ndim if given < 0 else given
    if not 0 <= axis < ndim:
        raise SelectionError(f"axis {given} is out of range for {ndim} dimensions")
    # Under the array's shape lock, from its shape as stored: appends through any handle in
    # this process follow one another, each after the rows the others added.
    with shape_lock(array):
        old = stored_shape(array)  # refuses an array replaced by another kind
        if len(data_shape) != ndim or any(
            d != s for i, (d, s) in enumerate(zip(data_shape, old, strict=True)) if i != axis
        ):
            raise ShapeMismatchError(
                f"cannot append data of shape {data_shape} to array {array.name} of shape "
                f"{old} along axis {axis}"
            )
        new = tuple(s + data_shape[axis] if i == axis else s for i, s in enumerate(old))
        check_chunks_fit(array._source.pipeline.spec, f"array {array.name}")  # before growing
        region = tuple(
            slice(old[axis], new[axis]) if i == axis else slice(None) for i in range(ndim)
        )
        # The rows first, through a handle of the grown shape, then the shape: readers (and
        # a process killed in between) see the old shape or the new rows, never fill rows
        # that were not written. A failure resets what was written past the old end.
        grown = type(array)(
            array._store,
            array._path,
            array.metadata.evolve(shape=new),
            read_only=array.read_only,
            cache=array._cache,
        )
        try:
            grown[region] = as_written
            array._commit_metadata(lambda metadata: metadata.evolve(shape=new))
        except BaseException as failure:
            _undo_append(array, grown, old, new, failure)
            raise
    return new


def _undo_append(
    array: Any, grown: Any, old: tuple[int, ...], new: tuple[int, ...], failure: BaseException
) -> None:
    """After an append failed: the old shape back where the grown one was written, then
    what was written past the old end reset, unless the array changed meanwhile (another
    shape, deleted, replaced). What cannot be undone is noted on ``failure``, which stays
    the error raised."""
    undo: Exception | None = None
    try:
        if stored_shape(array) == new:  # written before a later step failed
            array._commit_metadata(lambda metadata: metadata.evolve(shape=old))
    except Exception as err:  # its write may have gone through all the same: looked at next
        undo = err
    try:
        now = stored_shape(array)
        if now == old:
            clear_outside(grown._source, new, old)
            return
        left = f"the array's shape is {now} (not {old}), rows past {old} left as written"
    except Exception as err:
        left = f"undoing it failed too ({type(err).__name__}: {err})"
    if undo is not None:
        left += f"; putting the old shape back failed ({type(undo).__name__}: {undo})"
    failure.add_note(f"append to array {array.name}: {left}")
