"""Row-level work of the feature store: upsert plans, feature arrays, checks, and gathers."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any

import numpy as np
import torch

from torchzarr.core import row_gather
from torchzarr.core.array import Array
from torchzarr.core.read_out import check_out as check_read_out
from torchzarr.core.reshape import stored_shape
from torchzarr.dtypes import data_type
from torchzarr.errors import (
    ArgumentTypeError,
    ArrayNotFoundError,
    InvalidArgumentError,
    InvalidKeyError,
    ShapeMismatchError,
    TorchZarrError,
    UnsupportedDtypeError,
    ValueRangeError,
)
from torchzarr.features.index import FeatureBatch, GatherPlan, IdIndex, holds_only_ints
from torchzarr.ml_floats import ml_float, same_float_bits
from torchzarr.tensors import allocate, rectangular, storage_view, torch_dtype

__all__ = [
    "IDS",
    "append_ids",
    "as_feature_tensor",
    "check_missing",
    "check_name",
    "check_out",
    "check_out_tensor",
    "check_out_names",
    "copy_out",
    "feature_names",
    "gather_rows",
    "missing_ids_message",
    "plan_upsert",
    "set_rows",
    "write_rows",
]

#: name of the array holding the id of each row
IDS = "ids"


def plan_upsert(index: IdIndex, query: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where a write's rows go: ``(rows, positions, new_ids)``.

    ``rows`` (ascending) are the target rows and ``positions`` the index in ``query`` of the
    value each receives: the last occurrence of a repeated id wins. New ids take the rows
    after ``index.num_rows`` in the order of their first occurrence in ``query``;
    ``new_ids`` lists them so.

    Example:
        >>> index = IdIndex.from_ids(np.array([5]))
        >>> rows, positions, new = plan_upsert(index, np.array([9, 5, 8, 9]))
        >>> rows.tolist(), positions.tolist(), new.tolist()
        ([0, 1, 2], [1, 3, 2], [9, 8])
    """
    unique, first = np.unique(query, return_index=True)
    _, first_from_end = np.unique(query[::-1], return_index=True)
    positions = query.size - 1 - first_from_end
    rows, found = index.lookup(unique)
    by_first = np.argsort(first[~found], kind="stable")
    new_ids = unique[~found][by_first]
    start = index.num_rows
    new_rows = np.empty(new_ids.size, dtype=np.int64)
    new_rows[by_first] = np.arange(start, start + new_ids.size, dtype=np.int64)
    rows = rows.copy()
    rows[~found] = new_rows
    order = np.argsort(rows)
    return rows[order], positions[order], new_ids


def write_rows(arr: Array, rows: np.ndarray, data: torch.Tensor) -> None:
    """Write ``data`` to ascending ``rows`` of ``arr``: one slice write when they are a run."""
    if not rows.size:
        return
    if rows[-1] - rows[0] + 1 == rows.size:
        arr[int(rows[0]) : int(rows[-1]) + 1] = data
    else:
        arr.oindex[rows] = data


def gather_rows(
    arr: Array, plan: GatherPlan, dest: torch.Tensor | None, pin_memory: bool
) -> torch.Tensor:
    """The rows ``plan`` asks for from ``arr``, in the caller's order, into ``dest`` if given.

    A sharded array (the v3 layout) fetches only the inner chunks holding the rows and lays
    them out in the caller's order in one pass. Otherwise the distinct rows are read in one
    sorted selection (each chunk once) and one ``take`` restores the caller's order and
    duplicates; a batch of distinct ids already in row order is read straight into place.
    """
    shape = (plan.mask.size, *arr.shape[1:])
    if dest is not None:
        check_out_tensor(arr.basename, dest, shape, arr.dtype)
    rows = plan.rows
    on_cpu = dest is not None and dest.device.type == "cpu" and dest.is_contiguous()
    pin = pin_memory or (dest is not None and dest.device.type == "cuda")
    if rows.size and arr.shards is not None:
        # the engine's shard reader: cached shard indexes, partial reads, one layout pass
        result = dest if on_cpu else allocate(shape, arr.data_type, pin_memory=pin)
        assert result is not None
        view = storage_view(result, arr.data_type)
        wanted = rows[plan.select.numpy()]  # a miss reads rows[0] (read anyway), then fill
        if row_gather.gather_rows(arr, wanted, view):
            if not plan.all_found:
                view[~plan.mask] = _fill_row(arr)
            return _deliver(result, dest)
    selection: Any = rows
    if rows.size and rows[-1] - rows[0] + 1 == rows.size:  # one run of rows: a slice
        selection = slice(int(rows[0]), int(rows[-1]) + 1)
    if plan.identity:
        return arr.read(selection, out=dest, pin_memory=pin_memory)
    gathered = arr.read(selection) if rows.size else torch.empty(0, *shape[1:], dtype=arr.dtype)
    result = dest if on_cpu else allocate(shape, arr.data_type, pin_memory=pin)
    assert result is not None
    if plan.all_found:  # numpy's take: torch's index_select spins threads on a busy host
        view = storage_view(result, arr.data_type)
        np.take(storage_view(gathered, arr.data_type), plan.select.numpy(), axis=0, out=view)
    else:  # through numpy: torch lacks masked writes for uint16/32/64
        view = storage_view(result, arr.data_type)
        found = plan.mask
        view[found] = storage_view(gathered, arr.data_type)[plan.select.numpy()[found]]
        view[~found] = _fill_row(arr)
    return _deliver(result, dest)


