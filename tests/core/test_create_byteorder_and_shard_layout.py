"""create_array: a big-endian dtype's byte order, and shards given with their index layout."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import torchzarr as tz
from torchzarr.errors import MetadataError

BIG_BYTES = {"name": "bytes", "configuration": {"endian": "big"}}


@pytest.mark.parametrize("dtype", [np.dtype(">i4"), ">f8", np.dtype(">u2")])
def test_v2_keeps_a_big_endian_dtype(tmp_path, dtype):
    arr = tz.create_array(tmp_path, shape=(5,), chunks=(2,), dtype=dtype, zarr_format=2)
    arr[:] = torch.arange(5).to(arr.dtype)
    assert json.loads((tmp_path / ".zarray").read_text())["dtype"] == np.dtype(dtype).str
    assert tz.open_array(tmp_path)[:].tolist() == list(range(5))


@pytest.mark.parametrize(
    ("dtype", "stored"),
    [(np.dtype("<i4"), "<i4"), ("int32", "<i4"), (torch.int16, "<i2"), (np.dtype(">i1"), "|i1")],
)
def test_v2_little_endian_native_and_one_byte_dtypes(dtype, stored):
    arr = tz.create_array("memory://", shape=(2,), dtype=dtype, zarr_format=2)
    assert arr.metadata.to_json()["dtype"] == stored


def test_v2_big_endian_dtype_matches_zarr_python(tmp_path):
    zarr = pytest.importorskip("zarr")
    tz.create_array(tmp_path / "tz", shape=(4,), chunks=(2,), dtype=np.dtype(">i4"), zarr_format=2)
    zarr.create_array(
        tmp_path / "zp", shape=(4,), chunks=(2,), dtype=np.dtype(">i4"), zarr_format=2
    )
    ours, theirs = (json.loads((tmp_path / n / ".zarray").read_text()) for n in ("tz", "zp"))
    assert ours["dtype"] == theirs["dtype"] == ">i4"
    assert zarr.open_array(tmp_path / "tz").dtype == np.dtype(">i4")


def test_v3_big_endian_dtype_writes_bytes_little_endian_as_zarr_python():
    arr = tz.create_array("memory://", shape=(4,), dtype=np.dtype(">i4"), compressors=None)
    assert arr.metadata.to_json()["codecs"] == [
        {"name": "bytes", "configuration": {"endian": "little"}}
    ]
    big = tz.create_array("memory://", shape=(4,), dtype=">i4", compressors=[BIG_BYTES])
    big[:] = torch.arange(4, dtype=torch.int32)
    assert big.metadata.to_json()["codecs"] == [BIG_BYTES] and big[:].tolist() == [0, 1, 2, 3]


def test_shards_as_a_dict_name_the_index_location_and_codecs():
    arr = tz.create_array(
        "memory://",
        shape=(8,),
        dtype="int16",
        chunks=(2,),
        shards={"shape": (4,), "index_location": "start", "index_codecs": [BIG_BYTES]},
    )
    arr[:] = torch.arange(8, dtype=torch.int16)
    sharding = arr.metadata.to_json()["codecs"][0]["configuration"]
    assert (sharding["index_location"], sharding["index_codecs"]) == ("start", [BIG_BYTES])
    assert arr.shards == (4,) and arr[:].tolist() == list(range(8))
    default = tz.create_array("memory://", shape=(8,), dtype="i2", chunks=(2,), shards={"shape": 4})
    assert default.metadata.codecs[0].index_location == "end"
    with pytest.raises(MetadataError, match=r"needs 'shape' .*\['index_locaton', 'shape'\]"):
        tz.create_array(
            "memory://", shape=(8,), dtype="i2", shards={"shape": 4, "index_locaton": "x"}
        )
    with pytest.raises(MetadataError, match="index_location must be 'start' or 'end'"):
        tz.create_array(
            "memory://", shape=(8,), dtype="i2", shards={"shape": 4, "index_location": "x"}
        )


@pytest.mark.parametrize("separator", [".", "/"])
def test_a_v3_dimension_separator_spells_the_chunk_keys(separator: str) -> None:
    arr = tz.create_array(
        "memory://", shape=(4, 4), dtype="int8", chunks=(2, 2), dimension_separator=separator
    )
    arr[:] = torch.ones(4, 4, dtype=torch.int8)
    assert f"c{separator}1{separator}0" in arr.store.list_prefix("")
    assert arr.metadata.chunk_key_encoding.separator == separator
    with pytest.raises(tz.errors.MetadataError, match="separator must be"):
        tz.create_array("memory://", shape=(4,), dtype="int8", dimension_separator="-")


@pytest.mark.parametrize("attributes", [5, "units", [("units", "K")]])
def test_attributes_that_are_not_a_mapping_are_refused(attributes: object) -> None:
    store = tz.storage.MemoryStore()
    with pytest.raises(tz.errors.ArgumentTypeError, match="attributes must be a mapping"):
        tz.create_array(store, shape=(4,), dtype="int8", attributes=attributes)
    with pytest.raises(tz.errors.ArgumentTypeError, match="attributes must be a mapping"):
        tz.open_group(store, mode="w", attributes=attributes)
    assert list(store.list_prefix("")) == []  # nothing written


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ({"chunks": (5,), "shards": (10, 8)}, r"^chunks \(5,\) have 1 dims but the array's"),
        ({"chunks": (5, 4), "shards": (10,)}, r"^shards \(10,\) have 1 dims but the array's"),
        ({"chunks": [5, 4, 1], "shards": {"shape": (10, 8)}}, r"^chunks \(5, 4, 1\) have 3"),
    ],
)
def test_chunks_and_shards_of_other_dims_than_the_array_are_named_so(layout, message):
    with pytest.raises(MetadataError, match=message + r".*shape \(37, 23\) has 2$"):
        tz.create_array("memory://", shape=(37, 23), dtype=torch.float32, **layout)
    arr = tz.create_array("memory://", shape=(37, 23), dtype="int8", chunks=5, shards=(10, 20))
    assert (arr.chunks, arr.shards) == ((5, 5), (10, 20))  # one size for every axis
