"""NaNs in a checkpoint's typed JSON with their sign and payload: ``"nan"``, or its bits."""

from __future__ import annotations

import re
import struct
from typing import Any

import numpy as np

__all__ = ["nan_from_text", "nan_text", "numpy_float"]

_HEX = re.compile(r"[0-9a-f]+")


def nan_text(value: Any) -> str:
    """A NaN of a Python float or a numpy float (up to 64 bits) as text: ``"nan"`` for the
    NaN ``float("nan")``, numpy and arithmetic make (of either sign: the sign of such a NaN
    is not kept, so that checkpoints of a NaN loss load in any torchzarr), else ``"nan:"``
    and its bits in hex, so that a payload comes back.

    Example:
        >>> nan_text(float("nan")), nan_text(-float("nan")), nan_text(np.float32("nan"))
        ('nan', 'nan', 'nan')
        >>> nan_text(np.array([0x7FC12345], dtype=np.uint32).view(np.float32)[0])
        'nan:7fc12345'
    """
    held = np.asarray(value, dtype=np.float64 if isinstance(value, float) else None)
    if held.dtype.itemsize > 8:  # longdouble: its text (numpy keeps no payload through it)
        return "nan"
    width = held.dtype.itemsize * 8
    bits = int(held.view(f"u{held.dtype.itemsize}"))
    canonical = int(np.asarray(np.nan, dtype=held.dtype).view(f"u{held.dtype.itemsize}"))
    if bits & ~(1 << (width - 1)) == canonical:  # either sign: what every reader takes
        return "nan"
    return f"nan:{bits:0{width // 4}x}"


def nan_from_text(text: str, dtype: Any = np.float64) -> Any:
    """The NaN :func:`nan_text` wrote for ``dtype`` (a Python float for float64).

    Example:
        >>> import math
        >>> math.copysign(1.0, nan_from_text("nan:fff8000000000000"))
        -1.0
    """
    dtype = np.dtype(dtype)
    if text == "nan":
        return float("nan") if dtype == np.float64 else dtype.type("nan")
    digits = text[4:] if text.startswith("nan:") else ""
    if len(digits) != 2 * dtype.itemsize or dtype.itemsize > 8 or not _HEX.fullmatch(digits):
        raise ValueError(f"{text!r} is not nan, nor the bits of a {dtype} nan")
    try:
        bits = int(digits, 16)
    except ValueError:
        raise ValueError(f"{text!r} is not nan, nor the bits of a {dtype} nan") from None
    value = np.asarray(bits, dtype=f"u{dtype.itemsize}").view(dtype)[()]
    if not np.isnan(value):
        raise ValueError(f"{text!r} holds the bits of {value!r}, not of a nan")
    if dtype == np.float64:
        return struct.unpack("<d", struct.pack("<Q", bits))[0]
    return value


def numpy_float(item: Any, dtype: Any) -> Any:
    """A numpy float of ``dtype`` from its typed JSON: a number, its text (``"inf"``, a
    longdouble's digits) or a NaN's (:func:`nan_text`).

    Example:
        >>> hex(numpy_float("nan:7fc12345", np.float32).view(np.uint32))
        '0x7fc12345'
    """
    dtype = np.dtype(dtype)
    if isinstance(item, str) and item.startswith("nan"):
        return dtype.type(nan_from_text(item, dtype) if dtype.itemsize <= 8 else item)
    return dtype.type(item)
