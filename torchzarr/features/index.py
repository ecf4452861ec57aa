"""The feature store's id index: id -> row lookup, gather plans, and the lock guarding publication."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data._utils.collate import collate, default_collate_fn_map

from torchzarr.errors import (
    InvalidArgumentError,
    MetadataError,
    ShapeMismatchError,
    UnsupportedDtypeError,
    ValueRangeError,
)

__all__ = [
    "FeatureBatch",
    "GatherPlan",
    "IdIndex",
    "ReadWriteLock",
    "as_ids",
    "collate_feature_batches",
    "holds_only_ints",
    "one_id",
    "plan_gather",
]

_INT64 = (-(2**63), 2**63 - 1)


def as_ids(ids: Any, what: str = "ids") -> np.ndarray:
    """Entity ids (a tensor on any device, a numpy array, a sequence or one int) as 1-d int64.
    No ids at all are taken whatever their dtype (``torch.tensor([])`` is float32, as
    ``np.array([])`` is float64 and ``[]`` has none).

    Example:
        >>> as_ids(torch.tensor([3, 1])).tolist(), as_ids(torch.tensor([])).tolist()
        ([3, 1], [])
    """
    if isinstance(ids, torch.Tensor):
        if ids.is_nested or ids.layout != torch.strided:
            kind = "a nested tensor" if ids.is_nested else f"a {ids.layout} tensor"
            raise InvalidArgumentError(f"{what} are {kind}: pass a dense 1-d tensor of ints")
        not_ints = ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool
        if not_ints and ids.numel():
            raise UnsupportedDtypeError(f"{what} must be integers, got a tensor of {ids.dtype}")
        if ids.device.type == "meta":
            raise InvalidArgumentError(f"{what} are a meta tensor: it holds no values")
        if not_ints:  # empty: numpy lacks some of torch's dtypes (bfloat16)
            ids = torch.zeros(ids.shape, dtype=torch.int64)
        ids = ids.detach().cpu().numpy()
    try:
        arr = np.asarray(ids)
    except ValueError as err:  # nested sequences of unequal lengths
        raise ShapeMismatchError(
            f"{what} must be a 1-d sequence of ints, got nested sequences of unequal "
            f"lengths ({err})"
        ) from None
    if arr.size == 0 and arr.dtype.kind not in "iu":
        arr = arr.astype(np.int64)
    if arr.dtype.kind == "f" and not isinstance(ids, np.ndarray) and holds_only_ints(ids):
        # ints numpy promotes to float64 (int64 with uint64, ints past int64): taken exactly
        arr = np.array(ids, dtype=object)
    if arr.dtype == object:  # a pandas object column, Python ints past what numpy holds
        arr = _object_ids(arr, what)
    if arr.dtype.kind not in "iu":
        raise UnsupportedDtypeError(f"{what} must be integers, got values of dtype {arr.dtype}")
    if arr.dtype == np.uint64 and arr.size and int(arr.max()) > np.iinfo(np.int64).max:
        raise ValueRangeError(f"{what} must fit in int64; got {int(arr.max())}")
    if arr.ndim > 1:
        raise ShapeMismatchError(f"{what} must be 1-d, got shape {arr.shape}")
    return np.ascontiguousarray(arr.reshape(-1), dtype=np.int64)


def _object_ids(arr: np.ndarray, what: str) -> np.ndarray:
    """An object array of ints (Python or numpy, each within int64) as int64; any other
    value is refused, named."""
    flat = arr.reshape(-1)
    for value in flat:
        if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer):
            raise UnsupportedDtypeError(
                f"{what} must be integers, got {value!r} ({type(value).__name__}) "
                "in an array of dtype object"
            )
        if not _INT64[0] <= int(value) <= _INT64[1]:
            raise ValueRangeError(f"{what} must fit in int64; got {int(value)}")
    return np.array([int(value) for value in flat], dtype=np.int64).reshape(arr.shape)


def holds_only_ints(ids: Any) -> bool:
    """Whether ``ids`` (a list or tuple, nested or not) holds Python or numpy ints only
    (no bools): those numpy may promote to float64 yet that convert exactly one by one.

    Example:
        >>> holds_only_ints([np.int64(1), [2**63]]), holds_only_ints([1, True])
        (True, False)
    """
    if isinstance(ids, list | tuple):
        return all(holds_only_ints(value) for value in ids)
    return isinstance(ids, int | np.integer) and not isinstance(ids, bool | np.bool_)


def one_id(entity_id: object) -> int | None:
    """``entity_id`` as an int when it is one id a store can hold (an int, numpy integer,
    or 0-d or one-element integer array or tensor within int64), else None: ``in``
    answers False then.

    Example:
        >>> one_id(torch.tensor([7])), one_id(np.array(7)), one_id(2**64), one_id(1.0)
        (7, 7, None, None)
    """
    if isinstance(entity_id, np.ndarray):  # a 0-d or one-element array: its scalar
        if entity_id.size != 1:
            return None
        entity_id = entity_id.reshape(-1)[0]
    if isinstance(entity_id, torch.Tensor):  # a 0-d or one-element integer tensor
        dtype = entity_id.dtype
        if entity_id.is_nested or entity_id.numel() != 1 or entity_id.is_meta:
            return None
        if dtype.is_floating_point or dtype.is_complex or dtype == torch.bool:
            return None
        entity_id = int(entity_id.to_dense().reshape(-1)[0].item())
    if isinstance(entity_id, bool) or not isinstance(entity_id, int | np.integer):
        return None
    value = int(entity_id)
    return value if _INT64[0] <= value <= _INT64[1] else None  # ids are int64


@dataclass(frozen=True)
class IdIndex:
    """An immutable id -> row map: the stored ids of rows ``0..num_rows-1``, sorted for lookup.

    A new index is built for every published write, so a reader holding one never sees it
    change. Lookups are one ``np.searchsorted`` over the sorted copy.

    Example:
        >>> index = IdIndex.from_ids(np.array([30, 10, 20]))
        >>> rows, found = index.lookup(np.array([20, 99]))
        >>> rows[found].tolist(), found.tolist()
        ([2], [True, False])
    """

    sorted_ids: np.ndarray
    rows: np.ndarray  # rows[i] is the row of sorted_ids[i]

    @classmethod
    def from_ids(cls, ids: np.ndarray, explain: Callable[[int], str] | None = None) -> IdIndex:
        """The index of stored ids (row ``i`` holds ``ids[i]``); duplicates are a corrupt
        store: :class:`~torchzarr.errors.MetadataError`, saying ``explain(id)`` when given."""
        ids = np.asarray(ids, dtype=np.int64)
        order = np.argsort(ids, kind="stable")
        sorted_ids = ids[order]
        dup = np.flatnonzero(sorted_ids[1:] == sorted_ids[:-1])
        if dup.size:
            twice = int(sorted_ids[dup[0]])
            raise MetadataError(
                explain(twice)
                if explain is not None
                else f"the feature store's ids array holds id {twice} more than once"
            )
        return cls(sorted_ids, order.astype(np.int64))

    @property
    def num_rows(self) -> int:
        """Number of indexed rows."""
        return int(self.sorted_ids.size)

    def lookup(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(rows, found)`` for int64 ``ids``; ``rows`` is meaningless where ``found`` is False.

        Example:
            >>> IdIndex.from_ids(np.array([5])).lookup(np.array([5]))[0].tolist()
            [0]
        """
        n = self.sorted_ids.size
        if n == 0:
            return np.zeros(ids.size, dtype=np.int64), np.zeros(ids.size, dtype=bool)
        pos = np.minimum(np.searchsorted(self.sorted_ids, ids), n - 1)
        found = self.sorted_ids[pos] == ids
        return self.rows[pos], found

    def extended(self, new_ids: np.ndarray) -> IdIndex:
        """The index with ``new_ids`` (absent, unique) appended as rows ``num_rows...``.

        Example:
            >>> IdIndex.from_ids(np.array([4, 2])).extended(np.array([3])).lookup(np.array([3]))[0]
            array([2])
        """
        if new_ids.size == 0:
            return self
        new_rows = np.arange(self.num_rows, self.num_rows + new_ids.size, dtype=np.int64)
        order = np.argsort(new_ids, kind="stable")
        new_sorted = new_ids[order]
        at = np.searchsorted(self.sorted_ids, new_sorted)
        return IdIndex(
            np.insert(self.sorted_ids, at, new_sorted), np.insert(self.rows, at, new_rows[order])
        )

    def ids_in_row_order(self) -> np.ndarray:
        """The ids of rows ``0..num_rows-1``, in row order."""
        out = np.empty_like(self.sorted_ids)
        out[self.rows] = self.sorted_ids
        return out


