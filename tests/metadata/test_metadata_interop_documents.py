"""Metadata against real peers: documents zarr-python 3.1 and tensorstore write, both ways.

Peers -> us: each document parses, ``to_json`` gives it back (up to the defaults zarr-python
always writes), and our fill value has the bits the peer reads from the empty array.
Us -> peers: each document we write opens in zarr-python and tensorstore with the same
fill value, attributes and dimension names, and a chunk the peer writes lands at our key.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from torchzarr.codecs.registry import codec_from_json
from torchzarr.dtypes import data_type
from torchzarr.metadata import (
    ArrayMetadata,
    ArrayMetadataV2,
    ArrayMetadataV3,
    GroupMetadataV2,
    GroupMetadataV3,
    build_array_metadata,
    json_dumps,
    parse_v3_node,
)

zarr = pytest.importorskip("zarr")
ts = pytest.importorskip("tensorstore")

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")


def read_doc(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The metadata document of the array at ``path`` and its v2 attributes."""
    if (path / "zarr.json").exists():
        return json.loads((path / "zarr.json").read_text()), {}
    attrs = path / ".zattrs"
    return (
        json.loads((path / ".zarray").read_text()),
        json.loads(attrs.read_text()) if attrs.exists() else {},
    )


def parse(path: Path) -> ArrayMetadata:
    doc, attrs = read_doc(path)
    if doc["zarr_format"] == 3:
        return ArrayMetadataV3.from_json(doc)
    return ArrayMetadataV2.from_json(doc, attrs)


def expected_bits(meta: ArrayMetadata) -> bytes:
    """Bytes of the whole array filled with our fill value, native order."""
    spec = meta.chunk_spec()
    return np.full(meta.shape, spec.fill_value, dtype=spec.dtype).tobytes()


def peer_bits(array: np.ndarray, meta: ArrayMetadata) -> bytes:
    """Bytes of what a peer read, as native-order storage (ml_dtypes reinterpreted as uint)."""
    out = np.asarray(array)
    if meta.data_type.is_reinterpreted:
        return out.view(meta.data_type.storage).tobytes()
    return out.astype(out.dtype.newbyteorder("=")).tobytes()


def ts_open(path: Path, zarr_format: int) -> Any:
    driver = "zarr3" if zarr_format == 3 else "zarr"
    return ts.open({"driver": driver, "kvstore": {"driver": "file", "path": str(path)}}).result()


# --- zarr-python -> us -------------------------------------------------------------------

ZP_CASES = [
    ("float32", math.nan),
    ("float64", math.inf),
    ("float16", -math.inf),
    ("float32", -0.0),
    ("complex64", 1 + 2j),
    ("complex128", complex(math.nan, math.inf)),
    ("bool", True),
    ("uint64", 2**64 - 1),
    ("int8", -3),
    ("int32", None),
]


@pytest.mark.parametrize("zarr_format", [2, 3])
@pytest.mark.parametrize("dtype,fill", ZP_CASES)
def test_zarr_python_documents(tmp_path, zarr_format, dtype, fill):
    path = tmp_path / "a"
    z = zarr.create_array(
        str(path),
        shape=(4, 6),
        chunks=(2, 3),
        dtype=dtype,
        fill_value=fill,
        zarr_format=zarr_format,
        attributes={"units": "m", "n": [1, 2]},
    )
    doc, _ = read_doc(path)
    meta = parse(path)
    assert meta.to_json() == doc
    assert list(meta.to_json()) == list(doc)
    assert meta.attributes == {"units": "m", "n": [1, 2]} == dict(z.attrs)
    assert peer_bits(z[...], meta) == expected_bits(meta)


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_zarr_python_layouts(tmp_path, zarr_format):
    """Big endian, F order, filters, '/' separators, dimension names, empty and 0-d arrays."""
    numcodecs = pytest.importorskip("numcodecs")
    extra: dict[str, Any] = (
        {"order": "F", "filters": [numcodecs.Delta(dtype=">i4")], "dtype": ">i4"}
        if zarr_format == 2
        else {"dimension_names": ["x", None], "dtype": "int32"}
    )
    for name, shape, chunks in [("a", (4, 6), (2, 3)), ("empty", (0, 3), (1, 3))]:
        path = tmp_path / name
        zarr.create_array(
            str(path),
            shape=shape,
            chunks=chunks,
            zarr_format=zarr_format,
            chunk_key_encoding={"name": "v2", "separator": "/"},
            **extra,
        )
        doc, _ = read_doc(path)
        meta = parse(path)
        assert meta.to_json() == doc
        assert meta.chunk_key((1, 2)) == "1/2"
    scalar = tmp_path / "scalar"
    z = zarr.create_array(
        str(scalar), shape=(), dtype="float32", fill_value=2.5, zarr_format=zarr_format
    )
    z[...] = 7.0
    meta = parse(scalar)
    assert meta.to_json() == read_doc(scalar)[0]
    assert (scalar / meta.chunk_key(())).is_file()


