"""Retries: which errors are transient, the backoff schedule, the deadline, RetryingStore."""

from __future__ import annotations

import errno
import pickle
import random
import uuid
from typing import Any

import pytest

from torchzarr.config import config
from torchzarr.errors import ReadOnlyError, StoreError
from torchzarr.storage import retry
from torchzarr.storage.faults import FaultInjectedError, FaultyStore
from torchzarr.storage.fsspec_store import FsspecStore
from torchzarr.storage.memory import MemoryStore
from torchzarr.storage.retry import RetryingStore, RetryPolicy, is_transient, with_retries


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """A fake clock that only sleeps move: ``clock[1:]`` records each wait."""
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds
        now.append(seconds)

    monkeypatch.setattr(retry, "_clock", lambda: now[0])
    monkeypatch.setattr(retry, "_sleep", sleep)
    return now


# -- which errors are transient ----------------------------------------------------------------
class ServerDisconnectedError(Exception):
    """Named like aiohttp's: matched by name, never imported."""


class HTTPError(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


class ClientError(Exception):
    """Shaped like botocore's ClientError."""

    def __init__(self, code: str, status: int) -> None:
        super().__init__(code)
        self.response = {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (TimeoutError("read timed out"), True),
        (ConnectionResetError("reset by peer"), True),
        (OSError(errno.ETIMEDOUT, "timed out"), True),
        (ServerDisconnectedError("gone"), True),
        (HTTPError(503), True),
        (HTTPError(429), True),
        (HTTPError(500), True),
        (HTTPError(404), False),
        (HTTPError(403), False),
        (HTTPError(400), False),
        (ClientError("SlowDown", 503), True),
        (ClientError("InternalError", 500), True),
        (ClientError("NoSuchBucket", 404), False),
        (ClientError("AccessDenied", 403), False),
        (FileNotFoundError("no such key"), False),
        (PermissionError("access denied"), False),
        (ReadOnlyError("read-only"), False),
        (ValueError("bad request"), False),
        (OSError(errno.EIO, "i/o error"), False),
        (FaultInjectedError("injected"), True),
        ("not an exception", False),
    ],
)
def test_transient_classification(exc: Any, expected: bool) -> None:
    assert is_transient(exc) is expected


def test_transient_cause_is_found_through_wrappers() -> None:
    def wrapped(cause: BaseException) -> StoreError:
        try:
            raise StoreError("cannot read 'k'") from cause
        except StoreError as err:
            return err

    assert is_transient(wrapped(TimeoutError("slow")))
    assert not is_transient(wrapped(FileNotFoundError("k")))
    assert not is_transient(StoreError("no cause"))