def _fill_row(arr: Array) -> Any:
    """``arr``'s fill value as one element of its storage view (a v2 null fill: zero)."""
    fill_value = 0 if arr.fill_value is None else arr.fill_value
    return storage_view(torch.full((1,), fill_value, dtype=arr.dtype), arr.data_type)[0]


def _deliver(result: torch.Tensor, dest: torch.Tensor | None) -> torch.Tensor:
    if dest is not None and result is not dest:
        dest.copy_(result)
        return dest
    return result


def feature_names(features: Iterable[str] | str | None) -> tuple[str, ...] | None:
    """The features a read asks for: one name alone is that feature, not its letters.

    Example:
        >>> feature_names("emb"), feature_names(["emb", "label"])
        (('emb',), ('emb', 'label'))
    """
    if features is None:
        return None
    if isinstance(features, str):
        return (features,)
    try:
        if not isinstance(features, Iterable) or isinstance(features, bytes):
            raise TypeError
        names = tuple(features)  # (a 0-d tensor is Iterable, and raises TypeError here)
    except TypeError:
        raise ArgumentTypeError(
            "features must be a feature name or an iterable of names (or None: all), got "
            f"{type(features).__name__}: {features!r}"
        ) from None
    for name in names:
        if not isinstance(name, str):
            raise ArgumentTypeError(
                f"features holds {name!r} of type {type(name).__name__}: feature names are str"
            )
    return names


def check_missing(missing: str) -> None:
    if missing not in ("raise", "fill"):
        raise InvalidArgumentError(f'missing must be "raise" or "fill", got {missing!r}')


def check_out(out: Any) -> None:
    """Refuse an ``out`` that is not a mapping of feature names to tensors.

    Example:
        >>> check_out({"emb": np.zeros(3)})
        Traceback (most recent call last):
        ...
        torchzarr.errors.ArgumentTypeError: out['emb'] must be a torch.Tensor, got ...
    """
    if out is None:
        return
    if not isinstance(out, Mapping):
        raise ArgumentTypeError(f"out must map feature names to tensors, got {type(out).__name__}")
    for name, dest in out.items():
        if not isinstance(dest, torch.Tensor):
            hint = " (torch.from_numpy gives one sharing its memory)"
            raise ArgumentTypeError(
                f"out[{name!r}] must be a torch.Tensor, got {type(dest).__name__}"
                + (hint if isinstance(dest, np.ndarray) else "")
            )


def check_out_tensor(
    name: str, dest: torch.Tensor, shape: tuple[int, ...], dtype: torch.dtype
) -> None:
    """Refuse ``dest`` as ``out`` for feature ``name`` of a batch of ``shape`` and ``dtype``:
    another shape or dtype (:class:`~torchzarr.errors.ShapeMismatchError`), or a tensor a
    read cannot fill (no dense storage, requiring grad, elements sharing memory: the
    checks and messages of ``Array.read(out=...)``, naming the feature). Every read
    checks here: direct, gathered or sharded, and prefetched ones.

    Example:
        >>> check_out_tensor("emb", torch.zeros(1, 2).expand(3, 2), (3, 2), torch.float32)
        Traceback (most recent call last):
        ...
        torchzarr.errors.InvalidArgumentError: feature 'emb': out has overlapping memory ...
    """
    if tuple(dest.shape) != shape or dest.dtype != dtype:
        raise ShapeMismatchError(
            f"out for feature {name!r} has shape {tuple(dest.shape)} and dtype "
            f"{dest.dtype}; the batch needs shape {shape} and dtype {dtype}"
        )
    try:
        check_read_out(dest, shape, dtype, repr(name))
    except TorchZarrError as exc:
        raise type(exc)(f"feature {name!r}: {exc}") from None


