"""Codec pipelines: the protocol core uses, the v3 codec chain, and create_array's default chain."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, TypeVar

import numpy as np

from torchzarr.codecs.base import (
    ArrayArrayCodec,
    ArrayBytesCodec,
    BytesBytesCodec,
    ChunkSpec,
    Codec,
)
from torchzarr.codecs.bounded import nbytes_of
from torchzarr.codecs.bytes_codec import BytesCodec
from torchzarr.codecs.compressors import Crc32cCodec, ZstdCodec, is_checksum_mismatch
from torchzarr.errors import (
    ChecksumError,
    ChunkDecodeError,
    CodecError,
    MetadataError,
    ShapeMismatchError,
    TorchZarrError,
)

__all__ = ["ChunkPipeline", "V3Pipeline", "check_out", "decode_error", "evolve_checked"]


class ChunkPipeline(Protocol):
    """What core needs of a codec chain, v2 and v3 alike.

    ``spec`` describes the full decoded chunk: shape, storage dtype and fill value.

    Example:
        >>> spec = ChunkSpec((3,), np.dtype("uint8"), np.uint8(0))
        >>> pipe: ChunkPipeline = V3Pipeline([BytesCodec()], spec)
        >>> out = np.empty(3, dtype=np.uint8)
        >>> pipe.decode(pipe.encode(np.arange(3, dtype=np.uint8)), out=out).tolist()
        [0, 1, 2]
    """

    spec: ChunkSpec

    def encode(self, chunk: np.ndarray) -> bytes:
        """Encode a chunk of ``spec.shape`` (any memory layout)."""
        ...

    def decode(
        self, data: bytes | memoryview, out: np.ndarray | None = None, *, key: str | None = None
    ) -> np.ndarray:
        """Decode stored bytes to an array of ``spec`` (into ``out`` when given)."""
        ...

    @property
    def supports_direct_decode(self) -> bool:
        """True when ``decode(out=...)`` needs no copy beyond the decompression itself."""
        ...


def _label(codec: object) -> str:
    if isinstance(codec, Codec):
        return repr(codec.codec_name)
    codec_id = getattr(codec, "codec_id", None)
    return repr(codec_id) if isinstance(codec_id, str) else type(codec).__name__


def decode_error(err: Exception, codec: object, key: str | None) -> ChunkDecodeError:
    """A ChunkDecodeError naming the chunk's key and the codec (subclasses keep their type).

    Example:
        >>> str(decode_error(ValueError("bad"), BytesCodec(), "c/0"))
        "cannot decode chunk 'c/0' with codec 'bytes': ValueError: bad"
    """
    where = f"chunk {key!r}" if key is not None else "chunk"
    if isinstance(err, ChunkDecodeError):
        text = str(err)
        if key is None or text.startswith(where):
            return err
        return type(err)(f"{where}: {text}")
    codec_id = getattr(codec, "codec_id", None)
    checksum = isinstance(codec_id, str) and is_checksum_mismatch(codec_id, err)
    return (ChecksumError if checksum else ChunkDecodeError)(
        f"cannot decode {where} with codec {_label(codec)}: {type(err).__name__}: {err}"
    )


def check_out(out: Any, spec: ChunkSpec) -> np.ndarray:
    """Check that ``out`` can receive a decoded chunk of ``spec``: C-contiguous, writable.

    Raises:
        CodecError: naming what does not fit.

    Example:
        >>> check_out(np.empty((2, 2), "f4"), ChunkSpec((2, 2), np.dtype("f4"), 0)).shape
        (2, 2)
    """
    if (
        not isinstance(out, np.ndarray)
        or out.shape != spec.shape
        or out.dtype != spec.dtype
        or not out.flags.c_contiguous
        or not out.flags.writeable
    ):
        got = (
            f"shape {out.shape}, dtype {out.dtype}, C-contiguous {out.flags.c_contiguous}, "
            f"writable {out.flags.writeable}"
            if isinstance(out, np.ndarray)
            else type(out).__name__
        )
        raise CodecError(
            f"decode(out=...) needs a writable C-contiguous array of shape {spec.shape} and "
            f"dtype {spec.dtype}; got {got}"
        )
    return out


_C = TypeVar("_C", bound=Codec)
_KINDS = (ArrayArrayCodec, ArrayBytesCodec, BytesBytesCodec)


def evolve_checked(codec: _C, spec: ChunkSpec) -> _C:
    """``codec.evolve(spec)``, checked to keep the codec's kind.

    Example:
        >>> evolve_checked(BytesCodec("little"), ChunkSpec((2,), np.dtype("u1"), 0)).to_json()
        {'name': 'bytes'}
    """
    evolved = codec.evolve(spec)
    for kind in _KINDS:
        if isinstance(codec, kind) and not isinstance(evolved, kind):
            raise CodecError(
                f"codec {codec.codec_name!r}: evolve() returned {type(evolved).__name__}, "
                f"not a {kind.__name__}"
            )
    return evolved  # type: ignore[return-value]


class V3Pipeline:
    """A v3 codec chain: array -> array codecs, one array -> bytes codec, bytes -> bytes codecs.

    The constructor validates the order and evolves each codec for the spec it sees (``bytes``
    drops ``endian`` for 1-byte types, ``blosc`` takes its ``typesize``); ``codecs`` holds
    the evolved chain, which is what ``zarr.json`` should record.

    Raises:
        MetadataError: a chain out of order, without or with two array -> bytes codecs, or a
            codec that does not fit the chunk (a transpose of the wrong length, a multi-byte
            dtype without ``endian``).

    Example:
        >>> from torchzarr.codecs.registry import codec_from_json
        >>> spec = ChunkSpec((2, 2), np.dtype("float32"), np.float32(0))
        >>> pipe = V3Pipeline([codec_from_json("bytes"), codec_from_json("zstd")], spec)
        Traceback (most recent call last):
        ...
        torchzarr.errors.MetadataError: bytes codec: endian is required for the 4-byte dtype float32
        >>> pipe = V3Pipeline([BytesCodec("little"), codec_from_json("zstd")], spec)
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
                        f"array -> bytes codec {array_bytes.codec_name!r}"
                    )
                evolved = evolve_checked(codec, current)
                specs.append(current)
                array_array.append(evolved)
                current = evolved.resolve_spec(current)
            elif isinstance(codec, ArrayBytesCodec):
                if array_bytes is not None:
                    raise MetadataError(
                        "a codec chain takes exactly one array -> bytes codec, got "
                        f"{array_bytes.codec_name!r} and {codec.codec_name!r}"
                    )
                array_bytes = evolve_checked(codec, current)
            elif isinstance(codec, BytesBytesCodec):
                if array_bytes is None:
                    raise MetadataError(
                        f"codec {codec.codec_name!r} (bytes -> bytes) comes before the "
                        "array -> bytes codec"
                    )
                bytes_bytes.append(evolve_checked(codec, current))
            else:
                raise MetadataError(f"{codec!r} is not a torchzarr codec")
        if array_bytes is None:
            names = [c.codec_name for c in codecs]
            raise MetadataError(
                f"a codec chain needs an array -> bytes codec (e.g. 'bytes'), got {names}"
            )
        self.array_array = tuple(array_array)
        self._aa_specs = tuple(specs)
        self.array_bytes = array_bytes
        self._ab_spec = current
        self.bytes_bytes = tuple(bytes_bytes)
        self.codecs: tuple[Codec, ...] = (*array_array, array_bytes, *bytes_bytes)
        # the most each bytes -> bytes codec may decode to: a decompression bomb stops there
        self._bounds = self.size_bounds()  # encode checks each codec keeps to its bound
        self._limits = self._bounds[:-1] if bytes_bytes else ()
        plain = not self.array_array and isinstance(array_bytes, BytesCodec)
        inner = self.bytes_bytes[0] if self.bytes_bytes else None
        # the innermost bytes codec decompresses straight into out ...
        self._into = inner if plain and getattr(inner, "decodes_into", False) else None
        # ... or checksums only: their payload views go to `bytes`, which copies once into out
        checksums_only = all(isinstance(c, Crc32cCodec) for c in self.bytes_bytes)
        self._direct = self._into is not None or (plain and checksums_only)
        self._swap = (
            isinstance(array_bytes, BytesCodec)
            and not array_bytes.is_native
            and spec.dtype.itemsize > 1
        )

    def size_bounds(self) -> tuple[int, ...]:
        """Bounds on a chunk's encoded size after the array -> bytes codec (exact for
        ``bytes``) and after each bytes -> bytes codec; the last bounds the stored chunk.

        Example:
            >>> spec = ChunkSpec((4,), np.dtype("<i4"), 0)
            >>> V3Pipeline([BytesCodec("little"), Crc32cCodec()], spec).size_bounds()
            (16, 20)
        """
        bounds = [self.array_bytes.max_encoded_size(self._ab_spec)]
        for codec in self.bytes_bytes:
            bounds.append(codec.max_encoded_size(bounds[-1]))
        return tuple(bounds)

    @property
    def zstd_frame_codec(self) -> Any:
        """The zstd codec when a stored chunk is one zstd frame of the chunk's native C-order
        bytes (``bytes`` in this machine's order, then ``zstd`` alone), else None.

        Example:
            >>> spec = ChunkSpec((2,), np.dtype("<i4"), 0)
            >>> V3Pipeline([BytesCodec("little"), ZstdCodec(1)], spec).zstd_frame_codec.level
            1
        """
        ab = self.array_bytes
        if self.array_array or not isinstance(ab, BytesCodec) or not ab.is_native:
            return None
        if [type(c) for c in self.bytes_bytes] != [ZstdCodec]:
            return None
        return self.bytes_bytes[0]

    @property
    def supports_direct_decode(self) -> bool:
        """True when ``decode(out=...)`` decompresses straight into ``out`` (no extra copy).

        That holds for ``bytes`` alone, with crc32c only, or followed by zstd, blosc or
        numcodecs lz4 (with any codecs after those); big-endian data is swapped in place.
        """
        return self._direct

    def encode(self, chunk: np.ndarray) -> bytes:
        """Encode a chunk of the spec's shape (any memory layout) to its stored bytes.

        Raises:
            ShapeMismatchError: ``chunk`` is not of the spec's shape.
            CodecError: a codec failed, naming it.
        """
        array = np.asarray(chunk)
        if array.shape != self.spec.shape:
            raise ShapeMismatchError(
                f"cannot encode an array of shape {array.shape} as a chunk of shape "
                f"{self.spec.shape}"
            )
        if array.dtype != self.spec.dtype:
            array = array.astype(self.spec.dtype)
        codec: Codec = self.array_bytes
        try:
            for codec, spec in zip(self.array_array, self._aa_specs, strict=True):
                array = codec.encode(array, spec)
            codec = self.array_bytes
            data = self.array_bytes.encode(array, self._ab_spec)
            bounds = iter(self._bounds)
            self._check_bound(codec, data, next(bounds))
            for codec in self.bytes_bytes:
                data = codec.encode(data)
                self._check_bound(codec, data, next(bounds))
        except TorchZarrError:
            raise
        except Exception as err:
            raise CodecError(
                f"cannot encode a chunk with codec {codec.codec_name!r}: "
                f"{type(err).__name__}: {err}"
            ) from err
        return data

    @staticmethod
    def _check_bound(codec: Codec, data: Any, bound: int) -> None:
        """O(1): an encoded size past the codec's ``max_encoded_size`` would write chunks
        that every read refuses (the decompression-bomb limits come from those bounds)."""
        if nbytes_of(data) > bound:
            raise CodecError(
                f"codec {codec.codec_name!r} encoded a chunk to {nbytes_of(data)} bytes, more "
                f"than its max_encoded_size() of {bound}: fix its max_encoded_size"
            )

    def decode(
        self, data: bytes | memoryview, out: np.ndarray | None = None, *, key: str | None = None
    ) -> np.ndarray:
        """Decode stored bytes to an array of the spec; into ``out`` when given.

        Without ``out`` the result may be a read-only view of ``data``.

        Raises:
            ChunkDecodeError: corrupt or truncated data, or a decoded size that does not match
                the spec, naming ``key`` (when given) and the codec.
            ChecksumError: a crc32c mismatch.
            CodecError: ``out`` of the wrong shape, dtype or layout.
        """
        if out is not None:
            check_out(out, self.spec)
        codec: object = None
        try:
            buf: Any = data
            if out is not None and self._into is not None:
                for codec, limit in zip(self.bytes_bytes[:0:-1], self._limits[:0:-1], strict=True):
                    buf = codec.decode_bounded(buf, limit)
                codec = self._into
                codec.decode_into(buf, out.reshape(-1).view(np.uint8))  # type: ignore[attr-defined]
                if self._swap:
                    out.byteswap(inplace=True)
                return out
            for codec, limit in zip(self.bytes_bytes[::-1], self._limits[::-1], strict=True):
                buf = codec.decode_bounded(buf, limit)
            codec = self.array_bytes
            if not self.array_array:
                array = self.array_bytes.decode(buf, self.spec, out=out)
                if array is out:  # the codec honoured out=
                    return out
            else:
                array = self.array_bytes.decode(buf, self._ab_spec)
                for codec, spec in zip(
                    reversed(self.array_array), reversed(self._aa_specs), strict=True
                ):
                    array = codec.decode(array, spec)
            # O(1): a plugin codec returning another shape or dtype must not be reinterpreted
            if (
                not isinstance(array, np.ndarray)
                or array.shape != self.spec.shape
                or array.dtype != self.spec.dtype
            ):
                got = (
                    f"shape {array.shape} of {array.dtype}"
                    if isinstance(array, np.ndarray)
                    else type(array).__name__
                )
                raise ChunkDecodeError(  # decode_error puts the key in front
                    f"codec {_label(codec)} decoded to {got}, expected shape "
                    f"{self.spec.shape} of {self.spec.dtype}"
                )
        except Exception as err:
            raise decode_error(err, codec, key) from err
        if out is not None:
            # a codec that ignored out= (or a chain with array -> array codecs): copy once
            out[...] = array
            return out
        return array

    def decoding(self) -> list[Any]:
        """How a chunk decodes, in one spelling whatever the metadata's (the codecs as
        evolved for the chunk: a blosc ``typesize`` left out is filled in).

        Example:
            >>> spec = ChunkSpec((4,), np.dtype("float32"), np.float32(0))
            >>> V3Pipeline([BytesCodec("little")], spec).decoding()
            [{'name': 'bytes', 'configuration': {'endian': 'little'}}]
        """
        return [c.to_json() for c in self.codecs]

    def __repr__(self) -> str:
        return f"V3Pipeline({self.decoding()}, shape={self.spec.shape})"
