"""The ``bytes`` codec: an array to its raw bytes in a chosen byte order (array -> bytes)."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from torchzarr.codecs.base import ArrayBytesCodec, ChunkSpec
from torchzarr.errors import ChunkDecodeError, MetadataError

__all__ = ["BytesCodec"]

_NATIVE = sys.byteorder


class BytesCodec(ArrayBytesCodec):
    """Serialise a chunk as C-order raw bytes, ``endian`` little or big (None for 1-byte types).

    Example:
        >>> from torchzarr.codecs.base import ChunkSpec
        >>> spec = ChunkSpec((2,), np.dtype("uint16"), np.uint16(0))
        >>> BytesCodec("big").encode(np.array([1, 2], dtype=np.uint16), spec)
        b'\\x00\\x01\\x00\\x02'
    """

    codec_name = "bytes"

    def __init__(self, endian: str | None = "little") -> None:
        if endian not in ("little", "big", None):
            raise MetadataError(f"bytes codec: endian must be 'little' or 'big', got {endian!r}")
        self.endian = endian

    @classmethod
    def from_config(cls, configuration: dict[str, Any]) -> BytesCodec:
        return cls(configuration.get("endian"))

    def configuration(self) -> dict[str, Any]:
        return {} if self.endian is None else {"endian": self.endian}

    def evolve(self, spec: ChunkSpec) -> BytesCodec:
        if spec.dtype.itemsize == 1:
            return BytesCodec(None)
        if self.endian is None:
            raise MetadataError(
                f"bytes codec: endian is required for the {spec.dtype.itemsize}-byte dtype "
                f"{spec.dtype}"
            )
        return self

    def stored_dtype(self, spec: ChunkSpec) -> np.dtype[Any]:
        """The dtype of the bytes as stored (explicit byte order)."""
        if spec.dtype.itemsize == 1 or self.endian is None:
            return spec.dtype
        return spec.dtype.newbyteorder("<" if self.endian == "little" else ">")

    @property
    def is_native(self) -> bool:
        """True when stored bytes are in this machine's byte order (no swap needed)."""
        return self.endian is None or self.endian == _NATIVE

    def encode(self, chunk: np.ndarray, spec: ChunkSpec) -> bytes:
        return np.ascontiguousarray(chunk, dtype=self.stored_dtype(spec)).tobytes()

    def decode(self, data: Any, spec: ChunkSpec, out: np.ndarray | None = None) -> np.ndarray:
        view = memoryview(data).cast("B") if not isinstance(data, np.ndarray) else data.reshape(-1).view(np.uint8)
        if len(view) != spec.nbytes:
            raise ChunkDecodeError(
                f"bytes codec: chunk holds {len(view)} bytes, expected {spec.nbytes} for shape "
                f"{spec.shape} of {spec.dtype}"
            )
        array = np.frombuffer(view, dtype=self.stored_dtype(spec)).reshape(spec.shape)
        if out is not None:
            out[...] = array
            return out
        return array
