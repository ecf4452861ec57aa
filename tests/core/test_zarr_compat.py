"""zarr-python's Array conveniences on torchzarr.Array: named selections, blocks, codec views."""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction

import numcodecs
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import torchzarr as tz
from torchzarr.core.zarr_compat import block_selection
from torchzarr.errors import ArgumentTypeError, BoundsError, SelectionError

DATA = np.arange(10 * 7, dtype=np.int32).reshape(10, 7)


@pytest.fixture
def arr():
    a = tz.create_array("memory://", shape=(10, 7), chunks=(3, 4), dtype=torch.int32)
    a[:] = DATA
    return a


def test_named_selections_read_and_write_like_the_indexers(arr):
    assert torch.equal(arr.get_basic_selection((slice(1, 4), 2)), arr[1:4, 2])
    assert arr.get_basic_selection().shape == (10, 7)
    with pytest.raises(SelectionError):
        arr.get_basic_selection(([0, 1], slice(None)))  # not basic
    assert torch.equal(arr.get_orthogonal_selection(([0, 9], [1, 6])), arr.oindex[[0, 9], [1, 6]])
    assert arr.get_coordinate_selection(([0, 9], [1, 6])).tolist() == [1, 69]
    out = torch.empty(2, dtype=torch.int32)
    assert arr.get_coordinate_selection(([0, 9], [1, 6]), out=out) is out
    arr.set_basic_selection((0, slice(0, 2)), -1)
    arr.set_orthogonal_selection(([1, 2], [0]), -2)
    arr.set_coordinate_selection(([3, 4], [5, 6]), -3)
    expected = DATA.copy()
    expected[0, 0:2] = -1
    expected[np.ix_([1, 2], [0])] = -2
    expected[[3, 4], [5, 6]] = -3
    np.testing.assert_array_equal(arr[:].numpy(), expected)


def test_mask_selections_take_a_boolean_array_of_the_arrays_shape(arr):
    mask = DATA % 9 == 0
    np.testing.assert_array_equal(arr.get_mask_selection(mask).numpy(), DATA[mask])
    arr.set_mask_selection(torch.from_numpy(mask), 0)
    assert int(arr[:][torch.from_numpy(mask)].abs().sum()) == 0
    for bad in (mask[:5], mask.astype(np.int8), [True] * 7):
        with pytest.raises(SelectionError, match=r"mask selection .* shape \(10, 7\)"):
            arr.get_mask_selection(bad)


def test_a_0d_mask_takes_the_one_element_of_a_0d_array_or_none():
    a = tz.create_array("memory://", shape=(), dtype=torch.int32)
    a[...] = 5
    expected = np.array(5, dtype=np.int32)
    for taken in (True, False):
        mask = np.array(taken)
        np.testing.assert_array_equal(a.get_mask_selection(mask).numpy(), expected[mask])
        np.testing.assert_array_equal(a.vindex[mask].numpy(), expected[mask])
    a.set_mask_selection(np.array(False), 9)
    assert a[()].item() == 5
    a.set_mask_selection(np.array(True), 7)
    assert a[()].item() == 7


@pytest.mark.parametrize("as_tuple", [False, True])
def test_one_multidimensional_integer_array_on_a_1d_array_is_pointwise(as_tuple):
    a = tz.create_array("memory://", data=np.arange(6, dtype=np.int32), chunks=(2,))
    index = np.array([[0, 5], [1, -2]])
    selection = (index,) if as_tuple else index
    np.testing.assert_array_equal(a[selection].numpy(), np.arange(6)[index])  # as zarr-python
    a[selection] = np.array([[10, 11], [12, 13]])
    assert a[:].tolist() == [10, 12, 2, 3, 13, 11]


