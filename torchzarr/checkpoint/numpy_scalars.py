"""Typed JSON of numpy scalars, ``{"numpy": [dtype, value]}``: NaN bits and longdouble digits kept."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from torchzarr.checkpoint.nan_bits import nan_text, numpy_float

__all__ = ["decode_numpy", "encode_numpy"]

#: numpy scalar kinds typed JSON stores: bool, int, uint, float, complex
_NUMPY_SCALAR_KINDS = "biufc"


def _numpy_float(value: Any) -> Any:
    """A numpy float as JSON: a number, or its full text when JSON has no number for it
    (nan, inf) or a float64 would round it (longdouble)."""
    if value.dtype.itemsize <= 8 and math.isfinite(value):
        return value.item()
    return nan_text(value) if np.isnan(value) else str(value)


def encode_numpy(value: Any) -> Any:
    """The typed JSON of a numeric numpy scalar, or None for anything else.

    Example:
        >>> encode_numpy(np.float32(1.5)), encode_numpy(np.int8(3)), encode_numpy(1.5)
        ({'numpy': ['<f4', 1.5]}, {'numpy': ['|i1', 3]}, None)
    """
    if not isinstance(value, np.generic) or value.dtype.kind not in _NUMPY_SCALAR_KINDS:
        return None
    item: Any
    if value.dtype.kind == "c":
        item = [_numpy_float(value.real), _numpy_float(value.imag)]
    elif value.dtype.kind == "f":
        item = _numpy_float(value)
    else:
        item = value.item()
    return {"numpy": [value.dtype.str, item]}


def decode_numpy(payload: list[Any]) -> Any:
    """The numpy scalar whose typed JSON body is ``payload`` (inverse of
    :func:`encode_numpy`); raises ``TypeError`` or ``ValueError``, which the caller names.

    Example:
        >>> decode_numpy(["<f4", "nan:7fc12345"]).dtype
        dtype('float32')
    """
    if not isinstance(payload[0], str):
        raise TypeError(f"dtype {payload[0]!r} is not a str")  # decode_value names where
    dtype = np.dtype(payload[0])
    # what encode_numpy stores: numeric scalars; a void or str scalar could hold gigabytes
    if dtype.kind not in _NUMPY_SCALAR_KINDS or dtype.shape or dtype.names:
        raise ValueError(
            f"{payload[0]!r} is not a numeric numpy scalar type (bool, int, float, complex)"
        )
    item = payload[1]
    if dtype.kind == "c":
        out = np.zeros((), dtype=dtype)
        out.real, out.imag = (
            numpy_float(item[0], out.real.dtype),
            numpy_float(item[1], out.real.dtype),
        )
        return out[()]
    return numpy_float(item, dtype) if dtype.kind == "f" else dtype.type(item)
