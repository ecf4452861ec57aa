"""The boxes a bounded-memory copy of an array goes through (``from_array``)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence

__all__ = ["slab_shape", "slabs"]


def slab_shape(
    shape: Sequence[int],
    block: Sequence[int],
    itemsize: int,
    budget: int,
    source_chunks: Sequence[int] | None = None,
) -> tuple[int, ...]:
    """The shape of the boxes a copy reads and writes at a time: whole ``block`` s of the
    destination (shards, else chunks) within ``budget`` bytes, split along the first axis
    while whole rows fit, else along the next axes too (a short or whole-chunked first
    axis), and whole ``source_chunks`` too along the axis split where that fits. One
    block larger than the budget is copied whole.

    Example:
        >>> slab_shape((1000, 64), (10, 64), 4, 64 * 4 * 100)  # 100 rows of 64
        (100, 64)
        >>> slab_shape((2, 1 << 20), (1, 1 << 10), 4, 1 << 20)  # rows past the budget
        (1, 262144)
        >>> slab_shape((100, 64), (100, 1), 4, 100 * 4 * 8)  # chunks of whole columns
        (100, 8)
        >>> slab_shape((2, 1 << 20), (1, 1 << 10), 4, 1 << 20, (2, 1 << 20))  # one big source
        (2, 1048576)
    """
    slab = [max(1, n) for n in shape]
    elements = max(1, budget // max(1, itemsize))
    if source_chunks and math.prod(source_chunks) > elements:
        # a source chunk past the budget is decoded whole anyway: boxes of whole source
        # chunks (and destination blocks) decode each once, within a few such chunks
        pairs = zip(shape, block, source_chunks, strict=True)
        whole = [max(1, min(n, math.lcm(b, c))) for n, b, c in pairs]
        if math.prod(whole) <= 4 * math.prod(source_chunks):
            return tuple(whole)
    for axis, step in enumerate(block):
        inner = math.prod(slab[:axis]) * math.prod(slab[axis + 1 :])  # the rest of a box
        if step * inner > elements and axis < len(shape) - 1:
            slab[axis] = step  # one block along it, and the next axis split
            continue
        fit = max(1, elements // (step * inner)) * step  # whole blocks within the budget
        source = source_chunks[axis] if source_chunks else 0
        if source > 0 and math.lcm(step, source) * inner <= elements:
            both = math.lcm(step, source)
            fit = both * max(1, fit // both)
        slab[axis] = max(1, min(fit, shape[axis]))
        break
    return tuple(slab)


def slabs(shape: Sequence[int], slab: Sequence[int]) -> Iterator[tuple[slice, ...]]:
    """The boxes of ``slab`` 's shape covering ``shape``, in C order.

    Example:
        >>> [tuple((s.start, s.stop) for s in box) for box in slabs((3, 4), (2, 4))]
        [((0, 2), (0, 4)), ((2, 3), (0, 4))]
    """
    starts = [range(0, n, s) for n, s in zip(shape, slab, strict=True)]
    for corner in itertools.product(*starts):
        yield tuple(slice(a, min(a + s, n)) for a, s, n in zip(corner, slab, shape, strict=True))
