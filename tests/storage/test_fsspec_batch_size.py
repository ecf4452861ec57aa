"""``batch_size``: the requests of a batch an FsspecStore keeps in flight at once.

It is the store's setting, never the filesystem's (s3fs and aiohttp refuse the keyword),
and requests start in a sliding window of that many (64 by default), so that the store's
``timeout`` measures a server that stops answering, not a queue the client built.
"""

from __future__ import annotations

import asyncio
import pickle
import time
from typing import TYPE_CHECKING, Any

import pytest
import torch
from fsspec.asyn import AsyncFileSystem
from fsspec.registry import _registry, known_implementations

import torchzarr as tz
from torchzarr.errors import ArgumentTypeError, InvalidArgumentError, StoreError
from torchzarr.storage.fsspec_store import FsspecStore

if TYPE_CHECKING:
    from services.servers import Service

PROTOCOL = "servedtest"


class ServedFileSystem(AsyncFileSystem):
    """Objects in memory behind a server that answers ``serves`` requests at once, each in
    ``pace`` seconds; the client spends ``cpu`` seconds (blocking) in each of ``steps``
    steps to send one (signing, headers, writes: the event loop takes turns among the
    requests between steps). ``stalled``: no request is ever answered. Counts the requests
    in flight at once."""

    protocol = PROTOCOL

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.objects: dict[str, bytes] = {}
        self.pace, self.cpu, self.steps, self.serves, self.stalled = 0.0, 0.0, 1, 10, False
        self.in_flight = self.most = self.requests = 0
        self._server: asyncio.Semaphore | None = None

    async def _request(self) -> None:
        self.requests += 1
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            for _ in range(self.steps):  # the client's work: the event loop's time
                time.sleep(self.cpu)
                await asyncio.sleep(0)
            if self._server is None:
                self._server = asyncio.Semaphore(self.serves)
            async with self._server:
                if self.stalled:
                    await asyncio.Event().wait()
                await asyncio.sleep(self.pace)
        finally:
            self.in_flight -= 1

    async def _cat_file(self, path: str, start: Any = None, end: Any = None, **kw: Any) -> bytes:
        await self._request()
        if path not in self.objects:
            raise FileNotFoundError(path)
        return self.objects[path][start:end]

    async def _pipe_file(self, path: str, value: bytes, **kwargs: Any) -> None:
        await self._request()
        self.objects[path] = bytes(value)


@pytest.fixture(autouse=True)
def _served_protocol(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(_registry, PROTOCOL, ServedFileSystem)
    monkeypatch.setitem(known_implementations, PROTOCOL, {"class": "ServedFileSystem"})


def _store(n: int, timeout: float = 0.5, **options: Any) -> FsspecStore:
    store = FsspecStore(f"{PROTOCOL}://d", options, retries=0, retry_backoff=0, timeout=timeout)
    store.fs.objects = {f"d/c/{i}": bytes([i % 256]) for i in range(n)}
    return store


@pytest.mark.parametrize("options", [{"batch_size": 3}, {}])
def test_batch_size_bounds_the_requests_in_flight(options: dict[str, Any]) -> None:
    store = _store(300, **options)
    store.fs.pace = 0.002
    got = store.get_many([f"c/{i}" for i in range(300)])
    assert got == {f"c/{i}": bytes([i % 256]) for i in range(300)}
    # a sliding window: as many in flight as allowed, never more (64 by default)
    assert store.fs.most == options.get("batch_size", 64)
    store.fs.most = 0
    store.set_many({f"w/{i}": b"x" for i in range(100)})
    assert store.fs.most == options.get("batch_size", 64)
    assert "batch_size" not in store.storage_options  # the store's, not the filesystem's
    assert getattr(store.fs, "batch_size", None) is None
    assert pickle.loads(pickle.dumps(store)).batch_size == options.get("batch_size")


def test_thousands_of_requests_queued_by_the_client_do_not_time_out() -> None:
    # each request costs the client 5 steps of 0.2 ms to send and the server 10 ms, 10 at
    # once: 2000 requests take seconds, but one finishes every ms or two (1280 started at
    # once take turns for 5 x 0.26 s before the first reaches the server: a timeout)
    store = _store(2000, timeout=0.5)
    store.fs.pace, store.fs.cpu, store.fs.steps = 0.01, 0.0002, 5
    keys = [f"c/{i}" for i in range(2000)]
    assert store.get_many(keys) == {f"c/{i}": bytes([i % 256]) for i in range(2000)}
    assert store.fs.requests == 2000  # none timed out and was sent again


def test_a_stalled_server_still_times_out() -> None:
    store = _store(200, timeout=0.3)
    store.fs.stalled = True
    started = time.monotonic()
    with pytest.raises(StoreError, match=r"timeout of 0.3 s \(64 in flight\)"):
        store.get_many([f"c/{i}" for i in range(200)])
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        (0, InvalidArgumentError, "setting 'batch_size' must be >= 1, got 0"),
        (1.5, ArgumentTypeError, "setting 'batch_size' must be an int, got 1.5"),
        (True, ArgumentTypeError, "setting 'batch_size' must be an int, got True"),
        ("2", ArgumentTypeError, "setting 'batch_size' must be an int, got '2'"),
    ],
)
def test_a_bad_batch_size_is_refused_naming_it_and_the_url(
    value: Any, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=rf"invalid store setting for 's3://b/x': {message}"):
        FsspecStore("s3://b/x", {"batch_size": value})
    with pytest.raises(error, match="batch_size"):
        FsspecStore("s3://b/x", batch_size=value)
    with pytest.raises(InvalidArgumentError, match="batch_size given twice"):
        FsspecStore("s3://b/x", {"batch_size": 2}, batch_size=3)


@pytest.mark.services
def test_s3_reads_and_writes_with_batch_size(s3_server: Service) -> None:
    options = {**s3_server.storage_options, "batch_size": 2}
    url = s3_server.url()
    arr = tz.create_array(
        url, shape=(10,), dtype=torch.float32, chunks=(2,), storage_options=options
    )
    arr[:] = torch.arange(10.0)
    arr = tz.open_array(url, mode="r", storage_options=options)
    store = arr.store
    assert isinstance(store, FsspecStore) and store.batch_size == 2
    inner, counts = store.fs._cat_file, [0, 0]

    async def counting(*args: Any, **kwargs: Any) -> Any:
        counts[0] += 1
        counts[1] = max(counts[1], counts[0])
        try:
            await asyncio.sleep(0.01)
            return await inner(*args, **kwargs)
        finally:
            counts[0] -= 1

    store.fs._cat_file = counting
    assert torch.equal(arr[:], torch.arange(10.0))
    assert counts[1] == 2  # five chunks, two at a time
