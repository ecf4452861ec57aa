"""The ``bytes`` codec: an array to its raw C-order bytes in a chosen byte order (array -> bytes)."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from torchzarr.codecs.base import ArrayBytesCodec, ChunkSpec
from torchzarr.errors import ChunkDecodeError, MetadataError

__all__ = ["BytesCodec", "as_byte_view"]

_NATIVE = sys.byteorder


def as_byte_view(data: Any) -> memoryview:
    """A flat unsigned-byte view of any buffer (bytes, memoryview, numpy array), without a copy.

    Example:
        >>> len(as_byte_view(np.zeros(3, dtype=np.float32)))
        12
    """
    if isinstance(data, np.ndarray):
        if not (data.flags.c_contiguous or data.flags.f_contiguous):
            data = np.ascontiguousarray(data)
        return memoryview(data.reshape(-1, order="A").view(np.uint8))
    view = memoryview(data)
    if view.ndim != 1 or view.format != "B":
        view = view.cast("B")
    return view


class BytesCodec(ArrayBytesCodec):
    """Serialise a chunk as C-order raw bytes, ``endian`` little or big (None for 1-byte types).

    Example:
        >>> spec = ChunkSpec((2,), np.dtype("uint16"), np.uint16(0))
        >>> BytesCodec("big").encode(np.array([1, 2], dtype=np.uint16), spec)
        b'\\x00\\x01\\x00\\x02'
        >>> BytesCodec("big").decode(b"\\x00\\x01\\x00\\x02", spec).tolist()
        [1, 2]
    """

    codec_name = "bytes"

    def __init__(self, endian: str | None = "little") -> None:
        if endian not in ("little", "big", None):
            raise MetadataError(f"bytes codec: endian must be 'little' or 'big', got {endian!r}")
        self.endian = endian

    @classmethod
    def from_config(cls, configuration: dict[str, Any]) -> BytesCodec:
        """Build from ``{"endian": "little" | "big"}`` (endian may be left out)."""
        unknown = sorted(set(configuration) - {"endian"})
        if unknown:
            raise MetadataError(f"bytes codec: unknown configuration key(s) {unknown}")
        return cls(configuration.get("endian"))

    def configuration(self) -> dict[str, Any]:
        """``{"endian": ...}``, or empty where no endian is set (1-byte types)."""
        return {} if self.endian is None else {"endian": self.endian}

    def evolve(self, spec: ChunkSpec) -> BytesCodec:
        """Drop ``endian`` for 1-byte types; require it for wider ones."""
        if spec.dtype.itemsize == 1:
            return self if self.endian is None else BytesCodec(None)
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

    def max_encoded_size(self, spec: ChunkSpec) -> int:
        """Exactly the chunk's size: the bytes as they are."""
        return spec.nbytes

    def encode(self, chunk: np.ndarray, spec: ChunkSpec) -> bytes:
        """The chunk's bytes in C order and the codec's byte order (any input layout)."""
        return np.asarray(chunk).astype(self.stored_dtype(spec), order="C", copy=False).tobytes()

    def decode(self, data: Any, spec: ChunkSpec, out: np.ndarray | None = None) -> np.ndarray:
        """An array of ``spec`` over ``data`` (a read-only view when no swap is needed).

        Raises:
            ChunkDecodeError: ``data`` is not exactly the size of a chunk of ``spec``.
        """
        view = as_byte_view(data)
        if len(view) != spec.nbytes:
            raise ChunkDecodeError(
                f"bytes codec: the chunk holds {len(view)} bytes, expected {spec.nbytes} for "
                f"shape {spec.shape} of {spec.dtype}"
            )
        array = np.frombuffer(view, dtype=self.stored_dtype(spec)).reshape(spec.shape)
        if out is not None:
            out[...] = array
            return out
        if not self.is_native and spec.dtype.itemsize > 1:
            return array.astype(spec.dtype)
        return array
