"""``build_array_metadata`` (what ``create_array`` calls) and the strict JSON helpers."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from torchzarr.codecs.key_encoding import DefaultChunkKeyEncoding, V2ChunkKeyEncoding
from torchzarr.dtypes import data_type
from torchzarr.errors import MetadataError, UnknownCodecError, UnknownExtensionError
from torchzarr.metadata import (
    ArrayMetadataV2,
    ArrayMetadataV3,
    build_array_metadata,
    json_dumps,
    json_loads,
)

F32 = data_type("float32")


def build(**kwargs):
    args = dict(zarr_format=3, shape=(10, 4), chunk_shape=(5, 4), data_type=F32, fill_value=0)
    args.update(kwargs)
    return build_array_metadata(**args)


def test_v3_defaults():
    meta = build()
    assert isinstance(meta, ArrayMetadataV3)
    assert meta.chunk_key_encoding == DefaultChunkKeyEncoding("/")
    assert meta.to_json()["codecs"] == [{"name": "bytes", "configuration": {"endian": "little"}}]
    assert meta.fill_value == np.float32(0) and meta.fill_value.dtype == np.float32
    assert meta.attributes == {} and meta.dimension_names is None


def test_v3_everything():
    meta = build(
        data_type="bfloat16",
        fill_value=1.5,
        codecs=[
            {"name": "transpose", "configuration": {"order": [1, 0]}},
            {"name": "bytes", "configuration": {"endian": "big"}},
            {"name": "gzip", "configuration": {"level": 1}},
        ],
        chunk_key_encoding={"name": "v2", "configuration": {"separator": "/"}},
        dimension_names=["t", None],
        attributes={"units": "K"},
    )
    doc = meta.to_json()
    assert doc["data_type"] == "bfloat16"
    assert doc["fill_value"] == 1.5
    assert doc["chunk_key_encoding"] == {"name": "v2", "configuration": {"separator": "/"}}
    assert doc["dimension_names"] == ["t", None]
    assert doc["attributes"] == {"units": "K"}
    assert meta.codec_names == ["transpose", "bytes", "gzip"]
    assert ArrayMetadataV3.from_json(doc) == meta


def test_v3_dimension_separator_picks_the_default_encoding_separator():
    assert build(dimension_separator=".").chunk_key((1, 2)) == "c.1.2"
    assert build(dimension_separator="/", chunk_key_encoding="default").chunk_key((1,) * 2) == (
        "c/1/1"
    )
    with pytest.raises(MetadataError, match=re.escape("dimension_separator '.' contradicts")):
        build(dimension_separator=".", chunk_key_encoding={"name": "default"})


def test_v2_defaults_and_everything():
    meta = build(zarr_format=2)
    assert isinstance(meta, ArrayMetadataV2)
    assert meta.to_json() == {
        "shape": [10, 4],
        "chunks": [5, 4],
        "dtype": "<f4",
        "fill_value": 0.0,
        "order": "C",
        "filters": None,
        "dimension_separator": ".",
        "compressor": None,
        "zarr_format": 2,
    }
    full = build(
        zarr_format=2,
        data_type="int32",
        fill_value=-1,
        compressor={"id": "zlib", "level": 1},
        filters=[{"id": "delta", "dtype": ">i4"}],
        order="F",
        byteorder=">",
        dimension_separator="/",
        attributes={"a": 1},
    )
    doc = full.to_json()
    assert doc["dtype"] == ">i4" and doc["order"] == "F" and doc["fill_value"] == -1
    assert doc["filters"] == [{"id": "delta", "dtype": ">i4"}]
    assert full.chunk_key((1, 0)) == "1/0"
    assert ArrayMetadataV2.from_json(doc, {"a": 1}) == full


def test_v2_chunk_key_encoding():
    meta = build(zarr_format=2, chunk_key_encoding={"name": "v2", "separator": "/"})
    assert meta.chunk_key_encoding == V2ChunkKeyEncoding("/")
    same = build(zarr_format=2, chunk_key_encoding="v2", dimension_separator=".")
    assert same.chunk_key((2, 3)) == "2.3"
    with pytest.raises(MetadataError, match="Zarr v2 arrays use the 'v2' chunk key encoding"):
        build(zarr_format=2, chunk_key_encoding="default")
    with pytest.raises(MetadataError, match="dimension_separator '/' contradicts"):
        build(zarr_format=2, chunk_key_encoding="v2", dimension_separator="/")


@pytest.mark.parametrize(
    "kwargs,error,message",
    [
        ({"zarr_format": 4}, MetadataError, "zarr_format must be 2 or 3, got 4"),
        ({"fill_value": 1e39}, MetadataError, "fill_value 1e+39 does not fit dtype float32"),
        ({"fill_value": "zero"}, MetadataError, "fill_value 'zero' does not fit dtype float32"),
        ({"chunk_shape": (5,)}, MetadataError, "chunk_shape has 1 dims but shape has 2"),
        ({"chunk_shape": (0, 4)}, MetadataError, "chunk_shape entries must be >= 1"),
        ({"shape": (10, -1)}, MetadataError, "shape entries must be >= 0"),
        ({"shape": (10, 4.0)}, MetadataError, "shape must hold integers, got 4.0"),
        ({"dimension_names": ["a"]}, MetadataError, "dimension_names has 1 entries"),
        ({"order": "F"}, MetadataError, "order='F' is for Zarr v2"),
        ({"compressor": {"id": "zlib"}}, MetadataError, "compressor= and filters= are for"),
        ({"codecs": [{"name": "nope"}]}, UnknownCodecError, "'nope'"),
        ({"codecs": [{"name": "gzip"}]}, MetadataError, "array -> bytes"),
        ({"chunk_key_encoding": "nope"}, UnknownExtensionError, "'nope'"),
        ({"data_type": "float8_e4m3fn"}, MetadataError, "has no Zarr v3 data_type name"),
        ({"zarr_format": 2, "codecs": ["bytes"]}, MetadataError, "codecs= is for Zarr v3"),
        ({"zarr_format": 2, "dimension_names": ["a", "b"]}, MetadataError, "need Zarr v3"),
        ({"zarr_format": 2, "data_type": "float8_e5m2"}, MetadataError, "no Zarr v2 form"),
        ({"zarr_format": 2, "order": "X"}, MetadataError, "order must be 'C' or 'F', got 'X'"),
        ({"zarr_format": 2, "compressor": {"id": "nope9"}}, UnknownCodecError, "nope9"),
        ({"attributes": {1: "a"}}, MetadataError, "attributes must be an object with str keys"),
    ],
)
def test_build_errors(kwargs, error, message):
    with pytest.raises(error) as info:
        build(**kwargs)
    assert message in str(info.value)


def test_build_keeps_storage_scalars_as_they_are():
    """``create_array`` coerces first and passes raw bits for bfloat16; they must survive."""
    meta = build(data_type="bfloat16", fill_value=np.uint16(0x3FC0))
    assert meta.to_json()["fill_value"] == 1.5


def test_json_dumps_is_strict_and_keeps_order():
    data = json_dumps({"b": 1, "a": [1.5, None, True, "é"]})
    assert (
        data == '{\n  "b": 1,\n  "a": [\n    1.5,\n    null,\n    true,\n    "é"\n  ]\n}'.encode()
    )
    assert json.loads(data) == {"b": 1, "a": [1.5, None, True, "é"]}
    with pytest.raises(
        MetadataError, match=re.escape("a/zarr.json: metadata cannot be written as strict")
    ):
        json_dumps({"x": float("nan")}, key="a/zarr.json")
    with pytest.raises(MetadataError, match="strict JSON"):
        json_dumps({"x": np.float32(1)})
    with pytest.raises(MetadataError, match="strict JSON"):
        json_dumps({"x": float("inf")})


def test_json_loads():
    assert json_loads(b'{"a": 1}', key="k") == {"a": 1}
    assert json_loads('{"a": 1}', key="k") == {"a": 1}
    assert json_loads(memoryview(b'\xef\xbb\xbf{"a": 1}'), key="k") == {"a": 1}  # a BOM
    nan = json_loads(b'{"a": NaN}', key="k")["a"]  # zarr-python writes these in attributes
    assert nan != nan
    with pytest.raises(MetadataError, match=re.escape("g/.zattrs: not valid JSON")):
        json_loads(b"{", key="g/.zattrs")
    with pytest.raises(MetadataError, match="k: not valid JSON"):
        json_loads(b"\xff\xfe", key="k")
    with pytest.raises(MetadataError, match="k: expected a JSON object, got list"):
        json_loads(b"[1]", key="k")
    with pytest.raises(MetadataError, match="k: not valid JSON"):
        json_loads(b"", key="k")
