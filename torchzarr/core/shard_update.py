"""Writes to part of a shard: only the inner chunks the write reaches are decoded and encoded.

A shard is one stored object, so a write to part of it stores it whole; but its other
inner chunks keep their stored bytes, and a shard not stored yet gets only the inner
chunks written (a one-element write into a 1 GiB shard builds one inner chunk, not the
shard).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from torchzarr.codecs.sharding import ShardingCodec, check_inner_range
from torchzarr.core.chunking import fits_in_memory
from torchzarr.errors import InvalidArgumentError

__all__ = ["shard_updater"]

#: ``(stored shard or None, projection, value, key) -> (new shard, inner chunks stored)``
ShardUpdate = Callable[[bytes | None, Any, np.ndarray, str], tuple[bytes, int]]


def _reach(item: Any, extent: int) -> tuple[int, int]:
    """The first and last positions one axis of a chunk selection (an int, a slice with a
    positive step or integer coordinates) reaches; ``(0, -1)`` for none."""
    if isinstance(item, slice):
        start, stop, step = item.indices(extent)
        if stop <= start:
            return 0, -1
        return start, start + (stop - start - 1) // step * step
    points = np.asarray(item)
    if not points.size:
        return 0, -1
    return int(points.min()), int(points.max())


def _shifted(item: Any, by: int) -> Any:
    """One axis of a chunk selection, relative to a block starting ``by`` elements in."""
    if isinstance(item, slice):
        return slice(item.start - by, item.stop - by, item.step)
    if isinstance(item, (int, np.integer)):
        return int(item) - by
    return np.asarray(item) - by


def _covers(selection: tuple[Any, ...], region: tuple[slice, ...]) -> bool:
    """Whether a selection of step-1 slices (and ints on axes one element wide) writes
    every element of ``region``, whose stored values then need no decoding."""
    for item, part in zip(selection, region, strict=True):
        if isinstance(item, slice):
            if item.step != 1 or item.start > part.start or item.stop < part.stop:
                return False
        elif not isinstance(item, (int, np.integer)) or (part.start, part.stop) != (item, item + 1):
            return False
    return True


def shard_updater(codec: ShardingCodec | None, spec: Any) -> ShardUpdate | None:
    """How a write to part of a shard is encoded, for an array whose whole serialisation is
    ``codec`` (None: not sharded, writes go through whole chunks).

    Example:
        >>> shard_updater(None, None) is None
        True
    """
    if codec is None:
        return None
    inner = codec.inner_pipeline(spec)
    decode = inner.decode

    def update(
        shard: bytes | None, projection: Any, value: np.ndarray, key: str
    ) -> tuple[bytes, int]:
        selection = tuple(projection.chunk_selection)
        reach = [_reach(item, n) for item, n in zip(selection, spec.shape, strict=True)]
        # the block of whole inner chunks from the first to the last element written
        origin = tuple(
            first // k * k for (first, _), k in zip(reach, codec.chunk_shape, strict=True)
        )
        end = tuple(
            min(n, (last // k + 1) * k) if last >= 0 else 0
            for (_, last), k, n in zip(reach, codec.chunk_shape, spec.shape, strict=True)
        )
        shape = tuple(e - o for e, o in zip(end, origin, strict=True))
        if not fits_in_memory(math.prod(shape) * spec.dtype.itemsize):
            raise InvalidArgumentError(
                f"cannot write to shard {key!r}: the write reaches from element {origin} to "
                f"{end} of the shard, a block of {shape} elements of {spec.dtype} larger than "
                "this machine's memory; write it in parts"
            )
        block = np.empty(shape, dtype=spec.dtype)
        index = None if shard is None else codec.index_of_shard(shard, spec, key)
        view = memoryview(b"" if shard is None else shard)
        ranges = (
            range(o // k, -(-e // k))
            for o, e, k in zip(origin, end, codec.chunk_shape, strict=True)
        )
        for coords in itertools.product(*ranges):
            region = tuple(
                slice(c * k, (c + 1) * k) for c, k in zip(coords, codec.chunk_shape, strict=True)
            )
            if _covers(selection, region):
                continue  # written whole below
            target = block[
                tuple(slice(r.start - o, r.stop - o) for r, o in zip(region, origin, strict=True))
            ]
            found = None if index is None else index.get(coords)
            if found is None:
                target[...] = spec.fill_value
                continue
            offset, nbytes = found
            check_inner_range(coords, offset, nbytes, len(view), key)
            target[...] = decode(view[offset : offset + nbytes], key=key)
        moved = tuple(_shifted(item, o) for item, o in zip(selection, origin, strict=True))
        block[moved] = value[projection.out_selection]
        return codec.encode_update(shard, spec, origin, block, key, index)

    return update
