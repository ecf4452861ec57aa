"""Per-axis selections (an int, a slice, an integer array) split along one axis of a chunk grid."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np

from torchzarr.errors import BoundsError, SelectionError

__all__ = [
    "ArrayAxis",
    "Axis",
    "AxisStep",
    "IntAxis",
    "SliceAxis",
    "as_int",
    "as_int_array",
    "as_slice",
    "broadcast_points",
    "check_int_array",
    "open_mesh",
]

#: one axis' share of a chunk selection: an int (the axis drops), a slice or an index array
ChunkItem = int | slice | np.ndarray
#: one axis' share of an output selection: a slice or an index array
OutItem = slice | np.ndarray


class AxisStep(NamedTuple):
    """What one axis selection does inside one chunk along that axis.

    Attributes:
        chunk: the chunk's coordinate along the axis.
        chunk_item: index along the axis into the full-size chunk.
        out_item: index along the axis into the output, ``None`` when the axis drops.
        complete: the step covers every in-bounds position of the chunk, in order, step 1.
    """

    chunk: int
    chunk_item: ChunkItem
    out_item: OutItem | None
    complete: bool


def as_int(item: Any) -> int | None:
    """``item`` as a Python int when it is an integer scalar (not a bool), else None.

    Numpy integer scalars and 0-d integer arrays count as ints.

    Example:
        >>> as_int(np.int8(-3)), as_int(np.array(4)), as_int(True), as_int(1.0)
        (-3, 4, None, None)
    """
    if isinstance(item, bool | np.bool_):
        return None
    if isinstance(item, int | np.integer):
        return int(item)
    if isinstance(item, np.ndarray) and item.ndim == 0 and item.dtype.kind in "iu":
        return int(item)
    return None


def _in_bounds(chunk: int, extent: int, chunk_len: int) -> int:
    """How many positions of a chunk lie inside the array along one axis."""
    return min(chunk_len, extent - chunk * chunk_len)


def _check_int(index: int, axis: int, extent: int) -> int:
    if not -extent <= index < extent:
        raise BoundsError(f"index {index} is out of bounds for axis {axis} with extent {extent}")
    return index + extent if index < 0 else index


def as_int_array(item: Any, what: str) -> np.ndarray:
    """``item`` (a list or an array) as a numpy array of integers or booleans.

    An empty list becomes an empty integer array, as in numpy.

    Example:
        >>> as_int_array([2, -1], "oindex").tolist()
        [2, -1]
    """
    arr = np.asarray(item)
    if arr.size == 0 and arr.dtype.kind not in "biu":
        return np.zeros(arr.shape, dtype=np.int64)
    if arr.dtype.kind not in "biu":
        raise SelectionError(
            f"{what} takes integer arrays or boolean masks; got an array of dtype {arr.dtype}"
        )
    return arr


def check_int_array(arr: np.ndarray, axis: int, extent: int) -> np.ndarray:
    """Indices (any integer dtype, negatives allowed) checked and made non-negative int64.

    Raises:
        BoundsError: naming the first offending value in C order.

    Example:
        >>> check_int_array(np.array([0, -1]), 0, 5).tolist()
        [0, 4]
    """
    if arr.dtype.kind == "u":
        bad = arr >= extent
        if bad.any():
            raise BoundsError(
                f"index {int(arr[bad][0])} is out of bounds for axis {axis} with extent {extent}"
            )
        return arr.astype(np.int64)
    arr = arr.astype(np.int64, copy=False)
    bad = (arr < -extent) | (arr >= extent)
    if bad.any():
        raise BoundsError(
            f"index {int(arr[bad][0])} is out of bounds for axis {axis} with extent {extent}"
        )
    return np.where(arr < 0, arr + extent, arr)


def broadcast_points(
    items: Sequence[Any], axes: Sequence[int], shape: Sequence[int], what: str
) -> list[np.ndarray]:
    """The ints and integer arrays of ``items`` on ``axes`` as index arrays broadcast
    together, each checked against its axis of ``shape`` and made non-negative.

    ``what`` names the selection in errors. As in numpy, arrays that do not broadcast are
    refused before any index is checked against its axis.

    Raises:
        SelectionError: an array not of integers, or arrays that do not broadcast together.
        BoundsError: an index outside its axis (the first offending one).

    Example:
        >>> points = broadcast_points((0, [1, -1]), (0, 1), (2, 3), "vindex")
        >>> [p.tolist() for p in points]
        [[0, 0], [1, 2]]
    """
    arrays = []
    for axis in axes:
        index = as_int(items[axis])
        arrays.append(np.asarray(index) if index is not None else as_int_array(items[axis], what))
    shapes = [a.shape for a in arrays if a.ndim]
    try:
        np.broadcast_shapes(*shapes)
    except ValueError:
        raise SelectionError(
            f"{what} arrays of shapes {shapes} cannot be broadcast together"
        ) from None
    checked = [check_int_array(a, axis, shape[axis]) for a, axis in zip(arrays, axes, strict=True)]
    return list(np.broadcast_arrays(*checked))


class IntAxis:
    """An integer on one axis: one chunk, and the axis drops from the output.

    The step is complete only where the chunk holds a single in-bounds position on the axis.

    Example:
        >>> list(IntAxis(-1, axis=0, extent=10, chunk_len=4))
        [AxisStep(chunk=2, chunk_item=1, out_item=None, complete=False)]
    """

    length: int | None = None
    nchunks = 1

    def __init__(self, index: int, *, axis: int, extent: int, chunk_len: int) -> None:
        self.index = _check_int(index, axis, extent)
        self.extent, self.chunk_len = extent, chunk_len

    def __iter__(self) -> Iterator[AxisStep]:
        chunk = self.index // self.chunk_len
        offset = self.index - chunk * self.chunk_len
        yield AxisStep(chunk, offset, None, _in_bounds(chunk, self.extent, self.chunk_len) == 1)


class SliceAxis:
    """A slice with a positive step on one axis, split into chunks lazily.

    Work is proportional to the chunks touched, whatever the extent of the axis.

    Example:
        >>> [(s.chunk, s.chunk_item, s.out_item) for s in SliceAxis(slice(1, 6), 0, 10, 4)]
        [(0, slice(1, 4, 1), slice(0, 3, 1)), (1, slice(0, 2, 1), slice(3, 5, 1))]
    """

    def __init__(self, selection: slice, axis: int, extent: int, chunk_len: int) -> None:
        try:
            start, stop, step = selection.indices(extent)
        except (TypeError, ValueError) as err:
            if selection.step is not None and as_int(selection.step) == 0:
                step = 0  # reported below, with negative steps
            else:
                raise SelectionError(f"invalid slice {selection!r} on axis {axis}: {err}") from None
        if step <= 0:
            raise SelectionError(
                f"slice step must be positive, got {step} in {selection!r} on axis {axis}"
            )
        self.start, self.step, self.extent, self.chunk_len = start, step, extent, chunk_len
        self.length: int | None = max(0, -(-(stop - start) // step))

    @property
    def nchunks(self) -> int:
        """The number of chunks the slice touches."""
        n = self.length or 0
        if n == 0:
            return 0
        if self.step >= self.chunk_len:  # at most one element per chunk
            return n
        last = self.start + (n - 1) * self.step
        return last // self.chunk_len - self.start // self.chunk_len + 1

    def __iter__(self) -> Iterator[AxisStep]:
        n = self.length or 0
        if n == 0:
            return
        start, step, k = self.start, self.step, self.chunk_len
        if step >= k:
            # Every element lies in its own chunk: walk the elements.
            for j in range(n):
                index = start + j * step
                chunk = index // k
                offset = index - chunk * k
                complete = _in_bounds(chunk, self.extent, k) == 1
                yield AxisStep(chunk, slice(offset, offset + 1, 1), slice(j, j + 1, 1), complete)
            return
        # A gap shorter than a chunk skips no chunk: walk the chunks.
        last = start + (n - 1) * step
        for chunk in range(start // k, last // k + 1):
            lo = chunk * k
            hi = min(lo + k, self.extent)
            first_j = 0 if start >= lo else -(-(lo - start) // step)
            last_j = min(n - 1, (hi - 1 - start) // step)
            first = start + first_j * step
            end = start + last_j * step
            own_step = step if last_j > first_j else 1  # one element: any step is step 1
            complete = own_step == 1 and first == lo and end == hi - 1
            yield AxisStep(
                chunk,
                slice(first - lo, end - lo + 1, own_step),
                slice(first_j, last_j + 1, 1),
                complete,
            )


def as_slice(values: np.ndarray) -> slice | None:
    """An equivalent slice when ``values`` (non-empty) is an increasing arithmetic progression.

    Example:
        >>> as_slice(np.array([1, 3, 5])), as_slice(np.array([2, 1]))
        (slice(1, 6, 2), None)
    """
    if len(values) == 1:
        first = int(values[0])
        return slice(first, first + 1, 1)
    step = int(values[1] - values[0])
    if step <= 0 or not bool((np.diff(values) == step).all()):
        return None
    return slice(int(values[0]), int(values[-1]) + 1, step)


class ArrayAxis:
    """Integer indices (any order, duplicates allowed) on one axis, grouped by chunk.

    Within a chunk the original order is kept, so duplicates resolve like numpy (last wins on
    writes). Runs that are arithmetic progressions become slices.

    Example:
        >>> [(s.chunk, s.chunk_item, s.out_item) for s in ArrayAxis(np.array([5, 0, 1]), 4, 4)]
        [(0, slice(0, 2, 1), slice(1, 3, 1)), (1, slice(1, 2, 1), slice(0, 1, 1))]
    """

    def __init__(self, indices: np.ndarray, extent: int, chunk_len: int) -> None:
        self.extent, self.chunk_len = extent, chunk_len
        self.length: int | None = len(indices)
        chunks = indices // chunk_len
        order = np.argsort(chunks, kind="stable")
        sorted_chunks = chunks[order]
        bounds = np.flatnonzero(np.diff(sorted_chunks)) + 1
        starts = [0, *bounds.tolist()] if len(indices) else []
        ends = [*bounds.tolist(), len(indices)] if len(indices) else []
        self._steps: list[AxisStep] = []
        for s, e in zip(starts, ends, strict=True):
            chunk = int(sorted_chunks[s])
            positions = order[s:e]
            offsets = indices[positions] - chunk * chunk_len
            self._steps.append(self._step(chunk, offsets, positions))

    def _step(self, chunk: int, offsets: np.ndarray, positions: np.ndarray) -> AxisStep:
        chunk_item: ChunkItem = as_slice(offsets) or offsets
        # A stable sort keeps positions increasing: contiguous when the span equals the count.
        n = len(positions)
        first = int(positions[0])
        out_item: OutItem = (
            slice(first, first + n, 1) if int(positions[-1]) - first == n - 1 else positions
        )
        in_bounds = _in_bounds(chunk, self.extent, self.chunk_len)
        complete = isinstance(chunk_item, slice) and chunk_item == slice(0, in_bounds, 1)
        return AxisStep(chunk, chunk_item, out_item, complete)

    @property
    def nchunks(self) -> int:
        """The number of distinct chunks the indices touch."""
        return len(self._steps)

    def __iter__(self) -> Iterator[AxisStep]:
        return iter(self._steps)


Axis = IntAxis | SliceAxis | ArrayAxis


def open_mesh(items: list[ChunkItem]) -> tuple[Any, ...]:
    """A selection applying each axis' item independently (an open mesh, as ``np.ix_``).

    Numpy moves broadcast advanced-index dimensions to the front when ints or arrays are
    separated by slices; turning the slices between them into ranges keeps every dimension
    in place, and the result is valid for reads and for assignment alike.

    Example:
        >>> a = np.arange(24).reshape(2, 3, 4)
        >>> sel = open_mesh([np.array([1, 0]), slice(0, 3, 2), 1])
        >>> a[sel].tolist()
        [[13, 21], [1, 9]]
    """
    arrays = [i for i, item in enumerate(items) if isinstance(item, np.ndarray)]
    if not arrays:
        return tuple(items)
    advanced = [i for i, item in enumerate(items) if not isinstance(item, slice)]
    if len(advanced) == 1:
        return tuple(items)
    block = [i for i in range(advanced[0], advanced[-1] + 1) if not isinstance(items[i], int)]
    out: list[Any] = list(items)
    for j, i in enumerate(block):
        item = items[i]
        if isinstance(item, slice):
            arr = np.arange(item.start, item.stop, item.step, dtype=np.intp)
        else:
            arr = np.asarray(item, dtype=np.intp)
        shape = [1] * len(block)
        shape[j] = arr.size
        out[i] = arr.reshape(shape)
    return tuple(out)
