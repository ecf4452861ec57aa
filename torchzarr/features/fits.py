"""What a feature's dtype holds: the checks of a write's values, and their conversion to
the stored form, run before anything is written."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch

from torchzarr.core.array import Array
from torchzarr.dtypes import DataType
from torchzarr.errors import (
    ShapeMismatchError,
    TorchZarrError,
    UnsupportedDtypeError,
    ValueRangeError,
)
from torchzarr.tensors import as_storage_array, torch_dtype

__all__ = ["as_stored", "check_fits", "check_row", "check_stored", "has_infinity", "overflows"]


def as_stored(name: str, value: torch.Tensor, dt: DataType) -> np.ndarray:
    """``value`` converted to feature ``name``'s stored form (a CPU numpy array of
    ``dt.storage``), before anything is written: every refusal of the conversion
    (float8_e8m0fnu values <= 0, say) comes first, naming the feature. No copy when the
    dtypes match on the CPU.

    Example:
        >>> from torchzarr.dtypes import data_type
        >>> as_stored("scale", torch.tensor([2.0, 0.0]), data_type("float8_e8m0fnu"))
        Traceback (most recent call last):
        ...
        torchzarr.errors.ValueRangeError: feature 'scale': cannot write a tensor of ...
    """
    try:
        return as_storage_array(value, dt)
    except TorchZarrError as exc:
        raise type(exc)(f"feature {name!r}: {exc}") from None


def check_stored(name: str, value: torch.Tensor, dt: DataType) -> np.ndarray | None:
    """Run now every refusal :func:`as_stored` would make of ``value`` for feature
    ``name`` of ``dt``, so that a write refuses its values before it writes anything, yet
    holds no converted copy it can do without: ``as_storage_array`` refuses a tensor by
    its kind and dtype alone (checked on an empty slice of it), but for values <= 0 into
    a ``float8_e8m0fnu`` feature. Those are converted whole now (one byte per value) and
    returned; None otherwise: convert the value as it is written.

    Example:
        >>> from torchzarr.dtypes import data_type
        >>> check_stored("x", torch.ones(2), data_type("float16")) is None
        True
    """
    if dt.name == "float8_e8m0fnu" and value.dtype != torch_dtype(dt):
        return as_stored(name, value, dt)
    as_stored(name, value[:0], dt)
    return None


def check_row(name: str, arr: Array, value: torch.Tensor) -> None:
    """Refuse rows that do not fit feature ``name``: another row shape, or values its
    dtype cannot hold (see :func:`check_fits`)."""
    if tuple(value.shape[1:]) != tuple(arr.shape[1:]):
        raise ShapeMismatchError(
            f"feature {name!r} has rows of shape {tuple(arr.shape[1:])}; "
            f"got rows of shape {tuple(value.shape[1:])}"
        )
    check_fits(name, value, arr.dtype)


def _bounds(value: torch.Tensor) -> tuple[Any, Any]:
    """The least and greatest value, exact (Python ints for integer tensors)."""
    if value.dtype.is_floating_point:
        flat = value.detach().cpu().double()
        return flat.min().item(), flat.max().item()
    array = value.detach().cpu().numpy()
    return int(array.min()), int(array.max())


def _always_fits(source: torch.dtype, dtype: torch.dtype) -> bool:
    """Whether every value of ``source`` survives a cast to ``dtype`` (but for precision)."""
    if source == torch.bool:
        return True
    if dtype == torch.bool:
        return False
    if dtype.is_floating_point:
        top = torch.finfo(dtype).max
        if source.is_floating_point:  # (infinities need a dtype that has them)
            infinities_kept = has_infinity(dtype) or not has_infinity(source)
            return torch.finfo(source).max <= top and infinities_kept
        return float(torch.iinfo(source).max) <= top
    if source.is_floating_point:
        return False
    wide, narrow = torch.iinfo(dtype), torch.iinfo(source)
    return wide.min <= narrow.min and narrow.max <= wide.max


def check_fits(name: str, value: torch.Tensor, dtype: torch.dtype) -> None:
    """Refuse writing ``value`` to feature ``name`` of ``dtype`` when the cast would lose
    more than precision: integers out of range, fractions or non-finite values into an
    integer feature, numbers past 0/1 into a bool one, finite numbers that torch's cast
    would turn into an infinity or NaN, or round past the largest finite value of a float8
    kind without infinities, infinities into such a kind (either part of a complex value
    too; :func:`overflows`), complex values into a real feature
    (:class:`~torchzarr.errors.UnsupportedDtypeError`). A feature store holds ids' data,
    so a wrapped label is data loss (a tensor copy in torch wraps silently).

    Example:
        >>> check_fits("label", torch.tensor([7, 2**40]), torch.int32)
        Traceback (most recent call last):
        ...
        torchzarr.errors.ValueRangeError: feature 'label' of torch.int32 cannot hold ...
    """
    source = value.dtype
    if source.is_complex and not dtype.is_complex:
        raise UnsupportedDtypeError(
            f"feature {name!r} of {dtype} cannot hold complex values ({source}): "
            "write their real part or magnitude"
        )
    if source == dtype or value.numel() == 0:
        return
    if dtype.is_complex:  # each part must fit the complex feature's real dtype
        parts = (
            torch.view_as_real(value.detach().cpu().resolve_conj()) if source.is_complex else value
        )
        _check_real_fits(name, parts, dtype.to_real(), (dtype, source))
    else:
        _check_real_fits(name, value, dtype, (dtype, source))


def _check_real_fits(
    name: str, value: torch.Tensor, dtype: torch.dtype, shown: tuple[torch.dtype, torch.dtype]
) -> None:
    """:func:`check_fits` for real ``value`` and ``dtype`` (the parts of complex ones);
    errors show ``shown``: the feature's and the written values' own dtypes."""
    source = value.dtype
    feature_dtype, value_dtype = shown
    if source == dtype or _always_fits(source, dtype):
        return  # a widening cast: no value to look at
    if source.is_floating_point and not dtype.is_floating_point:
        flat = value.detach().cpu().double()
        if not bool(torch.isfinite(flat).all()) or not bool((flat == flat.trunc()).all()):
            raise ValueRangeError(
                f"feature {name!r} of {feature_dtype} cannot hold non-integral or non-finite values "
                f"of {value_dtype}: round them first"
            )
    infinities_lost = source.is_floating_point and has_infinity(source)
    infinities_lost = infinities_lost and dtype.is_floating_point and not has_infinity(dtype)
    if infinities_lost and bool(torch.isinf(value.detach()).any()):
        raise ValueRangeError(
            f"feature {name!r} of {feature_dtype} cannot hold infinities ({value_dtype}): "
            f"{dtype} has none (torch's cast would store a finite value or NaN); clip them first"
        )
    low, high = _bounds(value)
    if dtype == torch.bool:
        fits = low >= 0 and high <= 1
    elif dtype.is_floating_point:
        fits = not overflows(value, dtype)
    else:
        info = torch.iinfo(dtype)
        fits = info.min <= low and high <= info.max
    if not fits:
        raise ValueRangeError(
            f"feature {name!r} of {feature_dtype} cannot hold the values written, which range from "
            f"{low} to {high} ({value_dtype})"
        )


def overflows(value: torch.Tensor, dtype: torch.dtype) -> bool:
    """Whether torch's cast of real ``value`` to the float ``dtype`` loses a value to
    overflow: a finite value becomes an infinity or NaN (float16 takes 65519, which
    rounds to 65504, and refuses 65520), or, for a kind that saturates instead
    (float8_e4m3fn stores 448 for 1e6), rounds past the largest finite one (ties to even,
    as torch rounds, through float32 as torch casts); or an infinity goes to a kind that
    has none (:func:`has_infinity`: float8_e4m3fn stores 448, the fnuz kinds NaN). NaN is
    not looked at: every float kind holds one.

    Example:
        >>> overflows(torch.tensor([65519.0]), torch.float16)
        False
        >>> overflows(torch.tensor([-65520.0]), torch.float16)
        True
        >>> overflows(torch.tensor([float("inf")]), torch.float8_e4m3fn)
        True
    """
    flat = value.detach().cpu().reshape(-1)
    if flat.dtype.is_floating_point and flat.element_size() == 1:
        flat = flat.float()  # exactly; torch has no isinf/isfinite for most float8 kinds
    if flat.dtype.is_floating_point:
        if not has_infinity(dtype) and bool(torch.isinf(flat).any()):
            return True
        flat = flat[torch.isfinite(flat)]
    if not flat.numel():
        return False
    # casts round monotonically: the largest magnitude overflows if any value does
    biggest = flat[flat.double().abs().argmax()].reshape(1)
    if not bool(torch.isfinite(biggest.to(dtype).float()).all()):
        return True
    limit = _saturation_limit(dtype)
    if limit is None:
        return False
    magnitude, (past, tie_rounds_up) = abs(biggest.float().item()), limit
    return magnitude > past or (magnitude == past and tie_rounds_up)


@functools.cache
def has_infinity(dtype: torch.dtype) -> bool:
    """Whether the float ``dtype`` holds infinities (torch's cast keeps one as one).

    Example:
        >>> has_infinity(torch.float16), has_infinity(torch.float8_e4m3fn)
        (True, False)
    """
    return bool(torch.isinf(torch.tensor([float("inf")]).to(dtype).float()).all())


@functools.cache
def _saturation_limit(dtype: torch.dtype) -> tuple[float, bool] | None:
    """For a float ``dtype`` whose cast saturates (an infinity comes out finite): the
    magnitude halfway past its largest value, and whether that magnitude itself rounds
    past (its largest value's last bit is odd: ties go to the even neighbour). None for
    the other kinds, whose overflow shows in the cast."""
    if not bool(torch.isfinite(torch.tensor([float("inf")]).to(dtype).float()).all()):
        return None
    bits = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[dtype.itemsize]
    largest = torch.tensor([torch.finfo(dtype).max], dtype=torch.float64).to(dtype)
    below = (largest.view(bits) - 1).view(dtype)
    high, step = largest.double().item(), largest.double().item() - below.double().item()
    return high + step / 2, bool(int(largest.view(bits).item()) & 1)
