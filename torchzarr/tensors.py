"""numpy <-> torch without copies, and output allocation (pinned when CUDA is there)."""

from __future__ import annotations

import functools
import math
import numbers
from typing import Any, NoReturn, SupportsInt, cast

import numpy as np
import torch

from torchzarr.dtypes import DataType, data_type
from torchzarr.errors import (
    InvalidArgumentError,
    OutOfMemoryError,
    UnsupportedDtypeError,
    ValueRangeError,
)
from torchzarr.ml_floats import ml_float, same_float_bits
from torchzarr.tensor_lists import rectangular

__all__ = [
    "allocate",
    "as_storage_array",
    "cuda_available",
    "rectangular",
    "select_rows",
    "storage_view",
    "tensor_from_storage",
    "torch_dtype",
]


_HUGE = 4 << 20  # numpy's threshold for madvise(MADV_HUGEPAGE)
#: more than any machine holds, and past what numpy and torch can address (4 EiB)
_BEYOND_MEMORY = 1 << 62


def torch_dtype(dt: DataType) -> torch.dtype:
    """The torch dtype of a data type.

    Example:
        >>> torch_dtype(data_type("bfloat16"))
        torch.bfloat16
    """
    found = getattr(torch, dt.torch_name, None)
    if not isinstance(found, torch.dtype):
        raise UnsupportedDtypeError(f"this torch build has no dtype {dt.torch_name!r}")
    return found


def _storage_torch_dtype(dt: DataType) -> torch.dtype:
    return torch_dtype(data_type(dt.storage)) if dt.is_reinterpreted else torch_dtype(dt)


@functools.cache
def _cuda_present() -> bool:
    try:
        return bool(torch.cuda.is_available())
    except Exception:  # a broken driver must not break CPU reads
        return False


def cuda_available() -> bool:
    """True when pinned host memory can be allocated: a CUDA device is present, and this is
    not a process forked after its parent used CUDA (a DataLoader worker forked from a
    training process), where CUDA cannot start again.

    Example:
        >>> isinstance(cuda_available(), bool)
        True
    """
    if not _cuda_present():
        return False
    in_bad_fork = getattr(torch.cuda, "_is_in_bad_fork", None)
    return not (in_bad_fork is not None and in_bad_fork())


def allocate(shape: tuple[int, ...], dt: DataType, *, pin_memory: bool = False) -> torch.Tensor:
    """An uninitialised C-contiguous CPU tensor; pinned if asked and CUDA exists, else pageable.

    Example:
        >>> allocate((2, 3), data_type("float32")).shape
        torch.Size([2, 3])
    """
    pin = bool(pin_memory) and cuda_available()
    dtype = torch_dtype(dt)
    nbytes = dtype.itemsize * math.prod(shape)
    if nbytes >= _BEYOND_MEMORY:  # numpy and torch would fail with their own errors
        raise InvalidArgumentError(
            f"cannot hold a result of shape {shape} and dtype {dtype} ({nbytes} bytes) in "
            "memory: read it in parts (slices, or Array.iter_chunks)"
        )
    try:
        if not pin and nbytes >= _HUGE:  # numpy advises huge pages: first touch faults less
            return torch.from_numpy(np.empty(nbytes, dtype=np.uint8)).view(dtype).view(shape)
        return torch.empty(shape, dtype=dtype, pin_memory=pin)
    except (MemoryError, RuntimeError) as err:  # torch's CPU allocator raises RuntimeError
        if not isinstance(err, MemoryError) and "alloc" not in str(err):
            raise
        raise OutOfMemoryError(
            f"cannot allocate a result of shape {shape} and dtype {dtype} ({nbytes} bytes): "
            "more than this machine can hold now; read it in parts (slices, or "
            "Array.iter_chunks)"
        ) from None


