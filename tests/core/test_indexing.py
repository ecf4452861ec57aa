"""Unit tests of torchzarr.core.indexing: projections, shapes, completeness and errors."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

import torchzarr as tz
from torchzarr.core.indexing import (
    ChunkProjection,
    Indexer,
    basic_indexer,
    chunk_grid_shape,
    chunk_region,
    is_basic_selection,
    normalize_selection,
    orthogonal_indexer,
    vectorized_indexer,
)
from torchzarr.errors import BoundsError, MetadataError, SelectionError


def chunked(a: np.ndarray, chunk_shape: tuple[int, ...]) -> np.ndarray:
    """``a`` padded with -1 to whole chunks, as a store holds edge chunks."""
    grid = chunk_grid_shape(a.shape, chunk_shape)
    p = np.full([max(g, 1) * k for g, k in zip(grid, chunk_shape, strict=True)], -1, a.dtype)
    p[tuple(slice(0, s) for s in a.shape)] = a
    return p


def chunk_of(p: np.ndarray, coords: tuple[int, ...], chunk_shape: tuple[int, ...]) -> Any:
    return p[(..., *(slice(c * k, (c + 1) * k) for c, k in zip(coords, chunk_shape, strict=True)))]


def assemble(ix: Indexer, a: np.ndarray, chunk_shape: tuple[int, ...]) -> np.ndarray:
    p = chunked(a, chunk_shape)
    out = np.full(ix.shape, -7, a.dtype)
    for proj in ix:
        out[proj.out_selection] = chunk_of(p, proj.chunk_coords, chunk_shape)[proj.chunk_selection]
    return out


def scatter(ix: Indexer, a: np.ndarray, chunk_shape: tuple[int, ...], value: Any) -> np.ndarray:
    p = chunked(a, chunk_shape)
    value = np.broadcast_to(value, ix.shape)
    for proj in ix:
        chunk_of(p, proj.chunk_coords, chunk_shape)[proj.chunk_selection] = value[
            proj.out_selection
        ]
    return p[tuple(slice(0, s) for s in a.shape)]


A34 = np.arange(12).reshape(3, 4)
A = np.arange(2 * 5 * 7).reshape(2, 5, 7)


# -- grid helpers -------------------------------------------------------------------------------
def test_chunk_grid_shape_is_ceil_division_and_exact_for_huge_shapes() -> None:
    assert chunk_grid_shape((10, 0, 7, 1), (4, 3, 7, 5)) == (3, 0, 1, 1)
    assert chunk_grid_shape((2**63 - 1,), (2**31,)) == (-(-(2**63 - 1) // 2**31),)
    assert chunk_grid_shape((), ()) == ()


def test_chunk_region_clips_edge_chunks_and_rejects_coords_outside_the_grid() -> None:
    assert chunk_region((1, 0), (10, 3), (4, 3)) == (slice(4, 8, 1), slice(0, 3, 1))
    assert chunk_region((2, 0), (10, 3), (4, 3)) == (slice(8, 10, 1), slice(0, 3, 1))
    assert chunk_region((), (), ()) == ()
    with pytest.raises(BoundsError, match=r"\(3, 0\) are outside the chunk grid \(3, 1\)"):
        chunk_region((3, 0), (10, 3), (4, 3))
    with pytest.raises(BoundsError, match="outside the chunk grid"):
        chunk_region((0,), (10, 3), (4, 3))


def test_mismatched_or_invalid_chunk_shapes_raise_metadata_errors() -> None:
    with pytest.raises(MetadataError, match=r"chunk shape \(2,\) has 1 dimensions"):
        basic_indexer((), (3, 4), (2,))
    with pytest.raises(MetadataError, match="positive"):
        chunk_grid_shape((3,), (0,))


# -- normalize_selection / is_basic_selection ----------------------------------------------------
def test_normalize_selection_expands_ellipsis_and_pads() -> None:
    full = slice(None)
    assert normalize_selection(1, 3) == (1, full, full)
    assert normalize_selection((..., 2), 3) == (full, full, 2)
    assert normalize_selection((1, ..., 2), 3) == (1, full, 2)
    assert normalize_selection((1, 2, ...), 2) == (1, 2)
    assert normalize_selection((), 0) == ()
    assert normalize_selection(..., 0) == ()


@pytest.mark.parametrize(
    ("selection", "ndim", "message"),
    [
        ((..., 1, ...), 3, "single Ellipsis"),
        ((1, 2, 3), 2, "array is 2-dimensional, but 3 were indexed"),
        ((0,), 0, "array is 0-dimensional, but 1 were indexed"),
        ((None, 1), 2, "np.newaxis"),
    ],
)
def test_normalize_selection_errors(selection: Any, ndim: int, message: str) -> None:
    with pytest.raises(SelectionError, match=message):
        normalize_selection(selection, ndim)


def test_is_basic_selection() -> None:
    assert is_basic_selection((1, slice(None), ...))
    assert is_basic_selection((np.int64(2), np.array(3), np.uint8(1)))
    assert is_basic_selection(())
    assert not is_basic_selection([1, 2])
    assert not is_basic_selection((np.array([1]), 1))
    assert not is_basic_selection(True)
    assert not is_basic_selection(np.array(True))
    assert not is_basic_selection(1.0)


# -- basic indexing -----------------------------------------------------------------------------
def test_basic_projections_for_a_simple_slice() -> None:
    ix = basic_indexer(slice(1, 9), (10,), (4,))
    assert ix.shape == (8,) and ix.nchunks == 3
    assert list(ix) == [
        ChunkProjection((0,), (slice(1, 4, 1),), (slice(0, 3, 1),), False),
        ChunkProjection((1,), (slice(0, 4, 1),), (slice(3, 7, 1),), True),
        ChunkProjection((2,), (slice(0, 1, 1),), (slice(7, 8, 1),), False),
    ]


@pytest.mark.parametrize(
    "selection",
    [
        (),
        ...,
        1,
        -1,
        (slice(None), -3),
        (1, 2, 3),
        (-2, ..., -7),
        (slice(-4, None), slice(None, -2, 3)),
        (np.int32(1), np.array(4)),
        (slice(None, None, 4), slice(2, 100)),
        (slice(50, 60),),
        (slice(-100, 1),),
    ],
)
def test_basic_read_and_write_match_numpy(selection: Any) -> None:
    chunk_shape = (1, 2, 3)
    ix = basic_indexer(selection, A.shape, chunk_shape)
    assert ix.shape == A[selection].shape
    np.testing.assert_array_equal(assemble(ix, A, chunk_shape), A[selection])
    expected = A.copy()
    expected[selection] = -5
    np.testing.assert_array_equal(scatter(ix, A, chunk_shape, -5), expected)


def test_basic_int_axes_drop_and_negative_ints_count_from_the_end() -> None:
    ix = basic_indexer((-1, slice(1, 3)), (3, 4), (2, 2))
    assert ix.shape == (2,)
    assert list(ix) == [
        ChunkProjection((1, 0), (0, slice(1, 2, 1)), (slice(0, 1, 1),), False),
        ChunkProjection((1, 1), (0, slice(0, 1, 1)), (slice(1, 2, 1),), False),
    ]


def test_zero_dimensional_array_has_one_complete_projection() -> None:
    a = np.array(42)
    for selection in [(), ...]:
        ix = basic_indexer(selection, (), ())
        assert ix.shape == () and ix.nchunks == 1
        assert list(ix) == [ChunkProjection((), (), (), True)]
        assert assemble(ix, a, ()).item() == 42


def test_empty_selections_and_zero_length_axes_give_no_projections() -> None:
    for selection, shape in [(slice(3, 3), (10,)), (slice(5, 2), (10,)), ((), (0, 4))]:
        ix = basic_indexer(selection, shape, (3,) * len(shape))
        assert 0 in ix.shape and ix.nchunks == 0 and list(ix) == []
    ix = basic_indexer((), (2**62, 0), (1, 1))  # empty inner axis: no walk over the outer one
    assert ix.shape == (2**62, 0) and ix.nchunks == 0 and list(ix) == []


def test_huge_axes_are_walked_lazily_with_exact_integer_math() -> None:
    n = 2**63 - 1
    ix = basic_indexer(slice(None), (n,), (1,))
    assert ix.shape == (n,) and ix.nchunks == n
    first = next(iter(ix))
    assert first == ChunkProjection((0,), (slice(0, 1, 1),), (slice(0, 1, 1),), True)
    ix = basic_indexer((slice(n - 5, None, 2), -1), (n, 3), (2**40, 3))
    (p,) = list(ix)
    assert ix.shape == (3,)
    assert p.chunk_coords == ((n - 5) // 2**40, 0)
    start = (n - 5) % 2**40
    assert p.chunk_selection == (slice(start, start + 5, 2), 2)
    ix = basic_indexer(slice(0, None, 2**61), (n,), (2**20,))  # step larger than a chunk
    assert [p.chunk_coords[0] for p in ix] == [0, 2**41, 2**42, 3 * 2**41]


def test_is_complete_chunk_for_basic_selections() -> None:
    shape, chunks = (10, 6), (4, 3)
    complete = {p.chunk_coords: p.is_complete_chunk for p in basic_indexer((), shape, chunks)}
    assert all(complete.values()) and len(complete) == 6  # edge chunks included
    by_coords = {p.chunk_coords: p for p in basic_indexer(slice(1, None), shape, chunks)}
    assert not by_coords[(0, 0)].is_complete_chunk and by_coords[(1, 0)].is_complete_chunk
    assert not any(p.is_complete_chunk for p in basic_indexer(slice(None, None, 2), shape, chunks))
    assert not any(p.is_complete_chunk for p in basic_indexer(1, shape, chunks))  # int, k > 1
    assert all(p.is_complete_chunk for p in basic_indexer(1, shape, (1, 3)))  # int, k == 1
    # an int in an edge chunk holding a single in-bounds position covers all of it
    assert all(p.is_complete_chunk for p in basic_indexer(-1, (9, 3), (4, 3)))


def test_complete_chunks_project_to_contiguous_output_slabs() -> None:
    # the engine decodes a complete chunk straight into out[out_selection]
    out = np.zeros((8, 6))
    for p in basic_indexer((slice(None), slice(None)), (8, 6), (4, 3)):
        region = out[p.out_selection]
        assert p.is_complete_chunk and region.shape == (4, 3)
        assert all(isinstance(s, slice) for s in p.out_selection)


@pytest.mark.parametrize(
    ("selection", "message"),
    [
        ((0, 4), "index 4 is out of bounds for axis 1 with extent 4"),
        ((-4, 0), "index -4 is out of bounds for axis 0 with extent 3"),
        ((np.uint64(2**64 - 1),), f"index {2**64 - 1} is out of bounds for axis 0 with extent 3"),
    ],
)
def test_basic_out_of_bounds_ints(selection: Any, message: str) -> None:
    with pytest.raises(BoundsError, match=message):
        basic_indexer(selection, (3, 4), (2, 2))


@pytest.mark.parametrize(
    ("selection", "message"),
    [
        (slice(None, None, 0), "slice step must be positive, got 0"),
        ((slice(None), slice(None, None, -1)), "step must be positive, got -1 .* on axis 1"),
        (1.0, r"got 1\.0 of type float on axis 0"),
        ((0, np.array([1, 2])), r"got an array of shape \(2,\) and dtype int64 on axis 1"),
        ([0, 1], "use oindex or vindex"),
        (True, "got True of type bool"),
        (slice(0.5, 2), "invalid slice"),
        ((0, 0, 0), "too many indices"),
    ],
)
def test_basic_selection_errors(selection: Any, message: str) -> None:
    with pytest.raises(SelectionError, match=message):
        basic_indexer(selection, (3, 4), (2, 2))


# -- orthogonal indexing ------------------------------------------------------------------------
def ix_oracle(selection: tuple[Any, ...], shape: tuple[int, ...]) -> tuple[Any, ...]:
    arrays = []
    for item, extent in zip(selection, shape, strict=True):
        if isinstance(item, slice):
            arrays.append(np.arange(*item.indices(extent)))
        elif np.ndim(item) == 0:
            arrays.append(np.array([item]))
        elif np.asarray(item).dtype == bool:
            arrays.append(np.flatnonzero(item))
        else:
            arrays.append(np.asarray(item, dtype=np.int64))
    return np.ix_(*arrays)


@pytest.mark.parametrize(
    "selection",
    [
        ([4, 0, 2, 2, -1], slice(None), 3),
        (1, [4, 0], [True, False, True, False, False, True, True]),  # int, array, mask
        ([1, 0], slice(1, 4), [6, 0, 3]),  # arrays separated by a slice
        ([0], slice(None), -2),  # array and int separated by a slice
        (-1, slice(None, None, 2), [5, 1, 1]),  # int and array separated by a slice
        (slice(None), [True] * 5, slice(None)),
        (slice(None), [False] * 5, slice(None)),
        ([], slice(None), [1]),
        (np.array([1], dtype=np.uint8), np.array([3, 4], dtype=np.int16), np.array([6])),
    ],
)
def test_orthogonal_read_and_write_match_numpy(selection: Any) -> None:
    a = np.arange(5 * 5 * 7).reshape(5, 5, 7)
    chunk_shape = (2, 3, 3)
    ix = orthogonal_indexer(selection, a.shape, chunk_shape)
    mesh = ix_oracle(selection, a.shape)
    expected = a[mesh].reshape(ix.shape)
    kept = [isinstance(item, slice) or np.ndim(item) == 1 for item in selection]
    assert ix.shape == tuple(s for s, keep in zip(a[mesh].shape, kept, strict=True) if keep)
    np.testing.assert_array_equal(assemble(ix, a, chunk_shape), expected)
    value = -1 - np.arange(math.prod(ix.shape)).reshape(ix.shape)
    b = a.copy()
    b[mesh] = value.reshape(a[mesh].shape)
    np.testing.assert_array_equal(scatter(ix, a, chunk_shape, value), b)


def test_orthogonal_groups_indices_by_chunk_keeping_order() -> None:
    ix = orthogonal_indexer([5, 0, 4, 1, 5], (8,), (4,))
    assert ix.shape == (5,) and ix.nchunks == 2
    p0, p1 = list(ix)
    assert p0.chunk_coords == (0,) and p0.chunk_selection == (slice(0, 2, 1),)
    np.testing.assert_array_equal(p0.out_selection[0], [1, 3])
    assert p1.chunk_coords == (1,)
    np.testing.assert_array_equal(p1.chunk_selection[0], [1, 0, 1])
    np.testing.assert_array_equal(p1.out_selection[0], [0, 2, 4])


def test_orthogonal_sorted_runs_become_slices_and_full_masks_complete_chunks() -> None:
    ix = orthogonal_indexer((np.ones(6, bool), [0, 1, 2]), (6, 3), (3, 3))
    assert [p.is_complete_chunk for p in ix] == [True, True]
    assert all(isinstance(s, slice) for p in ix for s in (*p.chunk_selection, *p.out_selection))
    ix = orthogonal_indexer([1, 0, 2], (3,), (3,))
    assert [p.is_complete_chunk for p in ix] == [False]  # every position, but out of order
    ix = orthogonal_indexer([0, 0, 1, 2], (3,), (3,))
    assert [p.is_complete_chunk for p in ix] == [False]  # a duplicate


def test_orthogonal_duplicates_write_the_last_value() -> None:
    ix = orthogonal_indexer(([1, 1, 1],), (4,), (2,))
    np.testing.assert_array_equal(scatter(ix, np.zeros(4, int), (2,), [7, 8, 9]), [0, 9, 0, 0])


def test_orthogonal_many_indices_are_grouped_without_per_element_python() -> None:
    rng = np.random.default_rng(0)
    idx = rng.integers(0, 10**6, size=200_000)
    ix = orthogonal_indexer(idx, (10**6,), (1000,))
    assert ix.nchunks == len(np.unique(idx // 1000))
    assert sum(len(np.atleast_1d(np.arange(10**6)[p.out_selection[0]])) for p in ix) == idx.size


@pytest.mark.parametrize(
    ("selection", "error", "message"),
    [
        (([0, 3, 9, 12],), BoundsError, "index 3 is out of bounds for axis 0 with extent 3"),
        ((0, [-5, 1]), BoundsError, "index -5 is out of bounds for axis 1 with extent 4"),
        ((0, np.array([2**64 - 1], np.uint64)), BoundsError, f"index {2**64 - 1} is out"),
        ((7,), BoundsError, "index 7 is out of bounds for axis 0 with extent 3"),
        ((slice(None), [True, False]), SelectionError, "mask of length 2 does not match axis 1"),
        (([0.5, 1.0],), SelectionError, "integer arrays or boolean masks; got .* float64"),
        ((np.zeros((2, 2), int),), SelectionError, r"1-d arrays; got .* shape \(2, 2\)"),
        (("a",), SelectionError, "got 'a' of type str on axis 0"),
        ((True,), SelectionError, "got True of type bool on axis 0"),
        ((slice(None, None, -2),), SelectionError, "step must be positive"),
    ],
)
def test_orthogonal_errors(selection: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        orthogonal_indexer(selection, (3, 4), (2, 2))


# -- vectorized indexing ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "selection",
    [
        ([2, 0, 1, 2], [3, 0, 3, -1]),
        (np.array([[0, 2], [1, 1]]), np.array([[3], [0]])),  # broadcast to (2, 2)
        (1, [0, 3, 2]),  # a scalar broadcasts
        (2, -1),  # all scalars: a 0-d result
        (np.zeros((0, 3), int), 1),
        A34 % 2 == 0,  # one boolean mask of the full shape
    ],
)
def test_vectorized_read_and_write_match_numpy(selection: Any) -> None:
    chunk_shape = (2, 3)
    ix = vectorized_indexer(selection, A34.shape, chunk_shape)
    assert ix.shape == A34[selection].shape
    np.testing.assert_array_equal(assemble(ix, A34, chunk_shape), A34[selection])
    value = -1 - np.arange(math.prod(ix.shape)).reshape(ix.shape)
    b = A34.copy()
    b[selection] = value
    np.testing.assert_array_equal(scatter(ix, A34, chunk_shape, value), b)


def test_vectorized_on_one_axis_and_on_a_zero_dimensional_array() -> None:
    a = np.arange(10)
    ix = vectorized_indexer(np.array([[9, 0], [3, 3]]), (10,), (4,))
    np.testing.assert_array_equal(assemble(ix, a, (4,)), a[np.array([[9, 0], [3, 3]])])
    ix = vectorized_indexer([9, 1, 2], (10,), (4,))
    np.testing.assert_array_equal(assemble(ix, a, (4,)), [9, 1, 2])
    ix = vectorized_indexer((), (), ())
    assert ix.shape == () and list(ix) == [ChunkProjection((), (), (), True)]


def test_vectorized_out_selection_indexes_the_result_shape() -> None:
    ix = vectorized_indexer(
        (np.array([[0, 2], [2, 0]]), np.array([[0, 0], [1, 1]])), (3, 2), (2, 2)
    )
    for p in ix:
        assert len(p.out_selection) == 2  # one index array per result dimension
    assert ix.nchunks == 2


def test_vectorized_full_mask_marks_complete_chunks_and_contiguous_runs() -> None:
    ix = vectorized_indexer(np.ones((4, 3), bool), (4, 3), (2, 3))
    assert [p.is_complete_chunk for p in ix] == [True, True]
    assert [p.out_selection for p in ix] == [(slice(0, 6, 1),), (slice(6, 12, 1),)]
    ix = vectorized_indexer(([1, 0], [0, 0]), (4, 3), (2, 1))
    assert [p.is_complete_chunk for p in ix] == [False]  # every position, reversed


@pytest.mark.parametrize(
    ("selection", "error", "message"),
    [
        ((slice(None), [0, 1]), SelectionError, "vindex takes integer arrays .* got slice"),
        ((..., [0, 1]), SelectionError, r"integer arrays \(one per dimension\) or one boolean"),
        (([0, 1],), SelectionError, "array has 2 dimensions, got 1 arrays"),
        (([0], [1], [2]), SelectionError, "array has 2 dimensions, got 3 arrays"),
        (([True, False, True], [0, 1]), SelectionError, "boolean array on axis 0"),
        (np.ones((3, 3), bool), SelectionError, r"mask of shape \(3, 3\) does not match"),
        (([0, 1], [0, 1, 2]), SelectionError, r"shapes \[\(2,\), \(3,\)\] cannot be broadcast"),
        (([0.0], [1]), SelectionError, "dtype float64"),
        (([0, 3], [0, 1]), BoundsError, "index 3 is out of bounds for axis 0 with extent 3"),
        (([0, 1], [[2, 9], [-9, 0]]), BoundsError, "index 9 is out of bounds for axis 1"),
    ],
)
def test_vectorized_errors(selection: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        vectorized_indexer(selection, (3, 4), (2, 2))


def test_indexers_can_be_iterated_twice() -> None:
    for ix in [
        basic_indexer(slice(1, None), (5, 3), (2, 2)),
        orthogonal_indexer(([3, 1], 0), (5, 3), (2, 2)),
        vectorized_indexer(([3, 1], [0, 2]), (5, 3), (2, 2)),
    ]:
        assert [p.chunk_coords for p in ix] == [p.chunk_coords for p in ix]
        assert "nchunks" in repr(ix)


def test_index_arrays_that_do_not_broadcast_are_named_by_their_own_shapes():
    arr = tz.create_array("memory://", shape=(4, 5, 6), dtype="int8", chunks=(2, 2, 2))
    with pytest.raises(SelectionError, match=r"shapes \[\(3,\), \(2,\)\]"):
        arr[[0, 1, 2], [0, 1]]
