"""Filters whose dtype setting does not fit the dtype reaching them: refused when an array is
created (they would store garbage), read as written when others wrote them."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
import pytest
import torch

import torchzarr as tz
from torchzarr.errors import CodecError

MISFITS: list[tuple[str, Any, str]] = [
    ("int32", numcodecs.FixedScaleOffset(offset=0, scale=10, dtype="<f8", astype="<i4"), "'<f8'"),
    ("int32", numcodecs.AsType(encode_dtype="<f2", decode_dtype="<f8"), "decode_dtype='<f8'"),
    ("int32", numcodecs.PackBits(), "bool data only"),
    ("int32", numcodecs.Delta(dtype="<f8"), "dtype='<f8'"),
    ("int32", numcodecs.BitRound(keepbits=5), "float16, float32 or float64"),
    ("int16", numcodecs.Quantize(digits=2, dtype="<f8"), "dtype='<f8'"),
    ("bool", numcodecs.Delta(dtype="bool"), "cannot invert bool.*dtype='|u1'"),
    ("int16", numcodecs.Delta(dtype="<i4"), "dtype='<i4'"),
    ("float64", numcodecs.FixedScaleOffset(offset=0, scale=1, dtype="<i8"), "dtype='<i8'"),
]

#: same-size integer views that give back the bits written (zarr-python reads them so too)
EXACT_VIEWS: list[tuple[str, Any]] = [
    ("uint32", numcodecs.Delta(dtype="<i4")),
    ("int64", numcodecs.Delta(dtype="<u8")),
    ("uint8", numcodecs.Delta(dtype="|i1")),
    ("int32", numcodecs.AsType(encode_dtype="<i4", decode_dtype="<u4")),
    ("bool", numcodecs.Delta(dtype="u1")),
]


def _create(fmt: int, dtype: str, filters: Any, **kwargs: Any) -> Any:
    return tz.create_array(
        "memory://",
        shape=(8,),
        dtype=dtype,
        chunks=(8,),
        zarr_format=fmt,
        filters=filters,
        **kwargs,
    )


@pytest.mark.parametrize("fmt", [2, 3])
@pytest.mark.parametrize(("dtype", "codec", "setting"), MISFITS, ids=repr)
def test_a_misfit_filter_is_refused_at_create(fmt: int, dtype: str, codec: Any, setting: str):
    with pytest.raises(CodecError, match=rf"filter .*{codec.codec_id}.* {dtype}.*{setting}"):
        _create(fmt, dtype, [codec])


@pytest.mark.parametrize("fmt", [2, 3])
def test_the_dtype_reaching_a_filter_is_the_previous_filters_output(fmt: int) -> None:
    to_i2 = numcodecs.FixedScaleOffset(offset=0, scale=4, dtype="<f8", astype="<i2")
    with pytest.raises(CodecError, match=r"<i4.* int16 \(the output of .*fixedscaleoffset\)"):
        _create(fmt, "float64", [to_i2, numcodecs.Delta(dtype="<i4")])
    arr = _create(fmt, "float64", [to_i2, numcodecs.Delta(dtype="<i2")])
    arr[...] = torch.arange(8, dtype=torch.float64) / 4
    assert arr[...].tolist() == [i / 4 for i in range(8)]


def test_filters_inside_shards_are_checked() -> None:
    with pytest.raises(CodecError, match="dtype='<i4'"):
        tz.create_array(
            "memory://",
            shape=(8,),
            dtype="float32",
            chunks=(2,),
            shards=(8,),
            filters=[numcodecs.Delta(dtype="<i4")],
        )
    inner = {"name": "numcodecs.delta", "configuration": {"dtype": "<i4"}}
    sharding = {
        "name": "sharding_indexed",
        "configuration": {
            "chunk_shape": [2],
            "codecs": [inner, {"name": "bytes", "configuration": {"endian": "little"}}],
        },
    }
    with pytest.raises(CodecError, match=r"numcodecs\.delta .* float32"):
        tz.create_array("memory://", shape=(8,), dtype="float32", compressors=[sharding])


@pytest.mark.parametrize("fmt", [2, 3])
def test_filters_that_fit_keep_working(fmt: int) -> None:
    fits = {
        "int32": [numcodecs.Delta(dtype="<i4")],
        "float64": [
            numcodecs.FixedScaleOffset(offset=1, scale=8, dtype="<f8", astype="<i2"),
            numcodecs.AsType(encode_dtype="<i4", decode_dtype="<i2"),
        ],
        "float32": [numcodecs.BitRound(keepbits=20)],
        "bool": [numcodecs.PackBits()],
    }
    for dtype, filters in fits.items():
        arr = _create(fmt, dtype, filters)
        data = torch.arange(8).to(getattr(torch, dtype)) if dtype != "bool" else None
        if data is None:
            data = torch.tensor([True, False, True, True, False, False, True, False])
        arr[...] = data
        assert torch.equal(arr[...], data), (dtype, filters)


def test_a_big_endian_v2_array_takes_a_filter_of_its_byte_order() -> None:
    arr = _create(2, ">i4", [numcodecs.Delta(dtype=">i4")])
    arr[...] = torch.arange(8, dtype=torch.int32)
    assert arr[...].tolist() == list(range(8))
    scaled = numcodecs.FixedScaleOffset(offset=0, scale=1, dtype="<f8")  # arithmetic on values
    with pytest.raises(CodecError, match=r"dtype='<f8'.*>f8.*give it dtype='>f8'"):
        _create(2, ">f8", [scaled])


def test_a_v3_filter_viewing_in_the_other_byte_order_is_refused_v2_takes_it() -> None:
    # v3 casts a filter's output by value: '>i2' over native int16 read back byte-swapped
    # values (1800 as 2056), silently, for zarr-python too
    with pytest.raises(CodecError, match=r"dtype='>i2'.*int16.*give it dtype='<i2'"):
        _create(3, "int16", [numcodecs.Delta(dtype=">i2")])
    v2 = _create(2, "<i2", [numcodecs.Delta(dtype=">i2")])  # v2 views the bytes back
    v2[...] = torch.arange(8, dtype=torch.int16) * 300
    assert v2[...].tolist() == [i * 300 for i in range(8)]


def _extremes(dtype: str) -> np.ndarray:
    if dtype == "bool":
        return np.array([True, False, True, True, False, False, True, False])
    info = np.iinfo(dtype)
    return np.array([info.min, info.max, 0, 1, info.max - 1, info.min + 1, 7, 3], dtype=dtype)


@pytest.mark.parametrize("fmt", [2, 3])
@pytest.mark.parametrize(("dtype", "codec"), EXACT_VIEWS, ids=repr)
def test_same_size_integer_views_are_taken_and_read_back_exactly(
    tmp_path: Path, fmt: int, dtype: str, codec: Any
) -> None:
    zarr = pytest.importorskip("zarr")
    data = _extremes(dtype)
    arr = tz.create_array(
        tmp_path, shape=(8,), dtype=dtype, chunks=(8,), zarr_format=fmt, filters=[codec]
    )
    arr[...] = torch.from_numpy(data.copy())
    assert np.array_equal(arr[...].numpy(), data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert np.array_equal(zarr.open_array(str(tmp_path), mode="r")[...], data)


@pytest.mark.parametrize("order", ["<", ">"])
def test_v2_views_floats_as_ints_of_their_size_bit_for_bit(order: str) -> None:
    """v2 views the decoded bytes as the array's dtype again; v3 casts them by value."""
    data = torch.tensor([1.0, 2.5, -3.0, float("inf"), -0.0, 1e-40, 7.0, 3.0])
    arr = _create(2, f"{order}f4", [numcodecs.Delta(dtype="<i4")])
    arr[...] = data
    assert torch.equal(arr[...].view(torch.int32), data.view(torch.int32))
    with pytest.raises(CodecError, match=r"dtype='<i4'.* float32 .*read back other values"):
        _create(3, "float32", [numcodecs.Delta(dtype="<i4")])


@pytest.mark.parametrize("fmt", [2, 3])
def test_arrays_others_wrote_with_a_misfit_filter_still_open(tmp_path: Path, fmt: int) -> None:
    zarr = pytest.importorskip("zarr")
    delta = numcodecs.Delta(dtype="<i4")
    if fmt == 3:
        delta = pytest.importorskip("zarr.codecs.numcodecs").Delta(dtype="<i4")
    data = np.array([1.0, 2.5, -3.0, 4.0], dtype="float32")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = zarr.create_array(
            str(tmp_path),
            shape=(4,),
            dtype="float32",
            zarr_format=fmt,
            filters=[delta],
            compressors=None,
        )
        theirs[...] = data
        expected = zarr.open_array(str(tmp_path))[...]
    ours = tz.open_array(tmp_path, mode="r+")
    np.testing.assert_array_equal(ours[...].numpy(), expected)  # as zarr-python reads it
    ours.resize((6,))  # new metadata from metadata that was read: not refused
    assert tz.open_array(tmp_path).shape == (6,)
