"""Property tests: any selection on any chunking, assembled from projections, equals numpy."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from torchzarr.core.indexing import (
    Indexer,
    basic_indexer,
    chunk_grid_shape,
    orthogonal_indexer,
    vectorized_indexer,
)
from torchzarr.core.selection import make_indexer

SETTINGS = settings(max_examples=150, deadline=None)
PAD = -1  # values past the array end in padded edge chunks (the array holds >= 0)


# -- a chunked store simulated with numpy -------------------------------------------------------
def padded(a: np.ndarray, chunk_shape: tuple[int, ...]) -> np.ndarray:
    grid = chunk_grid_shape(a.shape, chunk_shape)
    full = tuple(max(g, 1) * k for g, k in zip(grid, chunk_shape, strict=True))
    out = np.full(full, PAD, dtype=a.dtype)
    out[tuple(slice(0, s) for s in a.shape)] = a
    return out


def chunk_view(p: np.ndarray, coords: tuple[int, ...], chunk_shape: tuple[int, ...]) -> Any:
    # the leading Ellipsis keeps a 0-d result a writable view, not a scalar
    return p[(..., *(slice(c * k, (c + 1) * k) for c, k in zip(coords, chunk_shape, strict=True)))]


def check_projections(indexer: Indexer, shape: tuple[int, ...], chunk_shape: tuple[int, ...]):
    """Every chunk at most once, nchunks right, and is_complete_chunk exactly right."""
    projections = list(indexer)
    coords = [p.chunk_coords for p in projections]
    assert len(set(coords)) == len(coords) == indexer.nchunks
    grid = chunk_grid_shape(shape, chunk_shape)
    positions = np.arange(math.prod(chunk_shape)).reshape(chunk_shape)
    for p in projections:
        assert all(0 <= c < g for c, g in zip(p.chunk_coords, grid, strict=True))
        region = tuple(
            slice(0, min(k, s - c * k))
            for c, k, s in zip(p.chunk_coords, chunk_shape, shape, strict=True)
        )
        selected = np.asarray(positions[p.chunk_selection]).ravel()
        natural = positions[region].ravel()
        assert p.is_complete_chunk == np.array_equal(selected, natural), p
    return projections


def read(indexer: Indexer, a: np.ndarray, chunk_shape: tuple[int, ...]) -> np.ndarray:
    p = padded(a, chunk_shape)
    out = np.full(indexer.shape, -7, dtype=a.dtype)
    for proj in check_projections(indexer, a.shape, chunk_shape):
        chunk = chunk_view(p, proj.chunk_coords, chunk_shape).copy()
        out[proj.out_selection] = chunk[proj.chunk_selection]
    return out


def write(
    indexer: Indexer, a: np.ndarray, chunk_shape: tuple[int, ...], value: np.ndarray
) -> np.ndarray:
    p = padded(a, chunk_shape)
    for proj in indexer:
        view = chunk_view(p, proj.chunk_coords, chunk_shape)
        chunk = view.copy()
        chunk[proj.chunk_selection] = value[proj.out_selection]
        view[...] = chunk
    region = (..., *(slice(0, s) for s in a.shape))
    outside = np.ones(p.shape, dtype=bool)
    outside[region] = False
    assert (p[outside] == PAD).all(), "a write reached past the array end"
    return p[region]


def values_for(indexer: Indexer) -> np.ndarray:
    """Distinct negative values of the indexer's shape (never seen in the array)."""
    return np.asarray(-10 - np.arange(math.prod(indexer.shape))).reshape(indexer.shape)


# -- strategies ---------------------------------------------------------------------------------
@st.composite
def arrays_and_chunks(draw: st.DrawFn) -> tuple[np.ndarray, tuple[int, ...]]:
    shape = tuple(draw(st.lists(st.integers(0, 12), min_size=0, max_size=4)))
    chunk_shape = tuple(draw(st.integers(1, 5)) for _ in shape)
    a = np.arange(math.prod(shape), dtype=np.int64).reshape(shape)
    return a, chunk_shape


def slices(extent: int) -> st.SearchStrategy[slice]:
    bound = st.none() | st.integers(-extent - 3, extent + 3)
    return st.builds(slice, bound, bound, st.none() | st.integers(1, 4))