def storage_view(tensor: torch.Tensor, dt: DataType) -> np.ndarray:
    """A writable numpy view of a contiguous CPU tensor in ``dt``'s storage dtype (no copy).

    Example:
        >>> t = torch.zeros(3, dtype=torch.bfloat16)
        >>> storage_view(t, data_type("bfloat16")).dtype
        dtype('uint16')
    """
    if dt.is_reinterpreted:
        tensor = tensor.view(_storage_torch_dtype(dt))
    return tensor.numpy()


def tensor_from_storage(array: np.ndarray, dt: DataType) -> torch.Tensor:
    """Wrap a numpy array in ``dt``'s storage dtype as a tensor of ``dt`` (no copy if possible).

    Example:
        >>> tensor_from_storage(np.array([16320], dtype=np.uint16), data_type("bfloat16"))
        tensor([1.5000], dtype=torch.bfloat16)
    """
    if not array.flags.writeable or not array.dtype.isnative:
        array = np.array(array, dtype=dt.storage)
    tensor = torch.from_numpy(array)
    return tensor.view(torch_dtype(dt)) if dt.is_reinterpreted else tensor


def as_storage_array(value: Any, dt: DataType) -> np.ndarray:
    """Convert a tensor (any device), numpy array or scalar to a numpy array of ``dt.storage``.

    Values are cast the way ``tensor[...] = value`` casts in torch (floats to ints truncate).

    Example:
        >>> as_storage_array(torch.tensor([1.5]), data_type("bfloat16"))
        array([16320], dtype=uint16)
    """
    if isinstance(value, torch.Tensor):
        tensor = value.detach()
        if tensor.is_quantized or tensor.is_nested:
            raise _tensor_kind_refused(tensor, dt)
        if tensor.is_meta or tensor.layout != torch.strided:
            what = (
                "a meta tensor (it holds no data)"
                if tensor.is_meta
                else f"a {tensor.layout} tensor"
            )
            raise InvalidArgumentError(
                f"cannot write {what} to an array of {dt.name}: pass a dense tensor "
                f"(.to_dense()) with data"
            )
        if tensor.device.type != "cpu":
            tensor = tensor.cpu()
        if tensor.is_conj():
            tensor = tensor.resolve_conj()
        if tensor.is_neg():
            tensor = tensor.resolve_neg()
        target = torch_dtype(dt)
        if tensor.dtype != target:
            _refuse_tensor_dtype(tensor.dtype, dt)
            if tensor.is_complex() and not target.is_complex:
                raise _complex_into_real(tensor.dtype, dt)
            if dt.name == _E8M0:
                _refuse_non_positive_tensor(tensor, dt)
            tensor = tensor.to(target)
        if dt.is_reinterpreted:
            tensor = tensor.view(_storage_torch_dtype(dt))
        return tensor.numpy()
    array = rectangular(value, f"cannot write it to an array of {dt.name}")
    if isinstance(array, torch.Tensor):  # tensors numpy cannot read, stacked
        return _checked_stack(array, dt)
    bits = same_float_bits(array, dt)  # ml_dtypes' (JAX's) floats of dt itself: no cast
    if bits is not None:
        return bits  # every NaN as it is (a cast makes them one NaN)
    if array.dtype.kind == "V" and not dt.is_reinterpreted and ml_float(array.dtype):
        array = array.astype(np.float32)  # exact: then cast as numpy casts float32
    if array.dtype == dt.storage and not dt.is_reinterpreted:
        return array  # (uint16/uint8 data for bfloat16/float8 is numbers, not their bits)
    python = not _numpy_typed(value)
    if python and not dt.is_float and dt.storage.kind in "iu" and array.dtype.kind in "iufO":
        return _python_integers(value, array, dt)
    if python and array.dtype.kind == "O":  # integers past 64 bits: as floats, as numpy does
        array = _python_reals(value, array, dt)
    _refuse_non_numbers(array, dt)
    if dt.name == _E8M0:
        _refuse_non_positive(value, array, dt)
    if dt.is_reinterpreted:  # float -> bfloat16/float8 bits: let torch round correctly
        with np.errstate(over="ignore"):
            floats = torch.from_numpy(np.asarray(array, dtype=np.float32))
        stored = as_storage_array(floats, dt)
    else:
        with np.errstate(over="ignore"):
            stored = array.astype(dt.storage, copy=False, casting="unsafe")
    if python and (dt.is_float or dt.is_complex):
        _refuse_overflow(value, array, stored, dt)
    return stored