def test_zarr_python_sharded_and_consolidated(tmp_path):
    z = zarr.create_array(
        str(tmp_path / "g" / "s"), shape=(8, 6), chunks=(2, 3), shards=(4, 6), dtype="float32"
    )
    z[...] = 1.0
    meta = parse(tmp_path / "g" / "s")
    assert meta.chunk_shape == (4, 6)
    assert (tmp_path / "g" / "s" / meta.chunk_key((1, 0))).is_file()
    assert meta.to_json() == read_doc(tmp_path / "g" / "s")[0]
    zarr.open_group(str(tmp_path / "g"), mode="a", attributes={"k": 1})
    zarr.consolidate_metadata(str(tmp_path / "g"))
    root = json.loads((tmp_path / "g" / "zarr.json").read_text())
    group = parse_v3_node(root)
    assert isinstance(group, GroupMetadataV3)
    assert group.to_json() == root
    inner = group.consolidated_metadata["metadata"]["s"]  # type: ignore[index]
    assert ArrayMetadataV3.from_json(inner) == meta


def test_zarr_python_groups(tmp_path):
    zarr.open_group(str(tmp_path / "v3"), mode="w", zarr_format=3, attributes={"a": 1})
    doc = json.loads((tmp_path / "v3" / "zarr.json").read_text())
    assert GroupMetadataV3.from_json(doc).to_json() == doc
    zarr.open_group(str(tmp_path / "v2"), mode="w", zarr_format=2, attributes={"a": 1})
    zgroup = json.loads((tmp_path / "v2" / ".zgroup").read_text())
    zattrs = json.loads((tmp_path / "v2" / ".zattrs").read_text())
    group = GroupMetadataV2.from_json(zgroup, zattrs)
    assert group.to_json() == zgroup and group.attributes == {"a": 1}


# --- tensorstore -> us -------------------------------------------------------------------

TS_V2 = [
    ("<f4", "NaN"),
    ("<f8", "Infinity"),
    ("<c8", [1.0, "NaN"]),
    ("|b1", True),
    (">i4", 7),
    ("bfloat16", 1.5),
    ("bfloat16", "NaN"),
    ("<u8", 2**64 - 1),
    ("|u1", None),
]
TS_V3 = [
    ("float32", "NaN"),
    ("float32", "0x7fc00001"),
    ("float64", "-Infinity"),
    ("bfloat16", 1.5),
    ("bfloat16", "Infinity"),
    ("float16", 0.5),
    ("complex64", [1.0, "-Infinity"]),
    ("bool", False),
    ("uint64", 2**64 - 1),
    ("int8", -1),
    ("float8_e5m2", 0.5),
    ("float8_e4m3fnuz", 0.5),
]


def ts_create(path: Path, driver: str, metadata: dict[str, Any]) -> Any:
    spec = {
        "driver": driver,
        "kvstore": {"driver": "file", "path": str(path)},
        "metadata": metadata,
        "create": True,
    }
    return ts.open(spec).result()


