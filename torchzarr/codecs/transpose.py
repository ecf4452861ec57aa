"""The ``transpose`` codec: permute a chunk's axes before serialising (array -> array)."""

from __future__ import annotations

from typing import Any

import numpy as np

from torchzarr.codecs.base import ArrayArrayCodec, ChunkSpec
from torchzarr.errors import MetadataError

__all__ = ["TransposeCodec"]


class TransposeCodec(ArrayArrayCodec):
    """Transpose chunks by ``order``, a permutation of the axes.

    The legacy strings ``"C"`` (identity) and ``"F"`` (reversed axes) are accepted on read and
    resolved against the chunk's number of dimensions.

    Example:
        >>> from torchzarr.codecs.base import ChunkSpec
        >>> codec = TransposeCodec((1, 0))
        >>> codec.resolve_spec(ChunkSpec((2, 3), np.dtype("int8"), 0)).shape
        (3, 2)
    """

    codec_name = "transpose"

    def __init__(self, order: Any) -> None:
        if isinstance(order, str):
            if order not in ("C", "F"):
                raise MetadataError(f"transpose codec: order must be a permutation, got {order!r}")
            self.order: tuple[int, ...] | str = order
            return
        if not isinstance(order, list | tuple) or not all(
            isinstance(i, int) and not isinstance(i, bool) for i in order
        ) or sorted(order) != list(range(len(order))):
            raise MetadataError(f"transpose codec: order must be a permutation, got {order!r}")
        self.order = tuple(order)

    @classmethod
    def from_config(cls, configuration: dict[str, Any]) -> TransposeCodec:
        if "order" not in configuration:
            raise MetadataError("transpose codec: configuration needs 'order'")
        return cls(configuration["order"])

    def configuration(self) -> dict[str, Any]:
        return {"order": self.order if isinstance(self.order, str) else list(self.order)}

    def _permutation(self, ndim: int) -> tuple[int, ...]:
        if self.order == "C":
            return tuple(range(ndim))
        if self.order == "F":
            return tuple(reversed(range(ndim)))
        assert isinstance(self.order, tuple)
        if len(self.order) != ndim:
            raise MetadataError(
                f"transpose codec: order {list(self.order)} does not fit {ndim}-d chunks"
            )
        return self.order

    def evolve(self, spec: ChunkSpec) -> TransposeCodec:
        return TransposeCodec(self._permutation(len(spec.shape)))

    def resolve_spec(self, spec: ChunkSpec) -> ChunkSpec:
        perm = self._permutation(len(spec.shape))
        return ChunkSpec(tuple(spec.shape[i] for i in perm), spec.dtype, spec.fill_value)

    def encode(self, chunk: np.ndarray, spec: ChunkSpec) -> np.ndarray:
        return chunk.transpose(self._permutation(chunk.ndim))

    def decode(self, chunk: np.ndarray, spec: ChunkSpec) -> np.ndarray:
        return chunk.transpose(np.argsort(self._permutation(chunk.ndim)))