def _checked_stack(tensor: torch.Tensor, dt: DataType) -> np.ndarray:
    """A list's tensors stacked in one (:func:`rectangular`) as stored, their values checked
    as a list of numbers is (a single tensor casts as torch casts)."""
    stored = as_storage_array(tensor, dt)
    if tensor.dtype == torch_dtype(dt) or tensor.is_complex() or dt.storage.kind == "b":
        return stored
    found = (tensor.double() if tensor.is_floating_point() else tensor).numpy()  # exact
    if dt.is_float or dt.is_complex:
        _refuse_overflow(found, found, stored, dt)
    elif found.dtype.kind == "f":
        _whole_floats(found, found, dt, np.iinfo(dt.storage))
    else:
        _python_integers(found, found, dt)
    return stored


def _refuse_non_numbers(array: np.ndarray, dt: DataType) -> None:
    """Refuse complex data for a real ``dt`` and data that is not numbers (text, dates).

    bfloat16 and float8 arrays also take ml_dtypes' arrays of those floats (kind ``"V"``)."""
    if array.dtype.kind == "c" and dt.storage.kind != "c":
        raise _complex_into_real(array.dtype, dt)
    if array.dtype.kind not in "biufc" and not (dt.is_reinterpreted and ml_float(array.dtype)):
        raise UnsupportedDtypeError(
            f"cannot write values of dtype {array.dtype} to an array of {dt.name}"
        )


def _complex_into_real(source: object, dt: DataType) -> UnsupportedDtypeError:
    # a TypeError, as numpy's (complex into a real array is no shape's fault)
    return UnsupportedDtypeError(
        f"cannot write complex data of dtype {source} to an array of {dt.name}"
    )


def _tensor_kind_refused(tensor: torch.Tensor, dt: DataType) -> UnsupportedDtypeError:
    """The error for a quantized or nested tensor, which holds no plain numbers of one shape."""
    if tensor.is_quantized:
        what, hint = (
            "a quantized tensor",
            ".dequantize() for its values, .int_repr() for its integers",
        )
    else:
        what, hint = "a nested tensor", "one dense tensor (torch.nested.to_padded_tensor)"
    return UnsupportedDtypeError(
        f"cannot write {what} of dtype {tensor.dtype} to an array of {dt.name}: pass {hint}"
    )


@functools.cache
def _refuse_tensor_dtype(dtype: torch.dtype, dt: DataType) -> None:
    """Refuse a tensor dtype torchzarr cannot hold (``torch.bits8``, ``torch.float4_e2m1fn_x2``,
    ``torch.int4``), as ``create_array(dtype=...)`` does, where torch's cast to the array's
    dtype would fail (``torch.complex32`` casts to complex64 exactly: it is taken)."""
    try:
        data_type(dtype)
    except UnsupportedDtypeError as err:
        try:
            torch.zeros(1, dtype=dtype).to(torch_dtype(dt))
        except Exception:  # NotImplementedError, RuntimeError: no kernel for the dtype
            raise UnsupportedDtypeError(
                f"cannot write a tensor of dtype {dtype} to an array of {dt.name}: {err}"
            ) from None


#: float8_e8m0fnu has no sign bit and no zero: it holds the powers of two 2**-127 to 2**127
_E8M0 = "float8_e8m0fnu"
_E8M0_RANGE = ("2**-127", "2**127, positive only")


