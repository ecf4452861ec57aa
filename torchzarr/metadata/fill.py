"""Fill values: JSON <-> numpy scalars for v2 and v3 (NaN/Infinity strings, hex, complex, base64)."""

from __future__ import annotations

import base64
import binascii
import math
from typing import Any

import ml_dtypes
import numpy as np

from torchzarr.dtypes import DataType
from torchzarr.errors import MetadataError

__all__ = ["coerce_fill_value", "encode_fill_value", "parse_fill_value", "zero_fill"]

_SPECIAL = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _ml_dtype(dt: DataType) -> np.dtype[Any]:
    return np.dtype(getattr(ml_dtypes, dt.name))


def zero_fill(dt: DataType) -> np.generic:
    """The zero of a data type's storage (what a v2 ``null`` fill reads as).

    Example:
        >>> from torchzarr.dtypes import data_type
        >>> zero_fill(data_type("int8"))
        np.int8(0)
    """
    return dt.storage.type(0)


def _float_bits(value: float, dt: DataType) -> np.generic:
    """A Python float as the storage scalar of ``dt`` (raw bits for bfloat16/float8)."""
    if dt.is_reinterpreted:
        return np.array([value], dtype=_ml_dtype(dt)).view(dt.storage)[0]
    with np.errstate(over="ignore"):
        return dt.storage.type(value)


def _parse_float(value: Any, dt: DataType, where: str, component: np.dtype[Any]) -> float | np.generic:
    if isinstance(value, bool):
        raise MetadataError(f"{where}: fill_value {value!r} is not a number for {dt.name}")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        if value in _SPECIAL:
            return _SPECIAL[value]
        if value.startswith("0x"):
            try:
                raw = int(value, 16).to_bytes(component.itemsize, "big")
            except (ValueError, OverflowError):
                raise MetadataError(
                    f"{where}: fill_value {value!r} is not a {component.itemsize}-byte hex value"
                ) from None
            bits_type = np.dtype(f">u{component.itemsize}")
            bits = np.frombuffer(raw, dtype=bits_type)
            if dt.is_reinterpreted:
                return bits.astype(dt.storage)[0]
            return float(bits.view(component.newbyteorder(">"))[0])
    raise MetadataError(f"{where}: fill_value {value!r} is not valid for {dt.name}")


def _from_base64(value: str, dt: DataType, where: str) -> np.generic:
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise MetadataError(f"{where}: fill_value {value!r} is not valid for {dt.name}") from None
    if len(raw) != dt.itemsize:
        raise MetadataError(
            f"{where}: base64 fill_value {value!r} holds {len(raw)} bytes, {dt.name} needs "
            f"{dt.itemsize}"
        )
    return np.frombuffer(raw, dtype=dt.storage.newbyteorder("<"))[0].astype(dt.storage)


def parse_fill_value(value: Any, dt: DataType, zarr_format: int) -> np.generic | None:
    """Parse a ``fill_value`` from metadata JSON; None for a v2 ``null``.

    Example:
        >>> from torchzarr.dtypes import data_type
        >>> parse_fill_value("NaN", data_type("float32"), 3)
        np.float32(nan)
    """
    where = ".zarray" if zarr_format == 2 else "zarr.json"
    if value is None:
        if zarr_format == 2:
            return None
        raise MetadataError(f"{where}: fill_value is required in Zarr v3")
    kind = dt.storage.kind
    if dt.name == "bool":
        if isinstance(value, bool):
            return np.bool_(value)
        if zarr_format == 2 and value in (0, 1) and not isinstance(value, float):
            return np.bool_(value)
        if zarr_format == 2 and isinstance(value, str):
            return _from_base64(value, dt, where)
        raise MetadataError(f"{where}: fill_value {value!r} is not a bool")
    if dt.is_complex:
        if isinstance(value, list) and len(value) == 2:
            part = np.dtype(f"f{dt.itemsize // 2}")
            re, im = (float(_parse_float(v, dt, where, part)) for v in value)
            return dt.storage.type(complex(re, im))
        if zarr_format == 2 and isinstance(value, str):
            return _from_base64(value, dt, where)
        raise MetadataError(f"{where}: complex fill_value must be [real, imag], got {value!r}")
    if dt.is_float:
        if zarr_format == 2 and isinstance(value, str) and value not in _SPECIAL and not value.startswith("0x"):
            return _from_base64(value, dt, where)
        component = dt.storage if not dt.is_reinterpreted else np.dtype(f"u{dt.itemsize}")
        parsed = _parse_float(value, dt, where, component)
        if isinstance(parsed, np.generic):
            return parsed
        return _float_bits(parsed, dt)
    if kind in "iu":
        if isinstance(value, bool):
            raise MetadataError(f"{where}: fill_value {value!r} is not an integer for {dt.name}")
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, str) and zarr_format == 2:
            return _from_base64(value, dt, where)
        if not isinstance(value, int):
            raise MetadataError(f"{where}: fill_value {value!r} is not an integer for {dt.name}")
        info = np.iinfo(dt.storage)
        if not info.min <= value <= info.max:
            raise MetadataError(f"{where}: fill_value {value} does not fit in {dt.name}")
        return dt.storage.type(value)
    raise MetadataError(f"{where}: cannot parse fill_value for {dt.name}")  # pragma: no cover