@dataclass(frozen=True)
class GatherPlan:
    """How to serve a batch of ids: the distinct rows to read, then how to lay them out.

    Attributes:
        rows: distinct rows to read, ascending (each chunk is then touched once).
        select: for each requested id, its position among ``rows`` (0 where missing).
        mask: for each requested id, True when the store holds it.
        all_found: ``mask.all()``.
        identity: the ids are distinct, all found and already in row order.
    """

    rows: np.ndarray
    select: torch.Tensor
    mask: np.ndarray
    all_found: bool
    identity: bool


def plan_gather(index: IdIndex, query: np.ndarray) -> GatherPlan:
    """Deduplicate and sort ``query``'s rows; remember the caller's order and the misses.

    Example:
        >>> plan = plan_gather(IdIndex.from_ids(np.array([10, 20, 30])), np.array([30, 10, 30]))
        >>> plan.rows.tolist(), plan.select.tolist()
        ([0, 2], [1, 0, 1])
    """
    unique, inverse = np.unique(query, return_inverse=True)
    rows, found = index.lookup(unique)
    rows_found = rows[found]
    order = np.argsort(rows_found, kind="stable")
    position = np.empty(rows_found.size, dtype=np.int64)
    position[order] = np.arange(rows_found.size, dtype=np.int64)
    to_gathered = np.zeros(unique.size, dtype=np.int64)
    to_gathered[found] = position
    select = to_gathered[inverse.reshape(-1)]
    mask = found[inverse.reshape(-1)]
    all_found = bool(found.all())
    identity = (
        all_found
        and unique.size == query.size
        and bool(np.all(select == np.arange(query.size, dtype=np.int64)))
    )
    return GatherPlan(rows_found[order], torch.from_numpy(select), mask, all_found, identity)


