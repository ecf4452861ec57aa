"""Zarr v2 ``.zarray``/``.zgroup`` parsing, validation, round trips and error messages."""

from __future__ import annotations

import copy
import math
import re

import numpy as np
import pytest

from torchzarr.codecs.key_encoding import V2ChunkKeyEncoding
from torchzarr.dtypes import data_type
from torchzarr.errors import MetadataError, UnsupportedDtypeError
from torchzarr.metadata import ArrayMetadataV2, GroupMetadataV2

# As zarr-python 3.1 writes it (keys in its order).
ZARR_PYTHON_DOC = {
    "shape": [4, 6],
    "chunks": [2, 3],
    "dtype": "<i2",
    "fill_value": 0,
    "order": "F",
    "filters": [{"id": "delta", "dtype": "<i2", "astype": "<i2"}],
    "dimension_separator": "/",
    "compressor": {"id": "zstd", "level": 0},
    "zarr_format": 2,
}
# As tensorstore's zarr driver writes it.
TENSORSTORE_DOC = {
    "chunks": [2, 3],
    "compressor": None,
    "dimension_separator": ".",
    "dtype": "bfloat16",
    "fill_value": "NaN",
    "filters": None,
    "order": "C",
    "shape": [4, 6],
    "zarr_format": 2,
}


def doc(**changes):
    out = copy.deepcopy(ZARR_PYTHON_DOC)
    for key, value in changes.items():
        if value is ...:
            del out[key]
        else:
            out[key] = value
    return out


def test_parse_zarr_python_document():
    meta = ArrayMetadataV2.from_json(ZARR_PYTHON_DOC, {"units": "m"})
    assert meta.zarr_format == 2
    assert meta.shape == (4, 6)
    assert meta.chunk_shape == meta.chunks == (2, 3)
    assert meta.data_type == data_type("int16")
    assert meta.byteorder == "<"
    assert meta.order == "F"
    assert meta.filters == ({"id": "delta", "dtype": "<i2", "astype": "<i2"},)
    assert meta.compressor == {"id": "zstd", "level": 0}
    assert meta.fill_value == np.int16(0) and meta.fill_value.dtype == np.int16
    assert meta.dimension_separator == "/"
    assert meta.chunk_key_encoding == V2ChunkKeyEncoding("/")
    assert meta.attributes == {"units": "m"}
    assert meta.dimension_names is None
    out = meta.to_json()
    assert out == ZARR_PYTHON_DOC
    assert list(out) == list(ZARR_PYTHON_DOC)  # zarr-python's key order
    assert ArrayMetadataV2.from_json(out, meta.attributes) == meta


def test_parse_tensorstore_bfloat16_document():
    meta = ArrayMetadataV2.from_json(TENSORSTORE_DOC)
    assert meta.data_type.name == "bfloat16"
    assert meta.fill_value == np.uint16(0x7FC0)
    assert meta.to_json() == TENSORSTORE_DOC


def test_defaults_for_optional_keys():
    meta = ArrayMetadataV2.from_json(
        {"zarr_format": 2, "shape": [5], "chunks": [5], "dtype": "<f4"}
    )
    assert meta.dimension_separator == "."
    assert meta.order == "C"
    assert meta.compressor is None and meta.filters is None
    assert meta.fill_value is None
    assert meta.to_json()["fill_value"] is None
    assert meta.to_json()["dimension_separator"] == "."


def test_empty_filters_and_null_separator():
    meta = ArrayMetadataV2.from_json(doc(filters=[], dimension_separator=None))
    assert meta.filters is None
    assert meta.to_json()["filters"] is None
    assert meta.dimension_separator == "."


def test_null_fill_reads_as_zero_in_the_chunk_spec():
    meta = ArrayMetadataV2.from_json(doc(fill_value=None, dtype="<f8"))
    assert meta.fill_value is None
    spec = meta.chunk_spec()
    assert spec.fill_value == 0 and spec.fill_value.dtype == np.float64
    assert spec.shape == (2, 3) and spec.dtype == np.float64


@pytest.mark.parametrize(
    "typestr,name,byteorder",
    [
        (">f8", "float64", ">"),
        ("<u4", "uint32", "<"),
        ("|b1", "bool", "|"),
        ("|u1", "uint8", "|"),
        (">c16", "complex128", ">"),
        ("bfloat16", "bfloat16", "<"),
    ],
)
def test_dtypes_and_byte_orders_round_trip(typestr, name, byteorder):
    meta = ArrayMetadataV2.from_json(doc(dtype=typestr, filters=None))
    assert meta.data_type.name == name
    assert meta.byteorder == byteorder
    assert meta.to_json()["dtype"] == typestr


def test_one_byte_dtypes_get_the_not_applicable_byteorder():
    meta = ArrayMetadataV2((4,), (2,), data_type("int8"), byteorder="<")
    assert meta.byteorder == "|"
    assert ArrayMetadataV2.from_json(meta.to_json()) == meta


