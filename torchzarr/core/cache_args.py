"""Checks of what a ChunkCache's methods are given: keys, array places, coords and grids."""

from __future__ import annotations

from typing import Any

from torchzarr.arguments import whole_number
from torchzarr.core.layout_cache import CacheKey
from torchzarr.errors import ArgumentTypeError, InvalidArgumentError
from torchzarr.storage.locations import location

__all__ = ["Entry", "chunk_coords", "grid_shape", "place", "since", "where"]

Entry = tuple[str, tuple[Any, ...]]  # (location, coords): how a cache holds its chunks


def where(key: CacheKey) -> Entry:
    """Where the chunk of a cache key ``(store identity, array path, chunk coords)`` lies.

    Example:
        >>> where(("mem", "a", (0,)))[1]
        (0,)
    """
    if (
        type(key) is not tuple
        or len(key) != 3
        or not (isinstance(key[0], str) and isinstance(key[1], str) and type(key[2]) is tuple)
    ):
        raise ArgumentTypeError(
            f"a chunk cache key is (store identity, array path, chunk coords), got {key!r:.200}"
        )
    return location(key[0], key[1]), key[2]


def place(method: str, identity: Any, path: Any) -> str:
    """Where the chunks of the array at ``path`` lie, ``method``'s arguments checked: the
    store's ``identity`` string (not the store) and the array's path string.

    Example:
        >>> place("invalidate", None, "a")
        Traceback (most recent call last):
        ...
        torchzarr.errors.ArgumentTypeError: ChunkCache.invalidate identity is a store's identity string (store.identity), got NoneType: None
    """
    if not isinstance(identity, str):
        raise ArgumentTypeError(
            f"ChunkCache.{method} identity is a store's identity string (store.identity), "
            f"got {type(identity).__name__}: {identity!r:.200}"
        )
    if not isinstance(path, str):
        raise ArgumentTypeError(
            f"ChunkCache.{method} path is the array's path string, got "
            f"{type(path).__name__}: {path!r:.200}"
        )
    return location(identity, path)


def chunk_coords(coords: Any) -> None:
    """Refuse ``coords`` unless it is a list (or tuple) of chunk coords tuples.

    Example:
        >>> chunk_coords([(0,), ((0,), (1,))])  # chunks, and a shard's inner chunk
    """
    if not isinstance(coords, list | tuple) or not all(type(c) is tuple for c in coords):
        raise ArgumentTypeError(f"coords is a list of chunk coords tuples, got {coords!r:.200}")


def grid_shape(grid: Any) -> tuple[int, ...]:
    """``grid`` (the shape of a chunk grid) as a tuple of ints >= 0, else refused.

    Example:
        >>> grid_shape([4, 2])
        (4, 2)
    """
    try:
        return tuple(whole_number("grid", g, 0) for g in grid)
    except (TypeError, InvalidArgumentError):
        raise ArgumentTypeError(
            "ChunkCache.invalidate_outside grid is the shape of the chunk grid, a sequence of "
            f"ints >= 0, got {type(grid).__name__}: {grid!r:.200}"
        ) from None


def since(value: Any) -> int | None:
    """The ``since`` of ``ChunkCache.put``: None or a generation (an int >= 0).

    Example:
        >>> since(None) is None
        True
    """
    if value is None or (type(value) is int and value >= 0):
        return value
    return whole_number("ChunkCache.put since (a generation)", value, 0)