def _refuse_non_positive(value: Any, array: np.ndarray, dt: DataType) -> None:
    """Refuse numbers ``<= 0`` (``-0.0`` too) for float8_e8m0fnu: the cast would store their
    magnitude or 2**-127 (NaN, which it holds, is kept)."""
    with np.errstate(invalid="ignore"):
        if bool((array <= 0).any()):
            shown = array.item() if isinstance(value, np.ndarray) and not array.ndim else value
            _out_of_range(shown, array, dt, *_E8M0_RANGE)


def _refuse_non_positive_tensor(tensor: torch.Tensor, dt: DataType) -> None:
    """:func:`_refuse_non_positive` for a tensor (float8 and unsigned ones compare as floats)."""
    probe = tensor if tensor.dtype in (torch.float32, torch.float64) else tensor.float()
    below = probe[probe <= 0]
    if below.numel():
        low, high = _E8M0_RANGE
        raise ValueRangeError(
            f"cannot write a tensor of {tensor.dtype} holding values <= 0 (the smallest "
            f"{below.min().item()}) to an array of {dt.name} (range {low} to {high})"
        )


def _numpy_typed(value: Any) -> bool:
    """Whether ``value`` is a numpy array, 0-d ones included: it then casts as numpy casts
    arrays (wrapping). A numpy scalar (``np.float64(300.0)``, ``np.int64(300)``) is checked
    as torchzarr checks a Python number: one the dtype cannot hold is refused. That is
    torchzarr's own rule: numpy wraps such a scalar (``np.zeros(2, np.uint8)[0] =
    np.int64(300)`` stores 44), and torch checks some (``300`` into ``uint8``) but not
    others (``-1`` into ``uint8`` stores 255, ``70000.0`` into ``float16`` infinity).

    Example:
        >>> _numpy_typed(np.array(300)), _numpy_typed(np.int64(300))
        (True, False)
    """
    return isinstance(value, np.ndarray)


#: float64 holds every integer of smaller magnitude exactly
_EXACT_FLOATS = 2.0**53
#: the types of number numpy converts to an integer dtype with ``int()``: exactly. Only
#: these exact types: numpy casts ``np.float64`` (a float subclass) unchecked, wrapping
_BUILTIN_NUMBERS = (int, float, bool)
#: numbers float64 holds exactly whatever their size
_FLOAT64_EXACT = (float, np.float32, np.float16, bool, np.bool_)


def _python_integers(value: Any, array: np.ndarray, dt: DataType) -> np.ndarray:
    """Python numbers (a scalar or nested lists) as the integers of ``dt.storage``, refusing
    any the dtype cannot hold (NaN, infinities, 300 for uint8, -1.5 for uint8), as torch
    does for Python numbers, rather than store a wrapped value. Floats truncate.

    Each number converts exactly, as in torch and zarr-python: numpy infers float64 (or
    object) for ``[2**64 - 3000, 1]`` or ``[2**62 + 1, 0.5]``, which would round them.
    What numpy inferred (``array``) is used whenever it holds every number exactly."""
    info = np.iinfo(dt.storage)
    if array.dtype.kind in "iu":  # 64-bit integers hold every number exactly
        low, high = (int(array.min()), int(array.max())) if array.size else (0, 0)
        if low < info.min or high > info.max:
            _out_of_range(value, array, dt, info.min, info.max)
        return array.astype(dt.storage)
    if array.dtype.kind == "f":
        # float64 holds every float exactly, and every integer below 2**53: look at the
        # types of the numbers only past that (NaN compares False: refused below)
        big = array.size and (array.max() >= _EXACT_FLOATS or array.min() <= -_EXACT_FLOATS)
        types = _number_types(value, array) if big else []
        kinds = set(types)
        if all(issubclass(kind, _FLOAT64_EXACT) for kind in kinds):
            return _whole_floats(value, array, dt, info)
    else:
        kinds = set(_number_types(value, array))
    if all(kind in _BUILTIN_NUMBERS for kind in kinds):
        try:
            return np.asarray(value, dtype=dt.storage)  # each number with int(): exact
        except (OverflowError, ValueError):  # out of range or infinite; NaN
            _out_of_range(value, array, dt, info.min, info.max)
    return _each_integer(value, array, dt, info)


