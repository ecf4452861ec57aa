"""Codec pipelines: a chunk to its stored bytes and back, v3 chains (and the shared protocol)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numcodecs
import numpy as np

from torchzarr.codecs.base import ArrayArrayCodec, ArrayBytesCodec, BytesBytesCodec, ChunkSpec, Codec
from torchzarr.codecs.bytes_codec import BytesCodec
from torchzarr.errors import ChunkDecodeError, CodecError, MetadataError

__all__ = ["ChunkPipeline", "V3Pipeline", "decode_error", "default_v3_codecs"]


class ChunkPipeline(Protocol):
    """What the engine needs of a codec chain, v2 and v3 alike."""

    spec: ChunkSpec

    def encode(self, chunk: np.ndarray) -> bytes:
        """Encode a chunk of ``spec.shape``."""

    def decode(
        self, data: Any, out: np.ndarray | None = None, *, key: str | None = None
    ) -> np.ndarray:
        """Decode stored bytes to an array of ``spec.shape`` (into ``out`` when given)."""


def decode_error(err: Exception, codec: object, key: str | None) -> ChunkDecodeError:
    """A ChunkDecodeError naming the key and the codec (checksum errors keep their type)."""
    where = f"chunk {key!r}" if key else "chunk"
    if isinstance(err, ChunkDecodeError):
        text = str(err)
        message = text if key is None or key in text else f"{where}: {text}"
        return type(err)(message)
    return ChunkDecodeError(f"cannot decode {where} with {codec}: {type(err).__name__}: {err}")


class V3Pipeline:
    """A v3 codec chain: array -> array codecs, one array -> bytes codec, bytes -> bytes codecs.

    Example:
        >>> from torchzarr.codecs.registry import codec_from_json
        >>> spec = ChunkSpec((2, 2), np.dtype("float32"), np.float32(0))
        >>> pipe = V3Pipeline([codec_from_json("bytes"), codec_from_json("zstd")], spec)
        >>> pipe.decode(pipe.encode(np.eye(2, dtype="float32"))).tolist()
        [[1.0, 0.0], [0.0, 1.0]]
    """

    def __init__(self, codecs: Sequence[Codec], spec: ChunkSpec) -> None:
        self.spec = spec
        array_array: list[ArrayArrayCodec] = []
        specs: list[ChunkSpec] = []
        array_bytes: ArrayBytesCodec | None = None
        bytes_bytes: list[BytesBytesCodec] = []
        current = spec
        for codec in codecs:
            if isinstance(codec, ArrayArrayCodec):
                if array_bytes is not None:
                    raise MetadataError(
                        f"codec {codec.codec_name!r} (array -> array) comes after the "
                        "array -> bytes codec"
                    )
                evolved = codec.evolve(current)
                assert isinstance(evolved, ArrayArrayCodec)  # evolve keeps the kind
                specs.append(current)
                array_array.append(evolved)
                current = evolved.resolve_spec(current)
            elif isinstance(codec, ArrayBytesCodec):
                if array_bytes is not None:
                    raise MetadataError("a codec chain takes exactly one array -> bytes codec")
                array_bytes = codec.evolve(current)  # type: ignore[assignment]
            elif isinstance(codec, BytesBytesCodec):
                if array_bytes is None:
                    raise MetadataError(
                        f"codec {codec.codec_name!r} (bytes -> bytes) comes before the "
                        "array -> bytes codec"
                    )
                bytes_bytes.append(codec.evolve(current))  # type: ignore[arg-type]
            else:
                raise MetadataError(f"{codec!r} is not a codec")
        if array_bytes is None:
            raise MetadataError("a codec chain needs an array -> bytes codec (e.g. 'bytes')")
        self.array_array = tuple(array_array)
        self._aa_specs = tuple(specs)
        self.array_bytes = array_bytes
        self._ab_spec = current
        self.bytes_bytes = tuple(bytes_bytes)
        self.codecs: tuple[Codec, ...] = (*array_array, array_bytes, *bytes_bytes)

    @property
    def supports_direct_decode(self) -> bool:
        """True when ``decode(out=...)`` writes straight into ``out`` with no extra copy."""
        if self.array_array or not isinstance(self.array_bytes, BytesCodec):
            return False
        if not self.array_bytes.is_native or len(self.bytes_bytes) > 1:
            return False
        return not self.bytes_bytes or getattr(self.bytes_bytes[0], "decodes_into", False)

    def encode(self, chunk: np.ndarray) -> bytes:
        """Encode a chunk of the spec's shape."""
        array = chunk
        for codec, spec in zip(self.array_array, self._aa_specs, strict=True):
            array = codec.encode(array, spec)
        data = self.array_bytes.encode(array, self._ab_spec)
        for bb in self.bytes_bytes:
            data = bb.encode(data)
        return data

    def decode(self, data: Any, out: np.ndarray | None = None, *, key: str | None = None) -> np.ndarray:
        """Decode stored bytes; into ``out`` (C-contiguous, the spec's shape) when given."""
        codec: object = None
        try:
            if out is not None and self.supports_direct_decode:
                if self.bytes_bytes:
                    codec = self.bytes_bytes[0]
                    flat = out.reshape(-1).view(np.uint8)
                    self.bytes_bytes[0].decode_into(data, flat)  # type: ignore[attr-defined]
                else:
                    codec = self.array_bytes
                    self.array_bytes.decode(data, self.spec, out=out)
                return out
            for bb in reversed(self.bytes_bytes):
                codec = bb
                data = bb.decode(data)
            codec = self.array_bytes
            direct = out if not self.array_array else None
            array = self.array_bytes.decode(data, self._ab_spec, out=direct)
            if direct is not None:
                return direct
            for aa, spec in zip(reversed(self.array_array), reversed(self._aa_specs), strict=True):
                codec = aa
                array = aa.decode(array, spec)
        except Exception as err:
            raise decode_error(err, codec, key) from err
        if out is not None:
            out[...] = array
            return out
        return array

    def __repr__(self) -> str:
        return f"V3Pipeline({[c.to_json() for c in self.codecs]})"