def check_out_names(
    out: Mapping[str, Any] | None, requested: Collection[str], features: Collection[str]
) -> None:
    """Refuse ``out`` entries that would go unfilled: a name that is no feature
    (:class:`~torchzarr.errors.ArrayNotFoundError`, a typo) or a feature the read does not
    request (:class:`~torchzarr.errors.InvalidArgumentError`).

    Example:
        >>> check_out_names({"embb": torch.zeros(2)}, ["emb"], ["emb"])
        Traceback (most recent call last):
        ...
        torchzarr.errors.ArrayNotFoundError: out names 'embb', which is no feature ...
    """
    for name in out or ():
        if name not in features:
            raise ArrayNotFoundError(
                f"out names {name!r}, which is no feature in the feature store "
                f"(features: {sorted(features)})"
            )
        if name not in requested:
            raise InvalidArgumentError(
                f"out names feature {name!r}, which this read does not request "
                f"(features requested: {list(requested)})"
            )


def missing_ids_message(query: np.ndarray, found: np.ndarray) -> str:
    """What a read of ``query`` says about its ids not ``found``: how many, and the first
    ten distinct ones in the order asked.

    Example:
        >>> missing_ids_message(np.array([7, 9, 9, 9]), np.array([True, False, False, False]))
        '3 of 4 ids are not in the feature store (1 distinct), first: [9]'
    """
    missing = query[~found]
    _, first = np.unique(missing, return_index=True)
    shown = [int(i) for i in missing[np.sort(first)[:10]]]
    return (
        f"{missing.size} of {query.size} ids are not in the feature store "
        f"({first.size} distinct), first: {shown}"
    )


def check_name(name: str) -> None:
    if (
        not isinstance(name, str)
        or not name
        or name == IDS
        or "/" in name
        or name.startswith((".", "__"))
        or name in ("zarr.json", ".zarray", ".zgroup", ".zattrs")
    ):
        raise InvalidKeyError(
            f"invalid feature name {name!r}: use a non-empty name without '/', not {IDS!r}, "
            "not starting with '.' or '__'"
        )


def as_feature_tensor(name: str, value: Any, n: int) -> torch.Tensor:
    """``value`` as a tensor of ``n`` rows for feature ``name``, refused (before anything
    is written) unless it is a dense grid of numbers of a dtype a store holds.

    Example:
        >>> as_feature_tensor("x", [[1, 2], [3]], 2)
        Traceback (most recent call last):
        ...
        torchzarr.errors.ShapeMismatchError: data that is not rectangular: feature 'x' ...
    """
    if not isinstance(value, torch.Tensor):
        array = rectangular(value, f"feature {name!r} needs one row of one shape per id")
        if not isinstance(array, torch.Tensor):
            return _numbers_as_tensor(name, value, array, n)
        value = array  # a list of tensors: stored as the tensor torch.stack makes of them
    tensor = value
    kind = _not_dense(tensor)
    if kind is not None:
        raise InvalidArgumentError(
            f"feature {name!r} is {kind}: write a dense tensor with one row per id "
            "(.to_dense(), torch.stack)"
        )
    try:
        data_type(tensor.dtype)
    except UnsupportedDtypeError as exc:
        raise UnsupportedDtypeError(f"feature {name!r}: {exc}") from None
    _check_rows(name, tuple(tensor.shape), n)
    return tensor


def _numbers_as_tensor(name: str, value: Any, array: np.ndarray, n: int) -> torch.Tensor:
    """:func:`as_feature_tensor` of a value that is no tensor, ``array`` its numpy reading."""
    if array.dtype.kind in "fO" and array.size and holds_only_ints(value):
        array = _exact_ints(name, value)
    if array.dtype.kind in "iu" and array.dtype.char != np.dtype(array.dtype.str).char:
        array = array.view(np.dtype(array.dtype.str))  # np.ulonglong: torch takes uint64
    if ml_float(array.dtype):  # ml_dtypes' (JAX's) bfloat16 and float8: their bits
        dt = data_type(array.dtype)
        bits = same_float_bits(array, dt)
        assert bits is not None  # (an ml_dtypes float of its own dtype)
        _check_rows(name, bits.shape, n)
        return torch.from_numpy(np.ascontiguousarray(bits)).view(torch_dtype(dt))
    if array.dtype.kind not in "biufc":
        raise UnsupportedDtypeError(
            f"feature {name!r}: values of dtype {array.dtype} cannot be stored "
            f"(numbers, booleans or complex numbers only)"
        )
    if not array.dtype.isnative:  # big-endian input: torch takes native order only
        array = array.astype(array.dtype.newbyteorder("="))
    _check_rows(name, array.shape, n)  # before ascontiguousarray makes a scalar 1-d
    return torch.from_numpy(np.ascontiguousarray(array))  # also reversed views