def ints(extent: int) -> st.SearchStrategy[int]:
    return st.integers(-extent, extent - 1)


@st.composite
def basic_selections(draw: st.DrawFn, shape: tuple[int, ...]) -> tuple[Any, ...]:
    items: list[Any] = [draw(slices(s) | ints(s)) if s else draw(slices(s)) for s in shape]
    form = draw(st.sampled_from(["full", "short", "ellipsis"]))
    if form == "short":
        items = items[: draw(st.integers(0, len(items)))]
    elif form == "ellipsis":
        lo = draw(st.integers(0, len(items)))
        hi = draw(st.integers(lo, len(items)))
        items = [*items[:lo], Ellipsis, *items[hi:]]
    return tuple(items)


@st.composite
def orthogonal_item(draw: st.DrawFn, extent: int) -> Any:
    kinds = ["slice", "mask", "list"] + (["int", "array"] if extent else [])
    kind = draw(st.sampled_from(kinds))
    if kind == "slice":
        return draw(slices(extent))
    if kind == "int":
        return draw(ints(extent))
    if kind == "mask":
        return np.array(draw(st.lists(st.booleans(), min_size=extent, max_size=extent)), bool)
    values = draw(st.lists(ints(extent), max_size=6)) if extent else []
    return values if kind == "list" else np.array(values, dtype=np.int64)


def orthogonal_oracle(items: tuple[Any, ...], shape: tuple[int, ...]) -> tuple[Any, ...]:
    """The numpy selection equivalent to an orthogonal one: an np.ix_ mesh, ints as [i]."""
    arrays = []
    for item, extent in zip(items, shape, strict=True):
        if isinstance(item, slice):
            arrays.append(np.arange(*item.indices(extent)))
        elif isinstance(item, int):
            arrays.append(np.array([item]))
        elif np.asarray(item).dtype == bool:
            arrays.append(np.flatnonzero(item))
        else:
            arrays.append(np.asarray(item, dtype=np.int64))
    return np.ix_(*arrays) if arrays else ()


@st.composite
def vectorized_selections(draw: st.DrawFn, shape: tuple[int, ...]) -> tuple[Any, ...]:
    assume(all(shape))
    out_shape = tuple(draw(st.lists(st.integers(0, 4), max_size=2)))
    items: list[Any] = []
    for extent in shape:
        if draw(st.booleans()) and len(items) > 0:
            items.append(draw(ints(extent)))  # a scalar broadcasts
            continue
        # drop leading dims or set some to 1: still broadcastable to out_shape
        keep = out_shape[draw(st.integers(0, len(out_shape))) :]
        own = tuple(1 if draw(st.booleans()) else s for s in keep)
        values = draw(st.lists(ints(extent), min_size=math.prod(own), max_size=math.prod(own)))
        items.append(np.array(values, dtype=np.int64).reshape(own))
    return tuple(items)


# -- properties ---------------------------------------------------------------------------------
@SETTINGS
@given(data=st.data(), case=arrays_and_chunks())
def test_basic_read_and_write_match_numpy(data: st.DataObject, case: Any) -> None:
    a, chunk_shape = case
    selection = data.draw(basic_selections(a.shape))
    indexer = basic_indexer(selection, a.shape, chunk_shape)
    expected = a[selection]
    assert indexer.shape == expected.shape
    assert np.array_equal(read(indexer, a, chunk_shape), expected)
    value = values_for(indexer)
    b = a.copy()
    b[selection] = value
    assert np.array_equal(write(indexer, a, chunk_shape, value), b)


@SETTINGS
@given(data=st.data(), case=arrays_and_chunks())
def test_orthogonal_read_and_write_match_numpy(data: st.DataObject, case: Any) -> None:
    a, chunk_shape = case
    selection = tuple(data.draw(orthogonal_item(s)) for s in a.shape)
    indexer = orthogonal_indexer(selection, a.shape, chunk_shape)
    mesh = orthogonal_oracle(selection, a.shape)
    expected = a[mesh].reshape(indexer.shape)
    assert np.array_equal(read(indexer, a, chunk_shape), expected)
    value = values_for(indexer)
    b = a.copy()
    b[mesh] = value.reshape(a[mesh].shape)  # duplicates: the last write wins, as in numpy
    assert np.array_equal(write(indexer, a, chunk_shape, value), b)


