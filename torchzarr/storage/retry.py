"""Retry transient remote errors: exponential backoff with jitter, bounded in attempts and time."""

from __future__ import annotations

import errno
import functools
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from torchzarr.config import config
from torchzarr.errors import InvalidArgumentError, StoreError, TorchZarrError
from torchzarr.storage.base import Buffer, ByteRange, Store

__all__ = ["RetryPolicy", "RetryingStore", "is_transient", "now", "with_retries"]

T = TypeVar("T")

#: HTTP statuses worth another try: request timeout, throttling, server errors
TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
# exception class names of aiohttp, botocore/aiobotocore, urllib3, azure-core and requests
# that mean "the request did not get through": matched by name so that none is imported
_TRANSIENT_NAMES = frozenset(
    (
        *("ClientConnectionError", "ClientOSError", "ClientPayloadError", "ReadTimeoutError"),
        *("ConnectionClosedError", "ConnectTimeoutError", "EndpointConnectionError"),
        *("IncompleteReadError", "ResponseStreamingError", "ServerDisconnectedError"),
        *("ServerTimeoutError", "ServiceRequestError", "ServiceResponseError"),
        *("ProtocolError", "ReadTimeout", "ConnectTimeout", "ChunkedEncodingError"),
    )
)
# error codes in botocore's ``response["Error"]["Code"]`` that mean "slow down, try again"
_TRANSIENT_CODES = frozenset(
    (
        *("SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded"),
        *("RequestTimeout", "RequestTimeTooSkewed", "InternalError", "ServiceUnavailable"),
        *("TooManyRequestsException", "ProvisionedThroughputExceededException"),
    )
)
_TRANSIENT_ERRNO = frozenset(
    getattr(errno, name)
    for name in ("ETIMEDOUT", "ECONNRESET", "ECONNABORTED", "EPIPE", "EAGAIN", "EHOSTUNREACH")
    if hasattr(errno, name)
)
#: errors that no retry can fix: a missing key or bucket, a refused permission, a bad request
_PERMANENT = (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)

# indirections so that tests can replace the clock and the sleep without patching ``time``
_sleep = time.sleep
_clock = time.monotonic


def now() -> float:
    """The clock that deadlines are counted on (what ``RetryPolicy.attempts(since=)`` takes).

    Example:
        >>> now() <= now()
        True
    """
    return _clock()


def _status_of(exc: BaseException) -> int | None:
    for attr in ("status", "status_code", "code"):
        code = getattr(exc, attr, None)
        if isinstance(code, int) and not isinstance(code, bool):
            return code
    response = getattr(exc, "response", None)  # botocore ClientError
    if isinstance(response, Mapping):
        code = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return code if isinstance(code, int) else None
    return None


def _one_is_transient(exc: BaseException) -> bool | None:
    """True/False when ``exc`` itself decides; None to look at its cause."""
    if isinstance(exc, _PERMANENT):
        return False
    if isinstance(exc, TimeoutError | ConnectionError):
        return True
    if any(cls.__name__ in _TRANSIENT_NAMES for cls in type(exc).__mro__):
        return True
    response = getattr(exc, "response", None)
    if isinstance(response, Mapping):
        code = response.get("Error", {}).get("Code")
        if code in _TRANSIENT_CODES:
            return True
    status = _status_of(exc)
    if status is not None and 400 <= status < 600:
        return status in TRANSIENT_STATUS
    if type(exc) is OSError and exc.errno in _TRANSIENT_ERRNO:
        return True
    return None