class FeatureBatch(dict[str, torch.Tensor]):
    """Features of a batch of ids, by name; ``mask`` is True where an id was found.

    Example:
        >>> batch = FeatureBatch(torch.tensor([True, False]))
        >>> batch["x"] = torch.zeros(2)
        >>> sorted(batch), batch.mask.tolist()
        (['x'], [True, False])
    """

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.mask = mask

    def pin_memory(self) -> FeatureBatch:
        """The batch in pinned memory, mask included (what a DataLoader with
        ``pin_memory=True`` calls; its own copy of a mapping would leave the mask unpinned).

        Example:
            >>> FeatureBatch(torch.tensor([True])).pin_memory().mask.is_pinned()  # doctest: +SKIP
            True
        """
        pinned = FeatureBatch(self.mask.pin_memory())
        for name, values in self.items():
            pinned[name] = values.pin_memory()
        return pinned


def collate_feature_batches(
    batch: Sequence[FeatureBatch], *, collate_fn_map: dict[Any, Any] | None = None
) -> FeatureBatch:
    """DataLoader's ``default_collate`` of samples that are FeatureBatches: each feature and
    the masks are collated alike (stacked, by default), so ``mask[i]`` belongs to sample i.
    Registered in ``default_collate_fn_map`` (torch's documented way to extend it), which
    otherwise keeps only the first sample's mask.

    Example:
        >>> from torch.utils.data import default_collate
        >>> one = FeatureBatch(torch.tensor([True]))
        >>> one["x"] = torch.tensor([1.0])
        >>> other = FeatureBatch(torch.tensor([False]))
        >>> other["x"] = torch.tensor([0.0])
        >>> default_collate([one, other]).mask.tolist()
        [[True], [False]]
    """
    names = list(batch[0])
    for sample in batch:
        if not isinstance(sample, FeatureBatch):
            raise InvalidArgumentError(
                f"cannot collate FeatureBatches with a sample that is a {type(sample).__name__}"
            )
        if sample.keys() != batch[0].keys():
            raise InvalidArgumentError(
                f"cannot collate FeatureBatches of features {names} with one of {list(sample)}"
            )
    if collate_fn_map is None:
        collate_fn_map = default_collate_fn_map
    result = FeatureBatch(collate([sample.mask for sample in batch], collate_fn_map=collate_fn_map))
    for name in names:
        result[name] = collate([sample[name] for sample in batch], collate_fn_map=collate_fn_map)
    return result


default_collate_fn_map[FeatureBatch] = collate_feature_batches


class ReadWriteLock:
    """Many readers or one writer; a waiting writer holds back new readers (no starvation).

    Example:
        >>> lock = ReadWriteLock()
        >>> with lock.shared():
        ...     pass
        >>> with lock.exclusive():
        ...     pass
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    @contextmanager
    def shared(self) -> Iterator[None]:
        """Hold the lock with other readers."""
        with self._cond:
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the lock alone."""
        with self._cond:
            self._writers_waiting += 1
            try:
                while self._writer or self._readers:
                    self._cond.wait()
            finally:
                self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()
