"""numpy arrays of ml_dtypes' floats (JAX's bfloat16, float8) as the bits torchzarr stores."""

from __future__ import annotations

from typing import Any

import numpy as np

from torchzarr.dtypes import DataType, data_type
from torchzarr.errors import UnsupportedDtypeError

__all__ = ["ml_float", "same_float_bits"]


def ml_float(dtype: np.dtype[Any]) -> bool:
    """Whether ``dtype`` is one of ml_dtypes' floats (bfloat16, float8) numpy lacks (of
    kind ``"V"``, but ``"f"`` for float8_e5m2).

    Example:
        >>> import ml_dtypes
        >>> ml_float(np.dtype(ml_dtypes.bfloat16)), ml_float(np.dtype("uint16"))
        (True, False)
    """
    try:
        return data_type(dtype).is_reinterpreted
    except UnsupportedDtypeError:
        return False


def same_float_bits(array: np.ndarray, dt: DataType) -> np.ndarray | None:
    """The bits of ``array`` in ``dt.storage`` when it holds ml_dtypes' floats of ``dt``
    itself (bfloat16 data for a bfloat16 array), without a cast: every NaN keeps its sign
    and payload, as a tensor of that dtype does. None for other data, which is cast.

    Example:
        >>> import ml_dtypes
        >>> nan = np.array([0x7FC1], dtype=np.uint16).view(ml_dtypes.bfloat16)
        >>> same_float_bits(nan, data_type("bfloat16"))
        array([32705], dtype=uint16)
    """
    if not dt.is_reinterpreted or not ml_float(array.dtype) or data_type(array.dtype) != dt:
        return None
    bits = array.view(dt.storage.newbyteorder(array.dtype.byteorder))  # big-endian ones too
    return bits if bits.dtype.isnative else bits.astype(dt.storage)