@pytest.mark.parametrize(
    "fill,dtype,expected",
    [
        ("NaN", "<f4", "NaN"),
        ("Infinity", ">f8", "Infinity"),
        ("-Infinity", "<f2", "-Infinity"),
        ([1.0, "NaN"], "<c8", [1.0, "NaN"]),
        (True, "|b1", True),
        (-3, "|i1", -3),
        (18446744073709551615, "<u8", 18446744073709551615),
        ("AADAPw==", "<f4", 1.5),  # base64 raw bytes, written back as a number
    ],
)
def test_fill_values(fill, dtype, expected):
    meta = ArrayMetadataV2.from_json(doc(fill_value=fill, dtype=dtype, filters=None))
    assert meta.to_json()["fill_value"] == expected


def test_chunk_keys():
    meta = ArrayMetadataV2.from_json(doc())
    assert meta.chunk_key((1, 2)) == "1/2"
    dotted = ArrayMetadataV2.from_json(doc(dimension_separator="."))
    assert dotted.chunk_key((1, 2)) == "1.2"
    scalar = ArrayMetadataV2((), (), data_type("float32"))
    assert scalar.chunk_key(()) == "0"


def test_codec_pipeline_round_trips_a_chunk():
    meta = ArrayMetadataV2.from_json(doc(dtype=">i2", filters=None))
    pipe = meta.codec_pipeline()
    chunk = np.arange(6, dtype=np.int16).reshape(2, 3)
    np.testing.assert_array_equal(pipe.decode(pipe.encode(chunk)), chunk)


def test_codec_descriptions():
    meta = ArrayMetadataV2.from_json(ZARR_PYTHON_DOC)
    assert meta.codec_names == ["delta", "zstd"]
    assert meta.codecs_repr == ["delta(dtype='<i2', astype='<i2')", "zstd(level=0)"]
    bare = ArrayMetadataV2.from_json(doc(filters=None, compressor=None))
    assert bare.codec_names == [] and bare.codecs_repr == []


def test_unknown_keys_are_ignored():
    meta = ArrayMetadataV2.from_json(doc(something_else={"x": 1}))
    assert "something_else" not in meta.to_json()


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"zarr_format": 3}, ".zarray: zarr_format must be 2, got 3"),
        ({"zarr_format": ...}, ".zarray: zarr_format must be 2, got None"),
        ({"shape": ...}, ".zarray: missing required key 'shape'"),
        ({"chunks": ...}, ".zarray: missing required key 'chunks'"),
        ({"dtype": ...}, ".zarray: missing required key 'dtype'"),
        ({"shape": [4.0, 6]}, ".zarray: shape must hold integers, got 4.0"),
        ({"shape": [True, 6]}, ".zarray: shape must hold integers, got True"),
        ({"shape": [-1, 6]}, ".zarray: shape entries must be >= 0"),
        ({"shape": [2**63, 6]}, "< 2**63"),
        ({"shape": "4,6"}, ".zarray: shape must be a list of integers"),
        ({"chunks": [0, 3]}, ".zarray: chunks entries must be >= 1"),
        ({"chunks": [2]}, ".zarray: chunks has 1 dims but shape has 2"),
        ({"order": "K"}, ".zarray: order must be 'C' or 'F', got 'K'"),
        ({"dimension_separator": "-"}, "dimension_separator must be '.' or '/', got '-'"),
        ({"compressor": "zstd"}, ".zarray: compressor must be an object with a str 'id'"),
        ({"compressor": {"level": 1}}, ".zarray: compressor must be an object with a str 'id'"),
        ({"filters": {"id": "delta"}}, ".zarray: filters must be a list or null"),
        ({"filters": [{"dtype": "<i2"}]}, ".zarray: each filter must be an object"),
        ({"fill_value": "x"}, ".zarray: fill_value 'x' is not valid for int16"),
        ({"fill_value": 40000}, ".zarray: fill_value 40000 is out of range for int16"),
    ],
)
def test_errors_name_the_key(changes, message):
    with pytest.raises(MetadataError) as info:
        ArrayMetadataV2.from_json(doc(**changes))
    assert message in str(info.value)


@pytest.mark.parametrize("typestr", ["<U4", "|S3", "|V8", "<M8[ns]", [["a", "<f4"]], "<q9"])
def test_unsupported_dtypes(typestr):
    with pytest.raises(UnsupportedDtypeError):
        ArrayMetadataV2.from_json(doc(dtype=typestr))


def test_not_an_object():
    with pytest.raises(MetadataError, match="expected a JSON object, got list"):
        ArrayMetadataV2.from_json([])  # type: ignore[arg-type]


