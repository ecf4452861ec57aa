"""Facts about decoded chunks that codecs and the engine share: is a chunk all fill value?"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["is_all_fill"]

_UINT_OF_SIZE = {2: np.uint16, 4: np.uint32, 8: np.uint64}  # floats compared as their bits


def is_all_fill(chunk: np.ndarray, fill: Any) -> bool:
    """True when every element equals the fill value.

    Floats compare as zarr-python 3 compares them: NaN equals NaN, but -0.0 is not the fill
    value 0.0 (a chunk of -0.0 is kept, not read back as +0.0). Complex numbers compare
    their real and imaginary parts so, each on its own.

    Example:
        >>> is_all_fill(np.full(4, np.nan), np.float64("nan"))
        True
        >>> is_all_fill(np.full(4, -0.0), 0.0)
        False
    """
    if chunk.size == 0:
        return True
    fill_arr = np.asarray(fill, dtype=chunk.dtype)
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