def _number_types(value: Any, array: np.ndarray) -> list[type]:
    """The type of each number in ``value``, whose numpy reading is ``array``."""
    if isinstance(value, list) and array.ndim == 1:
        return list(map(type, value))
    if array.dtype.kind != "O":
        array = np.asarray(value, dtype=object)
    return list(map(type, array.ravel().tolist()))


def _whole_floats(value: Any, array: np.ndarray, dt: DataType, info: Any) -> np.ndarray:
    """Floats (exactly as numpy read them) truncated to integers, the range checked."""
    finite = bool(np.isfinite(array).all())
    low, high = (np.trunc(array.min()), np.trunc(array.max())) if array.size else (0, 0)
    # as floats: info.max of 64 bits rounds up to 2**63 or 2**64, which do not fit
    if not finite or low < float(info.min) or high >= float(int(info.max) + 1):
        _out_of_range(value, array, dt, info.min, info.max)
    return array.astype(dt.storage)


def _each_integer(value: Any, array: np.ndarray, dt: DataType, info: Any) -> np.ndarray:
    """Numbers of other types (numpy scalars, fractions) converted one by one, exactly."""
    items = array if array.dtype.kind == "O" else np.asarray(value, dtype=object)
    exact: list[Any] = []  # Python ints; None for NaN or an infinity
    for item in items.flat:
        if isinstance(item, numbers.Integral):
            exact.append(int(item))
        elif isinstance(item, numbers.Real):
            # int() truncates exactly (numpy floats have no __trunc__ for math.trunc)
            exact.append(int(cast(SupportsInt, item)) if math.isfinite(item) else None)
        else:
            _refuse_non_real(array, dt)
    if any(number is None or not info.min <= number <= info.max for number in exact):
        _out_of_range(value, array, dt, info.min, info.max)
    return np.array(exact, dtype=dt.storage).reshape(array.shape)


def _python_reals(value: Any, array: np.ndarray, dt: DataType) -> np.ndarray:
    """Python numbers numpy holds as objects (integers past 64 bits) as float64, or
    complex128 for a complex ``dt``; an integer past float64's range is refused."""
    if not all(isinstance(item, numbers.Number) for item in array.flat):
        _refuse_non_real(array, dt)
    try:
        return array.astype(np.complex128 if dt.is_complex else np.float64)
    except OverflowError:  # int too large to convert to float
        high = float(torch.finfo(torch_dtype(dt)).max)
        _out_of_range(value, array, dt, -high, high)
    except TypeError:  # complex numbers for a real dtype
        _refuse_non_real(array, dt)


def _refuse_overflow(value: Any, source: np.ndarray, stored: np.ndarray, dt: DataType) -> None:
    """Refuse finite Python numbers past ``dt``'s largest finite value once rounded to nearest:
    70000 for float16 (it would become infinite) as 1e6 for float8_e4m3fn, which has no
    infinity (torch would store 448). Numbers that round down to that value are kept. An
    infinity is refused for the dtypes without one (torch stores 448 or NaN)."""
    dtype = torch_dtype(dt)
    limit, tie_rounds_up = _rounding_limit(dtype.to_real() if dtype.is_complex else dtype)
    reinterpreted = torch.from_numpy(stored).view(dtype) if dt.is_reinterpreted else None
    values = stored if reinterpreted is None else reinterpreted.float().numpy()
    with np.errstate(invalid="ignore"):
        if source.dtype.kind == "c":
            magnitude = np.maximum(np.abs(source.real), np.abs(source.imag))
        else:
            magnitude = np.abs(source)
        past = magnitude >= limit if tie_rounds_up else magnitude > limit
        # not finite once stored: also a number that rounded up through float32 on its way
        beyond = (past | ~np.isfinite(values)) & np.isfinite(source)
        beyond |= np.isinf(source) & ~np.isinf(values)
    if beyond.any():
        if dt.name == _E8M0:
            _out_of_range(value, source, dt, *_E8M0_RANGE)
        high = float(torch.finfo(dtype).max)
        _out_of_range(value, source, dt, -high, high)


