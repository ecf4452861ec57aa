"""Facts about decoded chunks that codecs and the engine share: is a chunk all fill value?"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["is_all_fill"]


def is_all_fill(chunk: np.ndarray, fill: Any) -> bool:
    """True when every element equals the fill value (NaN equals NaN).

    Example:
        >>> is_all_fill(np.full(4, np.nan), np.float64("nan"))
        True
    """
    if chunk.size == 0:
        return True
    fill_arr = np.asarray(fill, dtype=chunk.dtype)
    if chunk.dtype.kind in "fc" and bool(np.isnan(fill_arr)):
        if chunk.dtype.kind == "c":
            return bool(
                np.array_equal(chunk, np.broadcast_to(fill_arr, chunk.shape), equal_nan=True)
            )
        return bool(np.isnan(chunk).all())
    first = chunk.reshape(-1)[0] if chunk.flags.c_contiguous else chunk.flat[0]
    if first != fill_arr:
        return False
    return bool((chunk == fill_arr).all())
