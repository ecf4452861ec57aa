"""Facts about decoded chunks that codecs and the engine share: is a chunk all fill value?"""

from __future__ import annotations

from typing import Any

import numpy as np

from torchzarr.dtypes import DataType

__all__ = ["is_all_fill"]

_UINT_OF_SIZE = {2: np.uint16, 4: np.uint32, 8: np.uint64}  # floats compared as their bits

#: The floats held as raw bits that have more than one NaN: the mask of every bit but the
#: sign, and the smallest masked value that is a NaN (every one above it is one too). The
#: others (float8 fnuz, e8m0fnu) have a single NaN, which the bits compare exactly.
_NAN_BITS = {
    "bfloat16": (0x7FFF, 0x7F81),
    "float8_e4m3fn": (0x7F, 0x7F),
    "float8_e5m2": (0x7F, 0x7D),
}


def is_all_fill(chunk: np.ndarray, fill: Any, data_type: DataType | None = None) -> bool:
    """True when every element equals the fill value.

    Floats compare as zarr-python 3 compares them: NaN equals NaN, but -0.0 is not the fill
    value 0.0 (a chunk of -0.0 is kept, not read back as +0.0). Complex numbers compare
    their real and imaginary parts so, each on its own. Pass the array's ``data_type`` for
    bfloat16 and float8, whose chunks hold raw bits: a NaN fill then matches any NaN.

    Example:
        >>> is_all_fill(np.full(4, np.nan), np.float64("nan"))
        True
        >>> is_all_fill(np.full(4, -0.0), 0.0)
        False
        >>> from torchzarr.dtypes import data_type
        >>> is_all_fill(np.full(4, 0xFFFF, np.uint16), np.uint16(0x7FC0), data_type("bfloat16"))
        True
    """
    if chunk.size == 0:
        return True
    fill_arr = np.asarray(fill, dtype=chunk.dtype)
    nan_bits = _NAN_BITS.get(data_type.name) if data_type is not None else None
    if nan_bits is not None and _all_nan_bits(fill_arr, *nan_bits):
        return _all_nan_bits(chunk, *nan_bits)
    if chunk.dtype.kind == "c":
        return _floats_equal(chunk.real, fill_arr.real) and _floats_equal(chunk.imag, fill_arr.imag)
    if chunk.dtype.kind == "f":
        return _floats_equal(chunk, fill_arr)
    return _equal(chunk, fill_arr)


def _floats_equal(values: np.ndarray, fill: np.ndarray) -> bool:
    """Every float of ``values`` is ``fill`` (0-d): any NaN for a NaN, else bit for bit."""
    if np.isnan(fill):
        return bool(np.isnan(values).all())
    bits = _UINT_OF_SIZE.get(values.dtype.itemsize)
    if bits is None:
        return bool(((values == fill) & (np.signbit(values) == np.signbit(fill))).all())
    return _equal(values.view(bits), fill.view(bits))


def _equal(chunk: np.ndarray, fill: np.ndarray) -> bool:
    first = chunk.reshape(-1)[0] if chunk.flags.c_contiguous else chunk.flat[0]
    if first != fill:
        return False
    return bool((chunk == fill).all())


def _all_nan_bits(bits: np.ndarray, mask: int, lowest_nan: int) -> bool:
    """Every element of ``bits`` (raw float bits) is a NaN of the format ``_NAN_BITS`` names."""
    first = bits.reshape(-1)[0] if bits.flags.c_contiguous else bits.flat[0]
    if (int(first) & mask) < lowest_nan:  # most chunks: decided by their first element
        return False
    return int((bits & bits.dtype.type(mask)).min()) >= lowest_nan
