"""Fill values: JSON <-> numpy storage scalars for v2 and v3, and user values to scalars.

A fill value is held as a numpy scalar of the data type's *storage* dtype: for bfloat16 and
float8 that is the raw bits as an unsigned integer. JSON spellings handled: numbers,
``"NaN"``/``"Infinity"``/``"-Infinity"``, ``"0x..."`` hex of the raw bits (v3; the only way
to name a NaN with a payload), ``[re, im]`` for complex, booleans, and base64 raw bytes (v2).
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import struct
import sys
from collections.abc import Hashable
from typing import Any

import ml_dtypes
import numpy as np

from torchzarr.dtypes import DataType
from torchzarr.errors import MetadataError

__all__ = [
    "coerce_fill_value",
    "coerce_user_fill_value",
    "encode_fill_value",
    "fill_key",
    "parse_fill_value",
    "standard_nans",
    "zero_fill",
]

_SPECIAL = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
_HEX = re.compile(r"0x[0-9a-fA-F]+")
_FLOATISH = re.compile(r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")


def _where(zarr_format: int) -> str:
    return ".zarray" if zarr_format == 2 else "zarr.json"


def _value_dtype(dt: DataType) -> np.dtype[Any]:
    """The dtype whose values the fill denotes: ml_dtypes for reinterpreted types."""
    return np.dtype(getattr(ml_dtypes, dt.name)) if dt.is_reinterpreted else dt.storage


def _component_dtype(dt: DataType) -> np.dtype[Any]:
    """The float dtype of one component: the value dtype, or half a complex."""
    return np.dtype(f"f{dt.itemsize // 2}") if dt.is_complex else _value_dtype(dt)


def zero_fill(dt: DataType) -> np.generic:
    """The zero of a data type's storage (what a v2 ``null`` fill reads as).

    Example:
        >>> from torchzarr.dtypes import data_type
        >>> zero_fill(data_type("int8"))
        np.int8(0)
    """
    return dt.storage.type(0)


def _float_array(value: float, component: np.dtype[Any]) -> np.ndarray:
    """A one-element array of ``component`` holding ``value`` (IEEE rounding, overflow to inf)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return np.array([value], dtype=np.float64).astype(component)


def _bits_array(bits: int, component: np.dtype[Any]) -> np.ndarray:
    return np.array([bits], dtype=f"u{component.itemsize}").view(component)


def _parse_component(value: Any, dt: DataType, component: np.dtype[Any], where: str) -> np.ndarray:
    """One float (or complex component) from JSON, as a one-element array of ``component``."""
    if isinstance(value, bool):
        raise MetadataError(f"{where}: fill_value {value!r} is not a number for {dt.name}")
    if isinstance(value, int | float):
        try:
            return _float_array(float(value), component)
        except OverflowError:
            raise MetadataError(
                f"{where}: fill_value {value!r} is out of range for {dt.name}"
            ) from None
    if isinstance(value, str):
        if value in _SPECIAL:
            return _float_array(_SPECIAL[value], component)
        if _HEX.fullmatch(value):
            if len(value) - 2 > 2 * component.itemsize:
                raise MetadataError(
                    f"{where}: hex fill_value {value!r} has more than "
                    f"{2 * component.itemsize} digits, too wide for {dt.name}"
                )
            return _bits_array(int(value, 16), component)
        if _FLOATISH.fullmatch(value):
            return _float_array(float(value), component)
    raise MetadataError(
        f"{where}: fill_value {value!r} is not valid for {dt.name} (expected a number, "
        "'NaN', 'Infinity', '-Infinity' or '0x' hex)"
    )


#: float8_e8m0fnu holds the powers of two 2**-127 to 2**127 and NaN: no zero and no sign
_E8M0 = "float8_e8m0fnu"


