"""Counters and hooks for I/O: bytes fetched/decoded/delivered, chunks, cache hits, timings.

Example:
    >>> from torchzarr import telemetry
    >>> telemetry.reset()
    >>> telemetry.snapshot()["chunks_fetched"]
    0
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields
from typing import Any

from torchzarr.errors import ArgumentTypeError, InvalidArgumentError
from torchzarr.forksafe import new_lock

__all__ = [
    "Counters",
    "add",
    "add_listener",
    "counters",
    "read_amplification",
    "remove_listener",
    "reset",
    "snapshot",
    "timed",
]

logger = logging.getLogger("torchzarr")


@dataclass
class Counters:
    """Process-wide totals since the last :func:`reset`."""

    reads: int = 0
    writes: int = 0
    chunks_fetched: int = 0
    chunks_missing: int = 0
    chunks_written: int = 0
    chunks_deleted: int = 0
    bytes_fetched: int = 0
    bytes_decoded: int = 0
    bytes_delivered: int = 0
    bytes_written: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    fetch_seconds: float = 0.0
    decode_seconds: float = 0.0


_lock = new_lock()
_counters = Counters()
_NAMES = frozenset(field.name for field in fields(Counters))


def _check_names(names: Any) -> None:
    unknown = sorted(set(names) - _NAMES)
    if unknown:
        raise InvalidArgumentError(
            f"unknown telemetry counter(s) {', '.join(map(repr, unknown))}; the counters are "
            f"{', '.join(sorted(_NAMES))}"
        )


_listeners: list[Callable[[str, dict[str, Any]], None]] = []


def add(event: str | None = None, **amounts: float) -> None:
    """Add to counters, then tell listeners about ``event`` (if given) with the amounts.

    Example:
        >>> add(bytes_fetched=10)
    """
    if not _NAMES.issuperset(amounts):
        _check_names(amounts)  # before any counter moves
    with _lock:
        try:
            for name, amount in amounts.items():
                setattr(_counters, name, getattr(_counters, name) + amount)
        except TypeError:  # a bad amount: the counters added before it are put back
            for added, amount in amounts.items():
                if added == name:
                    break
                setattr(_counters, added, getattr(_counters, added) - amount)
            raise ArgumentTypeError(
                f"telemetry amounts are numbers, got {amounts!r:.200}"
            ) from None
        listeners = list(_listeners) if _listeners else ()
    if event is not None:
        for listener in listeners:
            try:
                listener(event, dict(amounts))  # its own copy: one changing it, no other sees
            except Exception:  # a broken listener must not break I/O
                logger.exception("torchzarr telemetry listener %r failed", listener)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("%s %s", event, amounts)


@contextlib.contextmanager
def timed(counter: str) -> Iterator[None]:
    """Add the seconds spent in the block to ``counter`` (``fetch_seconds`` or ``decode_seconds``).

    Example:
        >>> with timed("fetch_seconds"):
        ...     pass
    """
    if counter not in _NAMES:  # here, not after the block, where it would hide its error
        _check_names([counter])
    start = time.perf_counter()
    try:
        yield
    finally:
        elapsed: dict[str, float] = {counter: time.perf_counter() - start}
        add(None, **elapsed)


def counters() -> Counters:
    """A copy of the current counters.

    Example:
        >>> isinstance(counters(), Counters)
        True
    """
    with _lock:
        return Counters(**asdict(_counters))


def snapshot() -> dict[str, Any]:
    """The counters as a dict, with the derived read amplification.

    Example:
        >>> "read_amplification" in snapshot()
        True
    """
    data = asdict(counters())
    data["read_amplification"] = read_amplification(data)
    return data


def read_amplification(data: dict[str, Any] | None = None) -> float:
    """Bytes decoded per byte delivered (1.0 = nothing decoded in vain; 0.0 before any read).

    Example:
        >>> read_amplification({"bytes_decoded": 300, "bytes_delivered": 100})
        3.0
    """
    data = data if data is not None else asdict(counters())
    delivered = data["bytes_delivered"]
    return data["bytes_decoded"] / delivered if delivered else 0.0


def reset() -> None:
    """Zero every counter.

    Example:
        >>> reset()
    """
    global _counters
    with _lock:
        _counters = Counters()


def add_listener(listener: Callable[[str, dict[str, Any]], None]) -> None:
    """Call ``listener(event, amounts)`` after each read or write ("read", "write", "cache").

    ``amounts`` holds what the event added to the counters: ``{"reads": 1,
    "bytes_delivered": ...}`` for a read, ``{"writes": 1, "chunks_written": ...}`` for a
    write, and ``{"cache_hits": 1}`` or ``{"cache_misses": 1}`` for each lookup of a chunk
    in a decoded-chunk cache.

    Example:
        >>> events = []
        >>> add_listener(lambda event, amounts: events.append(event))
    """
    with _lock:
        _listeners.append(listener)


def remove_listener(listener: Callable[[str, dict[str, Any]], None]) -> None:
    """Stop calling ``listener``; removing an unknown listener is not an error."""
    with _lock, contextlib.suppress(ValueError):
        _listeners.remove(listener)
