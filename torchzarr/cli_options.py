"""The value types of the ``torchzarr`` command's options (sizes, fill values, bounded ints)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

__all__ = ["Unrepresentable", "fill", "int_from", "megabytes", "sizes"]


def sizes(text: str) -> tuple[int, ...] | str:
    """``--chunks 256,3072`` as a tuple of ints of at least 1, or "none" (``--shards none``).

    Example:
        >>> sizes("256,3072"), sizes("none")
        ((256, 3072), 'none')
    """
    if text.strip().lower() == "none":
        return "none"
    try:
        found = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sizes like 256,3072, got {text!r}") from None
    if min(found) < 1:
        raise argparse.ArgumentTypeError(f"sizes must be >= 1, got {text!r}")
    return found


class Unrepresentable(str):
    """A ``--fill-value`` no float holds (``1e400``, which Python reads as inf): refused as
    out of range once the array's dtype is known, as ``1e39`` is for float32.

    Example:
        >>> fill("1e400")
        '1e400'
    """


def fill(text: str) -> int | float | complex | str:
    """A ``--fill-value``: "none" (no fill value), else a number (nan, inf and 1+2j too).
    A number past every float (``1e400``) is an :class:`Unrepresentable`, not inf.

    Example:
        >>> fill("0"), fill("-inf"), fill("none")
        (0, -inf, 'none')
    """
    if text.strip().lower() == "none":
        return "none"
    for kind in (int, float, complex):
        try:
            value = kind(text)
        except ValueError:
            continue
        if kind is int:  # exact, however long: the dtype's range check says if it fits
            return value
        parts = (value.real, value.imag) if isinstance(value, complex) else (value,)
        infinite = sum(math.isinf(part) for part in parts)
        if infinite > text.lower().count("inf"):  # an overflow, not a spelling of inf
            return Unrepresentable(text)
        return value
    raise argparse.ArgumentTypeError(f"must be a number or none, got {text!r}")


def int_from(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """An option type: an int of at least ``minimum`` (and at most ``maximum``).

    Example:
        >>> int_from(1)("5")
        5
    """

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an int, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be <= {maximum}, got {value}")
        return value

    return parse


def megabytes(text: str) -> float:
    """``--max-mb``: a number of megabytes above 0 (``inf``: no limit).

    Example:
        >>> megabytes("0.5")
        0.5
    """
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if math.isnan(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text!r}")
    return value
