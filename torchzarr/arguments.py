"""Checks of call arguments shared by every layer (counts, sizes, steps, flags, callbacks)."""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

from torchzarr.errors import ArgumentTypeError, InvalidArgumentError

__all__ = ["flag", "optional_callable", "whole_number"]


def whole_number(name: str, value: Any, minimum: int, maximum: int | None = None) -> int:
    """``value`` as an int of at least ``minimum`` (ints and numpy ints; never True, 1.5 or "1"),
    and at most ``maximum`` when one is given.

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
    if maximum is not None and number > maximum:
        raise InvalidArgumentError(f"{name} must be <= {maximum}, got {number}")
    return number


def optional_callable(name: str, value: Any) -> Callable[..., Any] | None:
    """``value`` when it is None or callable, else an :class:`ArgumentTypeError` naming ``name``.

    Example:
        >>> optional_callable("transform", None) is None
        True
    """
    if value is not None and not callable(value):
        raise ArgumentTypeError(
            f"{name} must be a callable (or None), got {type(value).__name__}: {value!r}"
        )
    return value


def flag(name: str, value: Any) -> bool:
    """``value`` of a yes/no argument (``pin_memory``): a bool, numpy's too; anything else is
    refused with an :class:`ArgumentTypeError` naming ``name``, as a string would be read
    wrongly (``bool("no")`` is True).

    Example:
        >>> flag("pin_memory", False)
        False
        >>> flag("pin_memory", "no")
        Traceback (most recent call last):
        ...
        torchzarr.errors.ArgumentTypeError: pin_memory must be True or False, got str: 'no'
    """
    if isinstance(value, bool):
        return value
    if type(value).__module__ == "numpy" and type(value).__name__ in ("bool", "bool_"):
        return bool(value)
    raise ArgumentTypeError(f"{name} must be True or False, got {type(value).__name__}: {value!r}")