def _encode_float(value: float) -> Any:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def encode_fill_value(value: np.generic | None, dt: DataType, zarr_format: int) -> Any:
    """The JSON form of a fill value (NaN/Infinity as strings, complex as ``[re, im]``).

    Example:
        >>> from torchzarr.dtypes import data_type
        >>> encode_fill_value(np.float64("inf"), data_type("float64"), 3)
        'Infinity'
    """
    if value is None:
        if zarr_format == 2:
            return None
        value = zero_fill(dt)
    if dt.name == "bool":
        return bool(value)
    if dt.is_complex:
        c = complex(value)  # type: ignore[arg-type]
        return [_encode_float(c.real), _encode_float(c.imag)]
    if dt.is_float:
        if dt.is_reinterpreted:
            as_float = float(np.array([value], dtype=dt.storage).view(_ml_dtype(dt))[0])
            return _encode_float(as_float)
        return _encode_float(float(value))  # type: ignore[arg-type]
    return int(value)  # type: ignore[call-overload]


def coerce_fill_value(user_value: Any, dt: DataType) -> np.generic:
    """A user's ``fill_value`` (None, bool, int, float, complex, numpy scalar) as a storage scalar.

    Example:
        >>> from torchzarr.dtypes import data_type
        >>> coerce_fill_value(1.5, data_type("bfloat16"))
        np.uint16(16320)
    """
    if user_value is None:
        return zero_fill(dt)
    if isinstance(user_value, np.generic):
        user_value = user_value.item()
    if hasattr(user_value, "item") and callable(user_value.item):  # a 0-d tensor or array
        user_value = user_value.item()
    problem = f"fill_value {user_value!r} does not fit dtype {dt.name}"
    if dt.name == "bool":
        if isinstance(user_value, bool | int) and user_value in (0, 1):
            return np.bool_(bool(user_value))
        raise MetadataError(problem)
    if isinstance(user_value, complex) and not dt.is_complex:
        if user_value.imag != 0:
            raise MetadataError(problem)
        user_value = user_value.real
    if dt.is_complex:
        if not isinstance(user_value, int | float | complex):
            raise MetadataError(problem)
        return dt.storage.type(complex(user_value))
    if dt.is_float:
        if not isinstance(user_value, int | float):
            raise MetadataError(problem)
        value = float(user_value)
        bits = _float_bits(value, dt)
        if not dt.is_reinterpreted and math.isfinite(value) and not math.isfinite(float(bits)):
            raise MetadataError(problem)
        return bits
    if isinstance(user_value, float):
        if not user_value.is_integer():
            raise MetadataError(problem)
        user_value = int(user_value)
    if not isinstance(user_value, int):
        raise MetadataError(problem)
    info = np.iinfo(dt.storage)
    if not info.min <= user_value <= info.max:
        raise MetadataError(problem)
    return dt.storage.type(user_value)
