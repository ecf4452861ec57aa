"""Every v3 codec passes the CodecContract: one small subclass per codec and configuration."""

from __future__ import annotations

import time
from typing import Any, ClassVar

import numpy as np
import pytest
from plugin_codecs import ShortBoundHeader

from torchzarr.codecs.base import BytesBytesCodec, Codec
from torchzarr.codecs.bytes_codec import BytesCodec
from torchzarr.codecs.compressors import BloscCodec, Crc32cCodec, GzipCodec, ZstdCodec
from torchzarr.codecs.numcodecs_adapter import numcodecs_v3_codec
from torchzarr.codecs.transpose import TransposeCodec
from torchzarr.errors import CodecError
from torchzarr.testing.codec_contract import CodecContract

ALL = ("bool", "uint8", "int8", "int16", "uint16", "int32", "uint64", "float16", "float32")
WIDE = ("float64", "complex64", "complex128", "int64")


class TestBytesLittle(CodecContract):
    codec = BytesCodec("little")
    dtypes = ALL + WIDE
    expected_json: ClassVar[dict[str, Any] | None] = {
        "name": "bytes",
        "configuration": {"endian": "little"},
    }


class TestBytesBig(CodecContract):
    codec = BytesCodec("big")
    dtypes = ALL + WIDE
    expected_json: ClassVar[dict[str, Any] | None] = {
        "name": "bytes",
        "configuration": {"endian": "big"},
    }


class TestTranspose(CodecContract):
    codec = TransposeCodec((2, 0, 1))
    shapes = ((3, 0, 2), (1, 1, 1), (2, 3, 5), (4, 1, 7))
    expected_json: ClassVar[dict[str, Any] | None] = {
        "name": "transpose",
        "configuration": {"order": [2, 0, 1]},
    }


class TestTransposeLegacyF(CodecContract):
    codec = TransposeCodec("F")
    shapes = ((2, 3), (5, 4))
    dtypes = ("uint8", "float64")
    expected_json: ClassVar[dict[str, Any] | None] = {
        "name": "transpose",
        "configuration": {"order": "F"},
    }


class TestGzip(CodecContract):
    codec = GzipCodec(level=6)
    expected_json: ClassVar[dict[str, Any] | None] = {"name": "gzip", "configuration": {"level": 6}}


class TestZstd(CodecContract):
    codec = ZstdCodec(level=3)
    dtypes = ALL + WIDE
    expected_json: ClassVar[dict[str, Any] | None] = {
        "name": "zstd",
        "configuration": {"level": 3, "checksum": False},
    }


class TestZstdChecksumNegativeLevel(CodecContract):
    codec = ZstdCodec(level=-5, checksum=True)


class TestBloscDefaultsEvolve(CodecContract):
    codec = BloscCodec()  # typesize and shuffle come from the dtype
    dtypes = ALL + WIDE


class TestBloscLz4Bitshuffle(CodecContract):
    codec = BloscCodec("lz4", 5, "bitshuffle", typesize=4, blocksize=0)
    expected_json: ClassVar[dict[str, Any] | None] = {
        "name": "blosc",
        "configuration": {
            "typesize": 4,
            "cname": "lz4",
            "clevel": 5,
            "shuffle": "bitshuffle",
            "blocksize": 0,
        },
    }


class TestBloscZlibNoShuffle(CodecContract):
    codec = BloscCodec("zlib", 1, "noshuffle", typesize=1, blocksize=256)


class TestCrc32c(CodecContract):
    codec = Crc32cCodec()
    expected_json: ClassVar[dict[str, Any] | None] = {"name": "crc32c"}


def nc(codec_id: str, **config: Any) -> Codec:
    return numcodecs_v3_codec(codec_id, config)


class TestNumcodecsLz4(CodecContract):
    codec = nc("lz4", acceleration=1)
    expected_json: ClassVar[dict[str, Any] | None] = {
        "name": "numcodecs.lz4",
        "configuration": {"acceleration": 1},
    }


class TestNumcodecsZlib(CodecContract):
    codec = nc("zlib", level=4)


class TestNumcodecsBz2(CodecContract):
    codec = nc("bz2", level=5)
    dtypes = ("uint8", "float32")


class TestNumcodecsLzma(CodecContract):
    codec = nc("lzma")
    dtypes = ("int16", "float64")


class TestNumcodecsShuffle(CodecContract):
    codec = nc("shuffle")  # elementsize comes from the dtype

    def test_elementsize_evolves_from_dtype(self) -> None:
        from torchzarr.codecs.base import ChunkSpec

        spec = ChunkSpec((3,), np.dtype("int32"), np.int32(0))
        assert self.codec is not None
        assert self.codec.evolve(spec).to_json()["configuration"] == {"elementsize": 4}


