"""Numpy's advanced indexing with several integer arrays among ints, slices and Ellipsis.

``a[0, [1, 2], [3, 4]]``, ``a[:, i, j]``, ``a[i, :, j]``: the integer arrays and the ints
(0-d arrays here) broadcast together to shape B, their points are grouped by the chunk they
hit on those axes, and the slices keep their axes. B replaces the advanced axes in place when
they are adjacent in the selection, else it goes first, as in numpy. Each projection pairs one
group of points with one chunk of every slice axis, both selections mixing 1-d point arrays
with slices, so that numpy lays out ``chunk[chunk_selection]`` and ``out[out_selection]``
alike: work is proportional to the points and the chunks touched, never to the elements
the slices take.
"""

from __future__ import annotations

import itertools
import math
import operator
from collections.abc import Iterator
from typing import Any

import numpy as np

from torchzarr.core import indexing
from torchzarr.core._index_axes import AxisStep, SliceAxis, as_int, broadcast_points
from torchzarr.core.indexing import ChunkProjection, Indexer, chunk_grid_shape
from torchzarr.errors import SelectionError

__all__ = ["is_mixed_points_selection", "mixed_points_indexer"]


def _is_index_array(item: Any) -> bool:
    return isinstance(item, np.ndarray) and item.ndim > 0


def is_mixed_points_selection(selection: Any) -> bool:
    """Whether a selection (lists already numpy arrays) holds two or more non-boolean index
    arrays, or one of 2+ dimensions, and no boolean one: numpy pairs those arrays (and the
    ints beside them) up pointwise.

    Example:
        >>> is_mixed_points_selection((0, np.array([1, 2]), np.array([3, 4])))
        True
        >>> is_mixed_points_selection((0, slice(None), np.array([1, 2])))
        False
    """
    items = selection if isinstance(selection, tuple) else (selection,)
    arrays = [item for item in items if _is_index_array(item)]
    if not arrays or any(item.dtype == bool for item in arrays):
        return False
    # one integer array of 2+ dimensions: numpy pairs it with the ints, as two arrays
    return len(arrays) >= 2 or arrays[0].ndim > 1


def _adjacent(items: tuple[Any, ...]) -> bool:
    """Whether the ints and arrays of a selection stand together; as in numpy, an Ellipsis
    between them separates them even where it stands for no axis."""
    advanced = [
        i for i, item in enumerate(items) if _is_index_array(item) or as_int(item) is not None
    ]
    return all(
        _is_index_array(items[i]) or as_int(items[i]) is not None
        for i in range(advanced[0], advanced[-1] + 1)
    )


class _SliceSteps:
    """A slice on one axis (any non-zero step) split into chunks: ``length`` elements, and
    per chunk a step whose chunk item has a positive step; a negative step reverses the
    output positions instead."""

    def __init__(self, item: slice, axis: int, extent: int, chunk_len: int) -> None:
        try:  # numpy's steps: ints, numpy and 0-d torch integers (never floats)
            step = 1 if item.step is None else operator.index(item.step)
        except TypeError:
            raise SelectionError(
                f"slice step must be an integer, got {item!r} on axis {axis}"
            ) from None
        if step == 0:
            raise SelectionError(f"slice step cannot be zero, got {item!r} on axis {axis}")
        self.reversed = step < 0
        if not self.reversed:
            self._axis = SliceAxis(item, axis, extent, chunk_len)
        else:
            try:
                start, stop, step = item.indices(extent)
            except (TypeError, ValueError) as err:
                raise SelectionError(f"invalid slice {item!r} on axis {axis}: {err}") from None
            count = len(range(start, stop, step))
            low = start + (count - 1) * step if count else 0
            end = start + 1 if count else 0
            self._axis = SliceAxis(slice(low, end, -step), axis, extent, chunk_len)
        self.length: int = self._axis.length or 0
        self.nchunks = self._axis.nchunks

    def steps(self) -> list[AxisStep]:
        """The per-chunk steps, in the chunks' order."""
        if not self.reversed:
            return list(self._axis)
        n = self.length
        steps = []
        for s in self._axis:
            first, stop = s.out_item.start, s.out_item.stop  # type: ignore[union-attr]
            last_out = n - stop  # the output position of the chunk's last element
            out_item = slice(n - 1 - first, last_out - 1 if last_out > 0 else None, -1)
            steps.append(
                AxisStep(s.chunk, s.chunk_item, out_item, s.complete and stop == first + 1)
            )
        return steps


