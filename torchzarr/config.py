"""Process-wide settings: decode threads, batch sizes and cache budgets (``tz.config``)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, fields, replace
from typing import Any

from torchzarr.errors import ArgumentTypeError, InvalidArgumentError
from torchzarr.forksafe import new_lock

__all__ = ["Config", "config", "default_threads"]


def default_threads() -> int:
    """The CPUs this process may use: the engine's default thread count.

    Example:
        >>> default_threads() >= 1
        True
    """
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS
        return max(1, os.cpu_count() or 1)


#: settings in seconds (float, >= 0 or > 0) and whether None is allowed; the rest are ints
_SECONDS = {"retry_backoff": False, "retry_deadline": False, "timeout": True}


def _validate(key: str, value: Any) -> None:
    if key in _SECONDS:
        if value is None and _SECONDS[key]:
            return
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if not ok or value < 0 or (value == 0 and key != "retry_backoff"):
            raise InvalidArgumentError(
                f"setting {key!r} must be a number of seconds, got {value!r}"
            )
        return
    low = 0 if key == "retries" else 1
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        kind = "a non-negative" if low == 0 else "a positive"
        raise InvalidArgumentError(f"setting {key!r} must be {kind} int, got {value!r}")


@dataclass
class Config:
    """Settings read by the engine at each call; change them with :meth:`set`.

    Attributes:
        threads: decode/encode threads of the engine's pool (default: usable CPUs).
        io_batch_bytes: decoded bytes fetched per batch of a large read (bounds memory).
        task_bytes: decoded bytes grouped into one pool task (small chunks are batched so that
            dispatch does not dominate).
        cache_bytes: budget of the shared decoded-chunk cache (used by arrays opened with a
            cache, the datasets and the feature store).
        retries: retries of a transient remote error (0 disables retrying); read when a
            remote store or a ``RetryPolicy`` is made.
        retry_backoff: seconds before the first retry, doubled for each further one.
        retry_deadline: seconds all attempts of one call may take together, sleeps included.
        timeout: seconds one request to a remote store may take (None: unbounded).

    Example:
        >>> from torchzarr.config import config
        >>> with config.set(threads=1):
        ...     config.threads
        1
    """

    threads: int = default_threads()
    io_batch_bytes: int = 256 << 20
    task_bytes: int = 1 << 20
    cache_bytes: int = 512 << 20
    retries: int = 3
    retry_backoff: float = 0.2
    retry_deadline: float = 300.0
    timeout: float | None = 120.0

    def __post_init__(self) -> None:
        self._lock = new_lock()

    def __setattr__(self, name: str, value: Any) -> None:
        # ``config.threads = 4`` is checked like ``config.set(threads=4)``; a misspelt name
        # is an error rather than a setting nothing reads
        if not name.startswith("_"):
            names = {f.name for f in fields(self)}
            if name not in names:
                raise ArgumentTypeError(
                    f"unknown torchzarr setting {name!r}; known: {sorted(names)}"
                )
            _validate(name, value)
        object.__setattr__(self, name, value)

    @contextlib.contextmanager
    def _restore(self, saved: Config) -> Iterator[None]:
        try:
            yield
        finally:
            for f in fields(self):
                setattr(self, f.name, getattr(saved, f.name))

    def set(self, **changes: Any) -> contextlib.AbstractContextManager[None]:
        """Change settings now; used as a context manager, restore them on exit.

        Example:
            >>> config.set(threads=2)  # doctest: +ELLIPSIS
            <contextlib._GeneratorContextManager object at ...>
        """
        names = {f.name for f in fields(self)}
        for key, value in changes.items():
            if key not in names:
                raise ArgumentTypeError(
                    f"unknown torchzarr setting {key!r}; known: {sorted(names)}"
                )
            _validate(key, value)
        with self._lock:
            saved = replace(self)
            for key, value in changes.items():
                setattr(self, key, value)
        return self._restore(saved)


config = Config()
