"""V2Pipeline: orders, byte orders, filters that change dtype, direct decoding, errors."""

from __future__ import annotations

import json
import re
from typing import Any

import numcodecs
import numpy as np
import pytest
import torch

import torchzarr as tz
from torchzarr.codecs.base import ChunkSpec
from torchzarr.codecs.v2_pipeline import V2Pipeline, v2_codec_config
from torchzarr.errors import (
    ChunkDecodeError,
    CodecError,
    MetadataError,
    ShapeMismatchError,
    UnknownCodecError,
)


def spec(shape: tuple[int, ...] = (3, 4), dtype: str = "int32") -> ChunkSpec:
    dt = np.dtype(dtype)
    return ChunkSpec(shape, dt, dt.type(0))


def pipe(
    compressor: dict[str, Any] | None = None,
    filters: list[dict[str, Any]] | None = None,
    order: str = "C",
    byteorder: str = "<",
    shape: tuple[int, ...] = (3, 4),
    dtype: str = "int32",
) -> V2Pipeline:
    return V2Pipeline(
        spec(shape, dtype), compressor=compressor, filters=filters, order=order, byteorder=byteorder
    )


def data(shape: tuple[int, ...] = (3, 4), dtype: str = "int32") -> np.ndarray:
    return (np.arange(int(np.prod(shape))) * 7 - 5).astype(dtype).reshape(shape)


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("byteorder", ["<", ">"])
def test_stored_bytes_follow_order_and_byteorder(order: str, byteorder: str) -> None:
    p = pipe(order=order, byteorder=byteorder)
    encoded = p.encode(data())
    assert encoded == data().astype(byteorder + "i4").tobytes(order=order)
    decoded = p.decode(encoded)
    assert decoded.dtype == np.dtype("int32") and decoded.dtype.isnative
    np.testing.assert_array_equal(decoded, data())
    out = np.empty((3, 4), dtype=np.int32)
    assert p.decode(encoded, out=out) is out
    np.testing.assert_array_equal(out, data())


@pytest.mark.parametrize(
    ("kwargs", "direct"),
    [
        ({}, True),
        ({"compressor": {"id": "zstd", "level": 1}}, True),
        ({"compressor": {"id": "blosc"}, "byteorder": ">"}, True),
        ({"compressor": {"id": "lz4"}}, True),
        ({"compressor": {"id": "zlib"}}, False),
        ({"compressor": {"id": "zstd"}, "order": "F"}, False),
        ({"compressor": {"id": "zstd"}, "order": "F", "shape": (1, 12)}, True),
        ({"filters": [{"id": "delta", "dtype": "<i4"}]}, False),
    ],
)
def test_supports_direct_decode(kwargs: dict[str, Any], direct: bool) -> None:
    p = pipe(**kwargs)
    assert p.supports_direct_decode is direct
    shape = kwargs.get("shape", (3, 4))
    out = np.full(shape, -1, dtype=np.int32)
    p.decode(p.encode(data(shape)), out=out)
    np.testing.assert_array_equal(out, data(shape))


@pytest.mark.parametrize(
    ("filters", "dtype", "values"),
    [
        ([{"id": "astype", "encode_dtype": "<i2", "decode_dtype": "<i8"}], "int64", None),
        (
            [{"id": "fixedscaleoffset", "offset": 5, "scale": 4, "dtype": "<f8", "astype": "<i2"}],
            "float64",
            np.arange(12).reshape(3, 4) / 4 + 5,
        ),
        (
            [{"id": "quantize", "digits": 3, "dtype": "<f8"}],
            "float64",
            np.arange(12).reshape(3, 4) / 8,
        ),
        ([{"id": "delta", "dtype": "<i8"}, {"id": "shuffle", "elementsize": 8}], "int64", None),
        ([{"id": "packbits"}], "bool", np.arange(12).reshape(3, 4) % 3 == 0),
        ([{"id": "bitround", "keepbits": 23}], "float32", np.arange(12).reshape(3, 4) / 3),
    ],
)
@pytest.mark.parametrize("order", ["C", "F"])
def test_filters_that_change_the_dtype(
    filters: list[dict[str, Any]], dtype: str, values: Any, order: str
) -> None:
    chunk = data(dtype=dtype) if values is None else np.asarray(values, dtype=dtype)
    p = pipe({"id": "zlib", "level": 1}, filters, order=order, dtype=dtype)
    np.testing.assert_array_equal(p.decode(p.encode(chunk)), chunk)


