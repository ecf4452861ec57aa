"""Selections (basic, orthogonal, vectorized) turned into per-chunk projections, numpy semantics.

An indexer yields one :class:`ChunkProjection` per chunk it touches. For every projection::

    out[p.out_selection] = chunk[p.chunk_selection]      # read
    chunk[p.chunk_selection] = value[p.out_selection]    # write

where ``chunk`` is the decoded full-size chunk (edge chunks padded past the array end) and
``out``/``value`` are arrays of ``indexer.shape``. Both selections are plain numpy indices
(ints, slices, index arrays laid out as an open mesh), valid for reads and for assignment.
Python work is proportional to the chunks touched, never to the elements selected.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from torchzarr.core._index_axes import (
    ArrayAxis,
    Axis,
    AxisStep,
    IntAxis,
    SliceAxis,
    as_int,
    as_int_array,
    broadcast_points,
    check_int_array,
    open_mesh,
)
from torchzarr.errors import BoundsError, MetadataError, SelectionError

__all__ = [
    "ChunkProjection",
    "Indexer",
    "basic_indexer",
    "chunk_grid_shape",
    "chunk_region",
    "group_points",
    "is_basic_selection",
    "normalize_selection",
    "orthogonal_indexer",
    "vectorized_indexer",
]


@dataclass(frozen=True)
class ChunkProjection:
    """How one chunk takes part in a selection.

    Attributes:
        chunk_coords: grid coordinates of the chunk.
        chunk_selection: index into the decoded full-size chunk.
        out_selection: index into the output array of the indexer's ``shape``. For
            vectorized selections it is a tuple of index arrays into that shape (one per
            output dimension), or a slice when the output is 1-d and the points are contiguous.
        is_complete_chunk: the selection covers every in-bounds element of the chunk in
            natural order with step 1 (an int on an axis counts only when the chunk holds a
            single in-bounds position there), so the chunk can be decoded straight into the output region.

    Example:
        >>> p = next(iter(basic_indexer(slice(2, 4), (10,), (4,))))
        >>> p.chunk_coords, p.chunk_selection, p.out_selection, p.is_complete_chunk
        ((0,), (slice(2, 4, 1),), (slice(0, 2, 1),), False)
    """

    chunk_coords: tuple[int, ...]
    chunk_selection: tuple[Any, ...]
    out_selection: tuple[Any, ...]
    is_complete_chunk: bool


class Indexer(Protocol):
    """A selection on a chunked array: its result shape and its chunk projections.

    Iterating yields each touched chunk exactly once; an indexer can be iterated again.
    """

    shape: tuple[int, ...]

    def __iter__(self) -> Iterator[ChunkProjection]:
        """The projections, one per touched chunk."""
        ...

    @property
    def nchunks(self) -> int:
        """The number of projections, computed without iterating."""
        ...


# -- the chunk grid -----------------------------------------------------------------------------
def _check_shapes(shape: Any, chunk_shape: Any) -> tuple[tuple[int, ...], tuple[int, ...]]:
    shape = tuple(int(s) for s in shape)
    chunk_shape = tuple(int(c) for c in chunk_shape)
    if len(shape) != len(chunk_shape):
        raise MetadataError(
            f"chunk shape {chunk_shape} has {len(chunk_shape)} dimensions but array shape "
            f"{shape} has {len(shape)}"
        )
    if any(s < 0 for s in shape) or any(c < 1 for c in chunk_shape):
        raise MetadataError(
            f"array shape {shape} must be non-negative and chunk shape {chunk_shape} positive"
        )
    return shape, chunk_shape


def chunk_grid_shape(shape: Any, chunk_shape: Any) -> tuple[int, ...]:
    """The number of chunks along each axis (exact for extents up to 2**63).

    Example:
        >>> chunk_grid_shape((10, 0, 7), (4, 3, 7))
        (3, 0, 1)
    """
    shape, chunk_shape = _check_shapes(shape, chunk_shape)
    return tuple(-(-s // c) for s, c in zip(shape, chunk_shape, strict=True))


def chunk_region(chunk_coords: Any, shape: Any, chunk_shape: Any) -> tuple[slice, ...]:
    """The region of the array a chunk holds, clipped to the array's bounds.

    Raises:
        BoundsError: when ``chunk_coords`` lie outside the chunk grid.

    Example:
        >>> chunk_region((2, 0), (10, 3), (4, 3))
        (slice(8, 10, 1), slice(0, 3, 1))
    """
    grid = chunk_grid_shape(shape, chunk_shape)
    coords = tuple(int(c) for c in chunk_coords)
    if len(coords) != len(grid) or not all(0 <= c < g for c, g in zip(coords, grid, strict=True)):
        raise BoundsError(f"chunk coordinates {coords} are outside the chunk grid {grid}")
    return tuple(
        slice(c * k, min((c + 1) * k, s), 1)
        for c, k, s in zip(coords, chunk_shape, shape, strict=True)
    )


# -- selections -----------------------------------------------------------------------------
def normalize_selection(selection: Any, ndim: int) -> tuple[Any, ...]:
    """A selection as a tuple of exactly ``ndim`` items: Ellipsis expanded, ``:`` padded.

    Raises:
        SelectionError: more than one Ellipsis, too many indices, or ``None`` (newaxis).

    Example:
        >>> normalize_selection((..., 1), 3)
        (slice(None, None, None), slice(None, None, None), 1)
    """
    items = selection if isinstance(selection, tuple) else (selection,)
    ellipses = [i for i, item in enumerate(items) if item is Ellipsis]
    if len(ellipses) > 1:
        raise SelectionError(f"a selection can hold a single Ellipsis ('...'), got {selection!r}")
    if any(item is None for item in items):
        raise SelectionError(f"None (np.newaxis) is not supported in selections: {selection!r}")
    used = len(items) - len(ellipses)
    if used > ndim:
        raise SelectionError(
            f"too many indices for array: array is {ndim}-dimensional, but {used} were indexed"
        )
    fill = (slice(None),) * (ndim - used)
    if ellipses:
        at = ellipses[0]
        return (*items[:at], *fill, *items[at + 1 :])
    return (*items, *fill)


def is_basic_selection(selection: Any) -> bool:
    """Whether a selection holds only ints, slices and Ellipsis (numpy basic indexing).

    Example:
        >>> is_basic_selection((1, slice(None), ...)), is_basic_selection([1, 2])
        (True, False)
    """
    items = selection if isinstance(selection, tuple) else (selection,)
    return all(
        item is Ellipsis or isinstance(item, slice) or as_int(item) is not None for item in items
    )


def _describe(item: Any) -> str:
    if isinstance(item, np.ndarray):
        return f"an array of shape {item.shape} and dtype {item.dtype}"
    return f"{item!r} of type {type(item).__name__}"


# -- basic and orthogonal: a product of independent axes ------------------------------------------
class _GridIndexer:
    """Chunks as the product of per-axis selections, walked lazily in C order."""

    def __init__(self, axes: list[Axis], chunk_shape: tuple[int, ...]) -> None:
        self._axes = axes
        self.chunk_shape = chunk_shape
        self.shape: tuple[int, ...] = tuple(a.length for a in axes if a.length is not None)

    @property
    def nchunks(self) -> int:
        """The number of projections, computed without iterating."""
        return math.prod(a.nchunks for a in self._axes)

    def unit_spans(self) -> list[tuple[int, int]] | None:
        """Per axis ``(start, stop)`` when every axis is an int or a step-1 slice, else None.

        An int axis is a span of one (it drops from the output).
        """
        spans = []
        for axis in self._axes:
            if isinstance(axis, IntAxis):
                spans.append((axis.index, axis.index + 1))
            elif isinstance(axis, SliceAxis) and (axis.step == 1 or (axis.length or 0) <= 1):
                spans.append((axis.start, axis.start + (axis.length or 0)))
            else:
                return None
        return spans

    def __iter__(self) -> Iterator[ChunkProjection]:
        if not self.nchunks:  # an empty inner axis must not walk a huge outer one
            return
        if not self._axes or max(a.nchunks for a in self._axes) > 1 << 16:
            yield from self._walk(0, ())  # 0-d, or a huge axis: walk lazily
            return
        per_axis = [list(axis) for axis in self._axes]
        mesh = any(
            isinstance(s.chunk_item, np.ndarray) or isinstance(s.out_item, np.ndarray)
            for steps in per_axis
            for s in steps
        )
        drops = any(isinstance(a, IntAxis) for a in self._axes)
        for steps in itertools.product(*per_axis):  # C order, as the nested walk was
            coords, chunk_items, out_items, complete = zip(*steps, strict=True)
            if drops:
                out_items = tuple(item for item in out_items if item is not None)
            if mesh:
                chunk_items, out_items = open_mesh(list(chunk_items)), open_mesh(list(out_items))
            yield ChunkProjection(coords, chunk_items, out_items, all(complete))

    def _walk(self, axis: int, steps: tuple[AxisStep, ...]) -> Iterator[ChunkProjection]:
        if axis == len(self._axes):
            yield ChunkProjection(
                tuple(s.chunk for s in steps),
                open_mesh([s.chunk_item for s in steps]),
                open_mesh([s.out_item for s in steps if s.out_item is not None]),
                all(s.complete for s in steps),
            )
            return
        for step in self._axes[axis]:
            yield from self._walk(axis + 1, (*steps, step))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} shape={self.shape} nchunks={self.nchunks}>"


def basic_indexer(selection: Any, shape: Any, chunk_shape: Any) -> Indexer:
    """An indexer for numpy basic indexing: ints (drop their axis), slices, Ellipsis.

    Raises:
        BoundsError: an int outside its axis.
        SelectionError: anything other than ints, positive-step slices and one Ellipsis.

    Example:
        >>> ix = basic_indexer((slice(None), -1), (5, 4), (2, 4))
        >>> ix.shape, ix.nchunks, [p.chunk_coords for p in ix]
        ((5,), 3, [(0, 0), (1, 0), (2, 0)])
    """
    shape, chunk_shape = _check_shapes(shape, chunk_shape)
    items = normalize_selection(selection, len(shape))
    axes: list[Axis] = []
    for axis, (item, extent, k) in enumerate(zip(items, shape, chunk_shape, strict=True)):
        if isinstance(item, slice):
            axes.append(SliceAxis(item, axis, extent, k))
            continue
        index = as_int(item)
        if index is None:
            raise SelectionError(
                f"basic selection takes ints, slices and Ellipsis; got {_describe(item)} on "
                f"axis {axis} (use oindex or vindex for arrays and masks)"
            )
        axes.append(IntAxis(index, axis=axis, extent=extent, chunk_len=k))
    return _GridIndexer(axes, chunk_shape)


def _orthogonal_axis(item: Any, axis: int, extent: int, k: int) -> Axis:
    if isinstance(item, slice):
        return SliceAxis(item, axis, extent, k)
    index = as_int(item)
    if index is not None:
        return IntAxis(index, axis=axis, extent=extent, chunk_len=k)
    if not isinstance(item, np.ndarray | list):
        raise SelectionError(
            f"orthogonal selection takes ints, slices, integer arrays or boolean masks; got "
            f"{_describe(item)} on axis {axis}"
        )
    arr = as_int_array(item, "orthogonal selection")
    if arr.ndim != 1:
        raise SelectionError(
            f"orthogonal selection takes 1-d arrays; got {_describe(arr)} on axis {axis}"
        )
    if arr.dtype == bool:
        if len(arr) != extent:
            raise SelectionError(
                f"boolean mask of length {len(arr)} does not match axis {axis} with extent {extent}"
            )
        return ArrayAxis(np.flatnonzero(arr), extent, k)
    return ArrayAxis(check_int_array(arr, axis, extent), extent, k)


def orthogonal_indexer(selection: Any, shape: Any, chunk_shape: Any) -> Indexer:
    """An indexer selecting each axis independently (zarr-python's ``oindex``).

    Each axis takes an int, a slice, a 1-d integer array or list (any order, duplicates and
    negatives allowed), or a 1-d boolean mask of the axis length; the result is the outer
    product, like ``a[np.ix_(...)]``. Writes through duplicate indices keep the last value.

    Raises:
        BoundsError: an int or array entry outside its axis (the first offending one).
        SelectionError: a mask of the wrong length, a non-integer array, a float, ...

    Example:
        >>> ix = orthogonal_indexer(([3, 0], [True, False, True]), (4, 3), (2, 2))
        >>> ix.shape, [p.chunk_coords for p in ix]
        ((2, 2), [(0, 0), (0, 1), (1, 0), (1, 1)])
    """
    shape, chunk_shape = _check_shapes(shape, chunk_shape)
    items = normalize_selection(selection, len(shape))
    axes = [
        _orthogonal_axis(item, axis, extent, k)
        for axis, (item, extent, k) in enumerate(zip(items, shape, chunk_shape, strict=True))
    ]
    return _GridIndexer(axes, chunk_shape)


# -- vectorized: points grouped by chunk ------------------------------------------------------
class _PointIndexer:
    """Projections of pointwise (vectorized) selections, computed up front."""

    def __init__(self, shape: tuple[int, ...], projections: list[ChunkProjection]) -> None:
        self.shape = shape
        self._projections = projections

    @property
    def nchunks(self) -> int:
        """The number of projections."""
        return len(self._projections)

    def __iter__(self) -> Iterator[ChunkProjection]:
        return iter(self._projections)

    def __repr__(self) -> str:
        return f"<VectorizedIndexer shape={self.shape} nchunks={self.nchunks}>"


_VINDEX = "vindex takes integer arrays (one per dimension) or one boolean mask"


def _is_bool_array(item: Any) -> bool:
    return isinstance(item, np.ndarray | list) and np.asarray(item).dtype == bool


def _point_arrays(items: tuple[Any, ...], shape: tuple[int, ...]) -> list[np.ndarray]:
    """One index array per axis (checked, non-negative), broadcast to the result shape."""
    if len(items) == 1 and len(shape) >= 1:
        first = items[0]
        if _is_bool_array(first):
            mask = np.asarray(first)
            if mask.shape != shape:
                raise SelectionError(
                    f"boolean mask of shape {mask.shape} does not match array shape {shape}"
                )
            return list(np.nonzero(mask))
    for axis, item in enumerate(items):
        if _is_bool_array(item):
            raise SelectionError(f"{_VINDEX}; got a boolean array on axis {axis}")
        if as_int(item) is None and not isinstance(item, np.ndarray | list):
            raise SelectionError(f"{_VINDEX}; got {_describe(item)} on axis {axis}")
    if len(items) != len(shape):
        raise SelectionError(
            f"{_VINDEX}: array has {len(shape)} dimensions, got {len(items)} arrays"
        )
    return broadcast_points(items, range(len(shape)), shape, "vindex")


def vectorized_indexer(selection: Any, shape: Any, chunk_shape: Any) -> Indexer:
    """An indexer for pointwise selection (numpy fancy indexing, zarr-python's ``vindex``).

    ``selection`` is a tuple of integer arrays (or ints), one per dimension, broadcast
    together; or a single boolean mask of the array's shape (the points it marks, C order).
    Each projection's ``out_selection`` is a tuple of index arrays into the result shape
    (one per result dimension; a slice for contiguous runs when the result is 1-d).

    Raises:
        BoundsError: an entry outside its axis (the first offending one).
        SelectionError: slices, Ellipsis, boolean arrays among others, a wrong number of
            arrays, or arrays that do not broadcast.

    Example:
        >>> ix = vectorized_indexer(([0, 3, 1], [2, 0, 2]), (4, 3), (2, 2))
        >>> ix.shape, [p.chunk_coords for p in ix]
        ((3,), [(0, 1), (1, 0)])
    """
    shape, chunk_shape = _check_shapes(shape, chunk_shape)
    items = selection if isinstance(selection, tuple) else (selection,)
    if not shape and len(items) == 1 and _is_bool_array(items[0]) and not np.ndim(items[0]):
        # numpy: a 0-d mask takes the one point (result shape (1,)) or none (shape (0,))
        taken = bool(items[0])
        return _PointIndexer((int(taken),), [ChunkProjection((), (), (0,), True)] if taken else [])
    arrays = _point_arrays(items, shape)
    out_shape = tuple(arrays[0].shape) if arrays else ()
    if not shape:  # a 0-d array has one point
        return _PointIndexer((), [ChunkProjection((), (), (), True)])
    if len(shape) == 1 and len(out_shape) == 1:  # pointwise on one axis is orthogonal
        return _PointIndexer(out_shape, list(orthogonal_indexer(arrays[0], shape, chunk_shape)))
    return _PointIndexer(out_shape, group_points(arrays, out_shape, shape, chunk_shape))


def group_points(
    arrays: list[np.ndarray],
    out_shape: tuple[int, ...],
    shape: tuple[int, ...],
    chunk_shape: tuple[int, ...],
) -> list[ChunkProjection]:
    """Points grouped by chunk (sorting, no per-point Python) into projections.

    ``arrays`` hold one checked, non-negative coordinate array per axis of ``shape``, all of
    ``out_shape``; within a chunk the points keep their order (the last write wins).

    Example:
        >>> ps = group_points([np.array([3, 0]), np.array([1, 1])], (2,), (4, 2), (2, 2))
        >>> [(p.chunk_coords, p.out_selection) for p in ps]
        [((0, 0), (slice(1, 2, 1),)), ((1, 0), (slice(0, 1, 1),))]
    """
    flat = [a.ravel() for a in arrays]
    n = len(flat[0])
    if n == 0:
        return []
    chunks = [f // k for f, k in zip(flat, chunk_shape, strict=True)]
    # The position is the last key: points of one chunk keep their order (last write wins).
    order = np.lexsort((np.arange(n), *reversed(chunks)))
    sorted_chunks = [c[order] for c in chunks]
    offsets = [f[order] - c * k for f, c, k in zip(flat, sorted_chunks, chunk_shape, strict=True)]
    change = np.zeros(n - 1, dtype=bool)
    for c in sorted_chunks:
        change |= c[1:] != c[:-1]
    bounds = (np.flatnonzero(change) + 1).tolist()
    out_index = np.unravel_index(order, out_shape) if out_shape else ()
    projections = []
    for s, e in zip([0, *bounds], [*bounds, n], strict=True):
        coords = tuple(int(c[s]) for c in sorted_chunks)
        region = [min(k, x - c * k) for c, k, x in zip(coords, chunk_shape, shape, strict=True)]
        if not out_shape:  # every index a scalar: one point, plain ints both sides
            chunk_sel: tuple[Any, ...] = tuple(int(o[s]) for o in offsets)
            complete = math.prod(region) == 1
            projections.append(ChunkProjection(coords, chunk_sel, (), complete))
            continue
        chunk_sel = tuple(o[s:e] for o in offsets)
        out_sel: tuple[Any, ...] = tuple(u[s:e] for u in out_index)
        if len(out_shape) == 1 and int(order[e - 1]) - int(order[s]) == e - s - 1:
            out_sel = (slice(int(order[s]), int(order[e - 1]) + 1, 1),)
        complete = e - s == math.prod(region) and bool(
            (np.ravel_multi_index(chunk_sel, region) == np.arange(e - s)).all()
        )
        projections.append(ChunkProjection(coords, chunk_sel, out_sel, complete))
    return projections
