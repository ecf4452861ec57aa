"""The ``transpose`` codec: permute a chunk's axes before it is serialised (array -> array)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from torchzarr.codecs.base import ArrayArrayCodec, ChunkSpec, Codec
from torchzarr.errors import MetadataError

__all__ = ["TransposeCodec", "with_explicit_orders"]


class TransposeCodec(ArrayArrayCodec):
    """Transpose chunks by ``order``, a permutation of the axes.

    The legacy strings ``"C"`` (identity) and ``"F"`` (reversed axes) are accepted on read;
    :meth:`evolve` resolves them to an explicit permutation for the chunk's dimensions, and
    array metadata records that permutation (see :func:`with_explicit_orders`).

    Example:
        >>> codec = TransposeCodec((1, 0))
        >>> codec.resolve_spec(ChunkSpec((2, 3), np.dtype("int8"), 0)).shape
        (3, 2)
        >>> codec.encode(np.arange(6).reshape(2, 3), None).shape
        (3, 2)
    """

    codec_name = "transpose"

    def __init__(self, order: Any) -> None:
        if isinstance(order, str):
            if order not in ("C", "F"):
                raise MetadataError(
                    f"transpose codec: order must be a permutation or 'C'/'F', got {order!r}"
                )
            self.order: tuple[int, ...] | str = order
            return
        if (
            not isinstance(order, list | tuple)
            or not all(isinstance(i, int) and not isinstance(i, bool) for i in order)
            or sorted(order) != list(range(len(order)))
        ):
            raise MetadataError(f"transpose codec: order must be a permutation, got {order!r}")
        self.order = tuple(int(i) for i in order)

    @classmethod
    def from_config(cls, configuration: dict[str, Any]) -> TransposeCodec:
        """Build from ``{"order": [...]}`` (or the legacy ``"C"``/``"F"``)."""
        if "order" not in configuration:
            raise MetadataError("transpose codec: configuration needs 'order'")
        unknown = sorted(set(configuration) - {"order"})
        if unknown:
            raise MetadataError(f"transpose codec: unknown configuration key(s) {unknown}")
        return cls(configuration["order"])

    def configuration(self) -> dict[str, Any]:
        """``{"order": [...]}``."""
        return {"order": self.order if isinstance(self.order, str) else list(self.order)}

    def permutation(self, ndim: int) -> tuple[int, ...]:
        """The explicit permutation for ``ndim``-dimensional chunks.

        Raises:
            MetadataError: an explicit order of another length.
        """
        if self.order == "C":
            return tuple(range(ndim))
        if self.order == "F":
            return tuple(reversed(range(ndim)))
        order = tuple(int(i) for i in self.order)
        if len(order) != ndim:
            raise MetadataError(
                f"transpose codec: order {list(order)} does not fit {ndim}-d chunks"
            )
        return order

    def evolve(self, spec: ChunkSpec) -> TransposeCodec:
        """Resolve ``"C"``/``"F"`` and check the permutation fits the chunk."""
        perm = self.permutation(len(spec.shape))
        return self if perm == self.order else TransposeCodec(perm)

    def resolve_spec(self, spec: ChunkSpec) -> ChunkSpec:
        """The permuted chunk shape."""
        perm = self.permutation(len(spec.shape))
        return dataclasses.replace(spec, shape=tuple(spec.shape[i] for i in perm))

    def encode(self, chunk: np.ndarray, spec: ChunkSpec) -> np.ndarray:
        """A transposed view of the chunk (no copy)."""
        return np.asarray(chunk).transpose(self.permutation(np.ndim(chunk)))

    def decode(self, chunk: np.ndarray, spec: ChunkSpec) -> np.ndarray:
        """The inverse transposition, as a view."""
        perm = self.permutation(np.ndim(chunk))
        inverse = [0] * len(perm)
        for position, axis in enumerate(perm):
            inverse[axis] = position
        return np.asarray(chunk).transpose(inverse)


def _legacy(codecs: Sequence[Codec]) -> bool:
    """Whether a chain (or a sharding codec's inner or index chain) has a "C"/"F" order."""
    for codec in codecs:
        if isinstance(codec, TransposeCodec) and isinstance(codec.order, str):
            return True
        for chain in (getattr(codec, "codecs", None), getattr(codec, "index_codecs", None)):
            if isinstance(chain, tuple | list) and _legacy(chain):
                return True
    return False


def _take_orders(given: Sequence[Codec], evolved: Sequence[Codec]) -> tuple[Codec, ...]:
    from torchzarr.codecs.sharding import ShardingCodec

    out: list[Codec] = []
    for mine, done in zip(given, evolved, strict=True):
        if isinstance(mine, TransposeCodec) and isinstance(mine.order, str):
            mine = done
        elif isinstance(mine, ShardingCodec) and isinstance(done, ShardingCodec):
            mine = ShardingCodec(
                mine.chunk_shape,
                _take_orders(mine.codecs, done.codecs),
                _take_orders(mine.index_codecs, done.index_codecs),
                mine.index_location,
            )
        out.append(mine)
    return tuple(out)


def with_explicit_orders(codecs: Sequence[Codec], spec: ChunkSpec) -> tuple[Codec, ...]:
    """``codecs`` (a v3 chain for chunks of ``spec``) with each ``transpose`` order given as
    the legacy ``"C"``/``"F"`` replaced by the permutation for the chunks it sees, in
    sharding's inner and index chains too; the other codecs as given. ``zarr.json`` records
    these: zarr-python opens only explicit permutations.

    Example:
        >>> from torchzarr.codecs.bytes_codec import BytesCodec
        >>> spec = ChunkSpec((2, 3, 4), np.dtype("int8"), 0)
        >>> chain = with_explicit_orders([TransposeCodec("F"), BytesCodec()], spec)
        >>> chain[0].to_json()
        {'name': 'transpose', 'configuration': {'order': [2, 1, 0]}}
    """
    from torchzarr.codecs.pipeline import V3Pipeline

    if not _legacy(codecs):
        return tuple(codecs)
    return _take_orders(codecs, V3Pipeline(codecs, spec).codecs)
