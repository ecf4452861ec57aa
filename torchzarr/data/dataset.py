"""``ZarrDataset``: a map-style dataset over axis 0 that reads a whole batch in one planned read."""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from torchzarr.arguments import optional_callable
from torchzarr.data.sources import Item, Source, share_cores_in_worker, take_rows
from torchzarr.errors import BoundsError, SelectionError

__all__ = ["ZarrDataset"]


class ZarrDataset(Dataset[Any]):
    """Map-style dataset over axis 0 of an Array, a Group or a dict of aligned arrays.

    An item is a tensor (one array) or a dict of tensors (a group or a dict). The DataLoader
    calls :meth:`__getitems__` with a whole batch of indices: they are sorted and read with
    one planned read per array, so every chunk the batch touches is fetched and decoded
    once, in parallel, however the indices are shuffled. Pair it with
    :class:`~torchzarr.ChunkBlockSampler` so that batches touch few chunks.

    Args:
        source: an Array, a Group, a dict of arrays sharing their first dimension, or a
            path/URL opened read-only.
        transform: called on each item (a tensor, or the dict) before it is returned.
        cache: read through the shared decoded-chunk cache (``tz.config.cache_bytes``, one
            per process), or a given :class:`~torchzarr.ChunkCache`. Worth it with
            ``ChunkBlockSampler``, whose successive batches come from the same few chunks.

    Example:
        >>> import torch, torchzarr as tz
        >>> arr = tz.create_array("memory://", shape=(8, 2), dtype=torch.float32, chunks=(4, 2))
        >>> arr[:] = torch.arange(16.0).reshape(8, 2)
        >>> ds = tz.ZarrDataset(arr)
        >>> loader = torch.utils.data.DataLoader(ds, batch_size=4, shuffle=True)
        >>> next(iter(loader)).shape
        torch.Size([4, 2])
    """

    def __init__(
        self,
        source: Any,
        transform: Callable[[Item], Any] | None = None,
        cache: Any = False,
    ) -> None:
        transform = optional_callable("transform", transform)
        src = source if isinstance(source, Source) else Source(source)
        if cache is not False and cache is not None:
            src = src.with_cache(None if cache is True else cache)
        self.source = src
        self.transform = transform

    def __len__(self) -> int:
        return len(self.source)

    def __repr__(self) -> str:
        return f"ZarrDataset({self.source!r})"

    def _check(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        share_cores_in_worker()
        given = np.asarray(indices)
        if given.ndim > 1:  # e.g. a batch sampler passed as sampler=: batches of batches
            raise SelectionError(
                f"dataset indices must be a flat sequence, got shape {given.shape}: pass a "
                "batch sampler as DataLoader(batch_sampler=...)"
            )
        n = len(self.source)
        flat = given.reshape(-1)
        if flat.size and flat.dtype.kind in "fO" and not isinstance(indices, np.ndarray):
            # Python ints past int64 make numpy pick float64 or object: read them one by one.
            return _python_ids(list(indices) if given.ndim else [indices], n, given.dtype)
        if flat.size and flat.dtype.kind not in "iu":
            raise SelectionError(
                f"dataset indices must be integers, got {given.dtype} values: {indices!r:.80}"
            )
        if flat.dtype.kind == "u":  # checked before the cast, which would wrap 2**64 - 1 to -1
            bad = np.flatnonzero(flat >= n)
            ids = flat
        else:
            ids = flat.astype(np.int64, copy=False)
            ids = np.where(ids < 0, ids + n, ids)
            bad = np.flatnonzero((ids < 0) | (ids >= n))
        if bad.size:
            raise BoundsError(f"index {flat[bad[0]]} is out of range for a dataset of {n} samples")
        return ids.astype(np.int64, copy=False)

    def __getitem__(self, index: int) -> Any:
        try:
            position = operator.index(index)  # ints, numpy ints, one-element int tensors
        except TypeError:
            raise SelectionError(f"a dataset index must be an integer, got {index!r}") from None
        return self.__getitems__([position])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[Any]:
        """The items at ``indices`` (any order, repeats allowed), read in one planned read.

        Example:
            >>> [t.tolist() for t in ds.__getitems__([5, 0])]  # doctest: +SKIP
            [[10.0, 11.0], [0.0, 1.0]]
        """
        ids = self._check(indices)
        unique, inverse = np.unique(ids, return_inverse=True)
        data = self.source.read(unique)
        items: list[Any] = []
        seen: set[int] = set()
        for r in inverse.tolist():
            # A repeated index (sampling with replacement) gets its own copy, taken before
            # any transform runs: items are independent, as ``ds[i]`` twice would be.
            rows = {name: t[r].clone() if r in seen else t[r] for name, t in data.items()}
            seen.add(r)
            items.append(self.source.item(rows))
        if self.transform is not None:
            items = [self.transform(item) for item in items]
        return items

    def get_batch(self, indices: Sequence[int]) -> Any:
        """The items at ``indices`` already stacked: a tensor, or a dict of tensors.

        Cheaper than ``__getitems__`` plus collation when no per-item transform is needed.

        Example:
            >>> ds.get_batch([1, 2]).shape  # doctest: +SKIP
            torch.Size([2, 2])
        """
        ids = self._check(indices)
        unique, inverse = np.unique(ids, return_inverse=True)
        data = self.source.read(unique)
        index = inverse.astype(np.intp)
        return self.source.item({name: take_rows(t, index) for name, t in data.items()})


def _python_ids(values: list[Any], n: int, dtype: np.dtype) -> np.ndarray:
    """Indices given as Python objects, as int64 rows of a dataset of ``n`` samples.

    Example:
        >>> _python_ids([1, -1], 10, np.dtype(object)).tolist()
        [1, 9]
    """
    ids: list[int] = []
    for value in values:
        try:
            if isinstance(value, bool | np.bool_):
                raise TypeError
            position = operator.index(value)
        except TypeError:
            raise SelectionError(
                f"dataset indices must be integers, got {dtype} values: {values!r:.80}"
            ) from None
        if not -n <= position < n:
            raise BoundsError(f"index {position} is out of range for a dataset of {n} samples")
        ids.append(position + n if position < 0 else position)
    return np.array(ids, dtype=np.int64)