@SETTINGS
@given(data=st.data(), case=arrays_and_chunks())
def test_vectorized_read_matches_numpy(data: st.DataObject, case: Any) -> None:
    a, chunk_shape = case
    selection = data.draw(vectorized_selections(a.shape))
    indexer = vectorized_indexer(selection, a.shape, chunk_shape)
    expected = a[selection]
    assert indexer.shape == expected.shape
    assert np.array_equal(read(indexer, a, chunk_shape), expected)


@SETTINGS
@given(data=st.data(), case=arrays_and_chunks())
def test_vectorized_write_matches_numpy(data: st.DataObject, case: Any) -> None:
    a, chunk_shape = case
    selection = data.draw(vectorized_selections(a.shape))
    points = np.broadcast_arrays(*[np.asarray(s) for s in selection])
    flat = np.ravel_multi_index(
        [p.ravel() % s for p, s in zip(points, a.shape, strict=True)], a.shape
    )
    assume(len(np.unique(flat)) == flat.size)  # numpy leaves duplicate writes unspecified
    indexer = vectorized_indexer(selection, a.shape, chunk_shape)
    value = values_for(indexer)
    b = a.copy()
    b[selection] = value
    assert np.array_equal(write(indexer, a, chunk_shape, value), b)


@SETTINGS
@given(data=st.data(), case=arrays_and_chunks())
def test_vectorized_mask_matches_numpy(data: st.DataObject, case: Any) -> None:
    a, chunk_shape = case
    assume(a.ndim >= 1)
    density = data.draw(st.sampled_from([0.0, 0.1, 0.5, 0.9, 1.0]))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    mask = rng.random(a.shape) < density
    indexer = vectorized_indexer(mask, a.shape, chunk_shape)
    assert np.array_equal(read(indexer, a, chunk_shape), a[mask])
    value = values_for(indexer)
    b = a.copy()
    b[mask] = value
    assert np.array_equal(write(indexer, a, chunk_shape, value), b)


@SETTINGS
@given(data=st.data())
def test_arrays_for_the_leading_axes_only_read_and_write_as_numpy(data: st.DataObject) -> None:
    shape = tuple(data.draw(st.lists(st.integers(1, 7), min_size=3, max_size=4)))
    chunk_shape = tuple(data.draw(st.integers(1, 4)) for _ in shape)
    a = np.arange(math.prod(shape), dtype=np.int64).reshape(shape)
    count = data.draw(st.integers(2, len(shape) - 1))
    out_shape = tuple(data.draw(st.lists(st.integers(1, 3), min_size=1, max_size=2)))
    selection = []
    for extent in shape[:count]:  # broadcastable to out_shape: some dims dropped or 1
        own = tuple(
            1 if data.draw(st.booleans()) else n
            for n in out_shape[data.draw(st.integers(0, len(out_shape) - 1)) :]
        )
        values = data.draw(st.lists(ints(extent), min_size=math.prod(own), max_size=math.prod(own)))
        selection.append(np.array(values, dtype=np.int64).reshape(own))
    tail = data.draw(st.sampled_from([(), (slice(None),), (Ellipsis,)]))  # same as none
    selection = (*selection, *tail)
    indexer = make_indexer(selection, a.shape, chunk_shape)
    expected = a[selection]  # the axes after the arrays are taken whole
    assert indexer.shape == expected.shape
    assert np.array_equal(read(indexer, a, chunk_shape), expected)
    points = np.broadcast_arrays(*selection[:count])
    flat = np.ravel_multi_index(
        [p.ravel() % s for p, s in zip(points, shape, strict=False)], shape[:count]
    )
    assume(len(np.unique(flat)) == flat.size)  # numpy leaves duplicate writes unspecified
    value = values_for(indexer)
    b = a.copy()
    b[selection] = value
    assert np.array_equal(write(indexer, a, chunk_shape, value), b)
