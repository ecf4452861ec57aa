"""numcodecs codecs as v3 ``numcodecs.<id>`` codecs: kinds, evolve, specs, errors, short names."""

from __future__ import annotations

from typing import Any

import numcodecs
import numpy as np
import pytest
from numcodecs.abc import Codec as NumcodecsObject

import torchzarr.codecs.numcodecs_adapter as adapter
from torchzarr.codecs.base import ArrayArrayCodec, ArrayBytesCodec, BytesBytesCodec, ChunkSpec
from torchzarr.codecs.bytes_codec import BytesCodec
from torchzarr.codecs.compressors import ZstdCodec
from torchzarr.codecs.numcodecs_adapter import (
    numcodecs_codec_class,
    numcodecs_object,
    numcodecs_v3_codec,
)
from torchzarr.codecs.pipeline import V3Pipeline
from torchzarr.codecs.registry import codec_from_json
from torchzarr.errors import ChunkDecodeError, CodecError, MetadataError, UnknownCodecError


def spec(shape: tuple[int, ...], dtype: str) -> ChunkSpec:
    dt = np.dtype(dtype)
    return ChunkSpec(shape, dt, dt.type(0))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("zstd", numcodecs.Zstd()),
        ("LZ4", numcodecs.LZ4()),
        ({"id": "zlib", "level": 2}, numcodecs.Zlib(2)),
        (numcodecs.BZ2(3), numcodecs.BZ2(3)),
    ],
)
def test_numcodecs_object(value: Any, expected: NumcodecsObject) -> None:
    assert numcodecs_object(value) == expected


def test_numcodecs_object_errors() -> None:
    with pytest.raises(UnknownCodecError, match="unknown numcodecs codec id 'nope'"):
        numcodecs_object({"id": "nope"})
    with pytest.raises(CodecError, match="numcodecs codec 'zlib': invalid config"):
        numcodecs_object({"id": "zlib", "lvl": 1})
    with pytest.raises(CodecError, match="cannot make a numcodecs codec from"):
        numcodecs_object(3.5)


@pytest.mark.parametrize(
    ("codec_id", "kind"),
    [
        ("delta", ArrayArrayCodec),
        ("packbits", ArrayArrayCodec),
        ("astype", ArrayArrayCodec),
        ("zlib", BytesBytesCodec),
        ("shuffle", BytesBytesCodec),
        ("crc32", BytesBytesCodec),
    ],
)
def test_kinds_follow_zarr_python(codec_id: str, kind: type) -> None:
    cls = numcodecs_codec_class(codec_id)
    assert issubclass(cls, kind) and cls.codec_name == f"numcodecs.{codec_id}"
    assert numcodecs_codec_class(codec_id) is cls


def test_json_always_has_a_configuration_and_equality_is_by_json() -> None:
    crc = numcodecs_v3_codec("crc32")
    assert crc.to_json() == {"name": "numcodecs.crc32", "configuration": {}}
    assert numcodecs_v3_codec("zlib", {"level": 1}) == codec_from_json(
        {"name": "numcodecs.zlib", "configuration": {"level": 1}}
    )
    assert numcodecs_v3_codec("zlib", {"level": 1}) != numcodecs_v3_codec("zlib", {"level": 2})
    assert repr(crc) == "NumcodecsCodec('numcodecs.crc32', {})"


def test_bad_configurations() -> None:
    with pytest.raises(MetadataError, match=r"numcodecs\.zlib: numcodecs codec 'zlib'"):
        numcodecs_v3_codec("zlib", {"lvl": 1})
    with pytest.raises(MetadataError, match="contradicts the name"):
        numcodecs_v3_codec("zlib", {"id": "gzip"})


def test_unevolved_dtype_settings_fail_only_when_used() -> None:
    quantize = numcodecs_v3_codec("quantize", {"digits": 2})
    with pytest.raises(MetadataError, match="'dtype' is unset; evolve"):
        quantize.encode(np.zeros(3), spec((3,), "float64"))  # type: ignore[attr-defined]
    evolved = quantize.evolve(spec((3,), "float64"))
    assert evolved.to_json()["configuration"] == {"digits": 2, "dtype": "float64"}


@pytest.mark.parametrize(
    ("codec_id", "config", "dtype", "filled"),
    [
        ("fixedscaleoffset", {"offset": 0, "scale": 2}, "float32", {"dtype": "float32"}),
        ("astype", {"encode_dtype": "<f4"}, "float64", {"decode_dtype": "float64"}),
        ("delta", {"dtype": "<i2"}, "int16", {}),
    ],
)
def test_evolve_fills_what_zarr_python_fills(
    codec_id: str, config: dict[str, Any], dtype: str, filled: dict[str, Any]
) -> None:
    evolved = numcodecs_v3_codec(codec_id, config).evolve(spec((2,), dtype))
    assert evolved.to_json()["configuration"] == {**config, **filled}


