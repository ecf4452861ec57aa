"""Zarr v2 chunks: memory order and byte order, numcodecs filters, then one compressor."""

from __future__ import annotations

from typing import Any

import numpy as np

from torchzarr.codecs.base import ChunkSpec
from torchzarr.codecs.numcodecs_adapter import numcodecs_object
from torchzarr.codecs.pipeline import decode_error
from torchzarr.errors import ChunkDecodeError, MetadataError

__all__ = ["V2Pipeline", "v2_codec_config"]

_DECODE_INTO = frozenset({"zstd", "blosc", "lz4"})


def v2_codec_config(codec: Any) -> dict[str, Any]:
    """The ``.zarray`` JSON of a numcodecs codec, config dict or short name.

    ``checksum: false`` is left out of zstd's config: it is numcodecs' default, and
    tensorstore's v2 driver refuses the key.

    Example:
        >>> v2_codec_config("zstd")
        {'id': 'zstd', 'level': 0}
    """
    config = dict(numcodecs_object(codec).get_config())
    if config.get("id") == "zstd" and config.get("checksum") is False:
        del config["checksum"]
    return config


class V2Pipeline:
    """The chunk pipeline of a v2 array.

    Example:
        >>> spec = ChunkSpec((2, 3), np.dtype("int32"), np.int32(0))
        >>> pipe = V2Pipeline(spec, compressor={"id": "zlib", "level": 1}, filters=None,
        ...                   order="F", byteorder=">")
        >>> data = np.arange(6, dtype=np.int32).reshape(2, 3)
        >>> bool((pipe.decode(pipe.encode(data)) == data).all())
        True
    """

    def __init__(
        self,
        spec: ChunkSpec,
        *,
        compressor: dict[str, Any] | None,
        filters: list[dict[str, Any]] | None,
        order: str,
        byteorder: str,
    ) -> None:
        if order not in ("C", "F"):
            raise MetadataError(f".zarray: order must be 'C' or 'F', got {order!r}")
        self.spec = spec
        self.order = order
        self.stored_dtype = (
            spec.dtype.newbyteorder(byteorder) if byteorder in "<>" and spec.dtype.itemsize > 1
            else spec.dtype
        )
        self.compressor = numcodecs_object(compressor) if compressor is not None else None
        self.filters = tuple(numcodecs_object(f) for f in filters or ())
        self._compressor_id = compressor.get("id") if compressor else None

    @property
    def supports_direct_decode(self) -> bool:
        """True when ``decode(out=...)`` decompresses straight into ``out``."""
        return (
            not self.filters
            and (self.order == "C" or len(self.spec.shape) <= 1)
            and self.stored_dtype.isnative
            and (self.compressor is None or self._compressor_id in _DECODE_INTO)
        )

    def encode(self, chunk: np.ndarray) -> bytes:
        """Encode a chunk of the spec's shape."""
        array = np.asarray(chunk, dtype=self.stored_dtype)
        array = np.asfortranarray(array) if self.order == "F" else np.ascontiguousarray(array)
        data: Any = array
        for f in self.filters:
            data = f.encode(data)
        if self.compressor is not None:
            data = self.compressor.encode(data)
        if isinstance(data, np.ndarray):
            return data.tobytes(order="A")
        return bytes(data)

    def decode(self, data: Any, out: np.ndarray | None = None, *, key: str | None = None) -> np.ndarray:
        """Decode a stored chunk; into ``out`` (C-contiguous, the spec's shape) when given."""
        codec: object = self.compressor
        try:
            if out is not None and self.supports_direct_decode:
                flat = out.reshape(-1).view(np.uint8)
                if self.compressor is None:
                    self._check_size(len(memoryview(data).cast("B")), key)
                    flat[...] = np.frombuffer(data, dtype=np.uint8)
                else:
                    self.compressor.decode(data, out=flat)
                return out
            raw: Any = self.compressor.decode(data) if self.compressor is not None else data
            for f in reversed(self.filters):
                codec = f
                raw = f.decode(raw)
            array = self._to_array(raw, key)
        except Exception as err:
            raise decode_error(err, codec, key) from err
        if out is not None:
            out[...] = array
            return out
        return array

    def _check_size(self, nbytes: int, key: str | None) -> None:
        if nbytes != self.spec.nbytes:
            raise ChunkDecodeError(
                f"chunk {key!r} decodes to {nbytes} bytes, expected {self.spec.nbytes} for shape "
                f"{self.spec.shape} of {self.spec.dtype}"
            )

    def _to_array(self, raw: Any, key: str | None) -> np.ndarray:
        if isinstance(raw, np.ndarray) and raw.dtype.kind != "V" and raw.dtype != np.uint8:
            flat = raw.reshape(-1, order="A")
            if flat.dtype.itemsize == self.stored_dtype.itemsize:
                flat = flat.view(self.stored_dtype)
            else:
                flat = flat.astype(self.stored_dtype)
        else:
            buf = memoryview(raw).cast("B") if not isinstance(raw, np.ndarray) else raw.reshape(-1).view(np.uint8)
            self._check_size(len(buf), key)
            flat = np.frombuffer(buf, dtype=self.stored_dtype)
        if flat.size != int(np.prod(self.spec.shape, dtype=np.int64)):
            self._check_size(flat.size * self.stored_dtype.itemsize, key)
        array = flat.reshape(self.spec.shape, order=self.order)
        if not self.stored_dtype.isnative:
            array = array.astype(self.spec.dtype)
        return array

    def __repr__(self) -> str:
        filters = [f.get_config() for f in self.filters]
        comp = self.compressor.get_config() if self.compressor else None
        return f"V2Pipeline(order={self.order!r}, filters={filters}, compressor={comp})"