def with_defaults(doc: dict[str, Any]) -> dict[str, Any]:
    """A tensorstore v3 document with the keys zarr-python always writes filled in."""
    out = copy.deepcopy(doc)
    out.setdefault("attributes", {})
    out.setdefault("storage_transformers", [])
    out["chunk_key_encoding"].setdefault(
        "configuration",
        {"separator": "/" if out["chunk_key_encoding"]["name"] == "default" else "."},
    )
    out["codecs"] = [codec_from_json(c).to_json() for c in out["codecs"]]
    return out


@pytest.mark.parametrize("dtype,fill", TS_V2)
def test_tensorstore_v2_documents(tmp_path, dtype, fill):
    meta_in = {"shape": [4, 6], "chunks": [2, 3], "dtype": dtype, "fill_value": fill}
    store = ts_create(tmp_path, "zarr", dict(meta_in, compressor=None))
    doc, _ = read_doc(tmp_path)
    meta = parse(tmp_path)
    assert meta.to_json() == doc
    assert peer_bits(store.read().result(), meta) == expected_bits(meta)


def test_tensorstore_v2_layout(tmp_path):
    store = ts_create(
        tmp_path,
        "zarr",
        {
            "shape": [4, 6],
            "chunks": [2, 3],
            "dtype": "<i2",
            "order": "F",
            "dimension_separator": "/",
            "compressor": {"id": "zstd", "level": 1},
        },
    )
    store[1, 4].write(5).result()
    meta = parse(tmp_path)
    assert meta.to_json() == read_doc(tmp_path)[0]
    assert (tmp_path / meta.chunk_key((0, 1))).is_file()


@pytest.mark.parametrize("dtype,fill", TS_V3)
def test_tensorstore_v3_documents(tmp_path, dtype, fill):
    grid = {"name": "regular", "configuration": {"chunk_shape": [2, 3]}}
    store = ts_create(
        tmp_path,
        "zarr3",
        {"shape": [4, 6], "chunk_grid": grid, "data_type": dtype, "fill_value": fill},
    )
    doc, _ = read_doc(tmp_path)
    meta = parse(tmp_path)
    assert meta.to_json() == with_defaults(doc)
    assert peer_bits(store.read().result(), meta) == expected_bits(meta)


def test_tensorstore_v3_layouts(tmp_path):
    cases = {
        "names": {
            "shape": [4, 6],
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [2, 3]}},
            "data_type": "int16",
            "dimension_names": ["x", ""],
            "chunk_key_encoding": {"name": "v2"},
            "attributes": {"a": 1},
        },
        "shard": {
            "shape": [8, 6],
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [4, 6]}},
            "data_type": "uint8",
            "codecs": [{"name": "sharding_indexed", "configuration": {"chunk_shape": [2, 3]}}],
        },
        "scalar": {
            "shape": [],
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": []}},
            "data_type": "float32",
            "codecs": [
                {"name": "transpose", "configuration": {"order": []}},
                {"name": "bytes", "configuration": {"endian": "little"}},
                {"name": "gzip"},
            ],
        },
    }
    for name, metadata in cases.items():
        store = ts_create(tmp_path / name, "zarr3", metadata)
        if metadata["shape"]:
            store[1, 4].write(1).result()
        else:
            store.write(1).result()
        doc, _ = read_doc(tmp_path / name)
        meta = parse(tmp_path / name)
        assert meta.to_json() == with_defaults(doc)
        coords = (0, 1) if name == "names" else ((0, 0) if name == "shard" else ())
        assert (tmp_path / name / meta.chunk_key(coords)).is_file(), name
    assert parse(tmp_path / "names").dimension_names == ("x", "")


# --- us -> zarr-python and tensorstore ---------------------------------------------------