# -- the schedule -------------------------------------------------------------------------------
def test_delay_doubles_is_capped_and_jittered_downwards() -> None:
    exact = RetryPolicy(backoff=0.5, max_backoff=3.0, jitter=0)
    assert [exact.delay(n) for n in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    jittered = RetryPolicy(backoff=1.0, max_backoff=100.0, jitter=0.25)
    draws = [jittered.delay(3, random.Random(7)) for _ in range(3)]
    assert draws == [jittered.delay(3, random.Random(7))] * 3  # seeded: reproducible
    rng = random.Random(1)
    delays = [jittered.delay(2, rng) for _ in range(200)]
    assert all(3.0 <= d <= 4.0 for d in delays) and len(set(delays)) > 100


def test_attempts_wait_the_backoff_between_tries(clock: list[float]) -> None:
    policy = RetryPolicy(retries=3, backoff=1.0, jitter=0, deadline=None)
    assert list(policy.attempts()) == [0, 1, 2, 3]
    assert clock[1:] == [1.0, 2.0, 4.0]


def test_deadline_stops_retrying_before_it_would_pass(clock: list[float]) -> None:
    policy = RetryPolicy(retries=10, backoff=1.0, jitter=0, deadline=10.0)
    assert list(policy.attempts()) == [0, 1, 2, 3]  # waits 1 + 2 + 4; the next 8 would pass 10
    assert clock[0] == 7.0


def test_no_retry_starts_that_could_time_out_past_the_deadline(clock: list[float]) -> None:
    def stalls() -> None:  # each attempt times out after its 2 s
        clock[0] += 2.0
        raise TimeoutError("no answer within 2 s")

    attempts: list[int] = []
    policy = RetryPolicy(retries=5, backoff=0.01, jitter=0, deadline=3.0, attempt_timeout=2.0)
    with pytest.raises(TimeoutError):  # the last error
        policy.call(lambda: attempts.append(1) or stalls())
    assert len(attempts) == 1  # a second would end at 4.01 s, past the deadline of 3 s
    assert clock[0] == 2.0
    # the defaults: a stalled server (timeout 120, deadline 300) ends a call at 240 s
    default = RetryPolicy(jitter=0, attempt_timeout=120.0)
    clock[0], attempts[:] = 0.0, []

    def stalls_long() -> None:
        attempts.append(1)
        clock[0] += 120.0
        raise TimeoutError("no answer")

    with pytest.raises(TimeoutError):
        default.call(stalls_long)
    assert len(attempts) == 2 and clock[0] <= 300.0
    # failures that come at once keep the documented retries
    assert list(RetryPolicy(jitter=0, attempt_timeout=120.0).attempts()) == [0, 1, 2, 3]


def test_the_deadline_counts_from_since(clock: list[float]) -> None:
    clock[0] = 100.0
    policy = RetryPolicy(retries=3, backoff=1.0, jitter=0, deadline=10.0)
    assert list(policy.attempts(since=retry.now() - 9.5)) == [0]  # 9.5 + 1 > 10
    assert list(policy.attempts(since=retry.now())) == [0, 1, 2, 3]


def test_invalid_policies_are_refused() -> None:
    for bad in (
        {"retries": -1},
        {"backoff": -1.0},
        {"jitter": 1.5},
        {"deadline": 0},
        {"attempt_timeout": 0},
    ):
        with pytest.raises(ValueError):
            RetryPolicy(**bad)


def test_policy_from_config() -> None:
    with config.set(retries=7, retry_backoff=0.5, retry_deadline=9):
        policy = RetryPolicy.from_config()
    assert (policy.retries, policy.backoff, policy.deadline) == (7, 0.5, 9)
    with pytest.raises(ValueError, match="retries"):
        config.set(retries=-1)
    with pytest.raises(ValueError, match="timeout"):
        config.set(timeout=0)


# -- call and with_retries ----------------------------------------------------------------------
class Flaky:
    def __init__(self, failures: int, exc: BaseException | None = None) -> None:
        self.failures, self.calls = failures, 0
        self.exc = exc or ConnectionResetError("reset")

    def __call__(self, value: int) -> int:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.exc
        return value * 2


def test_call_retries_transient_errors_until_success(clock: list[float]) -> None:
    flaky = Flaky(failures=2)
    assert RetryPolicy(retries=3, backoff=0.1, jitter=0).call(flaky, 21) == 42
    assert flaky.calls == 3 and clock[1:] == [0.1, 0.2]


def test_call_gives_up_after_the_last_attempt(clock: list[float]) -> None:
    flaky = Flaky(failures=10)
    with pytest.raises(ConnectionResetError):
        RetryPolicy(retries=2, backoff=0).call(flaky, 1)
    assert flaky.calls == 3
    seen: list[int] = []

    def give_up(exc: BaseException, attempts: int) -> BaseException:
        seen.append(attempts)
        return StoreError(f"gave up after {attempts}: {exc}")

    with pytest.raises(StoreError, match="gave up after 3: reset") as info:
        RetryPolicy(retries=2, backoff=0).call(Flaky(10), 1, give_up=give_up)
    assert seen == [3] and isinstance(info.value.__cause__, ConnectionResetError)


def test_call_never_retries_a_permanent_error(clock: list[float]) -> None:
    flaky = Flaky(failures=10, exc=PermissionError("access denied"))
    with pytest.raises(PermissionError):
        RetryPolicy(retries=5, backoff=1.0).call(flaky, 1)
    assert flaky.calls == 1 and clock == [0.0]


def test_with_retries_bare_reads_the_config(clock: list[float]) -> None:
    flaky = Flaky(failures=2)
    wrapped = with_retries(flaky)
    with config.set(retries=1, retry_backoff=0), pytest.raises(ConnectionResetError):
        wrapped(1)
    assert flaky.calls == 2
    with config.set(retries=5, retry_backoff=0):
        assert wrapped(4) == 8
    assert flaky.calls == 3

    @with_retries(policy=RetryPolicy(retries=4, backoff=0))
    def twice(value: int, flaky: Flaky = Flaky(failures=4)) -> int:  # noqa: B008
        return flaky(value)

    assert twice(5) == 10 and twice.__name__ == "twice"


# -- RetryingStore ------------------------------------------------------------------------------
def test_retrying_store_retries_injected_transient_faults(clock: list[float]) -> None:
    faulty = FaultyStore(MemoryStore({"a": b"1", "b": b"2"}), fail_on={"get": 2, "list": 1})
    store = RetryingStore(faulty, RetryPolicy(retries=3, backoff=0.01, jitter=0))
    assert store.get("a") == b"1"
    assert faulty.calls["get"] == 3 and faulty.failures == [("get", "a"), ("get", "a")]
    assert sorted(store.list_prefix("")) == ["a", "b"]  # the failed listing is redone whole
    assert store.get_many(["a", "b"]) == {"a": b"1", "b": b"2"}
    assert store.identity == faulty.identity and store.read_only is False


def test_retrying_store_gives_up_with_a_store_error(clock: list[float]) -> None:
    faulty = FaultyStore(MemoryStore({"a": b"1"}), fail_on={"set": True})
    store = RetryingStore(faulty, RetryPolicy(retries=2, backoff=0))
    with pytest.raises(StoreError, match=r"cannot write 'k' in FaultyStore.*after 3 attempts"):
        store.set("k", b"v")
    assert faulty.calls["set"] == 3


def test_retrying_store_does_not_retry_permanent_errors(clock: list[float]) -> None:
    faulty = FaultyStore(MemoryStore(), fail_on={"get": True}, error=PermissionError)
    store = RetryingStore(faulty, RetryPolicy(retries=5, backoff=1.0))
    with pytest.raises(StoreError, match=r"cannot read 'k' in FaultyStore.*PermissionError"):
        store.get("k")
    assert faulty.calls["get"] == 1 and clock == [0.0]
    read_only = RetryingStore(MemoryStore(), RetryPolicy(retries=5)).with_read_only()
    with pytest.raises(ReadOnlyError):
        read_only.set("k", b"v")


def test_retrying_store_pickles_with_its_policy() -> None:
    store = RetryingStore(MemoryStore({"a": b"1"}), RetryPolicy(retries=4, backoff=0.5))
    clone = pickle.loads(pickle.dumps(store))
    assert clone.policy == store.policy and clone.get("a") == b"1"


# -- FsspecStore uses the policy ----------------------------------------------------------------
def memory_url() -> str:
    return f"memory://tz-retry-{uuid.uuid4().hex}/root"


def test_fsspec_store_takes_its_defaults_from_config() -> None:
    with config.set(retries=6, retry_backoff=0.125, timeout=30):
        store = FsspecStore(memory_url())
        explicit = FsspecStore(memory_url(), retries=1, retry_backoff=0, timeout=None)
    assert (store.retries, store.retry_backoff, store.timeout) == (6, 0.125, 30)
    assert (explicit.retries, explicit.retry_backoff, explicit.timeout) == (1, 0, None)
    assert store.policy.retries == 6 and store.policy.backoff == 0.125


def test_fsspec_store_retries_within_the_deadline(clock: list[float]) -> None:
    with config.set(retry_deadline=10):
        store = FsspecStore(memory_url(), retries=10, retry_backoff=1.0)
    store.set("k", b"v")
    calls: list[int] = []

    def broken(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        raise TimeoutError("read timed out")

    store.fs.cat_ranges = broken
    with pytest.raises(StoreError, match=r"cannot read 'k' at 'memory://.*after 4 attempts"):
        store.get("k")
    assert len(calls) == 4 and 5.0 <= clock[0] <= 7.0  # jittered waits of about 1, 2, 4


def test_fsspec_store_permission_error_is_not_retried(clock: list[float]) -> None:
    store = FsspecStore(memory_url(), retries=5, retry_backoff=1.0)
    calls: list[int] = []

    def denied(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        raise PermissionError("Access Denied")

    store.fs.pipe = denied
    with pytest.raises(StoreError, match=r"cannot write 'k' at 'memory://.*Access Denied") as info:
        store.set("k", b"v")
    assert len(calls) == 1 and clock == [0.0]
    assert "attempts" not in str(info.value)


@pytest.mark.services
def test_missing_s3_bucket_is_not_retried(s3_server: Any, clock: list[float]) -> None:
    url = f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/data"
    store = FsspecStore(url, s3_server.storage_options, retries=5, retry_backoff=1.0)
    inner = store.fs._cat_file
    calls: list[int] = []

    async def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return await inner(*args, **kwargs)

    store.fs._cat_file = counting
    with pytest.raises(StoreError, match=rf"bucket or container 'no-such-bucket-.*{url}"):
        store.get("zarr.json")
    assert len(calls) == 1 and clock == [0.0]  # no retry, no wait
