"""bfloat16 and float8: v3 names where the registry has them, raw bits plus an attribute else."""

from __future__ import annotations

import json

import ml_dtypes
import numpy as np
import pytest
import tensorstore as ts
import torch
import zarr

import torchzarr as tz
from torchzarr.dtypes import RAW_DTYPE_ATTRIBUTE

FLOAT8 = [torch.float8_e4m3fn, torch.float8_e5m2, torch.float8_e4m3fnuz, torch.float8_e5m2fnuz]


@pytest.mark.parametrize("zarr_format", [2, 3])
@pytest.mark.parametrize("dtype", FLOAT8, ids=str)
def test_float8_round_trip_with_fill(tmp_path, dtype, zarr_format):
    arr = tz.create_array(
        tmp_path, shape=(5,), dtype=dtype, chunks=(2,), fill_value=0.5, zarr_format=zarr_format
    )
    arr[:3] = torch.tensor([1.5, -2.0, 0.25])
    again = tz.open_array(tmp_path, mode="r")
    assert again.dtype == dtype and again.fill_value == 0.5
    assert again[:].float().tolist() == [1.5, -2.0, 0.25, 0.5, 0.5]
    assert RAW_DTYPE_ATTRIBUTE not in again.attrs


def test_float8_e4m3fn_is_stored_as_uint8_bits_peers_can_open(tmp_path):
    arr = tz.create_array(tmp_path, shape=(3,), dtype=torch.float8_e4m3fn, chunks=(3,))
    values = torch.tensor([1.0, -0.5, 448.0]).to(torch.float8_e4m3fn)
    arr[:] = values
    arr.attrs["note"] = "kept beside the dtype attribute"
    doc = json.loads((tmp_path / "zarr.json").read_text())
    assert doc["data_type"] == "uint8"
    assert doc["attributes"][RAW_DTYPE_ATTRIBUTE] == "float8_e4m3fn"
    theirs = zarr.open_array(str(tmp_path))[:]
    np.testing.assert_array_equal(theirs, values.view(torch.uint8).numpy())
    assert dict(tz.open_array(tmp_path).attrs) == {"note": "kept beside the dtype attribute"}
    assert torch.equal(tz.open_array(tmp_path)[:].view(torch.uint8), values.view(torch.uint8))


def test_float8_e5m2_v3_name_read_by_tensorstore(tmp_path):
    arr = tz.create_array(tmp_path, shape=(4,), dtype=torch.float8_e5m2, chunks=(2,))
    arr[:] = torch.tensor([1.0, 2.0, -4.0, 0.5])
    assert json.loads((tmp_path / "zarr.json").read_text())["data_type"] == "float8_e5m2"
    got = (
        ts.open({"driver": "zarr3", "kvstore": {"driver": "file", "path": str(tmp_path)}})
        .result()
        .read()
        .result()
    )
    np.testing.assert_array_equal(got.astype(np.float32), [1.0, 2.0, -4.0, 0.5])


def test_bfloat16_written_by_tensorstore_and_read_back(tmp_path):
    data = np.array([1.5, -3.0, 1e30, 0.0], dtype=ml_dtypes.bfloat16)
    spec = {
        "driver": "zarr3",
        "kvstore": {"driver": "file", "path": str(tmp_path)},
        "metadata": {
            "shape": [4],
            "data_type": "bfloat16",
            "fill_value": 0,
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [2]}},
            "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}],
        },
    }
    ts.open(spec, create=True).result().write(data).result()
    got = tz.open_array(tmp_path)[:]
    assert got.dtype == torch.bfloat16
    np.testing.assert_array_equal(got.view(torch.uint16).numpy(), data.view(np.uint16))


