"""The inner chunk shape a sharded array reports, whatever transposes come before sharding."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from torchzarr.codecs.sharding import ShardingCodec
from torchzarr.codecs.transpose import TransposeCodec

__all__ = ["inner_chunk_shape", "inner_chunks_of_shards"]


def inner_chunk_shape(metadata: Any) -> tuple[int, ...] | None:
    """The inner chunk shape, in the array's own axis order, of a v3 array whose array ->
    bytes codec is ``sharding_indexed`` behind nothing but ``transpose`` codecs (as
    tensorstore writes them); None for any other array (v2, unsharded).

    The sharding codec's ``chunk_shape`` is given in the order the transposes leave the
    axes in; it is mapped back through them. Reports only: the engine reads such arrays
    through the general codec path.

    Example:
        >>> from torchzarr.metadata import build_array_metadata
        >>> meta = build_array_metadata(zarr_format=3, shape=(8, 6), chunk_shape=(8, 6),
        ...     data_type="int16", fill_value=0, codecs=[
        ...         {"name": "transpose", "configuration": {"order": [1, 0]}},
        ...         {"name": "sharding_indexed", "configuration": {"chunk_shape": [3, 2]}}])
        >>> inner_chunk_shape(meta)
        (2, 3)
    """
    ndim = len(metadata.shape)
    axes = tuple(range(ndim))  # the array axis behind each axis of the codec's input
    for codec in getattr(metadata, "codecs", ()):
        if isinstance(codec, TransposeCodec):
            order = codec.permutation(ndim)
            axes = tuple(axes[i] for i in order)
        elif isinstance(codec, ShardingCodec):
            inner = [0] * ndim
            for axis, size in zip(axes, codec.chunk_shape, strict=True):
                inner[axis] = int(size)
            return tuple(inner)
        else:
            return None
    return None


def inner_chunks_of_shards(
    shards: Mapping[str, tuple[int, ...]],
    layout: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]],
) -> int:
    """The inner chunks of the stored ``shards`` (keys to grid coordinates) that lie in the
    array, every one counted as zarr-python 3.1 counts them; ``layout`` is the shard shape,
    the inner chunk shape and the array's shape.

    Example:
        >>> inner_chunks_of_shards({"c/0": (0,), "c/1": (1,)}, ((4,), (2,), (6,)))
        3
    """
    shard, inner, shape = layout
    total = 0
    for coords in shards.values():
        spans = (
            max(0, min(extent, (c + 1) * s) - c * s)
            for c, s, extent in zip(coords, shard, shape, strict=True)
        )
        total += math.prod(-(-span // i) for span, i in zip(spans, inner, strict=True))
    return total
