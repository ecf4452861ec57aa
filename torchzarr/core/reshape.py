"""Changing an array's shape: what resize deletes or resets, and what append writes."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from torchzarr.core import engine
from torchzarr.core.indexing import basic_indexer, chunk_grid_shape
from torchzarr.errors import SelectionError, ShapeMismatchError

__all__ = ["append_along", "clear_outside"]


def clear_outside(source: engine.ChunkSource, old: tuple[int, ...], new: tuple[int, ...]) -> None:
    """Before shrinking from ``old`` to ``new``: delete chunks left wholly outside, and reset
    the part of cut edge chunks past the new edge to the fill value, so that growing the
    array again shows fill, not stale values."""
    chunks = tuple(source.metadata.chunk_shape)
    old_grid = chunk_grid_shape(old, chunks)
    new_grid = chunk_grid_shape(new, chunks)
    doomed: set[str] = set()
    for axis, (n_old, n_new) in enumerate(zip(old_grid, new_grid, strict=True)):
        if n_new < n_old:
            ranges = [range(g) for g in old_grid]
            ranges[axis] = range(n_new, n_old)
            doomed.update(source.key(c) for c in itertools.product(*ranges))
    if doomed:
        source.store.delete_many(sorted(doomed))
    fill = np.asarray(source.pipeline.spec.fill_value, dtype=source.pipeline.spec.dtype)
    for axis, (o, n, k) in enumerate(zip(old, new, chunks, strict=True)):
        if n < o and n % k:
            end = min(o, new_grid[axis] * k)
            region = tuple(
                slice(n, end) if a == axis else slice(0, min(old[a], new_grid[a] * chunks[a]))
                for a in range(len(old))
            )
            indexer = basic_indexer(region, old, chunks)
            engine.write_from(source, list(indexer), np.broadcast_to(fill, tuple(indexer.shape)))


def append_along(array: Any, data: Any, axis: int) -> tuple[int, ...]:
    """Grow ``array`` along ``axis`` by ``data``'s extent and write ``data`` there."""
    data_shape = tuple(data.shape) if hasattr(data, "shape") else np.shape(data)
    ndim = array.ndim
    if ndim == 0:
        raise SelectionError("cannot append to a 0-d array")
    axis = axis + ndim if axis < 0 else axis
    if not 0 <= axis < ndim:
        raise SelectionError(f"axis {axis} is out of range for {ndim} dimensions")
    if len(data_shape) != ndim or any(
        d != s for i, (d, s) in enumerate(zip(data_shape, array.shape, strict=True)) if i != axis
    ):
        raise ShapeMismatchError(
            f"cannot append data of shape {data_shape} to array {array.name} of shape "
            f"{array.shape} along axis {axis}"
        )
    old = array.shape
    new = tuple(s + data_shape[axis] if i == axis else s for i, s in enumerate(old))
    array.resize(new)
    region = tuple(slice(old[axis], None) if i == axis else slice(None) for i in range(ndim))
    array[region] = data
    return new