@settings(max_examples=60, deadline=None)
@given(
    shape=st.lists(st.integers(1, 9), min_size=1, max_size=3),
    data=st.data(),
)
def test_blocks_match_zarr_python(shape, data):
    zarr = pytest.importorskip("zarr")
    chunks = [data.draw(st.integers(1, 4)) for _ in shape]
    values = np.arange(int(np.prod(shape)), dtype=np.int16).reshape(shape)
    theirs = zarr.create_array(zarr.storage.MemoryStore(), shape=shape, chunks=chunks, dtype="i2")
    theirs[...] = values
    ours = tz.create_array("memory://", shape=tuple(shape), chunks=tuple(chunks), dtype="int16")
    ours[...] = values
    selection = []
    for extent, chunk in zip(shape, chunks, strict=True):
        nblocks = -(-extent // chunk)
        if data.draw(st.booleans()):
            selection.append(data.draw(st.integers(-nblocks, nblocks - 1)))
        else:  # the bounds zarr-python accepts (it refuses starts past the end)
            lo = data.draw(st.integers(-nblocks, nblocks - 1) | st.none())
            hi = data.draw(st.integers(-nblocks, nblocks) | st.none())
            selection.append(slice(lo, hi))
    np.testing.assert_array_equal(
        ours.blocks[tuple(selection)].numpy(), theirs.blocks[tuple(selection)]
    )


def test_block_writes_and_errors(arr):
    arr.blocks[-1, 1] = torch.full((1, 3), 5, dtype=torch.int32)  # the cut corner block
    assert arr[9:, 4:].tolist() == [[5, 5, 5]]
    arr.set_block_selection((slice(0, 1), ...), 0)
    assert int(arr[:3].abs().sum()) == 0
    assert block_selection((Ellipsis, 1), (10, 7), (3, 4)) == (slice(0, 10), slice(4, 7))
    with pytest.raises(BoundsError, match=r"block 4 .* axis 0 with 4 blocks"):
        arr.blocks[4]
    with pytest.raises(SelectionError, match="step 1"):
        arr.blocks[::2]
    with pytest.raises(SelectionError, match="ints and slices"):
        arr.blocks[[0, 1]]


def test_blocks_of_a_sharded_array_are_its_shards():
    a = tz.create_array("memory://", shape=(8,), chunks=(2,), shards=(4,), dtype="int8")
    a[:] = torch.arange(8, dtype=torch.int8)
    assert a.blocks[1].tolist() == [4, 5, 6, 7]


def test_codec_and_dimension_views_v3():
    a = tz.create_array(
        "memory://",
        shape=(4, 4),
        chunks=(2, 2),
        dtype="float32",
        compressors=numcodecs.Zstd(level=3),
        dimension_names=["y", None],
    )
    assert a.dimension_names == ("y", None)
    assert [c.codec_name for c in a.compressors] == ["zstd"]
    assert a.serializer.codec_name == "bytes" and a.filters == () and a.order == "C"
    s = tz.create_array("memory://", shape=(4,), chunks=(2,), shards=(4,), dtype="int8")
    assert s.serializer.codec_name == "bytes"  # the inner chunks', as in zarr-python
    assert [c.codec_name for c in s.compressors] == ["zstd"]
    assert tz.create_array("memory://", shape=(2,), dtype="int8").dimension_names is None


def test_codec_views_v2_are_numcodecs_objects():
    a = tz.create_array(
        "memory://",
        shape=(4,),
        chunks=(2,),
        dtype="float64",
        zarr_format=2,
        filters=[numcodecs.Delta(dtype="f8")],
        compressors=numcodecs.Blosc(cname="lz4"),
        order="F",
    )
    assert a.filters == (numcodecs.Delta(dtype="<f8"),)
    assert isinstance(a.compressors[0], numcodecs.Blosc) and a.compressors[0].cname == "lz4"
    assert a.serializer is None and a.order == "F" and a.dimension_names is None
    plain = tz.create_array("memory://", shape=(4,), dtype="int8", zarr_format=2, compressors=None)
    assert plain.compressors == ()


def test_nbytes_stored_and_update_attributes(arr):
    assert arr.nbytes_stored() == arr.info.nbytes_stored > 0
    assert arr.update_attributes({"a": 1}) is arr
    arr.update_attributes({"b": 2})
    assert dict(arr.attrs) == {"a": 1, "b": 2}


@pytest.mark.parametrize("extra", [{"zarr_format": 2}, {}, {"shards": (50,)}])
def test_nbytes_stored_counts_what_zarr_python_counts(tmp_path, extra):
    import zarr

    path = tmp_path / "g" / "a.zarr"
    made = tz.create_array(path, data=np.arange(100, dtype="f4"), chunks=(25,), **extra)
    made.attrs["units"] = "m"  # v2: a .zattrs document beside .zarray
    assert tz.open_array(path).nbytes_stored() == zarr.open_array(path).nbytes_stored()


@pytest.fixture
def reads(monkeypatch):
    """The selections every ``Array.__getitem__`` call is given, in order."""
    seen = []
    original = tz.Array.__getitem__

    def record(self, selection):
        seen.append(selection)
        return original(self, selection)

    monkeypatch.setattr(tz.Array, "__getitem__", record)
    return seen


def test_iterating_reads_a_chunk_row_at_a_time(arr, reads):
    rows = list(arr)
    assert torch.equal(torch.stack(rows), torch.from_numpy(DATA))
    assert reads == [slice(0, 3), slice(3, 6), slice(6, 9), slice(9, 12)]  # not 10 row reads
    with pytest.raises(TypeError, match="0-d"):
        list(tz.create_array("memory://", shape=(), dtype="int8"))
    sharded = tz.create_array("memory://", shape=(40,), dtype="int8", chunks=(2,), shards=(20,))
    reads.clear()
    assert len(list(sharded)) == 40 and reads == [slice(0, 20), slice(20, 40)]  # whole shards


def test_in_answers_as_numpy_does_a_chunk_row_at_a_time(arr, reads):
    assert 69 in arr and reads == [slice(0, 3), slice(3, 6), slice(6, 9), slice(9, 12)]
    reads.clear()
    assert 5 in arr and reads == [slice(0, 3)]  # stops at the first chunk row holding it
    for value in (70, -1, 2.5):
        assert (value in arr) is (value in DATA) is False
    assert np.int32(12) in arr and torch.tensor(12) in arr and 12.0 in arr
    wide = tz.create_array("memory://", shape=(3,), dtype="uint64", fill_value=2**64 - 1)
    assert 2**64 - 1 in wide and 0 not in wide
    assert 1.5 in tz.create_array("memory://", shape=(), dtype="bfloat16", fill_value=1.5)
    assert 0 not in tz.create_array("memory://", shape=(0, 4), dtype="float32")
    for bad in ("12", Fraction(1, 2), Decimal(1), None, torch.tensor([1, 2])):
        with pytest.raises(ArgumentTypeError, match="'in' takes a number"):
            _ = bad in arr


@pytest.mark.parametrize(
    ("data", "value", "expected"),
    [
        (np.array([-24, 5], np.int8), 1000, False),  # torch would wrap 1000 to -24
        (np.array([-24, 5], np.int8), -24.0, True),
        (np.array([255, 1], np.uint8), -1, False),  # wrapped to 255
        (np.array([2**64 - 1], np.uint64), -1, False),
        (np.array([2**64 - 1], np.uint64), np.uint64(2**64 - 1), True),
        (np.array([2**63], np.uint64), np.uint64(2**63), True),
        (np.arange(10, dtype=np.int32), np.complex64(5 + 1j), False),  # not cut to 5
        (np.arange(10, dtype=np.int32), 5 + 0j, True),
        (np.arange(10, dtype=np.int64), 2**64, False),
        (np.arange(10, dtype=np.int64), 5.5, False),
        (np.arange(10, dtype=np.int64), float("nan"), False),
        (np.array([1.5, np.nan], np.float32), float("nan"), False),  # NaN equals nothing
        (np.array([True]), 2, False),
        (np.array([True]), 1, True),
        (np.array([1 + 2j], np.complex64), 1 + 2j, True),
    ],
)
def test_in_compares_values_as_numpy_does_never_wrapped_into_the_dtype(data, value, expected):
    arr = tz.create_array("memory://", data=data, chunks=(1,))
    assert (value in arr) is expected
    assert expected == bool((data == value).any())  # numpy's answer


def test_nodes_compare_equal_as_zarr_python_compares_them(tmp_path):
    one = tz.open_group(tmp_path / "one", mode="w", attributes={"run": 1})
    two = tz.open_group(tmp_path / "two", mode="w", attributes={"run": 2})
    one.create_group("sub")
    two.create_group("sub")
    assert one != two  # same member names, elsewhere: not one node
    one.create_array("x", shape=(2,), dtype="i1")
    again = tz.open_group(tmp_path / "one", mode="r+")
    assert again == one and hash(again) == hash(one)
    assert one["x"] == one["x"] == again["x"] and one["x"] != one["sub"]
    assert one["x"] in one.values() and ("x", one["x"]) in one.items()
    via_path = tz.open_array(tmp_path / "one" / "x", mode="r+")  # its own store object
    assert via_path == one["x"] and len({via_path, one["x"]}) == 1
    kept = one["x"]
    via_path.attrs["unit"] = "m"
    assert via_path != kept  # the kept handle's metadata is stale, as in zarr-python
    assert via_path == one["x"]  # opened again: the same


def test_numpy_conversion_copies_and_refuses_copy_false_as_numpy_2_asks():
    arr = tz.create_array("memory://", data=np.arange(4, dtype="i2"))
    np.testing.assert_array_equal(np.asarray(arr), np.arange(4))
    assert np.array(arr, dtype="f8").dtype == np.float64
    with pytest.raises(ValueError, match="copy=False"):  # as zarr-python's arrays do
        np.array(arr, copy=False)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.uint64, torch.bool, torch.complex64])
@pytest.mark.parametrize("shape", [(3, 1), (2, 1, 1), (3, 4), (), (0, 2)])
def test_torch_takes_an_array_whole_with_its_shape_and_dtype(shape, dtype):
    # without __dlpack__, torch took an Array as a sequence of rows: one-element rows
    # became scalars ((3, 1) read as (3,)) and longer rows raised a raw ValueError
    data = torch.arange(math.prod(shape)).reshape(shape).to(dtype)
    arr = tz.create_array("memory://", data=data, chunks=tuple(max(1, n) for n in shape))
    for convert in (torch.as_tensor, torch.tensor, torch.asarray, torch.from_dlpack):
        tensor = convert(arr)
        assert tensor.shape == data.shape and tensor.dtype == dtype, convert
        assert torch.equal(tensor, data)
    assert np.from_dlpack(tz.create_array("memory://", data=[[1], [2]])).shape == (2, 1)
