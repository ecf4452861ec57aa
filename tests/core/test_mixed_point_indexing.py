"""Several integer index arrays among ints, slices and Ellipsis select as numpy does."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import torchzarr as tz
from torchzarr.core import indexing
from torchzarr.core.cache import ChunkCache
from torchzarr.core.indexing import chunk_grid_shape
from torchzarr.core.selection import make_indexer
from torchzarr.errors import BoundsError, SelectionError

SETTINGS = settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
FILL = -1


# -- strategies ---------------------------------------------------------------------------------
def slices(extent: int) -> st.SearchStrategy[slice]:
    bound = st.none() | st.integers(-extent - 2, extent + 2)
    step = st.none() | st.integers(1, 4) | st.integers(-4, -1)
    return st.builds(slice, bound, bound, step)


@st.composite
def shapes_and_chunks(draw: st.DrawFn) -> tuple[tuple[int, ...], tuple[int, ...]]:
    shape = tuple(draw(st.lists(st.integers(1, 6), min_size=2, max_size=4)))
    return shape, tuple(draw(st.integers(1, 4)) for _ in shape)


@st.composite
def mixed_selections(draw: st.DrawFn, shape: tuple[int, ...]) -> tuple[Any, ...]:
    """Two or more integer arrays (broadcastable, duplicates and negatives allowed), or one
    of 2+ dimensions, ints on other axes, slices with any step on the rest, maybe an
    Ellipsis or a short tuple."""
    ndim = len(shape)
    advanced = sorted(draw(st.sets(st.integers(0, ndim - 1), min_size=1, max_size=ndim)))
    arrays = set(draw(st.permutations(advanced))[: draw(st.integers(1, len(advanced)))])
    lone = len(arrays) == 1  # then its own points have 2+ dimensions
    points = tuple(draw(st.lists(st.integers(0, 3), min_size=1 + lone, max_size=2 + lone)))
    items: list[Any] = []
    for axis, extent in enumerate(shape):
        if axis not in advanced:
            items.append(draw(slices(extent)))
        elif axis not in arrays:
            items.append(draw(st.integers(-extent, extent - 1)))
        else:  # trailing dims of the point shape, some of them 1: still broadcastable
            own = points if lone else points[draw(st.integers(0, len(points) - 1)) :]
            own = tuple(1 if draw(st.booleans()) else n for n in own)
            values = st.lists(
                st.integers(-extent, extent - 1), min_size=math.prod(own), max_size=math.prod(own)
            )
            array = np.array(draw(values), dtype=np.int64).reshape(own)
            as_list = array.size > 0 and draw(st.booleans())  # an empty list loses its shape
            items.append(array.tolist() if as_list else array)
    form = draw(st.sampled_from(["full", "ellipsis", "short"]))
    runs = [
        (lo, hi)
        for lo in range(ndim + 1)
        for hi in range(lo, ndim + 1)
        if all(isinstance(item, slice) for item in items[lo:hi])
    ]
    if form == "ellipsis":  # an Ellipsis for a run of slices, maybe for no axis at all
        lo, hi = draw(st.sampled_from(runs))
        items = [*items[:lo], Ellipsis, *items[hi:]]
    elif form == "short":  # trailing slices left out
        end = max(lo for lo, hi in runs if hi == ndim)
        items = items[: draw(st.integers(end, ndim))]
    return tuple(items)


# -- the projections alone, on a chunked copy simulated with numpy --------------------------------
def _padded(a: np.ndarray, chunk_shape: tuple[int, ...]) -> np.ndarray:
    grid = chunk_grid_shape(a.shape, chunk_shape)
    out = np.full(tuple(g * k for g, k in zip(grid, chunk_shape, strict=True)), FILL, a.dtype)
    out[tuple(slice(0, s) for s in a.shape)] = a
    return out


def _chunk(p: np.ndarray, coords: tuple[int, ...], chunk_shape: tuple[int, ...]) -> np.ndarray:
    return p[tuple(slice(c * k, (c + 1) * k) for c, k in zip(coords, chunk_shape, strict=True))]


@SETTINGS
@given(case=shapes_and_chunks(), data=st.data())
def test_mixed_point_projections_read_and_write_as_numpy(case: Any, data: st.DataObject) -> None:
    shape, chunk_shape = case
    a = np.arange(math.prod(shape), dtype=np.int64).reshape(shape)
    selection = data.draw(mixed_selections(shape))
    expected = a[selection]
    indexer = make_indexer(selection, shape, chunk_shape)
    assert indexer.shape == expected.shape
    projections = list(indexer)
    coords = [p.chunk_coords for p in projections]
    assert len(set(coords)) == len(coords) == indexer.nchunks
    padded = _padded(a, chunk_shape)
    positions = np.arange(math.prod(chunk_shape)).reshape(chunk_shape)
    out = np.full(expected.shape, -7, dtype=a.dtype)
    for p in projections:
        out[p.out_selection] = _chunk(padded, p.chunk_coords, chunk_shape)[p.chunk_selection]
        if p.is_complete_chunk:  # then the chunk may be decoded straight into the output
            region = tuple(
                slice(0, min(k, s - c * k))
                for c, k, s in zip(p.chunk_coords, chunk_shape, shape, strict=True)
            )
            selected = np.asarray(positions[p.chunk_selection]).ravel()
            assert np.array_equal(selected, positions[region].ravel()), p
    assert np.array_equal(out, expected)
    value = -10 - np.arange(expected.size).reshape(expected.shape)
    for p in projections:
        _chunk(padded, p.chunk_coords, chunk_shape)[p.chunk_selection] = value[p.out_selection]
    b = a.copy()
    b[selection] = value  # duplicate points: the last write wins
    assert np.array_equal(padded[tuple(slice(0, s) for s in shape)], b)


# -- arrays in stores ---------------------------------------------------------------------------
def _array(layout: str, shape: tuple[int, ...], chunks: tuple[int, ...], root: str) -> Any:
    """An empty int32 array: "v2", "v3", "sharded" (v3, in memory), "local" (zstd files),
    "local raw" (no codec), "local sharded"; "cached" after a name adds a chunk cache."""
    name = layout.removesuffix(" cached")
    store = f"{root}/{name}.zarr" if name.startswith("local") else tz.MemoryStore()
    kwargs: dict[str, Any] = {"shape": shape, "dtype": torch.int32, "fill_value": FILL}
    if name == "v2":
        kwargs["zarr_format"] = 2
    if name.endswith("sharded"):
        kwargs["shards"] = tuple(c * (1 + i % 2) for i, c in enumerate(chunks))
    if name == "local raw":
        kwargs["compressors"] = None
    arr = tz.create_array(store, chunks=chunks, **kwargs)
    return arr.with_cache(ChunkCache(max_bytes=1 << 20)) if layout.endswith("cached") else arr


@pytest.mark.parametrize("layout", ["v2", "v3", "sharded", "sharded cached"])
@SETTINGS
@given(case=shapes_and_chunks(), data=st.data())
def test_mixed_point_selections_read_and_write_arrays_as_numpy(
    layout: str, case: Any, data: st.DataObject
) -> None:
    shape, chunks = case
    reference = np.arange(math.prod(shape), dtype=np.int32).reshape(shape)
    arr = _array(layout, shape, chunks, "")
    arr[...] = reference
    selection = data.draw(mixed_selections(shape))
    expected = reference[selection]
    np.testing.assert_array_equal(arr[selection].numpy(), expected)
    value = -2 - np.arange(expected.size, dtype=np.int32).reshape(expected.shape)
    arr[selection] = torch.from_numpy(value)
    reference[selection] = value
    np.testing.assert_array_equal(arr[...].numpy(), reference)


# -- the cases numpy and zarr-python agree on, and the rest of numpy's rule ------------------------
X = np.arange(4 * 5 * 6, dtype=np.int32).reshape(4, 5, 6)
CASES = [
    ((0, [1, 2], [3, 4]), (2,)),
    (([1, 2], [3, 4], 0), (2,)),
    ((slice(None), [1, 2], [3, 4]), (4, 2)),
    ((..., [1, 2], [3, 4]), (4, 2)),
    (([1, 2], slice(None), [3, 4]), (2, 5)),  # parted by a slice: the points go first
    ((slice(None), [1, 2], ..., [3, 4]), (2, 4)),  # an Ellipsis for no axis parts them too
    ((slice(None, None, -2), [[1], [2]], [3, 4, 0]), (2, 2, 3)),
    (([-1, 0], slice(4, 0, -3), [-6, 5]), (2, 2)),
    (([3, 3, 1], [4, 4, 0]), (3, 6)),
    ((slice(None), [0, 0, 1, 1], [0, 1, 0, 1]), (4, 4)),
    ((slice(None), [0, 0, 0, 1, 1, 1], [0, 1, 2, 0, 1, 2]), (4, 6)),  # whole chunks
    (([2, 2, 2, 3, 3, 3], [0, 1, 2, 0, 1, 2], slice(None)), (6, 6)),
    (([], [], 0), (0,)),
]


@pytest.mark.parametrize(
    "layout",
    ["v2", "v3", "sharded", "sharded cached", "local", "local raw", "local sharded cached"],
)
@pytest.mark.parametrize(("selection", "shape"), CASES)
def test_several_index_arrays_select_as_numpy(
    layout: str, selection: Any, shape: tuple[int, ...], tmp_path: Any
) -> None:
    arr = _array(layout, X.shape, (2, 2, 3), str(tmp_path))
    arr[...] = X
    assert X[selection].shape == shape
    result = arr[selection]
    assert tuple(result.shape) == shape
    np.testing.assert_array_equal(result.numpy(), X[selection])
    value = -2 - np.arange(math.prod(shape), dtype=np.int32).reshape(shape)
    arr[selection] = value
    expected = X.copy()
    expected[selection] = value
    np.testing.assert_array_equal(arr[...].numpy(), expected)


def test_writes_through_points_and_ints_change_only_those_positions() -> None:
    arr = tz.from_array(tz.MemoryStore(), data=X, chunks=(2, 2, 2))
    arr[0, [1, 2], [3, 4]] = torch.tensor([-5, -6], dtype=torch.int32)
    expected = X.copy()
    expected[0, 1, 3], expected[0, 2, 4] = -5, -6
    np.testing.assert_array_equal(arr[...].numpy(), expected)
    arr[[1, 1, 2], slice(None), [0, 0, 5]] = np.array([[7], [8], [9]], dtype=np.int32)
    expected[[1, 1, 2], :, [0, 0, 5]] = np.array([[7], [8], [9]])  # the last write wins
    np.testing.assert_array_equal(arr[...].numpy(), expected)
    assert (arr[1, :, 0] == 8).all()


def test_one_array_among_ints_and_slices_stays_orthogonal() -> None:
    arr = tz.from_array(tz.MemoryStore(), data=X, chunks=(2, 2, 2))
    assert tuple(arr[0, :, [1, 2]].shape) == (5, 2)  # zarr-python's layout; numpy: (2, 5)
    np.testing.assert_array_equal(arr[0, :, [1, 2]].numpy(), X[0][:, [1, 2]])
    assert tuple(arr.oindex[[0, 1], :, [1, 2]].shape) == (2, 5, 2)
    assert tuple(arr.vindex[[0, 1], [1, 2], [3, 4]].shape) == (2,)


@pytest.mark.parametrize(
    ("selection", "error", "message"),
    [
        ((slice(None), [0, 1, 2], [0, 1]), SelectionError, r"shapes \[\(3,\), \(2,\)\]"),
        ((0, [0, 1, 2], [[0, 1]]), SelectionError, r"shapes \[\(3,\), \(1, 2\)\]"),
        ((0, [1, 9], [0, 1]), BoundsError, "index 9 is out of bounds for axis 1 with extent 5"),
        ((4, [0, 1], [0, 1]), BoundsError, "index 4 is out of bounds for axis 0 with extent 4"),
        ((-5, [0, 1], [0, 1]), BoundsError, "index -5 is out of bounds for axis 0 with extent 4"),
        ((slice(None, None, 0), [0, 1], [0, 1]), SelectionError, "step cannot be zero"),
        (([0.5, 1], [0, 1]), SelectionError, "dtype float64"),
    ],
)
def test_bad_point_selections_are_refused(selection: Any, error: type, message: str) -> None:
    arr = tz.from_array(tz.MemoryStore(), data=X, chunks=(2, 2, 2))
    with pytest.raises(error, match=message):
        arr[selection]
    with pytest.raises(error, match=message):
        arr[selection] = 0
    np.testing.assert_array_equal(arr[...].numpy(), X)


def test_points_are_grouped_over_the_indexed_axes_only(monkeypatch: pytest.MonkeyPatch) -> None:
    counts: list[int] = []
    group_points = indexing.group_points

    def counting(arrays: list[np.ndarray], *args: Any) -> Any:
        counts.append(arrays[0].size)
        return group_points(arrays, *args)

    monkeypatch.setattr(indexing, "group_points", counting)
    arr = tz.create_array(
        tz.MemoryStore(), shape=(64, 64, 4096), dtype=torch.int8, chunks=(16, 16, 1024)
    )
    rng = np.random.default_rng(0)
    rows, cols = rng.integers(0, 64, 500), rng.integers(0, 64, 500)
    arr[rows, cols] = 3
    result = arr[rows, cols]
    assert tuple(result.shape) == (500, 4096) and (result == 3).all()
    assert counts == [500, 500]  # one point per (row, column) pair, not per element
    indexer = make_indexer((rows, cols), arr.shape, arr.chunks)
    assert indexer.nchunks == len({(r // 16, c // 16) for r, c in zip(rows, cols, strict=True)}) * 4


def test_a_torch_integer_slice_step_is_taken_as_numpy_takes_it() -> None:
    arr = tz.from_array(tz.MemoryStore(), data=X, chunks=(2, 2, 2))
    for step in (torch.tensor(-2), torch.tensor(3), np.int64(-1)):
        selection = (slice(None, None, step), [1, 2], [3, 4])
        np.testing.assert_array_equal(arr[selection].numpy(), X[:: int(step), [1, 2], [3, 4]])
    with pytest.raises(SelectionError, match="step must be an integer"):
        arr[::1.5, [1, 2], [3, 4]]


def test_points_parted_by_an_empty_ellipsis_touch_only_their_inner_chunks() -> None:
    from torchzarr.core.shard_cache import touched_chunks, touched_count

    diagonal = np.arange(64)
    arr = tz.create_array(
        tz.MemoryStore(), shape=(2, 64, 64), dtype=torch.int8, chunks=(1, 8, 8), shards=(1, 64, 64)
    )
    seen: dict[str, int] = {}
    for name, selection in {
        "adjacent": (slice(None), diagonal, diagonal),
        "parted": (slice(None), diagonal, ..., diagonal),
    }.items():
        projections = list(make_indexer(selection, arr.shape, arr.shards))
        seen[name] = sum(
            touched_count(p.chunk_selection, arr.chunks, arr.shards) for p in projections
        )
        reached = {
            c
            for p in projections
            for c in touched_chunks(p.chunk_selection, arr.chunks, arr.shards)
        }
        assert len(reached) == 8  # the diagonal's inner chunks of one shard row
    assert seen == {"adjacent": 16, "parted": 16}