@functools.cache
def _rounding_limit(dtype: torch.dtype) -> tuple[float, bool]:
    """The magnitude from which numbers round past ``dtype``'s largest finite value (halfway
    to the next step up), and whether that magnitude itself does: ties round to the even
    neighbour, past the largest value when its last bit is odd (IEEE formats)."""
    bits_dtype = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[dtype.itemsize]
    largest = torch.tensor([torch.finfo(dtype).max], dtype=torch.float64).to(dtype)
    bits = largest.view(bits_dtype)
    below = (bits - 1).view(dtype)
    high, step = largest.double().item(), largest.double().item() - below.double().item()
    return high + step / 2, bool(int(bits.item()) & 1)  # float64's: inf, never past


def _refuse_non_real(array: np.ndarray, dt: DataType) -> NoReturn:
    if dt.is_complex or not any(isinstance(item, complex) for item in array.flat):
        taken = numbers.Number if dt.is_complex else numbers.Real
        odd = [item for item in array.flat if not isinstance(item, taken)][:1]
        which = f" ({type(odd[0]).__name__} {odd[0]!r} is not a number)" if odd else ""
        raise UnsupportedDtypeError(
            f"cannot write values of dtype {array.dtype}{which} to an array of {dt.name}"
        )
    raise UnsupportedDtypeError(f"cannot write complex data to an array of {dt.name}")


def _out_of_range(value: Any, array: np.ndarray, dt: DataType, low: Any, high: Any) -> NoReturn:
    if array.ndim == 0:
        shown = repr(value)
    elif array.dtype.kind == "O":  # Python numbers
        items = array.ravel().tolist()
        ordered = [item for item in items if item == item]  # NaN is not equal to itself
        shown = _values_shown(ordered, len(ordered) < len(items), dt, low, high)
    else:
        nan = np.isnan(array) if array.dtype.kind in "fc" else np.zeros(array.shape, bool)
        has_nan = bool(nan.any())
        shown = _values_shown(array[~nan] if has_nan else array, has_nan, dt, low, high)
    raise ValueRangeError(f"cannot write {shown} to an array of {dt.name} (range {low} to {high})")


def _values_shown(ordered: Any, has_nan: bool, dt: DataType, low: Any, high: Any) -> str:
    """``values from LOW to HIGH`` of numbers without NaN; NaN for an integer ``dt`` is refused
    as such (``min`` and ``max`` would give NaN)."""
    if has_nan and not (dt.is_float or dt.is_complex):
        raise ValueRangeError(
            f"cannot write values holding NaN to an array of {dt.name}: an integer dtype "
            f"holds no NaN (range {low} to {high})"
        )
    if not len(ordered):
        return "values"
    if isinstance(ordered, np.ndarray):
        return f"values from {ordered.min()} to {ordered.max()}"
    try:
        return f"values from {min(ordered)} to {max(ordered)}"
    except TypeError:  # complex numbers have no order
        return "values"


def select_rows(
    t: torch.Tensor, index: torch.Tensor, out: torch.Tensor | None = None
) -> torch.Tensor:
    """``t[index]`` along axis 0 (``index_select``) for every dtype: torch has no 1-d
    kernel for uint16, uint32 and uint64, so 1-d tensors are selected as one column.

    Example:
        >>> select_rows(torch.tensor([5, 6, 7], dtype=torch.uint16), torch.tensor([2, 0]))
        tensor([7, 5], dtype=torch.uint16)
    """
    flat = t.ndim == 1
    source = t.unsqueeze(1) if flat else t
    if out is None:
        picked = source.index_select(0, index)
        return picked.squeeze(1) if flat else picked
    torch.index_select(source, 0, index, out=out.unsqueeze(1) if flat else out)
    return out
