"""Chunk shape choice: user chunk specs normalised, and automatic chunks of about 1-4 MiB."""

from __future__ import annotations

import functools
import math
import operator
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from torchzarr.errors import ChunkDecodeError, InvalidArgumentError, MetadataError

__all__ = [
    "check_stored_chunks_fit",
    "fits_in_memory",
    "grid_coords",
    "guess_chunks",
    "normalize_chunks",
    "normalize_shape",
]

_MAX_BYTES = 4 << 20  # halving from above this lands in 2-4 MiB
_UNKNOWN_MEMORY = 1 << 48  # where the platform does not say how much memory it has


def grid_coords(grid: Sequence[int]) -> Iterator[tuple[int, ...]]:
    """Every position of a grid of shape ``grid``, in C order, one at a time: memory stays
    the same whatever the number of positions (``itertools.product`` of ranges first holds
    every coordinate of every axis).

    Example:
        >>> list(grid_coords((2, 2))), list(grid_coords(())), list(grid_coords((3, 0)))
        ([(0, 0), (0, 1), (1, 0), (1, 1)], [()], [])
    """
    sizes = tuple(int(g) for g in grid)
    if any(g <= 0 for g in sizes):
        return
    coords = [0] * len(sizes)
    while True:
        yield tuple(coords)
        for axis in reversed(range(len(sizes))):
            coords[axis] += 1
            if coords[axis] < sizes[axis]:
                break
            coords[axis] = 0
        else:
            return


def normalize_shape(shape: Any) -> tuple[int, ...]:
    """A shape as a tuple of non-negative Python ints.

    Example:
        >>> normalize_shape(5), normalize_shape([2, 3])
        ((5,), (2, 3))
    """
    if _is_int(shape):
        shape = (shape,)
    try:
        out = tuple(operator.index(s) for s in shape)  # ints and numpy ints, never 4.5
    except TypeError:
        raise MetadataError(f"shape must be a sequence of ints, got {shape!r}") from None
    if any(isinstance(s, bool | np.bool_) for s in shape) or any(not 0 <= s < 2**63 for s in out):
        raise MetadataError(f"shape entries must be ints in [0, 2**63), got {shape!r}")
    return out


def _is_int(value: Any) -> bool:
    """An int or numpy integer, not a bool."""
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def guess_chunks(shape: Sequence[int], itemsize: int) -> tuple[int, ...]:
    """Chunks of about 1-4 MiB, shaped like the array, halving the largest axis first.

    Example:
        >>> guess_chunks((10_000, 1000), 4)
        (625, 1000)
    """
    chunks = [max(1, s) for s in shape]
    if not chunks:
        return ()
    while math.prod(chunks) * itemsize > _MAX_BYTES:
        axis = max(range(len(chunks)), key=lambda i: chunks[i])
        if chunks[axis] == 1:
            break
        chunks[axis] = -(-chunks[axis] // 2)
    return tuple(chunks)


def normalize_chunks(chunks: Any, shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    """Turn a user's ``chunks`` into a full chunk shape.

    ``None``/``"auto"``/``True`` picks automatically; an int applies to every axis; in a
    tuple, ``-1`` or ``None`` means the whole axis.

    Example:
        >>> normalize_chunks((100, -1), (1000, 30), 4)
        (100, 30)
    """
    if chunks is None or chunks is True or (isinstance(chunks, str) and chunks == "auto"):
        return guess_chunks(shape, itemsize)
    if _is_int(chunks):
        chunks = (chunks,) * len(shape)
    if isinstance(chunks, str):
        raise MetadataError(f"chunks must be an int, a sequence or 'auto', got {chunks!r}")
    try:
        chunks = tuple(chunks)
    except TypeError:
        raise MetadataError(f"chunks must be an int or a sequence, got {chunks!r}") from None
    if len(chunks) != len(shape):
        raise MetadataError(
            f"chunks {chunks!r} have {len(chunks)} dims but shape {shape!r} has {len(shape)}"
        )
    out = []
    for axis, (c, s) in enumerate(zip(chunks, shape, strict=True)):
        if c is None or c == -1:
            c = max(s, 1)
        if not _is_int(c) or c < 1:
            raise MetadataError(f"chunk size on axis {axis} must be a positive int, got {c!r}")
        out.append(int(c))
    return tuple(out)


@functools.cache
def _memory_bytes() -> int:
    """This machine's physical memory in bytes."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows), or no such name
        return _UNKNOWN_MEMORY


def fits_in_memory(nbytes: int) -> bool:
    """Whether ``nbytes`` (a decoded chunk) fit in this machine's physical memory.

    Metadata may give chunks far larger than any array (zarr-python reads such arrays,
    their chunks missing, as the fill value): readers that set a chunk's buffer aside
    before they know whether the chunk is stored must not take those.

    Example:
        >>> fits_in_memory(4 << 20), fits_in_memory(2**42 * 4096)
        (True, False)
    """
    return nbytes <= _memory_bytes()


def check_chunks_fit(spec: Any, what: str) -> None:
    """Raise if a chunk of ``spec`` (a :class:`~torchzarr.codecs.base.ChunkSpec`) is larger
    than this machine's memory: a write builds whole chunks, so it cannot write ``what``.

    Example:
        >>> from torchzarr.codecs.base import ChunkSpec
        >>> check_chunks_fit(ChunkSpec((4,), np.dtype("f4"), 0), "array /a")
    """
    if not fits_in_memory(spec.nbytes):
        raise InvalidArgumentError(
            f"cannot write to {what}: its chunk shape {spec.shape} of {spec.dtype} takes "
            f"{spec.nbytes} bytes, more than this machine's memory ({_memory_bytes()} bytes); "
            "rechunk it (tz.from_array with smaller chunks) to write it"
        )


def check_stored_chunks_fit(fetched: Mapping[str, Any], spec: Any, store: Any) -> None:
    """Raise if a chunk ``fetched`` holds (key -> bytes, or None where missing) decodes,
    by ``spec`` (its :class:`~torchzarr.codecs.base.ChunkSpec`), to more bytes than this
    machine's memory: it cannot be decoded here (missing chunks read as the fill value).

    Example:
        >>> from torchzarr.codecs.base import ChunkSpec
        >>> check_stored_chunks_fit({"a/c/0": b"..."}, ChunkSpec((4,), np.dtype("f4"), 0), None)
    """
    if fits_in_memory(spec.nbytes):
        return
    stored = next((key for key, data in fetched.items() if data is not None), None)
    if stored is not None:
        raise ChunkDecodeError(
            f"cannot decode chunk {stored!r} in {store!r}: its chunk shape {spec.shape} of "
            f"{spec.dtype} decodes to {spec.nbytes} bytes, more than this machine's memory "
            f"({_memory_bytes()} bytes)"
        )