class _MixedPointsIndexer:
    """Projections of point groups (advanced axes) by chunks of the slice axes, made lazily."""

    def __init__(
        self,
        shape: tuple[int, ...],
        ndim: int,
        advanced: list[int],
        groups: list[ChunkProjection],
        slices: dict[int, _SliceSteps],
        front: bool,
    ) -> None:
        self.shape = shape
        self._ndim, self._advanced, self._groups = ndim, advanced, groups
        self._slices, self._front = slices, front
        # B goes first although the advanced axes are adjacent in the chunk (an Ellipsis
        # for no axis parted them): the slice axes before them join the points as aranges
        self._leading = (
            [axis for axis in slices if axis < advanced[0]]
            if front and advanced[-1] - advanced[0] == len(advanced) - 1
            else []
        )

    @property
    def nchunks(self) -> int:
        """The number of projections, computed without iterating."""
        return len(self._groups) * math.prod(s.nchunks for s in self._slices.values())

    def __iter__(self) -> Iterator[ChunkProjection]:
        if not self.nchunks:
            return
        axes = list(self._slices)
        per_axis = [self._slices[axis].steps() for axis in axes]
        for group in self._groups:
            for steps in itertools.product(*per_axis):
                yield self._projection(group, dict(zip(axes, steps, strict=True)))

    def _projection(self, group: ChunkProjection, steps: dict[int, AxisStep]) -> ChunkProjection:
        coords: list[int] = []
        chunk_items: list[Any] = []
        points = iter(zip(group.chunk_coords, group.chunk_selection, strict=True))
        for axis in range(self._ndim):
            if axis in steps:
                coords.append(steps[axis].chunk)
                chunk_items.append(steps[axis].chunk_item)
            else:
                coord, offsets = next(points)
                coords.append(coord)
                chunk_items.append(offsets)
        if self._leading:
            chunk_items = self._with_leading_aranges(chunk_items)
        before = [steps[a].out_item for a in steps if a < self._advanced[0] and not self._front]
        after = [steps[a].out_item for a in steps if a > self._advanced[0] or self._front]
        out_items = (*before, *group.out_selection, *after)
        complete = (
            not self._front and group.is_complete_chunk and all(s.complete for s in steps.values())
        )
        return ChunkProjection(tuple(coords), tuple(chunk_items), out_items, complete)

    def _with_leading_aranges(self, chunk_items: list[Any]) -> list[Any]:
        """Chunk items that put the points first: the leading slices as aranges, broadcast
        behind the points, so that every advanced axis stands together from axis 0."""
        depth = len(self._leading)
        items = list(chunk_items)
        for axis in self._advanced:
            items[axis] = np.asarray(items[axis]).reshape((-1,) + (1,) * depth)
        for k, axis in enumerate(self._leading):
            item = items[axis]
            values = np.arange(item.start, item.stop, item.step, dtype=np.intp)
            items[axis] = values.reshape((-1,) + (1,) * (depth - 1 - k))
        return items

    def __repr__(self) -> str:
        return f"<MixedPointsIndexer shape={self.shape} nchunks={self.nchunks}>"


def mixed_points_indexer(selection: Any, shape: Any, chunk_shape: Any) -> Indexer:
    """An indexer for numpy's advanced indexing with several integer arrays among ints,
    slices (any non-zero step) and one Ellipsis: ints and arrays broadcast to shape B, which
    replaces their axes when they stand together and goes first otherwise.

    Raises:
        BoundsError: an int or array entry outside its axis.
        SelectionError: arrays that do not broadcast, a float array, a zero slice step, ...

    Example:
        >>> ix = mixed_points_indexer((0, [1, 2], [3, 4]), (4, 5, 6), (2, 2, 2))
        >>> ix.shape, [p.chunk_coords for p in ix]
        ((2,), [(0, 0, 1), (0, 1, 2)])
        >>> mixed_points_indexer(([1, 2], slice(None), [3, 4]), (4, 5, 6), (2, 2, 2)).shape
        (2, 5)
    """
    grid = chunk_grid_shape(shape, chunk_shape)  # checks the shapes
    shape, chunk_shape = tuple(int(s) for s in shape), tuple(int(c) for c in chunk_shape)
    raw = selection if isinstance(selection, tuple) else (selection,)
    raw = tuple(np.asarray(item) if isinstance(item, list) else item for item in raw)
    items = indexing.normalize_selection(raw, len(grid))
    slices: dict[int, _SliceSteps] = {}
    advanced: list[int] = []
    for axis, item in enumerate(items):
        if isinstance(item, slice):
            slices[axis] = _SliceSteps(item, axis, shape[axis], chunk_shape[axis])
        elif _is_index_array(item) or as_int(item) is not None:
            advanced.append(axis)
        else:
            raise SelectionError(
                f"a selection takes ints, slices, Ellipsis and integer arrays; got {item!r} "
                f"of type {type(item).__name__} on axis {axis}"
            )
    points = broadcast_points(items, advanced, shape, "indexing")
    front = not _adjacent(raw)
    lengths = {axis: steps.length for axis, steps in slices.items()}
    point_shape = tuple(points[0].shape)
    if front:
        out_shape = (*point_shape, *lengths.values())
    else:
        before = [n for axis, n in lengths.items() if axis < advanced[0]]
        after = [n for axis, n in lengths.items() if axis > advanced[0]]
        out_shape = (*before, *point_shape, *after)
    groups = indexing.group_points(
        points,
        point_shape,
        tuple(shape[a] for a in advanced),
        tuple(chunk_shape[a] for a in advanced),
    )
    return _MixedPointsIndexer(out_shape, len(shape), advanced, groups, slices, front)
