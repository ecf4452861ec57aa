"""Checks of what stores are given (a file-system path, seconds, a flag: ``arguments.flag``), made when a store is made."""

from __future__ import annotations

import contextlib
import math
import numbers
import os
from collections.abc import Iterator
from typing import Any

from torchzarr.arguments import flag
from torchzarr.errors import ArgumentTypeError, InvalidArgumentError

__all__ = ["flag", "local_path", "seconds", "settings_of"]


def local_path(name: str, value: Any) -> str:
    """``value`` (a str or ``os.PathLike`` of str) as an absolute path; refused at once when
    it is of another type (bytes too, as in zarr-python) or holds a NUL byte, which no
    file system takes (else it would fail at the first read or write).

    Example:
        >>> import pathlib
        >>> local_path("path", pathlib.Path("/data/x.zarr"))
        '/data/x.zarr'
    """
    try:
        text = os.fspath(value)
    except TypeError:
        text = None
    if not isinstance(text, str):
        raise ArgumentTypeError(
            f"{name} must be a str or os.PathLike path, got {type(value).__name__}: {value!r}"
        )
    if "\x00" in text:
        raise InvalidArgumentError(f"{name} {text!r} holds a NUL byte, which no file path takes")
    return os.path.abspath(text)


def seconds(name: str, value: Any) -> float:
    """``value`` as a finite number of seconds >= 0 (ints, floats, numpy numbers; not bool).

    Example:
        >>> seconds("timeout", 5)
        5.0
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ArgumentTypeError(
            f"{name} must be a number of seconds, got {type(value).__name__}: {value!r}"
        )
    try:
        number = float(value)
    except OverflowError:  # an int past any float
        number = math.inf
    if not math.isfinite(number) or number < 0:
        raise InvalidArgumentError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
    return number


@contextlib.contextmanager
def settings_of(store: str) -> Iterator[None]:
    """Name ``store`` (the store being made, with its path) in the message of an
    :class:`InvalidArgumentError` (or :class:`ArgumentTypeError`) its checks raise.

    Example:
        >>> with settings_of("SQLiteStore('/data/run.db')"):
        ...     seconds("timeout", -1)
        Traceback (most recent call last):
        ...
        torchzarr.errors.InvalidArgumentError: invalid setting of SQLiteStore('/data/run.db'): timeout must be a finite number of seconds >= 0, got -1
    """
    try:
        yield
    except InvalidArgumentError as err:
        raise type(err)(f"invalid setting of {store}: {err}") from None
