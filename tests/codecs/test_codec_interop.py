"""Chunks written by zarr-python 3.1 decode with our pipelines, and ours decode in zarr-python.

Each case writes a small array with ``zarr.create_array`` on a LocalStore, builds our pipeline
from the metadata document zarr-python wrote, and compares raw chunk files both ways; for v3
the evolved chain must also equal the ``codecs`` zarr-python recorded, key for key.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
import pytest

from torchzarr.codecs.base import ChunkSpec
from torchzarr.codecs.pipeline import V3Pipeline
from torchzarr.codecs.registry import codec_from_json
from torchzarr.codecs.user_chains import default_v3_codecs
from torchzarr.codecs.v2_pipeline import V2Pipeline
from torchzarr.dtypes import parse_v2_dtype

zarr = pytest.importorskip("zarr")
zcodecs = zarr.codecs
znum = pytest.importorskip("zarr.codecs.numcodecs")

pytestmark = [
    pytest.mark.interop,
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
]

SHAPE, CHUNKS = (6, 10), (4, 4)  # edge chunks included


def values(dtype: str) -> np.ndarray:
    dt = np.dtype(dtype)
    base = np.arange(int(np.prod(SHAPE))).reshape(SHAPE)
    if dt.kind == "b":
        return base % 3 == 0
    if dt.kind == "f":
        return (base / 8 - 3).astype(dt)  # exact for the scale-offset and quantize filters
    return (base * 3 - 20).astype(dt)


def create(path: Path, dtype: str, **kwargs: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        arr = zarr.create_array(
            zarr.storage.LocalStore(path), shape=SHAPE, chunks=CHUNKS, dtype=dtype, **kwargs
        )
        arr[...] = values(dtype)
    return arr


def chunk_region(coords: tuple[int, int]) -> tuple[slice, ...]:
    return tuple(slice(c * n, c * n + n) for c, n in zip(coords, CHUNKS, strict=True))


def padded(dtype: str, coords: tuple[int, int], fill: Any = 0) -> np.ndarray:
    out = np.full(CHUNKS, fill, dtype=np.dtype(dtype).newbyteorder("="))
    part = values(dtype)[chunk_region(coords)]
    out[tuple(slice(0, n) for n in part.shape)] = part
    return out


V3_CASES: list[tuple[str, dict[str, Any]]] = [
    ("int16", {"compressors": None}),
    ("uint8", {"compressors": None}),
    ("float64", {"compressors": zcodecs.ZstdCodec(level=3, checksum=True)}),
    ("int32", {"compressors": zcodecs.GzipCodec(level=4)}),
    ("float32", {"compressors": zcodecs.BloscCodec()}),
    ("uint8", {"compressors": zcodecs.BloscCodec(cname="lz4", shuffle="shuffle")}),
    ("int64", {"compressors": zcodecs.BloscCodec(cname="zstd", clevel=1, shuffle="bitshuffle")}),
    ("float32", {"compressors": [zcodecs.ZstdCodec(level=1), zcodecs.Crc32cCodec()]}),
    ("int32", {"serializer": zcodecs.BytesCodec(endian="big"), "compressors": None}),
    (
        "float32",
        {
            "serializer": zcodecs.BytesCodec(endian="big"),
            "filters": [zcodecs.TransposeCodec(order=(1, 0))],
            "compressors": zcodecs.GzipCodec(level=1),
        },
    ),
    ("int32", {"filters": [znum.Delta(dtype="<i4")], "compressors": [znum.LZ4()]}),
    ("float64", {"filters": [znum.FixedScaleOffset(offset=1, scale=8, astype="<i2")]}),
    ("float64", {"filters": [znum.Quantize(digits=3)]}),
    ("float64", {"filters": [znum.AsType(encode_dtype="<f4", decode_dtype="<f8")]}),
    ("float32", {"filters": [znum.BitRound(keepbits=6)]}),
    ("bool", {"filters": [znum.PackBits()], "compressors": None}),
    ("int16", {"compressors": [znum.Shuffle(), znum.Zlib(level=2), znum.CRC32()]}),
    ("uint16", {"compressors": [znum.BZ2(level=1), znum.Adler32()]}),
]


def v3_pipeline(path: Path) -> tuple[V3Pipeline, dict[str, Any]]:
    doc = json.loads((path / "zarr.json").read_text())
    dt = np.dtype(doc["data_type"])
    spec = ChunkSpec(CHUNKS, dt, dt.type(doc["fill_value"]))
    return V3Pipeline([codec_from_json(c) for c in doc["codecs"]], spec), doc


@pytest.mark.parametrize(
    ("dtype", "kwargs"), V3_CASES, ids=[f"v3-{i}" for i in range(len(V3_CASES))]
)
def test_v3_chunks_both_ways(tmp_path: Path, dtype: str, kwargs: dict[str, Any]) -> None:
    arr = create(tmp_path, dtype, **kwargs)
    pipe, doc = v3_pipeline(tmp_path)
    assert [c.to_json() for c in pipe.codecs] == doc["codecs"]
    for coords in ((0, 0), (1, 2)):  # an inner chunk and the corner edge chunk
        raw = (tmp_path / "c" / str(coords[0]) / str(coords[1])).read_bytes()
        expected = padded(dtype, coords)
        np.testing.assert_array_equal(pipe.decode(raw), expected)
        out = np.empty(CHUNKS, dtype=expected.dtype)
        np.testing.assert_array_equal(pipe.decode(raw, out=out), expected)
        # ours back: new values, written as a raw chunk file, read by zarr-python
        fresh = np.flip(expected).copy()
        (tmp_path / "c" / str(coords[0]) / str(coords[1])).write_bytes(pipe.encode(fresh))
        region = chunk_region(coords)
        got = arr[region]
        np.testing.assert_array_equal(got, fresh[tuple(slice(0, n) for n in got.shape)])


@pytest.mark.parametrize(
    ("dtype", "ours", "theirs"),
    [
        (
            "float32",
            {"compressors": numcodecs.Zstd(level=2)},
            {"compressors": zcodecs.ZstdCodec(level=2)},
        ),
        (
            "int16",
            {"compressors": numcodecs.Blosc("lz4", 5, numcodecs.Blosc.SHUFFLE)},
            {"compressors": zcodecs.BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")},
        ),
        ("uint8", {"compressors": "blosc"}, None),
        (
            "int32",
            {"compressors": "gzip", "filters": [numcodecs.Delta(dtype="<i4")]},
            {
                "compressors": zcodecs.GzipCodec(level=1),
                "filters": [znum.Delta(dtype="<i4", astype="<i4")],
            },
        ),
        (
            "uint8",
            {"compressors": ["zstd", numcodecs.CRC32C()]},
            {"compressors": [zcodecs.ZstdCodec(level=0), zcodecs.Crc32cCodec()]},
        ),
        (
            "float64",
            {"compressors": None, "filters": numcodecs.FixedScaleOffset(1, 8, "<f8", "<i2")},
            {
                "compressors": None,
                "filters": [znum.FixedScaleOffset(offset=1, scale=8, dtype="<f8", astype="<i2")],
            },
        ),
    ],
    ids=repr,
)
def test_default_v3_codecs_write_what_zarr_python_writes(
    tmp_path: Path, dtype: str, ours: dict[str, Any], theirs: dict[str, Any] | None
) -> None:
    codecs = default_v3_codecs(np.dtype(dtype), ours["compressors"], ours.get("filters"))
    arr = create(tmp_path, dtype, **(theirs or {"compressors": None}))
    doc = json.loads((tmp_path / "zarr.json").read_text())
    if theirs is not None:
        assert [c.to_json() for c in codecs] == doc["codecs"]
    # zarr-python reads chunks our chain writes, under the codecs we record
    doc["codecs"] = [c.to_json() for c in codecs]
    (tmp_path / "zarr.json").write_text(json.dumps(doc))
    pipe = V3Pipeline(codecs, ChunkSpec(CHUNKS, np.dtype(dtype), np.dtype(dtype).type(0)))
    data = padded(dtype, (0, 0))
    (tmp_path / "c" / "0" / "0").write_bytes(pipe.encode(np.flip(data)))
    reopened = zarr.open_array(zarr.storage.LocalStore(tmp_path), mode="r")
    np.testing.assert_array_equal(reopened[:4, :4], np.flip(data))
    del arr


V2_CASES: list[tuple[str, str, Any, Any]] = [
    ("<f4", "C", None, None),
    (">f8", "F", numcodecs.Zlib(level=1), None),
    (">i4", "F", numcodecs.Zlib(level=1), [numcodecs.Delta(dtype=">i4")]),
    ("<i2", "C", numcodecs.GZip(level=3), [numcodecs.Shuffle(elementsize=2)]),
    ("<u8", "C", numcodecs.Zstd(level=1, checksum=True), None),
    (">u2", "C", numcodecs.Blosc("zstd", 3, numcodecs.Blosc.BITSHUFFLE), None),
    ("<i4", "F", numcodecs.Blosc("lz4", 5, numcodecs.Blosc.SHUFFLE), None),
    ("<f8", "C", numcodecs.LZ4(), [numcodecs.Quantize(digits=3, dtype="<f8")]),
    ("<f8", "F", numcodecs.BZ2(), [numcodecs.FixedScaleOffset(1, 8, "<f8", "<i2")]),
    ("<i8", "C", numcodecs.LZMA(), [numcodecs.AsType(encode_dtype="<i2", decode_dtype="<i8")]),
    ("|b1", "C", numcodecs.Zstd(), [numcodecs.PackBits()]),
    ("<f4", "C", numcodecs.CRC32C(), [numcodecs.BitRound(keepbits=6)]),
    ("<f4", "F", None, [numcodecs.BitRound(keepbits=6)]),  # numcodecs returns C order: same bytes
    ("|u1", "F", numcodecs.Blosc("blosclz", 9, numcodecs.Blosc.NOSHUFFLE), None),
]


def _without_gzip_mtime(data: bytes) -> bytes:
    """Stored bytes with a gzip header's time stamp cut out (numcodecs stamps the time of
    the write; torchzarr writes 0): the rest must match byte for byte."""
    return data[:4] + data[8:] if data[:2] == b"\x1f\x8b" else data


@pytest.mark.parametrize(("dtype", "order", "compressor", "filters"), V2_CASES, ids=repr)
def test_v2_chunks_both_ways(
    tmp_path: Path, dtype: str, order: str, compressor: Any, filters: Any
) -> None:
    arr = create(
        tmp_path, dtype, zarr_format=2, order=order, compressors=compressor, filters=filters
    )
    doc = json.loads((tmp_path / ".zarray").read_text())
    dt, byteorder = parse_v2_dtype(doc["dtype"])
    spec = ChunkSpec(CHUNKS, dt.storage, dt.storage.type(doc["fill_value"] or 0))
    pipe = V2Pipeline(
        spec,
        compressor=doc["compressor"],
        filters=doc["filters"],
        order=doc["order"],
        byteorder=byteorder,
    )
    # numcodecs' BitRound returns C order for F input: zarr-python misreads its own chunks;
    # we write and read the very same bytes, which is what is checked then
    exact = not (order == "F" and filters and filters[0].codec_id == "bitround")
    for coords in ((0, 0), (1, 2)):
        path = tmp_path / f"{coords[0]}.{coords[1]}"
        region = chunk_region(coords)
        raw = path.read_bytes()
        expected = padded(dtype, coords)
        assert _without_gzip_mtime(pipe.encode(expected)) == _without_gzip_mtime(raw)
        decoded = pipe.decode(raw)
        theirs = arr[region]
        trimmed = tuple(slice(0, n) for n in theirs.shape)
        np.testing.assert_array_equal(decoded[trimmed], theirs)
        if exact:
            np.testing.assert_array_equal(decoded, expected)
        fresh = np.flip(expected).copy()
        path.write_bytes(pipe.encode(fresh))
        np.testing.assert_array_equal(arr[region], pipe.decode(path.read_bytes())[trimmed])
        if exact:
            np.testing.assert_array_equal(arr[region], fresh[trimmed])