def _exact_ints(name: str, value: Any) -> np.ndarray:
    """A list of ints that numpy made float64 (int64 with uint64 values, ints past int64)
    or object (ints past 64 bits), converted exactly: to int64, else uint64, when one holds
    them all (the feature's own dtype is checked after, as for any value: uint64 hashes into
    a uint64 feature are never rounded). Ints no 64-bit dtype holds raise ValueRangeError
    naming the feature and the first int past both (they would be rounded as floats, and
    numpy holds ints past 64 bits as objects, which no feature stores)."""
    exact = np.array(value, dtype=object)
    flat = [int(v) for v in exact.reshape(-1)]
    low, high = min(flat), max(flat)
    if low >= -(2**63) and high < 2**63:
        return exact.astype(np.int64)
    if low >= 0 and high < 2**64:
        return exact.astype(np.uint64)
    beyond = [v for v in flat if not -(2**63) <= v < 2**64][:1]
    which = (
        f"int {beyond[0]} (ints from {low} to {high})" if beyond else f"ints from {low} to {high}"
    )
    raise ValueRangeError(
        f"feature {name!r}: cannot store {which}: neither int64 nor uint64 holds them "
        "(as floats they would be rounded): pass a float tensor for a float feature"
    )


def _check_rows(name: str, shape: tuple[int, ...], n: int) -> None:
    """Refuse a value of ``shape`` that is not ``n`` rows: a scalar, as a 0-d tensor, too."""
    if not shape:
        raise ShapeMismatchError(
            f"feature {name!r} is a scalar (shape ()): it needs one row per id ({n}); "
            "write [value] for one id"
        )
    if shape[0] != n:
        raise ShapeMismatchError(
            f"feature {name!r} has shape {tuple(shape)}: it needs one row per id ({n})"
        )


def _not_dense(tensor: torch.Tensor) -> str | None:
    """What kind of tensor ``tensor`` is when it is no dense grid of values, else None."""
    if tensor.is_meta:
        return "a meta tensor, which holds no values"
    if tensor.is_nested:
        return "a nested tensor"
    if tensor.layout != torch.strided:
        return f"a {tensor.layout} tensor"
    return None


def set_rows(arr: Array, published_rows: int, total: int) -> None:
    """Give an existing feature a write does not fill exactly ``total`` rows, its new ones
    holding the fill value. Rows past the published count exist only after a write that
    failed before publishing (here or in a process killed mid-write: the shape as stored
    counts, not the handle's): reset them so they never leak. (A feature the write fills
    needs no reset: ``arr.resize(total)`` cuts what lies past ``total``, the write
    replaces the rest.)"""
    current = stored_shape(arr)[0]
    if current > published_rows:
        arr.resize(published_rows, *arr.shape[1:])
        current = published_rows
    if current != total or arr.shape[0] != total:  # (a stale handle is brought up to date)
        arr.resize(total, *arr.shape[1:])


def append_ids(ids: Array, published_rows: int, new_ids: np.ndarray) -> None:
    """Store ``new_ids`` after the first ``published_rows`` ids, then give ``ids`` exactly
    that many rows. The ids are written past the stored shape first, where no reader looks,
    and the shape grows after: a reader of the array (xarray, zarr-python) never sees a
    row of ids not yet written (labelled with the fill value 0), even when the writer
    dies in between. Rows the stored shape held past the new count (left by a writer
    killed after growing it) are cut by the resize.

    Example:
        >>> ids = tz.create_array("memory://", shape=(1,), dtype=torch.int64)  # doctest: +SKIP
        >>> append_ids(ids, 1, np.array([7, 9])); ids[:].tolist()  # doctest: +SKIP
        [0, 7, 9]
    """
    total = published_rows + new_ids.size
    ahead = Array(ids.store, ids.path, ids.metadata.evolve(shape=(total,)))
    ahead[published_rows:total] = new_ids
    ids.resize(total)


def copy_out(
    batch: FeatureBatch, out: Mapping[str, torch.Tensor], features: Collection[str]
) -> FeatureBatch:
    """Copy a prefetched ``batch`` into ``out`` (its names checked against the batch's and
    the store's ``features``: :func:`check_out_names`)."""
    check_out_names(out, tuple(batch), features)  # every name in out is in the batch
    for name, dest in out.items():  # all checked before any is filled
        check_out_tensor(name, dest, tuple(batch[name].shape), batch[name].dtype)
    for name, dest in out.items():
        dest.copy_(batch[name])
        batch[name] = dest
    return batch