def test_a_filter_returning_another_itemsize_is_a_size_error() -> None:
    # int16 values where int64 bytes are expected: zarr-python views bytes, so does torchzarr
    writer = pipe(
        None, [{"id": "astype", "encode_dtype": "<i2", "decode_dtype": "<i2"}], dtype="int16"
    )
    reader = pipe(
        None, [{"id": "astype", "encode_dtype": "<i2", "decode_dtype": "<i2"}], dtype="int64"
    )
    with pytest.raises(ChunkDecodeError, match="decodes to 24 bytes, expected 96"):
        reader.decode(writer.encode(data(dtype="int16")), key="0.0")


@pytest.mark.parametrize(
    "compressor", [None, {"id": "zstd"}, {"id": "blosc"}, {"id": "lz4"}, {"id": "zlib"}]
)
@pytest.mark.parametrize("into", [False, True])
def test_wrong_sizes_and_truncation(compressor: dict[str, Any] | None, into: bool) -> None:
    small, big = pipe(compressor, shape=(2, 4)), pipe(compressor)
    out = np.empty((3, 4), dtype=np.int32) if into else None
    with pytest.raises(ChunkDecodeError, match=r"chunk '1\.0'"):
        big.decode(small.encode(data((2, 4))), out=out, key="1.0")
    with pytest.raises(ChunkDecodeError, match=r"chunk '1\.0'"):
        big.decode(big.encode(data())[:-2], out=out, key="1.0")


def test_decode_errors_name_the_codec() -> None:
    p = pipe({"id": "zlib"}, [{"id": "delta", "dtype": "<i4"}])
    with pytest.raises(ChunkDecodeError, match=r"cannot decode chunk '0\.0' with codec 'zlib'"):
        p.decode(b"garbage", key="0.0")


def test_empty_chunks() -> None:
    for compressor in (None, {"id": "zstd"}, {"id": "blosc"}, {"id": "lz4"}, {"id": "gzip"}):
        p = pipe(compressor, shape=(0, 4))
        assert p.decode(p.encode(np.empty((0, 4), dtype=np.int32))).shape == (0, 4)


def test_constructor_errors() -> None:
    with pytest.raises(UnknownCodecError, match="unknown numcodecs codec id 'nope'"):
        pipe({"id": "nope"})
    with pytest.raises(UnknownCodecError, match="'nofilter'"):
        pipe(None, [{"id": "nofilter"}])
    with pytest.raises(CodecError, match="invalid config"):
        pipe({"id": "zlib", "lvl": 1})
    with pytest.raises(MetadataError, match="order must be 'C' or 'F', got 'A'"):
        pipe(order="A")
    with pytest.raises(
        MetadataError, match=re.escape("byteorder must be '<', '>' or '|', got '='")
    ):
        pipe(byteorder="=")
    with pytest.raises(MetadataError, match=re.escape("'|' does not fit the 4-byte dtype int32")):
        pipe(byteorder="|")
    assert pipe(byteorder="|", dtype="uint8").decode(bytes(range(12))).tolist()[0] == [0, 1, 2, 3]


def test_encode_and_out_checks() -> None:
    p = pipe({"id": "zstd"})
    with pytest.raises(ShapeMismatchError, match=r"shape \(4, 3\) as a chunk of shape \(3, 4\)"):
        p.encode(data((4, 3)))
    with pytest.raises(CodecError, match="needs a writable C-contiguous array"):
        p.decode(p.encode(data()), out=np.empty((4, 3), dtype=np.int32).T)
    assert p.encode(np.asfortranarray(data())) == p.encode(data())


def test_repr() -> None:
    text = repr(pipe({"id": "zlib", "level": 1}, byteorder=">"))
    assert "'>i4'" in text and "'zlib'" in text and "order='C'" in text


@pytest.mark.parametrize(
    ("codec", "expected"),
    [
        ("zstd", {"id": "zstd", "level": 0}),
        (numcodecs.Zstd(3, checksum=True), {"id": "zstd", "level": 3, "checksum": True}),
        ("lz4", {"id": "lz4", "acceleration": 1}),
        (
            numcodecs.Blosc("zstd", 3, 2),
            {"id": "blosc", "cname": "zstd", "clevel": 3, "shuffle": 2, "blocksize": 0},
        ),
        ({"id": "zlib", "level": 4}, {"id": "zlib", "level": 4}),
    ],
)
def test_v2_codec_config(codec: Any, expected: dict[str, Any]) -> None:
    assert v2_codec_config(codec) == expected


