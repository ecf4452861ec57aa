"""Any numcodecs codec as a v3 ``numcodecs.<id>`` codec, and short names to numcodecs objects."""

from __future__ import annotations

from typing import Any

import numcodecs
import numpy as np
from numcodecs.abc import Codec as NumcodecsObject

from torchzarr.codecs.base import ArrayArrayCodec, BytesBytesCodec, ChunkSpec, Codec
from torchzarr.errors import MetadataError, UnknownCodecError

__all__ = ["ARRAY_TO_ARRAY_IDS", "numcodecs_object", "numcodecs_v3_codec"]

#: numcodecs filters that act on typed arrays (zarr-python classes them as array -> array)
ARRAY_TO_ARRAY_IDS = frozenset({"delta", "bitround", "fixedscaleoffset", "quantize", "packbits",
                                "astype"})

_SHORT_NAMES = {"zstd": "zstd", "gzip": "gzip", "zlib": "zlib", "blosc": "blosc", "lz4": "lz4",
                "bz2": "bz2", "lzma": "lzma", "crc32c": "crc32c"}


def numcodecs_object(value: Any) -> NumcodecsObject:
    """A numcodecs codec from an object, a config dict or a short name ("zstd", "lz4", ...).

    Example:
        >>> numcodecs_object("zlib").get_config()["id"]
        'zlib'
    """
    if isinstance(value, NumcodecsObject):
        return value
    if isinstance(value, str):
        config: dict[str, Any] = {"id": _SHORT_NAMES.get(value.lower(), value.lower())}
    elif isinstance(value, dict):
        config = dict(value)
    else:
        raise UnknownCodecError(f"cannot make a codec from {value!r}")
    try:
        return numcodecs.get_codec(config)
    except (ValueError, KeyError, TypeError) as err:
        raise UnknownCodecError(f"unknown or invalid numcodecs codec {config!r}: {err}") from None


class _Numcodecs(Codec):
    codec_id: str

    def __init__(self, codec_id: str, config: dict[str, Any]) -> None:
        self.codec_id = codec_id
        self.config = {k: v for k, v in config.items() if k != "id"}
        self._impl = numcodecs_object({"id": codec_id, **self.config})

    @property
    def codec_name(self) -> str:  # type: ignore[override]
        return f"numcodecs.{self.codec_id}"

    @classmethod
    def from_config(cls, configuration: dict[str, Any]) -> Codec:
        raise MetadataError("numcodecs codecs are built by numcodecs_v3_codec")  # pragma: no cover

    def configuration(self) -> dict[str, Any]:
        return dict(self.config)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.codec_id!r}, {self.config!r})"


class NumcodecsBytesCodec(_Numcodecs, BytesBytesCodec):
    """A numcodecs compressor or checksum used as a v3 bytes -> bytes codec.

    Example:
        >>> numcodecs_v3_codec("lz4", {}).decode(numcodecs_v3_codec("lz4", {}).encode(b"abc"))
        b'abc'
    """

    def encode(self, data: bytes) -> bytes:
        return bytes(self._impl.encode(data))

    def decode(self, data: bytes) -> bytes:
        return bytes(self._impl.decode(data))


class NumcodecsArrayCodec(_Numcodecs, ArrayArrayCodec):
    """A numcodecs filter (delta, astype, packbits, ...) used as a v3 array -> array codec."""

    def resolve_spec(self, spec: ChunkSpec) -> ChunkSpec:
        if self.codec_id == "astype":
            dtype = np.dtype(self.config["encode_dtype"])
        elif self.codec_id == "fixedscaleoffset":
            dtype = np.dtype(self.config.get("astype") or self.config["dtype"])
        elif self.codec_id == "packbits":
            n = int(np.prod(spec.shape, dtype=np.int64))
            return ChunkSpec((1 + -(-n // 8),), np.dtype("uint8"), np.uint8(0))
        else:
            return spec
        return ChunkSpec(spec.shape, dtype.newbyteorder("="), dtype.type(0))

    def encode(self, chunk: np.ndarray, spec: ChunkSpec) -> np.ndarray:
        out_spec = self.resolve_spec(spec)
        encoded = np.asarray(self._impl.encode(np.ascontiguousarray(chunk)))
        return encoded.reshape(out_spec.shape).astype(out_spec.dtype, copy=False)

    def decode(self, chunk: np.ndarray, spec: ChunkSpec) -> np.ndarray:
        decoded = np.asarray(self._impl.decode(np.ascontiguousarray(chunk)))
        if decoded.dtype != spec.dtype:
            decoded = decoded.view(spec.dtype) if decoded.dtype.itemsize == spec.dtype.itemsize and decoded.dtype.kind == spec.dtype.kind else decoded.astype(spec.dtype)
        return decoded.reshape(spec.shape)


def numcodecs_v3_codec(codec_id: str, configuration: dict[str, Any]) -> Codec:
    """The v3 codec ``numcodecs.<codec_id>`` with its configuration.

    Example:
        >>> numcodecs_v3_codec("delta", {"dtype": "<i4"}).to_json()
        {'name': 'numcodecs.delta', 'configuration': {'dtype': '<i4'}}
    """
    if codec_id in ARRAY_TO_ARRAY_IDS:
        return NumcodecsArrayCodec(codec_id, configuration)
    return NumcodecsBytesCodec(codec_id, configuration)
