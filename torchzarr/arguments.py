"""Checks of call arguments shared by every layer (counts, sizes, steps)."""

from __future__ import annotations

import operator
from typing import Any

from torchzarr.errors import ArgumentTypeError, InvalidArgumentError

__all__ = ["whole_number"]


def whole_number(name: str, value: Any, minimum: int) -> int:
    """``value`` as an int of at least ``minimum`` (ints and numpy ints; never True, 1.5 or "1").

    Example:
        >>> import numpy as np
        >>> whole_number("seed", np.int64(3), 0)
        3
    """
    try:
        if isinstance(value, bool):
            raise TypeError
        number = operator.index(value)
    except TypeError:
        raise ArgumentTypeError(f"{name} must be an int, got {value!r}") from None
    if number < minimum:
        raise InvalidArgumentError(f"{name} must be >= {minimum}, got {number}")
    return number
