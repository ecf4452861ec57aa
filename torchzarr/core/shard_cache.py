"""The inner chunks of a shard a selection touches, and reads of sharded arrays through the
decoded-chunk cache, whose unit is the inner chunk (the unit partial reads decode).

An inner chunk is cached under ``(store identity, array path, (shard coords, inner coords))``.
A read looks up every inner chunk it touches first: a shard whose touched inner chunks are
all cached is served without reading its index; of the others only the inner chunks not
cached are fetched, each decoded whole (straight into the output where it lands whole),
offered to the cache, and its part copied into place.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from torchzarr.core.fastpath import direct_target
from torchzarr.core.indexing import basic_indexer

__all__ = ["inner_region", "read_cached", "touched_chunks", "touched_count"]


def inner_region(coords: tuple[int, ...], inner: tuple[int, ...]) -> tuple[Any, ...]:
    """Where an inner chunk lies in its shard: an index giving a view, also when 0-d.

    Example:
        >>> inner_region((1, 0), (2, 3))
        (slice(2, 4, None), slice(0, 3, None), Ellipsis)
    """
    return (*(slice(c * k, (c + 1) * k) for c, k in zip(coords, inner, strict=True)), Ellipsis)


def _point_axes(selection: tuple[Any, ...]) -> list[int]:
    """The axes a selection indexes pointwise: those of two or more index arrays spread over
    the same broadcast dimensions (a vindex, points mixed with slices, or points behind
    leading aranges); none for an orthogonal selection, whose open mesh spreads each array
    over a dimension of its own."""
    arrays = {i: s for i, s in enumerate(selection) if isinstance(s, np.ndarray) and s.ndim}
    depth = max((a.ndim for a in arrays.values()), default=0)
    spreads: dict[frozenset[int], list[int]] = {}
    for axis, a in arrays.items():
        padded = (1,) * (depth - a.ndim) + a.shape
        spreads.setdefault(frozenset(d for d, n in enumerate(padded) if n > 1), []).append(axis)
    paired = [axes for spread, axes in spreads.items() if spread and len(axes) >= 2]
    return max(paired, key=len, default=[])


def _per_axis(
    selection: tuple[Any, ...], inner: tuple[int, ...], shard: tuple[int, ...], skip: list[int]
) -> list[list[int]]:
    """The inner chunk indexes the selection reaches along each axis not in ``skip``."""
    per_axis: list[list[int]] = []
    for axis, (item, k, extent) in enumerate(zip(selection, inner, shard, strict=True)):
        if axis in skip:
            continue
        if isinstance(item, slice):
            picks = range(*item.indices(extent))
            if not picks:
                per_axis.append([])
            elif picks.step > k:
                per_axis.append(sorted({i // k for i in picks}))
            else:
                per_axis.append(list(range(picks[0] // k, picks[-1] // k + 1)))
        elif isinstance(item, np.ndarray):
            per_axis.append(np.unique(item.reshape(-1) // k).tolist())
        else:
            per_axis.append([int(item) // k])
    return per_axis


def _touched_points(
    selection: tuple[Any, ...], inner: tuple[int, ...], axes: list[int]
) -> list[tuple[int, ...]]:
    """The distinct inner chunks the points reach on the pointwise ``axes``."""
    points = np.broadcast_arrays(*(selection[a] for a in axes))
    coords = np.stack([p.reshape(-1) // inner[a] for p, a in zip(points, axes, strict=True)], 1)
    return [tuple(int(v) for v in row) for row in np.unique(coords, axis=0)]


def touched_chunks(
    selection: tuple[Any, ...], inner: tuple[int, ...], shard: tuple[int, ...]
) -> list[tuple[int, ...]]:
    """Inner chunks a chunk selection reaches (a superset is fine, a subset is not).

    Example:
        >>> touched_chunks((slice(1, 5), 0), (2, 2), (6, 4))
        [(0, 0), (1, 0), (2, 0)]
        >>> touched_chunks((np.array([0, 3]), slice(0, 2), np.array([1, 3])), (2, 2, 2), (4, 2, 4))
        [(0, 0, 0), (1, 0, 1)]
    """
    points = _point_axes(selection)
    axes = _per_axis(selection, inner, shard, points)
    if not points:
        return [tuple(c) for c in itertools.product(*axes)]
    rest = [a for a in range(len(selection)) if a not in points]
    touched = []
    for point, others in itertools.product(
        _touched_points(selection, inner, points), itertools.product(*axes)
    ):
        coords = dict(zip(points, point, strict=True)) | dict(zip(rest, others, strict=True))
        touched.append(tuple(coords[a] for a in range(len(selection))))
    return touched


def touched_count(
    selection: tuple[Any, ...], inner: tuple[int, ...], shard: tuple[int, ...]
) -> int:
    """How many inner chunks :func:`touched_chunks` gives, without listing them when orthogonal.

    Example:
        >>> touched_count((slice(None), slice(None)), (2, 2), (600, 400))
        60000
    """
    points = _point_axes(selection)
    reached = math.prod(len(axis) for axis in _per_axis(selection, inner, shard, points))
    return reached * len(_touched_points(selection, inner, points)) if points else reached


def read_cached(
    reader: Any,
    projections: Sequence[Any],
    out: np.ndarray,
    run_parallel: Any,
    files: Any,
    settled: Callable[[], bool],
) -> tuple[int, int, int]:
    """Fill ``out`` for projections of whole or partial shards through the cache of
    ``reader.source`` (a ``ShardReader``); ``files`` are the read's local shard files or
    None, as for ``ShardReader.read``. Returns the inner chunks fetched, those not stored
    (read as the fill value, not cached) and the bytes fetched.

    The fetched inner chunks are cached only if ``settled()`` says, once they are decoded,
    that no write overlapped the read (else the caller reads again).

    Example:
        >>> read_cached(reader, projections, out, run_parallel, None, lambda: True)  # doctest: +SKIP
    """
    source, spec, inner = reader.source, reader.spec, reader.inner_shape
    cache = source.cache
    since = cache.generation  # taken before fetching: a write meanwhile keeps ours out
    identity, path = source.store.identity, source.path
    looked_up: list[tuple[Any, str, dict[tuple[int, ...], np.ndarray | None]]] = []
    needed: list[str] = []
    for p in projections:
        chunks = {
            c: cache.get((identity, path, (p.chunk_coords, c)))
            for c in touched_chunks(p.chunk_selection, inner, spec.shape)
        }
        key = source.key(p.chunk_coords)
        if any(chunk is None for chunk in chunks.values()):
            needed.append(key)
        looked_up.append((p, key, chunks))
    indexes = reader.indexes(needed, files) if needed else {}
    plan = _Plan(spec, inner)
    for p, key, chunks in looked_up:
        index = indexes.get(key)  # None: the shard is not stored (or was not needed)
        if all(isinstance(s, slice) for s in p.out_selection) and all(
            isinstance(s, slice | int) for s in p.chunk_selection
        ):
            plan.scatter(p, key, index, chunks, out[(*p.out_selection, Ellipsis)])
        else:
            plan.through_scratch(p, key, index, chunks)
    fetched = reader.pieces.fetch(plan.pieces, run_parallel, files)
    if settled():
        for coords, chunk in plan.fresh:
            cache.put((identity, path, coords), chunk, since=since)
    for target, chunk, selection in plan.copies:
        target[...] = chunk[selection]
    for p, scratch in plan.scratches:
        out[p.out_selection] = scratch[p.chunk_selection]
    return len(plan.pieces), plan.missing, fetched


class _Plan:
    """What a cached read does with each inner chunk: copy it from the cache, fill it, or
    fetch it (straight into the output where it lands whole, else into a buffer), keep it
    in the cache and copy its part."""

    def __init__(self, spec: Any, inner: tuple[int, ...]) -> None:
        self.spec, self.inner, self.size = spec, inner, math.prod(inner)
        self.pieces: list[Any] = []  # as PieceFetcher.fetch takes them
        self.fresh: list[tuple[Any, np.ndarray]] = []  # (cache coords, chunk) once fetched
        self.copies: list[tuple[np.ndarray, np.ndarray, Any]] = []  # (out view, chunk, sel)
        self.scratches: list[tuple[Any, np.ndarray]] = []
        self.missing = 0

    def _stored(self, index: Any, c: tuple[int, ...]) -> tuple[int, int] | None:
        """Where inner chunk ``c`` lies in its shard; None, counted, when it is not stored."""
        stored = None if index is None else index.get(c)
        if stored is None:
            self.missing += 1
        return stored

    def _fetch(self, key: str, stored: Any, shard: Any, c: tuple[int, ...], target: Any) -> None:
        """Fetch inner chunk ``c`` into ``target`` (the whole chunk's memory), then cache it."""
        self.pieces.append((key, *stored, target, c))
        self.fresh.append(((shard, c), target))

    def scatter(
        self, p: Any, key: str, index: Any, chunks: dict[Any, Any], view: np.ndarray
    ) -> None:
        """A basic selection: each inner chunk's part straight into ``view``, the shard's
        part of the output."""
        spec = self.spec
        for ip in basic_indexer(p.chunk_selection, spec.shape, self.inner):
            c = ip.chunk_coords
            chunk = chunks[c]
            if chunk is not None:
                view[ip.out_selection] = chunk[ip.chunk_selection]
                continue
            stored = self._stored(index, c)
            if stored is None:
                view[ip.out_selection] = spec.fill_value
                continue
            target = direct_target(view, ip, self.inner, self.size)
            if target is None:  # lands in part: decoded whole aside, its part copied after
                target = np.empty(self.inner, dtype=spec.dtype)
                self.copies.append(
                    (view[(*ip.out_selection, Ellipsis)], target, ip.chunk_selection)
                )
            self._fetch(key, stored, p.chunk_coords, c, target)

    def through_scratch(self, p: Any, key: str, index: Any, chunks: dict[Any, Any]) -> None:
        """Any other selection: the touched inner chunks into a shard-sized scratch."""
        spec = self.spec
        scratch = np.empty(spec.shape, dtype=spec.dtype)
        for c, chunk in chunks.items():
            region = scratch[inner_region(c, self.inner)]
            if chunk is not None:
                region[...] = chunk
                continue
            stored = self._stored(index, c)
            if stored is None:
                region[...] = spec.fill_value
            else:
                self._fetch(key, stored, p.chunk_coords, c, region)
        self.scratches.append((p, scratch))
