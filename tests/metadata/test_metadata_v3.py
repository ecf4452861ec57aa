"""Zarr v3 ``zarr.json`` parsing: arrays, groups, extensions, validation and error messages."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from torchzarr.codecs.key_encoding import DefaultChunkKeyEncoding, V2ChunkKeyEncoding
from torchzarr.codecs.registry import codec_from_json
from torchzarr.dtypes import data_type
from torchzarr.errors import (
    MetadataError,
    UnknownCodecError,
    UnknownExtensionError,
    UnsupportedDtypeError,
)
from torchzarr.metadata import ArrayMetadataV3, GroupMetadataV3, parse_v3_node

# As zarr-python 3.1 writes it (keys in its order).
ZARR_PYTHON_DOC = {
    "shape": [4, 6],
    "data_type": "int16",
    "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [2, 3]}},
    "chunk_key_encoding": {"name": "v2", "configuration": {"separator": "/"}},
    "fill_value": 0,
    "codecs": [
        {"name": "bytes", "configuration": {"endian": "little"}},
        {"name": "zstd", "configuration": {"level": 0, "checksum": False}},
    ],
    "attributes": {"a": [1, "b"]},
    "dimension_names": ["x", None],
    "zarr_format": 3,
    "node_type": "array",
    "storage_transformers": [],
}
# As tensorstore's zarr3 driver writes it: no attributes, no configuration on the encoding.
TENSORSTORE_DOC = {
    "chunk_grid": {"configuration": {"chunk_shape": [2, 3]}, "name": "regular"},
    "chunk_key_encoding": {"name": "default"},
    "codecs": [{"configuration": {"endian": "little"}, "name": "bytes"}],
    "data_type": "bfloat16",
    "fill_value": "Infinity",
    "node_type": "array",
    "shape": [4, 6],
    "zarr_format": 3,
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
    meta = ArrayMetadataV3.from_json(ZARR_PYTHON_DOC)
    assert meta.zarr_format == 3 and meta.node_type == "array"
    assert meta.shape == (4, 6) and meta.chunk_shape == (2, 3) and meta.ndim == 2
    assert meta.data_type == data_type("int16")
    assert meta.fill_value == np.int16(0) and meta.fill_value.dtype == np.int16
    assert meta.chunk_key_encoding == V2ChunkKeyEncoding("/")
    assert meta.codecs == tuple(codec_from_json(c) for c in ZARR_PYTHON_DOC["codecs"])
    assert meta.attributes == {"a": [1, "b"]}
    assert meta.dimension_names == ("x", None)
    assert meta.storage_transformers == ()
    out = meta.to_json()
    assert out == ZARR_PYTHON_DOC
    assert list(out) == list(ZARR_PYTHON_DOC)
    assert ArrayMetadataV3.from_json(out) == meta


def test_parse_tensorstore_document_fills_in_defaults():
    meta = ArrayMetadataV3.from_json(TENSORSTORE_DOC)
    assert meta.data_type.name == "bfloat16"
    assert meta.fill_value == np.uint16(0x7F80)
    assert meta.chunk_key_encoding == DefaultChunkKeyEncoding("/")
    out = meta.to_json()
    assert out["attributes"] == {}
    assert out["storage_transformers"] == []
    assert out["chunk_key_encoding"] == {"name": "default", "configuration": {"separator": "/"}}
    given = {k: v for k, v in TENSORSTORE_DOC.items() if k != "chunk_key_encoding"}
    assert {k: v for k, v in out.items() if k in given} == given


def test_missing_chunk_key_encoding_is_default():
    meta = ArrayMetadataV3.from_json(doc(chunk_key_encoding=...))
    assert meta.chunk_key((1, 2)) == "c/1/2"
    dotted = ArrayMetadataV3.from_json(
        doc(chunk_key_encoding={"name": "default", "configuration": {"separator": "."}})
    )
    assert dotted.chunk_key((1, 2)) == "c.1.2"


def test_scalar_array():
    meta = ArrayMetadataV3.from_json(
        doc(
            shape=[],
            chunk_grid={"name": "regular", "configuration": {"chunk_shape": []}},
            dimension_names=[],
            chunk_key_encoding={"name": "default"},
            fill_value="-Infinity",
            data_type="float32",
        )
    )
    assert meta.chunk_key(()) == "c"
    assert meta.chunk_spec().shape == ()
    assert meta.to_json()["fill_value"] == "-Infinity"


def test_sharded_array_keeps_the_shard_grid():
    sharded = doc(
        shape=[8, 6],
        chunk_grid={"name": "regular", "configuration": {"chunk_shape": [4, 6]}},
        codecs=[
            {
                "name": "sharding_indexed",
                "configuration": {
                    "chunk_shape": [2, 3],
                    "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}],
                    "index_codecs": [
                        {"name": "bytes", "configuration": {"endian": "little"}},
                        {"name": "crc32c"},
                    ],
                    "index_location": "end",
                },
            }
        ],
    )
    meta = ArrayMetadataV3.from_json(sharded)
    assert meta.chunk_shape == (4, 6)
    assert meta.codec_names == ["sharding_indexed"]
    assert meta.to_json()["codecs"] == sharded["codecs"]


def test_codec_descriptions():
    meta = ArrayMetadataV3.from_json(ZARR_PYTHON_DOC)
    assert meta.codec_names == ["bytes", "zstd"]
    assert meta.codecs_repr == ["bytes(endian='little')", "zstd(level=0, checksum=False)"]


def test_codec_pipeline_round_trips_a_chunk():
    meta = ArrayMetadataV3.from_json(ZARR_PYTHON_DOC)
    pipe = meta.codec_pipeline()
    chunk = np.arange(6, dtype=np.int16).reshape(2, 3)
    np.testing.assert_array_equal(pipe.decode(pipe.encode(chunk)), chunk)


def test_extensions_with_must_understand_false_are_kept():
    ext = {"name": "x", "must_understand": False, "configuration": {"k": 1}}
    meta = ArrayMetadataV3.from_json(doc(my_extension=ext))
    assert meta.extensions == {"my_extension": ext}
    assert meta.to_json()["my_extension"] == ext
    assert ArrayMetadataV3.from_json(meta.to_json()) == meta


@pytest.mark.parametrize(
    "value", [{"must_understand": True}, {"name": "x"}, 1, "text", [{"must_understand": False}]]
)
def test_unknown_keys_that_must_be_understood_are_refused(value):
    with pytest.raises(UnknownExtensionError, match="unknown key 'my_extension'"):
        ArrayMetadataV3.from_json(doc(my_extension=value))


def test_storage_transformers():
    skippable = {"name": "x", "must_understand": False}
    meta = ArrayMetadataV3.from_json(doc(storage_transformers=[skippable]))
    assert meta.storage_transformers == (skippable,)
    assert meta.to_json()["storage_transformers"] == [skippable]
    with pytest.raises(UnknownExtensionError, match="storage transformer 'partial'"):
        ArrayMetadataV3.from_json(doc(storage_transformers=[{"name": "partial"}]))
    with pytest.raises(MetadataError, match="storage_transformers must be a list"):
        ArrayMetadataV3.from_json(doc(storage_transformers={"name": "x"}))


@pytest.mark.parametrize(
    "changes,error,message",
    [
        ({"zarr_format": 2}, MetadataError, "expected zarr_format 3 and node_type 'array'"),
        ({"node_type": "group"}, MetadataError, "got 3 and 'group'"),
        ({"shape": ...}, MetadataError, "zarr.json: missing required key 'shape'"),
        ({"data_type": ...}, MetadataError, "zarr.json: missing required key 'data_type'"),
        ({"chunk_grid": ...}, MetadataError, "zarr.json: missing required key 'chunk_grid'"),
        ({"fill_value": ...}, MetadataError, "zarr.json: missing required key 'fill_value'"),
        ({"codecs": ...}, MetadataError, "zarr.json: missing required key 'codecs'"),
        ({"fill_value": None}, MetadataError, "zarr.json: fill_value is required in Zarr v3"),
        ({"fill_value": 1.5}, MetadataError, "zarr.json: fill_value 1.5 is not an integer"),
        ({"shape": [4, 6, 1]}, MetadataError, "zarr.json: chunk_shape has 2 dims but shape has 3"),
        ({"shape": [4, 6.0]}, MetadataError, "zarr.json: shape must hold integers, got 6.0"),
        ({"shape": [4, False]}, MetadataError, "shape must hold integers, got False"),
        ({"shape": [-4, 6]}, MetadataError, "zarr.json: shape entries must be >= 0"),
        (
            {"chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [0, 3]}}},
            MetadataError,
            "zarr.json: chunk_shape entries must be >= 1",
        ),
        (
            {"chunk_grid": {"name": "regular"}},
            MetadataError,
            "chunk_grid 'regular' needs configuration.chunk_shape",
        ),
        (
            {"chunk_grid": {"name": "rectilinear", "configuration": {}}},
            UnknownExtensionError,
            "unsupported chunk_grid 'rectilinear'",
        ),
        ({"chunk_grid": [2, 3]}, MetadataError, "chunk_grid must be an object with a name"),
        (
            {"chunk_key_encoding": {"name": "hashed"}},
            UnknownExtensionError,
            "unknown chunk_key_encoding 'hashed'",
        ),
        ({"codecs": {"name": "bytes"}}, MetadataError, "zarr.json: codecs must be a list"),
        ({"codecs": [{"name": "lzma9000"}]}, UnknownCodecError, "'lzma9000'"),
        ({"codecs": []}, MetadataError, "needs an array -> bytes codec"),
        ({"codecs": [{"name": "zstd"}, {"name": "bytes"}]}, MetadataError, "'zstd'"),
        ({"codecs": [{"name": "bytes"}]}, MetadataError, "endian"),  # int16 needs an endian
        ({"dimension_names": ["x"]}, MetadataError, "dimension_names has 1 entries but shape"),
        ({"dimension_names": ["x", 1]}, MetadataError, "dimension_names must be a list of"),
        ({"dimension_names": "xy"}, MetadataError, "dimension_names must be a list of"),
        ({"attributes": []}, MetadataError, "zarr.json: attributes must be an object"),
        ({"data_type": "string"}, UnsupportedDtypeError, "'string'"),
        ({"data_type": {"name": "struct"}}, UnsupportedDtypeError, "struct"),
    ],
)
def test_errors_name_the_key(changes, error, message):
    with pytest.raises(error) as info:
        ArrayMetadataV3.from_json(doc(**changes))
    assert message in str(info.value)


def test_constructor_normalises_codecs_encodings_and_fills():
    meta = ArrayMetadataV3(
        shape=(4,),
        chunk_shape=(2,),
        data_type=data_type("float32"),
        fill_value=float("nan"),  # type: ignore[arg-type]
        codecs=[{"name": "bytes", "configuration": {"endian": "big"}}],  # type: ignore[arg-type]
        chunk_key_encoding={"name": "v2"},  # type: ignore[arg-type]
        dimension_names=["t"],  # type: ignore[arg-type]
    )
    assert meta.fill_value.dtype == np.float32 and np.isnan(meta.fill_value)
    assert meta.codecs == (codec_from_json({"name": "bytes", "configuration": {"endian": "big"}}),)
    assert meta.chunk_key((3,)) == "3"
    assert meta.dimension_names == ("t",)
    # read under tensorstore's name (torchzarr itself writes raw bits plus an attribute)
    f8 = ArrayMetadataV3((4,), (2,), data_type("float8_e4m3fn"), np.uint8(0), ("bytes",))
    assert f8.to_json()["data_type"] == "float8_e4m3fn"
    with pytest.raises(MetadataError, match="extensions may not redefine core keys"):
        ArrayMetadataV3((4,), (2,), data_type("uint8"), 0, ("bytes",), extensions={"shape": {}})
    with pytest.raises(UnknownExtensionError, match="unknown key 'x'"):
        ArrayMetadataV3((4,), (2,), data_type("uint8"), 0, ("bytes",), extensions={"x": 1})


def test_evolve_and_equality():
    meta = ArrayMetadataV3.from_json(doc(data_type="float32", fill_value="NaN"))
    assert meta == ArrayMetadataV3.from_json(doc(data_type="float32", fill_value="NaN"))
    grown = meta.evolve(shape=(8, 6))
    assert grown.shape == (8, 6) and grown != meta
    assert grown.evolve(shape=(4, 6)) == meta
    assert meta.evolve(attributes={}) != meta
    assert meta.evolve(fill_value=np.float32(0.0)) != meta.evolve(fill_value=np.float32(-0.0))
    with pytest.raises(MetadataError, match="dimension_names has 3 entries"):
        meta.evolve(dimension_names=("a", "b", "c"))
    with pytest.raises(MetadataError, match=r"unknown field\(s\) \['compressor'\]"):
        meta.evolve(compressor=None)
    with pytest.raises(TypeError):
        hash(meta)


def test_group_documents():
    consolidated = {"kind": "inline", "must_understand": False, "metadata": {"a": {"x": 1}}}
    zp = {
        "attributes": {"k": 1},
        "zarr_format": 3,
        "consolidated_metadata": consolidated,
        "node_type": "group",
    }
    group = GroupMetadataV3.from_json(zp)
    assert group.attributes == {"k": 1}
    assert group.consolidated_metadata == consolidated
    assert group.to_json() == zp and list(group.to_json()) == list(zp)
    assert GroupMetadataV3.from_json(group.to_json()) == group
    bare = GroupMetadataV3.from_json({"zarr_format": 3, "node_type": "group"})
    assert bare == GroupMetadataV3()
    assert bare.to_json() == {"attributes": {}, "zarr_format": 3, "node_type": "group"}
    nulled = GroupMetadataV3.from_json(dict(zp, consolidated_metadata=None))
    assert nulled.consolidated_metadata is None
    assert group.evolve(consolidated_metadata=None) == nulled


def test_group_extensions_and_errors():
    ext = {"must_understand": False, "v": 1}
    group = GroupMetadataV3.from_json({"zarr_format": 3, "node_type": "group", "ext": ext})
    assert group.to_json()["ext"] == ext
    with pytest.raises(UnknownExtensionError, match="unknown key 'ext'"):
        GroupMetadataV3.from_json({"zarr_format": 3, "node_type": "group", "ext": {"v": 1}})
    with pytest.raises(MetadataError, match="consolidated_metadata must be an object or null"):
        GroupMetadataV3.from_json(
            {"zarr_format": 3, "node_type": "group", "consolidated_metadata": []}
        )
    with pytest.raises(MetadataError, match="attributes must be an object"):
        GroupMetadataV3.from_json({"zarr_format": 3, "node_type": "group", "attributes": 1})
    with pytest.raises(MetadataError, match="expected zarr_format 3 and node_type 'group'"):
        GroupMetadataV3.from_json({"zarr_format": 3, "node_type": "array"})


def test_parse_v3_node_dispatches_on_node_type():
    assert isinstance(parse_v3_node(ZARR_PYTHON_DOC), ArrayMetadataV3)
    assert isinstance(parse_v3_node({"zarr_format": 3, "node_type": "group"}), GroupMetadataV3)
    with pytest.raises(MetadataError, match="node_type must be 'array' or 'group', got None"):
        parse_v3_node({"zarr_format": 3})
    with pytest.raises(MetadataError, match="zarr_format must be 3, got 2"):
        parse_v3_node({"zarr_format": 2, "node_type": "group"})
    with pytest.raises(MetadataError, match="expected a JSON object, got list"):
        parse_v3_node([])  # type: ignore[arg-type]
