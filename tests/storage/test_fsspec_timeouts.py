"""The store's timeout over an async filesystem: it bounds stalled requests, not batch sizes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from fsspec.asyn import AsyncFileSystem
from fsspec.registry import _registry, known_implementations

from torchzarr.config import config
from torchzarr.errors import StoreError
from torchzarr.storage.fsspec_store import FsspecStore

PROTOCOL = "pacedtest"


class PacedFileSystem(AsyncFileSystem):
    """Objects in memory; each request takes ``pace`` seconds, one for a path in ``hang``
    never answers."""

    protocol = PROTOCOL

    def __init__(self, pace: float = 0.0, hang: tuple[str, ...] = (), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pace, self.hang = pace, frozenset(hang)
        self.objects: dict[str, bytes] = {}
        self.requests = 0
        self.link, self.in_flight = 0.0, 0  # seconds a request takes alone on the link

    async def _answer(self, path: str) -> None:
        self.requests += 1
        if path in self.hang:
            await asyncio.Event().wait()
        await asyncio.sleep(self.pace)
        if self.link:  # a link shared by the requests in flight: each gets its part
            self.in_flight += 1
            try:
                done = 0.0
                while done < self.link:
                    await asyncio.sleep(0.01)
                    done += 0.01 / self.in_flight
            finally:
                self.in_flight -= 1

    async def _cat_file(self, path: str, start: Any = None, end: Any = None, **kw: Any) -> bytes:
        await self._answer(path)
        if path not in self.objects:
            raise FileNotFoundError(path)
        return self.objects[path][start:end]

    async def _pipe_file(self, path: str, value: bytes, **kwargs: Any) -> None:
        await self._answer(path)
        self.objects[path] = bytes(value)


@pytest.fixture(autouse=True)
def _paced_protocol(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(_registry, PROTOCOL, PacedFileSystem)
    monkeypatch.setitem(known_implementations, PROTOCOL, {"class": "PacedFileSystem"})


def _store(timeout: float = 0.5, **options: Any) -> FsspecStore:
    return FsspecStore(f"{PROTOCOL}://data", options, retries=1, retry_backoff=0, timeout=timeout)


ITEMS = {f"c/{i}": bytes([i]) * 10 for i in range(100)}


def test_a_batch_longer_than_the_timeout_reads_while_requests_keep_finishing() -> None:
    store = _store(timeout=1, batch_size=1)  # one request at a time: 100 of 0.03 s each
    store.set_many(ITEMS)
    store.fs.pace, store.fs.requests = 0.03, 0
    assert store.get_many(list(ITEMS)) == ITEMS
    assert store.fs.requests == len(ITEMS)  # nothing timed out, nothing was sent again


def test_a_batch_longer_than_the_timeout_is_written_once() -> None:
    store = _store(timeout=1, batch_size=1, pace=0.03)
    store.set_many(ITEMS)
    assert store.fs.requests == len(ITEMS)
    assert store.fs.objects == {f"data/{key}": value for key, value in ITEMS.items()}


def test_requests_sharing_a_slow_link_too_thinly_need_a_smaller_batch_size() -> None:
    # each takes 0.1 s alone, 0.8 s when the eight share the link: past the timeout, so
    # the batch fails, and batch_size (as docs/storage.md says) lets it through
    items = {f"c/{i}": bytes([i]) * 10 for i in range(8)}
    store = _store(timeout=0.5)
    store.set_many(items)
    store.fs.link = 0.1
    with pytest.raises(StoreError, match=r"timeout of 0.5 s \(8 in flight\)"):
        store.get_many(list(items))
    fewer = _store(timeout=0.5, batch_size=2)
    fewer.fs.objects, fewer.fs.link = store.fs.objects, 0.1
    assert fewer.get_many(list(items)) == items


def test_a_read_that_never_answers_times_out_naming_its_key() -> None:
    store = _store(hang=("data/c/7",))
    store.fs.objects.update({f"data/{key}": ITEMS[key] for key in list(ITEMS)[:10]})
    with pytest.raises(StoreError) as info:
        store.get_many(list(ITEMS)[:10])
    message = str(info.value)
    assert message.startswith("cannot read 'c/7' at 'pacedtest://data' after 2 attempts")
    assert "TimeoutError: no request finished within the store's timeout of 0.5 s" in message


def test_writes_that_never_answer_time_out_naming_the_first_key() -> None:
    store = _store(hang=("data/c/3", "data/c/5"))
    with pytest.raises(StoreError) as info:
        store.set_many(ITEMS)
    message = str(info.value)
    assert message.startswith("cannot write 'c/3 (and 1 more that failed)' at 'pacedtest://data'")
    assert "after 2 attempts: TimeoutError" in message
    written = {f"data/{key}" for key in ITEMS} - {"data/c/3", "data/c/5"}
    assert set(store.fs.objects) == written  # the others were written, each once


def test_no_retry_starts_that_could_time_out_past_the_deadline() -> None:
    with config.set(retry_deadline=0.9):
        store = FsspecStore(f"{PROTOCOL}://data", retries=5, retry_backoff=0, timeout=0.5)
    store.fs.hang = frozenset({"data/k"})
    assert store.policy.attempt_timeout == 0.5  # an async filesystem: attempts are bounded
    with pytest.raises(StoreError, match="TimeoutError") as info:
        store.get("k")
    # a retry, begun after the first attempt's 0.5 s, could end past 0.9 s: not started
    assert store.fs.requests == 1 and "attempts" not in str(info.value)
    memory = FsspecStore("memory://tz-no-timeout", timeout=0.5)
    memory.exists("k")  # opens the filesystem
    assert memory.policy.attempt_timeout is None  # sync: the timeout bounds no attempt