def _as_v3(value: Any, dtype: np.dtype[Any]) -> Codec:
    from torchzarr.codecs.compressors import BloscCodec, Crc32cCodec, GzipCodec, ZstdCodec
    from torchzarr.codecs.numcodecs_adapter import numcodecs_object, numcodecs_v3_codec
    from torchzarr.codecs.registry import codec_from_json

    if isinstance(value, Codec):
        return value
    if isinstance(value, dict) and "name" in value:
        return codec_from_json(value)
    obj = numcodecs_object(value)
    config = obj.get_config()
    codec_id = config.pop("id")
    if codec_id == "zstd":
        return ZstdCodec(config.get("level", 0), bool(config.get("checksum", False)))
    if codec_id == "gzip":
        return GzipCodec(config.get("level", 5))
    if codec_id == "crc32c":
        return Crc32cCodec()
    if codec_id == "blosc":
        shuffle = {numcodecs.Blosc.NOSHUFFLE: "noshuffle", numcodecs.Blosc.SHUFFLE: "shuffle",
                   numcodecs.Blosc.BITSHUFFLE: "bitshuffle"}.get(config.get("shuffle", 1), "shuffle")
        return BloscCodec(config.get("cname", "lz4"), config.get("clevel", 5), shuffle,
                          dtype.itemsize, config.get("blocksize", 0))
    return numcodecs_v3_codec(codec_id, config)


def default_v3_codecs(
    dtype: np.dtype[Any], compressors: Sequence[Any] | Any, filters: Sequence[Any] | Any = None
) -> tuple[Codec, ...]:
    """The v3 chain for ``create_array``: filters, ``bytes`` (little endian), compressors.

    numcodecs Zstd/GZip/Blosc/CRC32C become the spec's core codecs; other numcodecs codecs
    become ``numcodecs.<id>``; short names ("zstd", "lz4", ...) are accepted.

    Example:
        >>> [c.codec_name for c in default_v3_codecs(np.dtype("float32"), ["zstd"])]
        ['bytes', 'zstd']
    """
    comp = [] if compressors is None else (
        list(compressors) if isinstance(compressors, list | tuple) else [compressors]
    )
    filt = [] if filters is None else (
        list(filters) if isinstance(filters, list | tuple) else [filters]
    )
    out: list[Codec] = []
    for f in filt:
        codec = _as_v3(f, dtype)
        if not isinstance(codec, ArrayArrayCodec):
            raise CodecError(f"filter {f!r} is not an array -> array codec")
        out.append(codec)
    serializers = [c for c in comp if isinstance(c, ArrayBytesCodec)]
    out.append(serializers[0] if serializers else BytesCodec("little" if dtype.itemsize > 1 else None))
    for c in comp:
        if isinstance(c, ArrayBytesCodec):
            continue
        codec = _as_v3(c, dtype)
        if not isinstance(codec, BytesBytesCodec):
            raise CodecError(f"compressor {c!r} is not a bytes -> bytes codec")
        out.append(codec)
    return tuple(out)
