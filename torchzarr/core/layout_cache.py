"""``LayoutCache``: a chunk cache as the readers of one chunk layout see it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from torchzarr.core.layouts import EdgeChunks

if TYPE_CHECKING:
    from torchzarr.core.cache import ChunkCache

__all__ = ["CacheKey", "Layout", "LayoutCache"]

# (store identity, array path, chunk coords); for the inner chunk of a sharded array the
# coords are (shard coords, inner chunk coords within the shard)
CacheKey = tuple[str, str, tuple[Any, ...]]
# what a chunk was decoded under (see chunk_layout); None for chunks put without one
Layout = str | None


class LayoutCache:
    """A :class:`ChunkCache` as the readers of one chunk layout use it: what they put is
    tagged with the layout (see :func:`chunk_layout`) and they get only chunks put under
    it, so a handle kept from before an array was replaced and a handle of the new array
    never read each other's chunks. Invalidation is the cache's own.

    Example:
        >>> from torchzarr.core.cache import ChunkCache
        >>> view = LayoutCache(ChunkCache(), "float32 chunks of 4")
        >>> view.put(("mem", "a", (0,)), np.zeros(4), since=view.generation)
        >>> view.get(("mem", "a", (0,))).shape
        (4,)
    """

    __slots__ = ("cache", "edges", "layout")

    def __init__(self, cache: ChunkCache, layout: str, edges: EdgeChunks = ()) -> None:
        self.cache = cache
        self.layout = layout
        self.edges = edges

    def _layout_of(self, coords: tuple[Any, ...]) -> str:
        """The layout, with the extent of a chunk the array's end cuts short (``edges``)."""
        edges = self.edges
        if not edges:
            return self.layout
        cut = ""
        if type(coords[0]) is tuple:  # (shard coords, inner coords)
            shard, inner = coords
            for axis, per_cell, last, extent in edges:
                if shard[axis] * per_cell + inner[axis] == last:
                    cut += f" {axis}:{extent}"
        else:
            for axis, _, last, extent in edges:
                if coords[axis] == last:
                    cut += f" {axis}:{extent}"
        return f"{self.layout} cut{cut}" if cut else self.layout

    @property
    def generation(self) -> int:
        """The cache's generation: take it before fetching; pass it to ``put`` as ``since``."""
        return self.cache.generation

    def get(self, key: CacheKey) -> np.ndarray | None:
        """The chunk held at ``key`` if decoded under this layout, else None (a miss)."""
        return self.cache.get(key, layout=self._layout_of(key[2]))

    def put(self, key: CacheKey, chunk: np.ndarray, *, since: int | None = None) -> None:
        """Keep a copy of ``chunk`` at ``key``, tagged with this layout."""
        self.cache.put(key, chunk, since=since, layout=self._layout_of(key[2]))
