"""Fault and latency wrappers: ``LatencyStore`` delays calls, ``FaultyStore`` fails them."""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torchzarr.errors import ArgumentTypeError, InvalidArgumentError, StoreError
from torchzarr.storage.base import Buffer, Store
from torchzarr.storage.wrappers import ForwardingStore, payload_bytes

__all__ = ["FaultInjectedError", "FaultyStore", "LatencyStore"]

#: method -> the family a fault rule may name instead (``"get"`` covers ``get_many`` too)
_FAMILY = {
    "get": "get",
    "get_many": "get",
    "get_range": "get_range",
    "get_ranges": "get_range",
    "exists": "stat",
    "getsize": "stat",
    "set": "set",
    "set_many": "set",
    "delete": "delete",
    "delete_many": "delete",
    "delete_prefix": "delete",
    "list_prefix": "list",
    "list_dir": "list",
}
_sleep = time.sleep  # replaced by tests that count instead of waiting

FaultRule = bool | int | Callable[[str], bool]
ErrorSpec = BaseException | type[BaseException] | Callable[[str, str], BaseException]


class FaultInjectedError(StoreError, ConnectionError):
    """The default error of :class:`FaultyStore`: a StoreError that reads as transient.

    Example:
        >>> from torchzarr.storage.retry import is_transient
        >>> is_transient(FaultInjectedError("injected"))
        True
    """


class LatencyStore(ForwardingStore):
    """Delays every call to ``inner`` like a remote store would, for benchmarks.

    Each call is one round trip of ``latency`` seconds plus ``per_byte`` seconds for each
    byte read or written; a batched call (``get_many``, ``get_ranges``, ``set_many``,
    ``delete_many``) is one round trip for the whole batch, as remote stores make it.
    ``round_trips``, ``bytes_moved`` and ``calls`` (per method) count what happened.

    Args:
        inner: the store holding the data.
        latency: seconds per round trip.
        per_byte: seconds per byte moved (``1 / bandwidth``).

    Example:
        >>> from torchzarr.storage.memory import MemoryStore
        >>> slow = LatencyStore(MemoryStore({"a": b"1", "b": b"2"}), latency=0.001)
        >>> slow.get_many(["a", "b"]), slow.round_trips
        ({'a': b'1', 'b': b'2'}, 1)
    """

    def __init__(self, inner: Store, latency: float = 0.01, per_byte: float = 0.0) -> None:
        if latency < 0 or per_byte < 0:
            raise InvalidArgumentError(
                f"latency ({latency}) and per_byte ({per_byte}) must be >= 0"
            )
        super().__init__(inner)
        self.latency, self.per_byte = latency, per_byte
        self.round_trips = self.bytes_moved = 0
        self.delay_seconds = 0.0
        self.calls: Counter[str] = Counter()

    def __repr__(self) -> str:
        return f"LatencyStore({self.inner!r}, latency={self.latency})"

    def _call(self, method: str, keys: Sequence[str], *args: Any) -> Any:
        result = getattr(self.inner, method)(*args)
        if method == "list_prefix":
            result = list(result)  # the listing is the round trip: do it now
        nbytes = payload_bytes(result) + (
            payload_bytes(args[-1]) if method in ("set", "set_many") else 0
        )
        delay = self.latency + self.per_byte * nbytes
        with self._locked():
            self.round_trips += 1
            self.bytes_moved += nbytes
            self.delay_seconds += delay
            self.calls[method] += 1
        if delay > 0:
            _sleep(delay)
        return result

    def __getstate__(self) -> dict[str, Any]:
        return {"inner": self.inner, "latency": self.latency, "per_byte": self.per_byte}

    def __setstate__(self, state: dict[str, Any]) -> None:
        LatencyStore.__init__(self, **state)


def _check_rule(method: str, rule: Any) -> None:
    """Refuse a ``fail_on`` rule that is none of a bool, a count >= 0 or a predicate (it
    would inject no fault, silently)."""
    if isinstance(rule, bool) or callable(rule):
        return
    if isinstance(rule, int) and not isinstance(rule, bool) and rule >= 0:
        return
    raise ArgumentTypeError(
        f"fail_on[{method!r}] must be True or False, a number of calls >= 0 or a predicate "
        f"key -> bool, got {type(rule).__name__}: {rule!r:.60}"
    )