@pytest.mark.parametrize(
    ("codec_id", "config", "dtype", "shape", "out_dtype", "out_shape"),
    [
        (
            "astype",
            {"encode_dtype": "<f4", "decode_dtype": "<f8"},
            "float64",
            (2, 3),
            "float32",
            (2, 3),
        ),
        (
            "fixedscaleoffset",
            {"offset": 0, "scale": 1, "dtype": "<f8", "astype": "|u1"},
            "float64",
            (4,),
            "uint8",
            (4,),
        ),
        ("delta", {"dtype": "<i4", "astype": "<i2"}, "int32", (5,), "int16", (5,)),
        (
            "quantize",
            {"digits": 1, "dtype": "<f8", "astype": "<f4"},
            "float64",
            (5,),
            "float32",
            (5,),
        ),
        ("bitround", {"keepbits": 3}, "float32", (5,), "float32", (5,)),
        ("packbits", {}, "bool", (3, 3), "uint8", (3,)),
        ("packbits", {}, "bool", (8,), "uint8", (2,)),
    ],
)
def test_resolve_spec(
    codec_id: str,
    config: dict[str, Any],
    dtype: str,
    shape: tuple[int, ...],
    out_dtype: str,
    out_shape: tuple[int, ...],
) -> None:
    codec = numcodecs_v3_codec(codec_id, config)
    assert isinstance(codec, ArrayArrayCodec)
    resolved = codec.resolve_spec(spec(shape, dtype))
    assert (resolved.dtype, resolved.shape) == (np.dtype(out_dtype), out_shape)
    data = np.ones(shape, dtype=dtype)
    encoded = codec.encode(data, spec(shape, dtype))
    assert (encoded.dtype, encoded.shape) == (np.dtype(out_dtype), out_shape)


def test_bitround_output_keeps_the_float_bits() -> None:
    codec = numcodecs_v3_codec("bitround", {"keepbits": 2})
    values = np.array([1.0, 3.14159, -2.5e10], dtype=np.float32)
    encoded = codec.encode(values, spec((3,), "float32"))  # type: ignore[attr-defined]
    assert encoded.dtype == np.float32  # the rounded floats, not int32 values cast to float
    np.testing.assert_allclose(encoded, values, rtol=2.0**-2)


def test_filter_failures_are_decode_errors() -> None:
    codec = numcodecs_v3_codec("packbits")
    with pytest.raises(ChunkDecodeError, match=r"numcodecs\.packbits codec: produced"):
        codec.decode(np.array([0, 255, 255], dtype=np.uint8), spec((5,), "bool"))  # type: ignore[attr-defined]


def test_empty_chunks_skip_numcodecs() -> None:
    delta = numcodecs_v3_codec("delta", {"dtype": "<i4"})  # numcodecs' delta fails on empty input
    pipe = V3Pipeline([delta, BytesCodec("little"), ZstdCodec()], spec((0, 4), "int32"))
    assert pipe.decode(pipe.encode(np.empty((0, 4), dtype=np.int32))).shape == (0, 4)


class FakePcodec(NumcodecsObject):
    """Stands in for pcodec (not installed here): array -> bytes, reversed little-endian f8."""

    codec_id = "pcodec"

    def encode(self, buf: Any) -> bytes:
        return np.asarray(buf, dtype="<f8").tobytes()[::-1]

    def decode(self, buf: Any, out: Any = None) -> Any:
        return np.frombuffer(bytes(buf)[::-1], dtype="<f8")


def test_array_to_bytes_numcodecs_codecs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(numcodecs.registry.codec_registry, "pcodec", FakePcodec)
    monkeypatch.setattr(adapter, "_classes", {})
    codec = codec_from_json({"name": "numcodecs.pcodec", "configuration": {}})
    assert isinstance(codec, ArrayBytesCodec)
    pipe = V3Pipeline([codec, ZstdCodec()], spec((3, 2), "float64"))
    data = np.arange(6, dtype=np.float64).reshape(3, 2) / 7
    np.testing.assert_array_equal(pipe.decode(pipe.encode(data)), data)
    out = np.empty((3, 2))
    assert pipe.decode(pipe.encode(data), out=out) is out
    np.testing.assert_array_equal(out, data)
    with pytest.raises(ChunkDecodeError, match=r"numcodecs.pcodec codec: produced 5 elements"):
        pipe.decode(ZstdCodec().encode(bytes(40)))
