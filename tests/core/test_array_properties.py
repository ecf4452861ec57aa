"""Property tests: any selection on any chunking reads and writes what numpy would."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import torchzarr as tz

SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@st.composite
def arrays_and_chunks(draw):
    ndim = draw(st.integers(0, 3))
    shape = tuple(draw(st.lists(st.integers(0, 9), min_size=ndim, max_size=ndim)))
    chunks = tuple(draw(st.lists(st.integers(1, 4), min_size=ndim, max_size=ndim)))
    zarr_format = draw(st.sampled_from([2, 3]))
    return shape, chunks, zarr_format


@st.composite
def basic_selection(draw, shape):
    items = []
    for extent in shape:
        kind = draw(st.sampled_from(["slice", "int", "full"] if extent else ["slice", "full"]))
        if kind == "int":
            items.append(draw(st.integers(-extent, extent - 1)))
        elif kind == "slice":
            start = draw(st.none() | st.integers(-extent - 2, extent + 2))
            stop = draw(st.none() | st.integers(-extent - 2, extent + 2))
            step = draw(st.none() | st.integers(1, 4))
            items.append(slice(start, stop, step))
        else:
            items.append(slice(None))
    if items and draw(st.booleans()):
        cut = draw(st.integers(0, len(items)))
        return (*items[:cut], Ellipsis)
    return tuple(items)


@st.composite
def orthogonal_selection(draw, shape):
    items = []
    for extent in shape:
        kind = draw(st.sampled_from(["ints", "mask", "slice"] if extent else ["slice"]))
        if kind == "ints":
            items.append(
                np.array(
                    draw(st.lists(st.integers(-extent, extent - 1), max_size=6)), dtype=np.int64
                )
            )
        elif kind == "mask":
            items.append(np.array(draw(st.lists(st.booleans(), min_size=extent, max_size=extent))))
        else:
            items.append(slice(draw(st.integers(0, extent)), None, draw(st.integers(1, 3))))
    return tuple(items)


def _orthogonal_numpy(data, selection):
    out = data
    for axis, item in enumerate(selection):
        index = [slice(None)] * data.ndim
        index[axis] = item
        out = out[tuple(index)]
    return out


@SETTINGS
@given(layout=arrays_and_chunks(), data=st.data())
def test_basic_reads_and_writes_match_numpy(layout, data):
    shape, chunks, zarr_format = layout
    reference = np.arange(int(np.prod(shape)), dtype=np.int32).reshape(shape)
    arr = tz.create_array(
        tz.MemoryStore(),
        shape=shape,
        dtype=torch.int32,
        chunks=chunks,
        zarr_format=zarr_format,
        fill_value=-1,
    )
    arr[...] = reference
    selection = data.draw(basic_selection(shape))
    np.testing.assert_array_equal(arr[selection].numpy(), reference[selection])
    value = (
        -np.arange(reference[selection].size, dtype=np.int32).reshape(reference[selection].shape)
        - 2
    )
    arr[selection] = value
    reference[selection] = value
    np.testing.assert_array_equal(arr[...].numpy(), reference)


@SETTINGS
@given(layout=arrays_and_chunks(), data=st.data())
def test_orthogonal_reads_and_writes_match_numpy(layout, data):
    shape, chunks, zarr_format = layout
    if not shape:
        return
    reference = np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape) * 3
    arr = tz.create_array(
        tz.MemoryStore(), shape=shape, dtype=torch.int64, chunks=chunks, zarr_format=zarr_format
    )
    arr[...] = reference
    selection = data.draw(orthogonal_selection(shape))
    expected = _orthogonal_numpy(reference, selection)
    np.testing.assert_array_equal(arr.oindex[selection].numpy(), expected)
    # writes: avoid duplicate indices (their order of application is unspecified)
    unique = tuple(
        np.unique(s % e) if isinstance(s, np.ndarray) and s.dtype != bool else s
        for s, e in zip(selection, shape, strict=True)
    )
    target = _orthogonal_numpy(reference, unique)
    value = np.arange(target.size, dtype=np.int64).reshape(target.shape) + 1000
    arr.oindex[unique] = value
    ix = np.ix_(*[np.arange(e)[s] for s, e in zip(unique, shape, strict=True)])
    reference[ix] = value
    np.testing.assert_array_equal(arr[...].numpy(), reference)


@SETTINGS
@given(layout=arrays_and_chunks(), data=st.data())
def test_vectorized_reads_match_numpy(layout, data):
    shape, chunks, zarr_format = layout
    if not shape or 0 in shape:
        return
    reference = np.arange(int(np.prod(shape)), dtype=np.float64).reshape(shape)
    arr = tz.create_array(
        tz.MemoryStore(), shape=shape, dtype=torch.float64, chunks=chunks, zarr_format=zarr_format
    )
    arr[...] = reference
    n = data.draw(st.integers(0, 8))
    coords = tuple(
        np.array(
            data.draw(st.lists(st.integers(-e, e - 1), min_size=n, max_size=n)), dtype=np.int64
        )
        for e in shape
    )
    np.testing.assert_array_equal(arr.vindex[coords].numpy(), reference[coords])