class FaultyStore(ForwardingStore):
    """Fails chosen calls to ``inner`` with chosen errors, for testing failure paths.

    ``fail_on`` maps a method name (``"get"``, ``"get_many"``, ``"set"`` ...), a family
    (``"get"`` also covers ``get_many``, ``"set"`` covers ``set_many``, ``"delete"``,
    ``"list"`` and ``"stat"`` their methods) or ``"*"`` to a rule: ``True`` fails every call,
    an int ``n`` fails the first ``n`` calls (then they succeed: a transient fault), a
    predicate ``key -> bool`` fails calls touching a matching key. A batched write that hits
    a failing key stores the keys before it and then fails: a batch failing midway.
    Besides, each call fails with probability ``rate``, drawn from ``random.Random(seed)``.
    ``calls`` counts calls per method, ``failures`` lists the ``(method, key)`` that failed.

    Args:
        inner: the store holding the data.
        fail_on: rules by method, family or ``"*"``.
        rate: probability that any call fails (0 to 1).
        error: the exception to raise: an instance, a class (called with a message), or a
            function ``(method, key) -> exception``. Default :class:`FaultInjectedError`.
        seed: seed of the random faults; the same seed fails the same calls.

    Example:
        >>> from torchzarr.storage.memory import MemoryStore
        >>> store = FaultyStore(MemoryStore({"a": b"1"}), fail_on={"get": 1})
        >>> try:
        ...     store.get("a")
        ... except FaultInjectedError:
        ...     print("failed once")
        failed once
        >>> store.get("a"), store.failures
        (b'1', [('get', 'a')])
    """

    def __init__(
        self,
        inner: Store,
        fail_on: Mapping[str, FaultRule] | None = None,
        *,
        rate: float = 0.0,
        error: ErrorSpec = FaultInjectedError,
        seed: int | None = 0,
    ) -> None:
        if not 0.0 <= rate <= 1.0:
            raise InvalidArgumentError(f"rate must be in [0, 1], got {rate}")
        if fail_on is not None and not isinstance(fail_on, Mapping):
            raise ArgumentTypeError(
                f"fail_on maps methods to rules (a dict), got {type(fail_on).__name__}"
            )
        unknown = set(fail_on or {}) - {*_FAMILY, *_FAMILY.values(), "*"}
        if unknown:
            raise InvalidArgumentError(f"unknown methods in fail_on: {sorted(unknown)}")
        for method, rule in (fail_on or {}).items():
            _check_rule(method, rule)
        super().__init__(inner)
        self.fail_on = dict(fail_on or {})
        self.rate, self.error, self.seed = rate, error, seed
        self._random = random.Random(seed)
        self._left: dict[str, int] = {
            name: rule
            for name, rule in self.fail_on.items()
            if isinstance(rule, int) and not isinstance(rule, bool)
        }
        self.calls: Counter[str] = Counter()
        self.failures: list[tuple[str, str]] = []

    def __repr__(self) -> str:
        return f"FaultyStore({self.inner!r}, fail_on={sorted(self.fail_on)}, rate={self.rate})"

    def _rules(self, method: str) -> list[tuple[str, FaultRule]]:
        names = (method, _FAMILY.get(method, method), "*")
        return [(name, rule) for name, rule in self.fail_on.items() if name in names]

    def _failing_key(self, method: str, keys: Sequence[str]) -> str | None:
        """The key at which this call fails, or None; counts the call (under the lock)."""
        first = keys[0] if keys else ""
        self.calls[method] += 1
        for name, rule in self._rules(method):
            if rule is True:
                return first
            if _is_count(rule):
                if self._left[name] > 0:
                    self._left[name] -= 1
                    return first
            elif callable(rule):
                for key in keys:
                    if rule(key):
                        return key
        if self.rate and self._random.random() < self.rate:
            return first
        return None

    def _make_error(self, method: str, key: str) -> BaseException:
        if isinstance(self.error, BaseException):
            return self.error
        if isinstance(self.error, type):
            return self.error(f"injected fault: {method} {key!r} in {self.inner!r}")
        return self.error(method, key)

    def _call(self, method: str, keys: Sequence[str], *args: Any) -> Any:
        if self.read_only and _FAMILY[method] in ("set", "delete"):
            return getattr(self.inner, method)(*args)  # ReadOnlyError comes first
        with self._locked():
            key = self._failing_key(method, keys)
            if key is not None:
                self.failures.append((method, key))
        if key is None:
            return getattr(self.inner, method)(*args)
        if method == "set_many":  # the keys before the failing one get through
            items: Mapping[str, Buffer] = args[0]
            done = dict(list(items.items())[: list(items).index(key)])
            if done:
                self.inner.set_many(done)
        elif method == "delete_many":
            done_keys = args[0][: args[0].index(key)]
            if done_keys:
                self.inner.delete_many(done_keys)
        raise self._make_error(method, key)

    def __getstate__(self) -> dict[str, Any]:
        # the spec: the receiving process starts counting (and drawing) afresh
        return {
            "inner": self.inner,
            "fail_on": self.fail_on,
            "rate": self.rate,
            "error": self.error,
            "seed": self.seed,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        inner, fail_on = state.pop("inner"), state.pop("fail_on")
        FaultyStore.__init__(self, inner, fail_on, **state)


def _is_count(rule: object) -> bool:
    return isinstance(rule, int) and not isinstance(rule, bool)
