"""Codec interfaces: array->array, array->bytes and bytes->bytes, per the Zarr v3 spec.

A codec is an immutable object built from its JSON configuration. ``ChunkSpec`` describes
the array a codec sees (shape, storage dtype, fill value, order); array->array codecs may
change it for the codecs after them (``resolve_spec``).
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar

import numpy as np

from torchzarr.codecs.bounded import loose_bound, nbytes_of, too_large

__all__ = ["ArrayArrayCodec", "ArrayBytesCodec", "BytesBytesCodec", "ChunkSpec", "Codec"]


@dataclass(frozen=True)
class ChunkSpec:
    """What a codec knows about the chunk it encodes.

    Attributes:
        shape: the chunk shape (edge chunks are full size, padded with fill).
        dtype: numpy storage dtype, native byte order.
        fill_value: numpy scalar of ``dtype``.
        data_type: the array's :class:`~torchzarr.dtypes.DataType` where ``dtype`` holds its
            values as they are (None past a filter that changes the dtype): bfloat16 and
            float8 chunks hold raw bits, and a NaN fill matches any of their NaNs.
    """

    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    fill_value: Any
    data_type: Any = None

    @cached_property
    def nbytes(self) -> int:
        """Decoded size of a chunk in bytes."""
        return math.prod(self.shape) * self.dtype.itemsize


class Codec(abc.ABC):
    """Common part of every v3 codec: a name and a JSON configuration.

    One instance is shared by every chunk of an array, and ``encode``/``decode`` are called
    concurrently from several threads: they must be thread-safe (keep no mutable scratch
    state between calls, or hold your own lock).

    Example:
        >>> from torchzarr.codecs.compressors import GzipCodec
        >>> GzipCodec(level=1).to_json()
        {'name': 'gzip', 'configuration': {'level': 1}}
    """

    #: the codec's name in ``zarr.json`` (``"zstd"``, ``"bytes"``, ``"numcodecs.delta"``)
    codec_name: ClassVar[str]

    @classmethod
    @abc.abstractmethod
    def from_config(cls, configuration: dict[str, Any]) -> Codec:
        """Build the codec from the ``configuration`` object of its JSON form."""

    @abc.abstractmethod
    def configuration(self) -> dict[str, Any]:
        """The ``configuration`` object of its JSON form (may be empty)."""

    def to_json(self) -> dict[str, Any]:
        """The codec's JSON form: ``{"name": ..., "configuration": {...}}``."""
        out: dict[str, Any] = {"name": self.codec_name}
        config = self.configuration()
        if config:
            out["configuration"] = config
        return out

    def evolve(self, spec: ChunkSpec) -> Codec:
        """Fill in settings that depend on the array (e.g. ``endian`` for 1-byte types)."""
        return self

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Codec)
            and type(self) is type(other)
            and self.to_json() == other.to_json()
        )

    def __hash__(self) -> int:
        return hash(repr(self.to_json()))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.configuration()!r})"


class ArrayArrayCodec(Codec):
    """Transforms an array into another array (transpose, delta, ...)."""

    def resolve_spec(self, spec: ChunkSpec) -> ChunkSpec:
        """The spec of the array this codec produces from an array of ``spec``."""
        return spec

    @abc.abstractmethod
    def encode(self, chunk: np.ndarray, spec: ChunkSpec) -> np.ndarray:
        """Transform a decoded chunk of ``spec``."""

    @abc.abstractmethod
    def decode(self, chunk: np.ndarray, spec: ChunkSpec) -> np.ndarray:
        """Invert :meth:`encode`; ``spec`` is the spec of the *output*."""


class ArrayBytesCodec(Codec):
    """Serialises an array to bytes (``bytes``, ``sharding_indexed``)."""

    @abc.abstractmethod
    def encode(self, chunk: np.ndarray, spec: ChunkSpec) -> bytes:
        """Serialise a chunk of ``spec``."""

    @abc.abstractmethod
    def decode(self, data: bytes, spec: ChunkSpec, out: np.ndarray | None = None) -> np.ndarray:
        """Deserialise a chunk of ``spec``; write into ``out`` when given (C-contiguous) and
        return it. Thread-safe: called for many chunks at once. A new array returned instead
        is copied into ``out``; one of another shape or dtype is a ``ChunkDecodeError``."""

    def max_encoded_size(self, spec: ChunkSpec) -> int:
        """A bound on the size of an encoded chunk of ``spec``: what the bytes -> bytes codecs
        after this one may decode to. Codecs that know theirs override this generous one;
        an encoded chunk past it is a ``CodecError`` (it could never be read).

        Example:
            >>> from torchzarr.codecs.bytes_codec import BytesCodec
            >>> BytesCodec().max_encoded_size(ChunkSpec((4,), np.dtype("<i4"), 0))
            16
        """
        return loose_bound(spec.nbytes)


class BytesBytesCodec(Codec):
    """Transforms bytes into bytes (compressors, checksums); thread-safe like every codec."""

    @abc.abstractmethod
    def encode(self, data: bytes) -> bytes:
        """Compress or otherwise transform ``data``."""

    @abc.abstractmethod
    def decode(self, data: bytes) -> bytes:
        """Invert :meth:`encode`."""

    def decode_bounded(self, data: Any, limit: int) -> Any:
        """:meth:`decode` data known to decode to at most ``limit`` bytes (what the codecs
        before this one encode a chunk to); returns a buffer. Pipelines decode with it.

        Compressors override it to stop once past the limit; this one decodes, then checks.

        Raises:
            ChunkDecodeError: data that decodes to more than ``limit`` bytes.

        Example:
            >>> from torchzarr.codecs.compressors import ZstdCodec
            >>> bytes(ZstdCodec().decode_bounded(ZstdCodec().encode(b"abc"), 3))
            b'abc'
        """
        decoded = self.decode(data)
        if nbytes_of(decoded) > limit:
            raise too_large(self.codec_name, limit)
        return decoded

    def max_encoded_size(self, nbytes: int) -> int:
        """A bound on the size of :meth:`encode`'s output for ``nbytes`` bytes (exceeding it
        is a ``CodecError`` at encode): what the codec after this one may decode to. Codecs that know theirs override this generous
        one (:func:`~torchzarr.codecs.bounded.loose_bound`: 64 times plus 64 KiB).

        Example:
            >>> from torchzarr.codecs.compressors import Crc32cCodec
            >>> Crc32cCodec().max_encoded_size(10)
            14
        """
        return loose_bound(nbytes)