def is_transient(exc: object) -> bool:
    """True for errors worth retrying: timeouts, dropped connections, throttling, HTTP 5xx.

    The exception and the chain of its causes are inspected (a store may wrap a timeout in
    a :class:`~torchzarr.errors.StoreError`). Missing keys, permissions and bad requests are
    never transient. Third-party errors are matched by class name and by their ``status``,
    ``status_code``, ``code`` or botocore ``response`` attributes, so nothing is imported.

    Example:
        >>> is_transient(TimeoutError("read timed out")), is_transient(FileNotFoundError("k"))
        (True, False)
    """
    seen = 0
    current = exc if isinstance(exc, BaseException) else None
    while current is not None and seen < 8:
        verdict = _one_is_transient(current)
        if verdict is not None:
            return verdict
        current = current.__cause__
        seen += 1
    return False


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry a transient error.

    Attempt ``n`` (from 0) that fails transiently is followed, after
    ``min(backoff * 2**n, max_backoff)`` seconds shrunk by up to ``jitter`` (a fraction, so
    that many clients do not retry in step), by another, up to ``retries`` more attempts in
    all. No retry starts that could end past ``deadline`` seconds after the first attempt:
    its wait, plus ``attempt_timeout`` when one attempt's time is bounded, must fit.

    Args:
        retries: retries after the first attempt (0: no retrying).
        backoff: seconds before the first retry.
        max_backoff: upper bound of one wait.
        jitter: fraction of each wait that is randomized away (0 to 1).
        deadline: seconds all attempts may take together, waits included (None: unbounded).
        attempt_timeout: seconds one attempt may take before it times out (None: unknown);
            a retry that could time out past the deadline is not started.

    Example:
        >>> policy = RetryPolicy(retries=2, backoff=0)
        >>> calls = []
        >>> def flaky():
        ...     calls.append(1)
        ...     if len(calls) < 3:
        ...         raise TimeoutError("slow")
        ...     return "ok"
        >>> policy.call(flaky), len(calls)
        ('ok', 3)
    """

    retries: int = 3
    backoff: float = 0.2
    max_backoff: float = 20.0
    jitter: float = 0.25
    deadline: float | None = 300.0
    attempt_timeout: float | None = None

    def __post_init__(self) -> None:
        if self.retries < 0 or self.backoff < 0 or self.max_backoff < 0:
            raise InvalidArgumentError(f"invalid {self}: retries and waits must be >= 0")
        if self.attempt_timeout is not None and not self.attempt_timeout > 0:
            raise InvalidArgumentError(f"invalid {self}: attempt_timeout > 0 or None")
        if not 0 <= self.jitter <= 1 or (self.deadline is not None and self.deadline <= 0):
            raise InvalidArgumentError(f"invalid {self}: jitter in [0, 1], deadline > 0 or None")

    @classmethod
    def from_config(cls, **overrides: Any) -> RetryPolicy:
        """The policy of ``tz.config`` (``retries``, ``retry_backoff``, ``retry_deadline``).

        Example:
            >>> RetryPolicy.from_config(retries=0).retries
            0
        """
        settings: dict[str, Any] = {
            "retries": config.retries,
            "backoff": config.retry_backoff,
            "deadline": config.retry_deadline,
        }
        settings.update(overrides)
        return cls(**settings)

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt ``attempt`` (0-based), jitter applied.

        Example:
            >>> RetryPolicy(backoff=1.0, jitter=0).delay(3)
            8.0
        """
        base = min(self.backoff * (2 ** min(attempt, 60)), self.max_backoff)
        return base * (1.0 - self.jitter * (rng or random).random())

    def attempts(self, since: float | None = None) -> Iterator[int]:
        """Attempt numbers ``0, 1, ...``, waiting the backoff before each retry.

        Stops after ``retries + 1`` attempts, or early when the next attempt could end past
        the deadline (its wait, plus ``attempt_timeout`` when known, would pass it). For
        callers that decide themselves what to retry (only the failed keys of a batch):
        ``for attempt in policy.attempts(): ...; if done: break``. The deadline counts from
        ``since`` (a :func:`now` reading) when given: one call that retries several
        requests each on its own (the directories of a listing) keeps one deadline.

        Example:
            >>> list(RetryPolicy(retries=2, backoff=0).attempts())
            [0, 1, 2]
        """
        start = _clock() if since is None else since
        for attempt in range(self.retries + 1):
            if attempt:
                wait = self.delay(attempt - 1)
                if self._too_late(start, wait):
                    return
                if wait > 0:
                    _sleep(wait)
            yield attempt

    def _too_late(self, start: float, wait: float) -> bool:
        """Whether a retry after ``wait`` seconds could end past the deadline."""
        if self.deadline is None:
            return False
        return _clock() - start + wait + (self.attempt_timeout or 0.0) > self.deadline

    def call(
        self,
        fn: Callable[..., T],
        *args: Any,
        give_up: Callable[[BaseException, int], BaseException] | None = None,
        **kwargs: Any,
    ) -> T:
        """``fn(*args, **kwargs)``, retried while it fails transiently.

        A non-transient error is raised at once. When the attempts run out, the last error is
        raised, or ``give_up(error, attempts_made)`` when given (raised ``from`` the error).

        Example:
            >>> RetryPolicy().call(int, "7")
            7
        """
        made = 0
        last: BaseException | None = None
        for _ in self.attempts():
            made += 1
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                if not is_transient(exc):
                    raise
                last = exc
        assert last is not None  # attempts() yields at least once
        if give_up is None:
            raise last
        raise give_up(last, made) from last


