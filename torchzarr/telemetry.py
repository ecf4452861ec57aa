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
import math
import numbers
import time
import types
from collections.abc import Callable, Iterator, Mapping
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
    """Process-wide totals since the last :func:`reset`.

    ``chunks_deleted`` counts the chunk deletes issued, stored or not (a store's delete does
    not say, and asking first would cost a request per chunk): a write deletes each chunk it
    leaves all fill value, so ``a[:] = 0`` on a new array of fill value 0 counts all its
    chunks. For a sharded array each chunk count is of inner chunks.

    Example:
        >>> Counters().chunks_deleted
        0
    """

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
_INF = math.inf
_SECONDS = frozenset(field.name for field in fields(Counters) if field.type in ("float", float))


def _check_names(names: Any) -> None:
    unknown = sorted(set(names) - _NAMES)
    if unknown:
        raise InvalidArgumentError(
            f"unknown telemetry counter(s) {', '.join(map(repr, unknown))}; the counters are "
            f"{', '.join(sorted(_NAMES))}"
        )


def _checked(name: str, amount: Any) -> float:
    """``amount`` of counter ``name`` when it is one the engine could add (a whole number of
    at least 0, or for the seconds counters a finite real number of at least 0), else refused."""
    seconds = name in _SECONDS
    fits = isinstance(amount, numbers.Real if seconds else numbers.Integral)
    if not fits or isinstance(amount, bool):
        what = "a number of seconds" if seconds else "a whole number (an int)"
        raise ArgumentTypeError(
            f"telemetry amounts are numbers: {name} takes {what}, got "
            f"{type(amount).__name__}: {amount!r:.200}"
        )
    value = float(amount) if seconds else int(amount)
    if not (0 <= value < math.inf):  # nan fails this too
        raise InvalidArgumentError(
            f"telemetry counter {name} takes amounts of at least 0 (finite), got {amount!r}"
        )
    return value


_listeners: list[Callable[[str, dict[str, Any]], None]] = []


def add(event: str | None = None, **amounts: float) -> None:
    """Add to counters, then tell listeners about ``event`` (if given) with the amounts.

    Each amount is a whole number of at least 0 (for ``fetch_seconds`` and
    ``decode_seconds``, a finite number of seconds of at least 0); any other amount, or an
    unknown counter, is refused before any counter moves.

    Example:
        >>> add(bytes_fetched=10)
    """
    if not _NAMES.issuperset(amounts):
        _check_names(amounts)  # before any counter moves
    for name, amount in amounts.items():  # cheap for what the engine adds: ints, seconds
        if type(amount) is int:
            if amount >= 0:
                continue
        elif type(amount) is float and 0.0 <= amount < _INF and name in _SECONDS:
            continue
        amounts[name] = _checked(name, amount)  # also before any counter moves
    with _lock:
        for name, amount in amounts.items():
            setattr(_counters, name, getattr(_counters, name) + amount)
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
    if counter not in _SECONDS:  # here, not after the block, where it would hide its error
        _check_names([counter])
        raise InvalidArgumentError(
            f"timed() adds seconds to fetch_seconds or decode_seconds, not to {counter!r}"
        )
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
    if not isinstance(data, Mapping):
        raise ArgumentTypeError(
            f"read_amplification takes a dict of counters (as snapshot() returns), got "
            f"{type(data).__name__}: {data!r:.200}"
        )
    missing = [key for key in ("bytes_decoded", "bytes_delivered") if key not in data]
    if missing:
        raise InvalidArgumentError(
            f"read_amplification needs the counter(s) {', '.join(map(repr, missing))} in its "
            f"dict (as snapshot() returns), got the keys {sorted(map(str, data))!r:.200}"
        )
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

    A ``listener`` that is not callable is refused at once (it would fail at every event).
    One already added (the same object, or the same method of the same object) is not
    added again: it is called once per event, and one :func:`remove_listener` stops it.
    Distinct objects are distinct listeners, even when equal as values.

    Example:
        >>> events = []
        >>> def listen(event, amounts):
        ...     events.append(event)
        >>> add_listener(listen)
        >>> add("read", reads=1)
        >>> remove_listener(listen)
        >>> events
        ['read']
    """
    if not callable(listener):
        raise ArgumentTypeError(
            f"a telemetry listener must be a callable taking (event, amounts), got "
            f"{type(listener).__name__}: {listener!r:.200}"
        )
    with _lock:
        if not any(_same_listener(listener, known) for known in _listeners):
            _listeners.append(listener)


def remove_listener(listener: Callable[[str, dict[str, Any]], None]) -> None:
    """Stop calling ``listener``; removing an unknown listener is not an error."""
    with _lock:
        _listeners[:] = [known for known in _listeners if not _same_listener(listener, known)]


def _same_listener(a: Any, b: Any) -> bool:
    """The same listener: the same object, or the same method of the same object (each
    ``obj.method`` is a new bound method). Never by ``==``: two collectors equal as values
    (dataclasses) are two listeners, and an ``==`` of numpy fields raises."""
    if a is b:
        return True
    return (
        isinstance(a, types.MethodType)
        and isinstance(b, types.MethodType)
        and a.__self__ is b.__self__
        and a.__func__ is b.__func__
    )
