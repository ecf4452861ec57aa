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
    ("float32", numcodecs.Delta(dtype="<i4"), "dtype='<i4'"),
    ("int32", numcodecs.BitRound(keepbits=5), "float16, float32 or float64"),
    ("int16", numcodecs.Quantize(digits=2, dtype="<f8"), "dtype='<f8'"),
    ("bool", numcodecs.Delta(dtype="bool"), "cannot invert bool"),
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
    with pytest.raises(CodecError, match=r"dtype='<i4'.*>i4.*give it dtype='>i4'"):
        _create(2, ">i4", [numcodecs.Delta(dtype="<i4")])


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