@pytest.mark.parametrize("value", ["float8_e4m3fn", "int32", "no-such-dtype", 5])
def test_raw_dtype_attribute_not_valid_for_the_storage_is_a_plain_attribute(tmp_path, value):
    # written by another tool: the array opens with its stored dtype, the attribute is a
    # user attribute like any other (and survives changes of the others)
    z = zarr.create_array(
        str(tmp_path), shape=(2,), dtype="int32", attributes={RAW_DTYPE_ATTRIBUTE: value}
    )
    z[:] = [1, 2]
    arr = tz.open_array(tmp_path)
    assert arr.dtype == torch.int32 and arr[:].tolist() == [1, 2]
    assert dict(arr.attrs) == {RAW_DTYPE_ATTRIBUTE: value}
    arr.attrs["other"] = 1
    assert dict(tz.open_array(tmp_path).attrs) == {RAW_DTYPE_ATTRIBUTE: value, "other": 1}
    del arr.attrs[RAW_DTYPE_ATTRIBUTE]
    assert dict(tz.open_array(tmp_path).attrs) == {"other": 1}


def test_reserved_attribute_is_refused_from_users(tmp_path):
    arr = tz.create_array(tmp_path, shape=(2,), dtype="float32")
    arr[:] = 1.0
    for write in (
        lambda: arr.attrs.__setitem__(RAW_DTYPE_ATTRIBUTE, "int32"),
        lambda: arr.attrs.update({RAW_DTYPE_ATTRIBUTE: "float8_e4m3fn"}),
        lambda: arr.attrs.put({RAW_DTYPE_ATTRIBUTE: "int32"}),
        lambda: tz.create_array(
            "memory://", shape=(1,), dtype="int8", attributes={RAW_DTYPE_ATTRIBUTE: "x"}
        ),
        lambda: tz.create_group("memory://", attributes={RAW_DTYPE_ATTRIBUTE: "x"}),
    ):
        with pytest.raises(tz.errors.AttributeValueError, match=RAW_DTYPE_ATTRIBUTE):
            write()
    again = tz.open_array(tmp_path, mode="r")
    assert again[:].tolist() == [1.0, 1.0] and dict(again.attrs) == {}
    f8 = tz.create_array("memory://", shape=(1,), dtype=torch.float8_e4m3fn)
    f8.attrs["note"] = "kept apart"  # the internal attribute stays, hidden
    reopened = tz.open_array(f8.store, mode="r")
    assert dict(reopened.attrs) == {"note": "kept apart"}
    assert reopened.dtype == torch.float8_e4m3fn


@pytest.mark.parametrize(
    "preset,names",
    [("fast", ["bytes", "blosc"]), ("balanced", ["bytes", "zstd"]), ("small", ["bytes", "blosc"])],
)
@pytest.mark.parametrize("zarr_format", [2, 3])
def test_compressor_presets(tmp_path, preset, names, zarr_format):
    arr = tz.create_array(
        tmp_path, shape=(1000,), dtype=torch.float32, compressors=preset, zarr_format=zarr_format
    )
    data = np.linspace(0, 1, 1000, dtype=np.float32)
    arr[:] = data
    if zarr_format == 3:
        assert arr.metadata.codec_names == names
    else:
        assert arr.metadata.codec_names == names[1:]
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path))[:], data)


def test_tensorstore_float8_e4m3fn_is_read(tmp_path):
    data = np.array([1.0, -0.5, 448.0, 0.0], dtype=ml_dtypes.float8_e4m3fn)
    spec = {
        "driver": "zarr3",
        "kvstore": {"driver": "file", "path": str(tmp_path)},
        "metadata": {
            "shape": [4],
            "data_type": "float8_e4m3fn",
            "fill_value": 0,
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [4]}},
            "codecs": [{"name": "bytes"}],
        },
    }
    ts.open(spec, create=True).result().write(data).result()
    got = tz.open_array(tmp_path)[:]
    assert got.dtype == torch.float8_e4m3fn
    np.testing.assert_array_equal(got.view(torch.uint8).numpy(), data.view(np.uint8))