def _e8m0_zero_or_negative(value: Any, where: str) -> np.ndarray | None:
    """A float8_e8m0fnu fill below 2**-127, which a cast could make NaN: 0 (``0.0``,
    ``-0.0``) is tensorstore's spelling of bits 0x00, the smallest value 2**-127 (it writes
    those bits as ``0.0``, its default fill), and a positive number below it rounds up to
    it, as in tensorstore; a negative number is a MetadataError. None otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    if isinstance(value, str) and value != "-Infinity" and not _FLOATISH.fullmatch(value):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer past float64: out of range, said where it is parsed
        return None
    if 0 <= number < 2.0**-127:  # 1e-50 too, which float32 would make 0, then NaN
        return np.zeros(1, dtype=np.uint8)  # the bits 0x00
    if number < 0:
        raise MetadataError(
            f"{where}: fill_value {value!r} is negative, which {_E8M0} cannot hold (it holds "
            "the powers of two 2**-127 to 2**127 and NaN)"
        )
    return None


def _from_base64(value: str, dt: DataType, byteorder: str, where: str) -> np.generic:
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise MetadataError(
            f"{where}: fill_value {value!r} is not valid for {dt.name} (nor base64 raw bytes)"
        ) from None
    if len(raw) != dt.itemsize:
        raise MetadataError(
            f"{where}: base64 fill_value {value!r} holds {len(raw)} bytes, {dt.name} needs "
            f"{dt.itemsize}"
        )
    stored = dt.storage.newbyteorder(">") if byteorder == ">" else dt.storage.newbyteorder("<")
    return np.frombuffer(raw, dtype=stored).astype(dt.storage)[0]


def _is_base64_candidate(value: Any, dt: DataType) -> bool:
    """A v2 string fill that is none of the textual number forms: raw bytes in base64."""
    if not isinstance(value, str) or value in _SPECIAL:
        return False
    if dt.is_float or dt.is_complex:
        return not _FLOATISH.fullmatch(value)
    return True


def parse_fill_value(
    value: Any, dt: DataType, zarr_format: int, *, byteorder: str = "<"
) -> np.generic | None:
    """Parse the ``fill_value`` of a metadata document; None for a v2 ``null`` (no fill).

    Args:
        value: the JSON value.
        dt: the array's data type.
        zarr_format: 2 or 3 (v2 also takes base64 raw bytes and ``0``/``1`` for bools).
        byteorder: v2 only, the byte order of base64 raw bytes (the array's).

    Raises:
        MetadataError: naming the document and the value that does not fit ``dt``.

    Example:
        >>> from torchzarr.dtypes import data_type
        >>> parse_fill_value("NaN", data_type("float32"), 3)
        np.float32(nan)
        >>> parse_fill_value("0x3fc0", data_type("bfloat16"), 3)  # raw bits of 1.5
        np.uint16(16320)
    """
    where = _where(zarr_format)
    if value is None:
        if zarr_format == 2:
            return None
        raise MetadataError(f"{where}: fill_value is required in Zarr v3, got null")
    if zarr_format == 2 and isinstance(value, str) and _HEX.fullmatch(value):
        # zarr-python refuses it and tensorstore reads it as an integer: no one meaning
        raise MetadataError(
            f"{where}: fill_value {value!r} is '0x' hex, a Zarr v3 spelling that Zarr v2 "
            "readers take differently (as bits, as an integer, or not at all)"
        )
    if zarr_format == 2 and _is_base64_candidate(value, dt):
        return _from_base64(value, dt, byteorder, where)
    if dt.name == "bool":
        if isinstance(value, bool):
            return np.bool_(value)
        if zarr_format == 2 and type(value) is int and value in (0, 1):
            return np.bool_(value)
        raise MetadataError(f"{where}: fill_value {value!r} is not a bool")
    if dt.is_complex:
        if not isinstance(value, list):
            value = [value, 0]  # lenient: a bare real number (or spelling) for a complex fill
        if len(value) != 2:
            raise MetadataError(
                f"{where}: fill_value for {dt.name} must be [real, imag], got {value!r}"
            )
        part = _component_dtype(dt)
        re_, im = (_parse_component(v, dt, part, where) for v in value)
        out = np.empty(1, dtype=dt.storage)
        out.real, out.imag = re_, im
        return out[0]
    if dt.is_float:
        parsed = _e8m0_zero_or_negative(value, where) if dt.name == _E8M0 else None
        if parsed is None:
            parsed = _parse_component(value, dt, _component_dtype(dt), where)
        return parsed.view(dt.storage)[0]
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if type(value) is not int:
        raise MetadataError(f"{where}: fill_value {value!r} is not an integer for {dt.name}")
    info = np.iinfo(dt.storage)
    if not info.min <= value <= info.max:
        raise MetadataError(
            f"{where}: fill_value {value} is out of range for {dt.name} [{info.min}, {info.max}]"
        )
    return dt.storage.type(value)


def _encode_component(bits: int, component: np.dtype[Any], zarr_format: int) -> Any:
    value = float(_bits_array(bits, component)[0])
    if math.isnan(value):
        canonical = int(_float_array(math.nan, component).view(f"u{component.itemsize}")[0])
        if bits == canonical or zarr_format == 2:
            return "NaN"
        return f"0x{bits:0{2 * component.itemsize}x}"  # keeps the payload and the sign
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def encode_fill_value(value: np.generic | None, dt: DataType, zarr_format: int) -> Any:
    """The JSON form of a fill value, as zarr-python and tensorstore write it.

    NaN and infinities become strings; a NaN other than the canonical one becomes ``"0x"``
    hex of its bits in v3 (v2 has no spelling for it and writes ``"NaN"``). Complex values
    are ``[re, im]``. A v2 ``None`` stays ``null``; in v3 it writes zero.

    Example:
        >>> from torchzarr.dtypes import data_type
        >>> encode_fill_value(np.float64("inf"), data_type("float64"), 3)
        'Infinity'
        >>> encode_fill_value(np.complex64(1 + 2j), data_type("complex64"), 2)
        [1.0, 2.0]
    """
    if value is None:
        if zarr_format == 2:
            return None
        value = zero_fill(dt)
    scalar = np.asarray(value, dtype=dt.storage).reshape(1)
    if dt.name == "bool":
        return bool(scalar[0])
    if dt.is_float or dt.is_complex:
        component = _component_dtype(dt)
        bits = scalar.view(f"u{component.itemsize}").tolist()
        parts = [_encode_component(b, component, zarr_format) for b in bits]
        return parts if dt.is_complex else parts[0]
    return int(scalar[0])


def standard_nans(value: np.generic | None, dt: DataType) -> np.generic | None:
    """``value`` with any NaN (of a float, or a complex component) made the standard NaN:
    the fill a v2 document holds, which spells every NaN ``"NaN"``.

    Example:
        >>> from torchzarr.dtypes import data_type
        >>> negative = np.array([0xFFC00000], "u4").view("f4")[0]
        >>> bool(np.signbit(standard_nans(negative, data_type("float32"))))
        False
    """
    if value is None or not (dt.is_float or dt.is_complex):
        return value
    component = _component_dtype(dt)
    scalar = np.asarray(value, dtype=dt.storage).reshape(1).copy()
    parts = scalar.view(component)
    nan = parts != parts
    if not nan.any():
        return value
    parts[nan] = _float_array(math.nan, component)[0]
    return scalar[0]


def fill_key(value: np.generic | None, dt: DataType) -> Hashable:
    """A key equal for two fill values exactly when they fill alike: same bits, or both NaN.

    Used for metadata equality: ``np.float32("nan") == np.float32("nan")`` is False, and
    ``0.0 == -0.0`` is True, neither of which is what "the same fill value" means.

    Example:
        >>> from torchzarr.dtypes import data_type
        >>> f32 = data_type("float32")
        >>> fill_key(np.float32("nan"), f32) == fill_key(np.float32("nan"), f32)
        True
        >>> fill_key(np.float32(0.0), f32) == fill_key(np.float32(-0.0), f32)
        False
    """
    if value is None:
        return None
    scalar = np.asarray(value, dtype=dt.storage).reshape(1)
    if not (dt.is_float or dt.is_complex):
        return scalar.tobytes()
    component = _component_dtype(dt)
    parts = scalar.view(component)
    return tuple("nan" if np.isnan(p) else p.tobytes() for p in parts)


def _unreadable_tensor(user_value: Any) -> str | None:
    """The kind of a torch tensor whose value cannot be read (``meta``, ``nested``, or its
    sparse layout), else None; duck-typed, so that this module does not import torch."""
    if getattr(user_value, "is_meta", False) is True:
        return "meta"
    if getattr(user_value, "is_nested", False) is True:
        return "nested"
    layout = str(getattr(user_value, "layout", "torch.strided"))
    return None if layout == "torch.strided" else layout.removeprefix("torch.")


def _own_bits(user_value: Any, dt: DataType) -> np.generic | None:
    """The bits of a one-element tensor or numpy value of ``dt`` itself (a float dtype), as
    a storage scalar: a NaN's payload and sign kept, which a trip through a Python float
    loses for bfloat16 and float8 (ml_dtypes makes every NaN its standard one). Else None."""
    if not dt.is_float or getattr(user_value, "size", None) is None:
        return None
    unsigned = f"u{dt.itemsize}"
    if isinstance(user_value, np.generic | np.ndarray):
        if user_value.dtype != _value_dtype(dt) or user_value.size != 1:
            return None
        return np.asarray(user_value).reshape(1).view(unsigned).view(dt.storage)[0]
    torch = sys.modules.get("torch")
    if torch is None or not isinstance(user_value, torch.Tensor):
        return None
    if str(user_value.dtype) != f"torch.{dt.torch_name}" or user_value.numel() != 1:
        return None
    signed = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[dt.itemsize]
    raw = int(user_value.detach().reshape(1).view(signed).cpu()[0].item())
    return np.array([raw % (1 << (8 * dt.itemsize))], dtype=unsigned).view(dt.storage)[0]


def _unwrap(user_value: Any, dt: DataType) -> Any:
    """A numpy scalar, or a one-element array or tensor, as the Python value it holds."""
    if isinstance(user_value, np.generic):
        return user_value.item()
    kind = _unreadable_tensor(user_value)
    if kind is not None:
        raise MetadataError(
            f"fill_value is a {kind} tensor, whose value cannot be read, for dtype {dt.name}: "
            "pass a number, or a dense tensor holding one"
        )
    shape = getattr(user_value, "shape", None)
    if shape is not None and callable(getattr(user_value, "item", None)):
        if math.prod(tuple(shape)) != 1:
            raise MetadataError(
                f"fill_value must be a single value for dtype {dt.name}, got an array of "
                f"shape {tuple(shape)}"
            )
        return user_value.item()
    return user_value


#: the ml_dtypes kinds with IEEE NaNs (all exponent bits set, any nonzero mantissa): their
#: NaN payloads are kept as numpy keeps float16's, where ml_dtypes' cast would drop them
_PAYLOAD_NANS = ("bfloat16", "float8_e5m2")


def _nan_bits(number: float, component: np.dtype[Any]) -> np.ndarray | None:
    """A NaN ``number`` as ``component`` with its sign and the top bits of its payload (as
    IEEE narrowing, and numpy's float64 -> float16, keep them), for the kinds of
    :data:`_PAYLOAD_NANS`; None when nothing of the payload fits (the cast's NaN then)."""
    if component.name not in _PAYLOAD_NANS:
        return None
    info = ml_dtypes.finfo(component)
    nmant, width = int(info.nmant), 8 * component.itemsize
    raw = struct.unpack("<Q", struct.pack("<d", number))[0]
    payload = (raw & ((1 << 52) - 1)) >> (52 - nmant)
    if payload == 0:
        return None
    bits = (raw >> 63) << (width - 1) | ((1 << (width - 1 - nmant)) - 1) << nmant | payload
    return _bits_array(bits, component)


def _coerce_float(value: Any, dt: DataType, component: np.dtype[Any], problem: str) -> np.ndarray:
    if not isinstance(value, int | float):
        raise MetadataError(problem)
    try:
        number = float(value)
    except OverflowError:
        raise MetadataError(problem) from None
    if math.isnan(number):
        kept = _nan_bits(number, component)
        if kept is not None:
            return kept
    converted = float(_float_array(number, component)[0])
    lost = (math.isnan(converted) and not math.isnan(number)) or (
        math.isinf(converted) and not math.isinf(number)
    )
    if lost:
        raise MetadataError(problem)  # an overflow, or a value the format cannot hold
    return _float_array(number, component)


def coerce_user_fill_value(user_value: Any, dt: DataType) -> Any:
    """:func:`coerce_fill_value` of a value a user gave: a numpy integer of a bfloat16 or
    float8 dtype's storage type is a number there (``np.uint16(1)`` is 1.0), never bits.

    Example:
        >>> from torchzarr.dtypes import data_type
        >>> coerce_user_fill_value(np.uint16(1), data_type("bfloat16"))  # the bits of 1.0
        np.uint16(16256)
    """
    if dt.is_reinterpreted and isinstance(user_value, np.generic | np.ndarray):
        given = np.asarray(user_value)
        if given.dtype == dt.storage and given.ndim == 0:
            user_value = given.item()
    return coerce_fill_value(user_value, dt)


def coerce_fill_value(user_value: Any, dt: DataType) -> np.generic:
    """A user's ``fill_value`` as a storage scalar of ``dt`` (for ``create_array``).

    Takes None (zero), bool, int, float, complex, numpy and ml_dtypes scalars, 0-d arrays
    and 0-d tensors; for float and complex dtypes also text (``"NaN"``, ``"Infinity"``,
    ``"-Infinity"``, ``"1.5"``). Floats round to the nearest value of the dtype; a value that
    overflows it, an integer out of range, or a fraction for an integer dtype is an error.
    A numpy scalar of the storage dtype is taken as already coerced, so coercing twice
    changes nothing (for bfloat16/float8 that scalar is the raw bits). A tensor or numpy
    value of ``dt`` itself gives its bits, so a NaN keeps its sign and payload, as a NaN of
    a wider float keeps the top bits of its payload (both written as ``"0x"`` hex in v3).

    Raises:
        MetadataError: naming the value and the dtype when it does not fit.

    Example:
        >>> from torchzarr.dtypes import data_type
        >>> coerce_fill_value(1.5, data_type("bfloat16"))  # raw bits
        np.uint16(16320)
        >>> coerce_fill_value(None, data_type("float32"))
        np.float32(0.0)
        >>> coerce_fill_value("-Infinity", data_type("float64"))
        np.float64(-inf)
        >>> nan = np.array([0x7FC1], "u2").view(ml_dtypes.bfloat16)[0]  # a payload NaN
        >>> hex(coerce_fill_value(nan, data_type("bfloat16")))
        '0x7fc1'
    """
    if user_value is None:
        return zero_fill(dt)
    if isinstance(user_value, np.generic) and user_value.dtype == dt.storage:
        return user_value  # already a storage scalar (raw bits for bfloat16/float8)
    if _unreadable_tensor(user_value) is None:
        own = _own_bits(user_value, dt)
        if own is not None:
            return own  # a value of the dtype itself: its bits, a NaN's payload kept
    value = _unwrap(user_value, dt)
    problem = f"fill_value {value!r} does not fit dtype {dt.name}"
    if isinstance(value, str) and (dt.is_float or dt.is_complex):
        # "NaN", "Infinity", "-Infinity" (the JSON spellings), and numbers as text, as
        # zarr-python takes them
        try:
            value = complex(value) if dt.is_complex else float(value)
        except ValueError:
            raise MetadataError(problem) from None
    if dt.name == "bool":
        if isinstance(value, bool) or (type(value) is int and value in (0, 1)):
            return np.bool_(bool(value))
        raise MetadataError(problem)
    if isinstance(value, complex) and not dt.is_complex:
        if value.imag != 0:
            raise MetadataError(problem)
        value = value.real
    if dt.is_complex:
        if not isinstance(value, int | float | complex):
            raise MetadataError(problem)
        number = complex(value)
        part = _component_dtype(dt)
        out = np.empty(1, dtype=dt.storage)
        out.real = _coerce_float(number.real, dt, part, problem)
        out.imag = _coerce_float(number.imag, dt, part, problem)
        return out[0]
    if dt.is_float:
        converted = _coerce_float(value, dt, _component_dtype(dt), problem)
        return converted.view(dt.storage)[0]
    if isinstance(value, float):
        if not value.is_integer():
            raise MetadataError(problem)
        value = int(value)
    if not isinstance(value, int):
        raise MetadataError(problem)
    info = np.iinfo(dt.storage)
    if not info.min <= value <= info.max:
        raise MetadataError(f"{problem} (range [{info.min}, {info.max}])")
    return dt.storage.type(value)