class TestNumcodecsCrc32(CodecContract):
    codec = nc("crc32")
    expected_json: ClassVar[dict[str, Any] | None] = {
        "name": "numcodecs.crc32",
        "configuration": {},
    }


class TestNumcodecsAdler32(CodecContract):
    codec = nc("adler32")
    dtypes = ("uint8", "float32")


class TestNumcodecsJenkins(CodecContract):
    codec = nc("jenkins_lookup3")
    dtypes = ("uint8", "float32")


class TestNumcodecsDelta(CodecContract):
    """Integer deltas wrap around exactly (float deltas round, so they are not tested here)."""

    dtypes = ("int8", "uint16", "int32", "int64", "uint64")

    def make_codec(self, dtype: np.dtype[Any]) -> Codec:
        return nc("delta", dtype=dtype.str)


class TestNumcodecsDeltaNarrowing(CodecContract):
    """int32 data stored as int16 deltas: exact while the deltas fit."""

    codec = nc("delta", dtype="<i4", astype="<i2")
    dtypes = ("int32",)

    def make_data(self, rng: np.random.Generator, shape: Any, dtype: Any) -> np.ndarray:
        return np.cumsum(rng.integers(-100, 100, size=shape), axis=-1).astype(dtype)


class TestNumcodecsAsType(CodecContract):
    """float64 stored as float32: exact for data float32 can hold."""

    codec = nc("astype", encode_dtype="<f4", decode_dtype="<f8")
    dtypes = ("float64",)

    def make_data(self, rng: np.random.Generator, shape: Any, dtype: Any) -> np.ndarray:
        return rng.normal(size=shape).astype(np.float32).astype(dtype)


class TestNumcodecsFixedScaleOffset(CodecContract):
    """Values on the scale's grid survive exactly; int16 storage."""

    codec = nc("fixedscaleoffset", offset=10, scale=4, dtype="<f8", astype="<i2")
    dtypes = ("float64",)

    def make_data(self, rng: np.random.Generator, shape: Any, dtype: Any) -> np.ndarray:
        return (10 + rng.integers(-1000, 1000, size=shape) / 4).astype(dtype)


class TestNumcodecsQuantize(CodecContract):
    """Lossy: 3 significant decimal digits after the point."""

    codec = nc("quantize", digits=3, dtype="<f8")
    dtypes = ("float64",)
    exact = False
    atol = 1e-3

    def make_data(self, rng: np.random.Generator, shape: Any, dtype: Any) -> np.ndarray:
        return rng.normal(size=shape).astype(dtype)


class TestNumcodecsBitRound(CodecContract):
    """Lossy: keeping 10 mantissa bits holds the relative error under 2**-10."""

    codec = nc("bitround", keepbits=10)
    dtypes = ("float32", "float64")
    exact = False
    rtol = 2.0**-10


class TestNumcodecsPackBits(CodecContract):
    codec = nc("packbits")
    dtypes = ("bool",)
    expected_json: ClassVar[dict[str, Any] | None] = {
        "name": "numcodecs.packbits",
        "configuration": {},
    }


class _ScratchXor(BytesBytesCodec):
    """Reuses one scratch buffer across calls: wrong results from several threads."""

    codec_name = "test.scratch_xor"

    def __init__(self) -> None:
        self._buf = bytearray()

    @classmethod
    def from_config(cls, configuration: dict[str, Any]) -> _ScratchXor:
        return cls()

    def configuration(self) -> dict[str, Any]:
        return {}

    def _run(self, data: bytes) -> bytes:
        self._buf[:] = bytes(data)
        time.sleep(0.001)
        return bytes(b ^ 0x33 for b in self._buf)

    def encode(self, data: bytes) -> bytes:
        return self._run(data)

    def decode(self, data: bytes) -> bytes:
        return self._run(data)


def test_the_contract_catches_a_codec_that_is_not_thread_safe() -> None:
    class Contract(CodecContract):
        codec = _ScratchXor()
        dtypes = ("int32",)

    with pytest.raises(AssertionError, match="concurrent"):
        Contract().test_concurrent_encode_decode()


def test_the_contract_catches_an_encoded_size_past_max_encoded_size() -> None:
    class Contract(CodecContract):
        codec = ShortBoundHeader()
        dtypes = ("uint8",)

    with pytest.raises(AssertionError, match=r"\(0,\): encoded to 8 bytes, max_encoded_size 0"):
        Contract().test_encoded_size_within_max_encoded_size()
    with pytest.raises(CodecError, match=r"codec 'test\.short_bound' encoded a chunk"):
        Contract().test_round_trip_with_a_compressor_after_it()
