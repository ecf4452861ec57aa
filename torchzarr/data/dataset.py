"""``ZarrDataset``: a map-style dataset over axis 0 that reads a whole batch in one planned read."""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from torchzarr.arguments import optional_callable
from torchzarr.core.cache import ChunkCache
from torchzarr.data.sources import Item, Source, share_cores_in_worker, take_rows
from torchzarr.errors import ArgumentTypeError, BoundsError, InvalidArgumentError, SelectionError

__all__ = ["ZarrDataset"]

_BOOLS = frozenset({bool, np.bool_})


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
        transform: called on each item (a tensor, or the dict) before it is returned
            (:meth:`get_batch`, which returns no items, refuses a dataset that has one).
        cache: True to read through the shared decoded-chunk cache
            (``tz.config.cache_bytes``, one per process), or a given
            :class:`~torchzarr.ChunkCache`; False or None for none. Worth it with
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
        if not (cache is None or isinstance(cache, bool | np.bool_ | ChunkCache)):
            raise ArgumentTypeError(
                f"cache must be True, False, None or a ChunkCache, got {cache!r} "
                f"({type(cache).__name__})"
            )
        src = source if isinstance(source, Source) else Source(source)
        if cache is not None and not isinstance(cache, bool | np.bool_):
            src = src.with_cache(cache)
        elif cache:
            src = src.with_cache(None)  # the shared cache
        self.source = src
        self.transform = transform

    def __len__(self) -> int:
        """The number of samples; raises ShapeMismatchError once an array was resized.

        The samplers ask for it at the start of every epoch in the main process (PyTorch's
        ``RandomSampler``, ``SequentialSampler`` and ``DistributedSampler``), where the
        handle the dataset was given shows a resize with no store round trip: persistent
        DataLoader workers, whose copies of it cannot show one, then never get the epoch.

        Example:
            >>> len(ds)  # doctest: +SKIP
            8
        """
        self.source.check_shapes()
        return len(self.source)

    def __repr__(self) -> str:
        return f"ZarrDataset({self.source!r})"

    def _check(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        share_cores_in_worker()
        if isinstance(indices, Sequence) and _has_bools(indices):
            # (numpy would read [1, True] as [1, 1], and [3, torch.tensor(True)] as [3, 1])
            raise SelectionError(f"dataset indices must be integers, not booleans: {indices!r:.80}")
        try:
            given = np.asarray(indices)
        except ValueError:  # sequences of several lengths: numpy cannot stack them
            given = None
        if given is None or given.ndim > 1:  # e.g. a batch sampler passed as sampler=
            shape = "" if given is None else f" of shape {given.shape}"
            raise SelectionError(
                f"dataset indices must be a flat sequence of integers, got a sequence of "
                f"sequences{shape} ({indices!r:.80}): pass a batch sampler as "
                "DataLoader(batch_sampler=...)"
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
            if isinstance(index, bool | np.bool_) or (
                isinstance(index, torch.Tensor) and index.dtype == torch.bool
            ):
                raise TypeError  # (operator.index reads True as 1)
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
        The transform applies to items, which this never makes: on a dataset with a
        ``transform`` it raises InvalidArgumentError rather than return untransformed data
        (use ``__getitems__``, or a ZarrDataset without the transform).

        Example:
            >>> ds.get_batch([1, 2]).shape  # doctest: +SKIP
            torch.Size([2, 2])
        """
        if self.transform is not None:
            raise InvalidArgumentError(
                f"get_batch returns stacked rows, not items, and cannot apply this dataset's "
                f"per-item transform {self.transform!r:.60}: call __getitems__(indices) (and "
                "collate), or stack untransformed rows with "
                "tz.ZarrDataset(ds.source).get_batch(indices)"
            )
        ids = self._check(indices)
        unique, inverse = np.unique(ids, return_inverse=True)
        data = self.source.read(unique)
        index = inverse.astype(np.intp)
        return self.source.item({name: take_rows(t, index) for name, t in data.items()})


def _has_bools(indices: Sequence[Any]) -> bool:
    """Whether a sequence of indices holds a boolean: a bool, or a bool tensor or array.

    Example:
        >>> _has_bools([3, torch.tensor(True)]), _has_bools([3, np.int64(1)])
        (True, False)
    """
    kinds = set(map(type, indices))
    if not _BOOLS.isdisjoint(kinds):
        return True
    if not any(issubclass(kind, torch.Tensor | np.ndarray) for kind in kinds):
        return False
    return any(
        (value.dtype is torch.bool) if isinstance(value, torch.Tensor) else _numpy_bool(value)
        for value in indices
    )


def _numpy_bool(value: Any) -> bool:
    return isinstance(value, np.ndarray) and value.dtype == np.bool_


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