def test_constructor_validates_and_normalises():
    meta = ArrayMetadataV2(
        shape=[np.int64(4)],  # type: ignore[arg-type]
        chunk_shape=(2,),
        data_type="float32",  # type: ignore[arg-type]
        fill_value=1.5,  # type: ignore[arg-type]
        filters=[],
    )
    assert meta.shape == (4,) and type(meta.shape[0]) is int
    assert meta.data_type == data_type("float32")
    assert meta.fill_value == np.float32(1.5) and meta.fill_value.dtype == np.float32
    assert meta.filters is None
    with pytest.raises(MetadataError, match="byteorder must be '<' or '>' for float32"):
        ArrayMetadataV2((4,), (2,), data_type("float32"), byteorder="|")
    # tensorstore's spelling of a float8 kind in .zarray
    assert ArrayMetadataV2((4,), (2,), data_type("float8_e5m2")).to_json()["dtype"] == "float8_e5m2"
    with pytest.raises(MetadataError, match=re.escape(".zattrs: attributes must be an object")):
        ArrayMetadataV2((4,), (2,), data_type("int8"), attributes=[1])  # type: ignore[arg-type]


def test_evolve():
    meta = ArrayMetadataV2.from_json(ZARR_PYTHON_DOC, {"a": 1})
    bigger = meta.evolve(shape=(10, 6))
    assert bigger.shape == (10, 6) and meta.shape == (4, 6)
    assert bigger.compressor == meta.compressor
    relabelled = meta.evolve(attributes={"b": 2})
    assert relabelled.attributes == {"b": 2} and meta.attributes == {"a": 1}
    slashed = meta.evolve(dimension_separator=".")
    assert slashed.chunk_key((1, 1)) == "1.1"
    with pytest.raises(MetadataError, match=r"unknown field\(s\) \['dimension_names'\]"):
        meta.evolve(dimension_names=("x", "y"))
    with pytest.raises(MetadataError, match="chunks has 2 dims but shape has 3"):
        meta.evolve(shape=(1, 2, 3))


def test_equality_and_hash():
    a = ArrayMetadataV2.from_json(doc(fill_value="NaN", dtype="<f4", filters=None))
    b = ArrayMetadataV2.from_json(doc(fill_value="NaN", dtype="<f4", filters=None))
    assert a == b  # NaN fills are the same fill
    assert a != a.evolve(fill_value=np.float32(-0.0))
    assert a.evolve(fill_value=np.float32(0.0)) != a.evolve(fill_value=np.float32(-0.0))
    assert a != a.evolve(order="C" if a.order == "F" else "F")
    assert a != ArrayMetadataV2.from_json(doc(fill_value=None, dtype="<f4", filters=None))
    assert a != "not metadata"
    with pytest.raises(TypeError):
        hash(a)


def test_group():
    group = GroupMetadataV2.from_json({"zarr_format": 2}, {"k": [1, 2]})
    assert group.attributes == {"k": [1, 2]}
    assert group.zarr_format == 2 and group.node_type == "group"
    assert group.to_json() == {"zarr_format": 2}
    assert group.evolve(attributes={}) == GroupMetadataV2()
    assert GroupMetadataV2.from_json({"zarr_format": 2}).attributes == {}
    with pytest.raises(MetadataError, match=re.escape(".zgroup: zarr_format must be 2, got 3")):
        GroupMetadataV2.from_json({"zarr_format": 3})
    with pytest.raises(MetadataError, match=r"unknown field\(s\) \['shape'\]"):
        group.evolve(shape=(1,))
    with pytest.raises(MetadataError, match=re.escape(".zattrs: attributes must be an object")):
        GroupMetadataV2(attributes={1: 2})  # type: ignore[dict-item]


def test_a_nan_fill_is_the_standard_nan_the_zarray_spells(tmp_path):
    torch = pytest.importorskip("torch")
    import torchzarr as tz

    negative_payload = np.array([0xFFC00001], "u4").view("f4")[0]
    meta = ArrayMetadataV2((4,), (2,), data_type("float32"), fill_value=negative_payload)
    assert meta.fill_value.view("u4") == 0x7FC00000 and meta.to_json()["fill_value"] == "NaN"
    nan_re = np.complex64(complex(-math.nan, 1.0))
    assert np.signbit(nan_re.real)
    meta = ArrayMetadataV2((4,), (2,), data_type("complex64"), fill_value=nan_re)
    assert np.asarray(meta.fill_value).reshape(1).view("u4").tolist() == [0x7FC00000, 0x3F800000]
    # the open array pads written chunks with what .zarray says, and reopening agrees
    arr = tz.create_array(
        tmp_path, shape=(4,), chunks=(2,), dtype=torch.float32, fill_value=-math.nan, zarr_format=2
    )
    arr[0] = 1.0
    again = tz.open_array(tmp_path, mode="r")
    assert not np.signbit(arr.fill_value) and not np.signbit(again.fill_value)
    assert again[1:].view(torch.int32).tolist() == [0x7FC00000] * 3