def test_v2_codec_config_records_numpy_scalars_as_numbers(tmp_path) -> None:
    fso = numcodecs.FixedScaleOffset(offset=np.float64(1.5), scale=np.float32(10), dtype="<f8")
    config = v2_codec_config(fso)
    assert (config["scale"], config["offset"]) == (10.0, 1.5)
    assert type(config["scale"]) is float and type(config["offset"]) is float
    zlib = v2_codec_config(numcodecs.Zlib(level=np.int8(3)))
    assert zlib == {"id": "zlib", "level": 3} and type(zlib["level"]) is int
    arr = tz.create_array(
        tmp_path / "a.zarr",
        shape=(4,),
        dtype="float64",
        zarr_format=2,
        filters=[fso],
        compressors=numcodecs.Zlib(level=np.int8(3)),
    )
    arr[...] = torch.tensor([1.5, 2.0, 2.5, 3.0], dtype=torch.float64)
    assert tz.open_array(tmp_path / "a.zarr")[...].tolist() == [1.5, 2.0, 2.5, 3.0]


def _rewrite_zarray(path: Any, key: str, value: Any) -> None:
    doc = json.loads(path.read_text())
    doc[key] = value
    path.write_text(json.dumps(doc))


@pytest.mark.parametrize("level", ["x", None, [], float("nan")])
def test_compressor_settings_that_cannot_encode_fail_the_write_naming_the_zarray_key(
    tmp_path, level
) -> None:
    group = tz.create_group(tmp_path, zarr_format=2)
    group.create_array("sub/arr", shape=(4,), chunks=(2,), dtype=torch.float32, compressors="zstd")
    _rewrite_zarray(
        tmp_path / "sub" / "arr" / ".zarray", "compressor", {"id": "zstd", "level": level}
    )
    arr = tz.open_group(tmp_path, mode="r+")["sub/arr"]  # opens and reads, as zarr-python
    assert arr[:].tolist() == [0.0] * 4
    with pytest.raises(CodecError, match=r"\(\.zarray compressor \{'id': 'zstd', 'level'"):
        arr[0] = 1.0


@pytest.mark.parametrize(
    ("filters", "compressor"),
    [
        ([{"id": "shuffle", "elementsize": 3}], {"id": "zstd", "level": 1}),  # (64, 64, 3) u1
        ([], {"id": "zlib", "level": 3.0}),
        ([], {"id": "gzip", "level": 3.0}),
        ([], {"id": "bz2", "level": 3.0}),
        ([], {"id": "lzma", "preset": 9}),
    ],
)
def test_settings_zarr_python_reads_open_and_read_alike(tmp_path, filters, compressor) -> None:
    import zarr

    data = np.arange(64 * 64 * 3, dtype=np.uint8).reshape(64, 64, 3)
    theirs = zarr.create_array(
        str(tmp_path),
        zarr_format=2,
        shape=data.shape,
        chunks=data.shape,
        dtype="u1",
        filters=[numcodecs.get_codec(dict(f)) for f in filters] or None,
        compressors=numcodecs.get_codec({"id": compressor["id"]}),
    )
    theirs[...] = data
    _rewrite_zarray(tmp_path / ".zarray", "compressor", compressor)  # 3.0, as some tools write
    expected = zarr.open_array(str(tmp_path), mode="r")[...]
    np.testing.assert_array_equal(tz.open_array(tmp_path, mode="r")[...].numpy(), expected)


@pytest.mark.parametrize(
    "compressor",
    [
        {"id": "zstd", "level": 3.0},
        {"id": "zstd", "level": True},
        {"id": "zstd", "level": 30},
        {"id": "blosc", "cname": "lz4", "clevel": 5.0},
    ],
)
def test_settings_zarr_python_writes_with_still_open(tmp_path, compressor) -> None:
    zarr = pytest.importorskip("zarr")
    tz.create_array(tmp_path, shape=(4,), chunks=(2,), dtype=torch.float32, zarr_format=2)
    _rewrite_zarray(tmp_path / ".zarray", "compressor", compressor)
    arr = tz.open_array(tmp_path, mode="r+")
    arr[:] = torch.arange(4, dtype=torch.float32)
    assert zarr.open_array(str(tmp_path), mode="r")[:].tolist() == [0.0, 1.0, 2.0, 3.0]


def test_a_typed_filter_that_cannot_encode_names_its_zarray_key_at_the_write(tmp_path) -> None:
    tz.create_array(tmp_path, shape=(4,), chunks=(2,), dtype=torch.float32, zarr_format=2)
    bad = {"id": "fixedscaleoffset", "offset": "x", "scale": 1, "dtype": "<f4"}
    _rewrite_zarray(tmp_path / ".zarray", "filters", [bad])
    arr = tz.open_array(tmp_path, mode="r+")  # read as written, as zarr-python does
    assert arr[:].tolist() == [0.0] * 4
    with pytest.raises(CodecError, match=r"\(\.zarray filters\[0\] \{'id': 'fixedscaleoffset'"):
        arr[0] = 1.0