def with_retries(fn: Callable[..., T] | None = None, *, policy: RetryPolicy | None = None) -> Any:
    """Decorate ``fn`` so that transient errors are retried (policy of ``tz.config`` by default).

    Usable bare (``@with_retries``) or with a policy (``@with_retries(policy=...)``). The
    default policy is read from ``tz.config`` at each call.

    Example:
        >>> @with_retries(policy=RetryPolicy(retries=1, backoff=0))
        ... def fetch():
        ...     return b"data"
        >>> fetch()
        b'data'
    """

    def decorate(func: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> T:
            return (policy or RetryPolicy.from_config()).call(func, *args, **kwargs)

        return wrapper

    return decorate(fn) if fn is not None else decorate


class RetryingStore(Store):
    """Retries the transient failures of any store's calls under a :class:`RetryPolicy`.

    Every call is retried as a whole (a batch read is idempotent, and a write replaces the
    value, so repeating it is safe). A non-transient error, or the last transient one, is
    raised as a :class:`~torchzarr.errors.StoreError` naming the store and the cause
    (torchzarr errors pass through unchanged). Remote stores such as ``FsspecStore``
    already retry inside; wrap the stores that do not.

    Example:
        >>> from torchzarr.storage.memory import MemoryStore
        >>> store = RetryingStore(MemoryStore({"a": b"1"}), RetryPolicy(retries=2, backoff=0))
        >>> store.get("a"), store.read_only
        (b'1', False)
    """

    def __init__(self, inner: Store, policy: RetryPolicy | None = None) -> None:
        self.inner = inner
        self.policy = policy if policy is not None else RetryPolicy.from_config()

    def __repr__(self) -> str:
        return f"RetryingStore({self.inner!r}, retries={self.policy.retries})"

    @property
    def read_only(self) -> bool:  # type: ignore[override]
        return self.inner.read_only

    @property
    def identity(self) -> str:
        return self.inner.identity

    def _do(self, what: str, key: str, method: str | Callable[..., Any], *args: Any) -> Any:
        def give_up(exc: BaseException, made: int) -> BaseException:
            return StoreError(
                f"cannot {what} {key!r} in {self.inner!r} after {made} attempts: "
                f"{type(exc).__name__}: {exc}"
            )

        try:
            fn = getattr(self.inner, method) if isinstance(method, str) else method
            return self.policy.call(fn, *args, give_up=give_up)
        except TorchZarrError:
            raise
        except Exception as exc:  # a non-transient error of a foreign kind
            raise StoreError(
                f"cannot {what} {key!r} in {self.inner!r}: {type(exc).__name__}: {exc}"
            ) from exc

    def get(self, key: str) -> bytes | None:
        return self._do("read", key, "get", key)

    def get_range(self, key: str, byte_range: ByteRange) -> bytes | None:
        return self._do("read", key, "get_range", key, byte_range)

    def get_many(self, keys: Sequence[str]) -> dict[str, bytes | None]:
        first = keys[0] if keys else ""
        return self._do("read", first, "get_many", keys)

    def get_ranges(self, requests: Sequence[tuple[str, ByteRange]]) -> list[bytes | None]:
        first = requests[0][0] if requests else ""
        return self._do("read", first, "get_ranges", requests)

    def exists(self, key: str) -> bool:
        return bool(self._do("stat", key, "exists", key))

    def getsize(self, key: str) -> int | None:
        return self._do("stat", key, "getsize", key)

    def set(self, key: str, value: Buffer) -> None:
        self._do("write", key, "set", key, value)

    def set_many(self, items: Mapping[str, Buffer]) -> None:
        self._do("write", next(iter(items), ""), "set_many", items)

    def delete(self, key: str) -> None:
        self._do("delete", key, "delete", key)

    def delete_many(self, keys: Iterable[str]) -> None:
        keys = list(keys)
        self._do("delete", keys[0] if keys else "", "delete_many", keys)

    def delete_prefix(self, prefix: str) -> None:
        self._do("delete", prefix, "delete_prefix", prefix)

    def list_prefix(self, prefix: str) -> Iterator[str]:
        # listed eagerly: a retry must not repeat keys already yielded
        return iter(self._do("list", prefix, self._list_all, prefix))

    def _list_all(self, prefix: str) -> list[str]:
        return list(self.inner.list_prefix(prefix))

    def list_dir(self, prefix: str) -> tuple[list[str], list[str]]:
        return self._do("list", prefix, "list_dir", prefix)

    def with_read_only(self, read_only: bool = True) -> Store:
        return RetryingStore(self.inner.with_read_only(read_only), self.policy)

    def close(self) -> None:
        self.inner.close()

    def __getstate__(self) -> dict[str, Any]:
        return {"inner": self.inner, "policy": self.policy}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["inner"], state["policy"])  # type: ignore[misc]