OURS = [
    # zarr_format, dtype, fill, extra build arguments
    (3, "float32", float("nan"), {}),
    (3, "float32", np.array([0x7FC00001], "u4").view("f4")[0], {}),  # a NaN payload, as hex
    (3, "float64", -math.inf, {"dimension_names": ["t", None]}),
    (
        3,
        "float16",
        -0.0,
        {"chunk_key_encoding": {"name": "v2", "configuration": {"separator": "/"}}},
    ),
    (3, "complex128", complex(math.nan, -1.5), {"dimension_separator": "."}),
    (3, "bool", True, {}),
    (3, "uint64", 2**64 - 1, {}),
    (
        3,
        "int8",
        -7,
        {"codecs": [{"name": "bytes"}, {"name": "zstd", "configuration": {"level": 1}}]},
    ),
    (3, "bfloat16", 1.5, {}),
    (3, "bfloat16", np.uint16(0x7FC1), {}),  # bits given directly, a payload NaN
    (3, "float8_e5m2", -0.5, {}),
    (2, "float32", float("nan"), {"order": "F"}),
    (2, "float64", math.inf, {"byteorder": ">", "dimension_separator": "/"}),
    (2, "complex64", complex(1, math.inf), {}),
    (2, "bool", True, {"compressor": {"id": "zlib", "level": 1}}),
    (2, "int16", -2, {"byteorder": ">", "order": "F"}),
    (2, "uint64", 2**64 - 1, {}),
    (2, "bfloat16", -2.0, {}),
]
PEERLESS = {"bfloat16", "float8_e5m2"}  # zarr-python 3.1 has no such data types


def write_docs(path: Path, meta: ArrayMetadata) -> None:
    path.mkdir(parents=True)
    if isinstance(meta, ArrayMetadataV3):
        (path / "zarr.json").write_bytes(json_dumps(meta.to_json()))
    else:
        (path / ".zarray").write_bytes(json_dumps(meta.to_json()))
        (path / ".zattrs").write_bytes(json_dumps(meta.attributes))


def other_than_fill(meta: ArrayMetadata, dtype: Any) -> np.ndarray:
    """A value peers will store (they skip chunks equal to the fill value)."""
    if meta.data_type.name == "bool":
        return np.array(not meta.fill_value)
    return np.array(3).astype(dtype)


@pytest.mark.parametrize("zarr_format,dtype,fill,extra", OURS)
def test_our_documents_open_in_peers(tmp_path, zarr_format, dtype, fill, extra):
    meta = build_array_metadata(
        zarr_format=zarr_format,
        shape=(4, 6),
        chunk_shape=(2, 3),
        data_type=data_type(dtype),
        fill_value=fill,
        attributes={"units": "s", "list": [1, None]},
        **extra,
    )
    write_docs(tmp_path / "a", meta)
    assert parse(tmp_path / "a") == meta
    value = np.frombuffer(expected_bits(meta), dtype=meta.data_type.storage).reshape(4, 6)

    # tensorstore: same fill, a chunk it writes lands at our key
    store = ts_open(tmp_path / "a", zarr_format)
    assert peer_bits(store.read().result(), meta) == expected_bits(meta)
    store[2, 3].write(other_than_fill(meta, store.dtype.numpy_dtype)).result()
    assert (tmp_path / "a" / meta.chunk_key((1, 1))).is_file()
    (tmp_path / "a" / meta.chunk_key((1, 1))).unlink()

    if dtype in PEERLESS:
        return
    z = zarr.open_array(str(tmp_path / "a"), mode="r+")
    assert peer_bits(z[...], meta) == value.tobytes()
    assert dict(z.attrs) == {"units": "s", "list": [1, None]}
    if zarr_format == 3:
        assert z.metadata.dimension_names == meta.dimension_names
    z[0, 3] = other_than_fill(meta, z.dtype)
    assert (tmp_path / "a" / meta.chunk_key((0, 1))).is_file()


def test_our_v2_null_fill_reads_as_zero_in_peers(tmp_path):
    meta = ArrayMetadataV2((4, 6), (2, 3), data_type("float32"), fill_value=None)
    write_docs(tmp_path / "a", meta)
    assert json.loads((tmp_path / "a" / ".zarray").read_text())["fill_value"] is None
    assert not np.asarray(ts_open(tmp_path / "a", 2).read().result()).any()
    assert not np.asarray(zarr.open_array(str(tmp_path / "a"), mode="r")[...]).any()
