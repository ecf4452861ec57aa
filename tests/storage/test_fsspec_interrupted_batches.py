"""A batch of requests interrupted by Ctrl-C in the thread that waits on it: none of its
requests starts afterwards and none is left running, so a cleanup that follows (the delete
of a half-written array) is not undone by writes landing after it."""

from __future__ import annotations

import _thread
import asyncio
import threading
import time
from typing import Any

import pytest
from fsspec.asyn import AsyncFileSystem

import torchzarr as tz
from torchzarr.errors import InvalidArgumentError
from torchzarr.storage import fsspec_requests
from torchzarr.storage.fsspec_requests import set_request_limit, write_each
from torchzarr.storage.fsspec_store import FsspecStore


class SlowWrites(AsyncFileSystem):
    """Each write takes 0.1 s; counts those begun and those running."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.begun = 0
        self.running = 0
        self.lock = threading.Lock()

    async def _pipe_file(self, path: str, value: bytes, **kwargs: Any) -> None:
        with self.lock:
            self.begun += 1
            self.running += 1
        try:
            await asyncio.sleep(0.1)
        finally:
            with self.lock:
                self.running -= 1


def _interrupted(call: Any) -> None:
    """``call()`` with a KeyboardInterrupt in this (the main) thread 0.3 s in."""
    timer = threading.Timer(0.3, _thread.interrupt_main)
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            call()
    finally:
        timer.cancel()


@pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread(), reason="needs the main thread"
)
def test_no_write_of_an_interrupted_batch_starts_or_runs_after_the_interrupt() -> None:
    fs = SlowWrites(skip_instance_cache=True)
    set_request_limit(fs, 2)  # 100 writes, 2 at a time: 5 s
    values = {f"k/{i}": b"x" for i in range(100)}
    _interrupted(lambda: write_each(fs, values, timeout=None))
    assert fs.running == 0, "writes of the batch still run after the KeyboardInterrupt"
    begun = fs.begun
    time.sleep(0.5)
    assert fs.begun == begun, f"{fs.begun - begun} writes began after the KeyboardInterrupt"
    assert 0 < begun < len(values)


@pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread(), reason="needs the main thread"
)
def test_an_interrupted_call_on_the_loop_is_cancelled_before_the_interrupt_goes_on() -> None:
    fs = SlowWrites(skip_instance_cache=True)
    state = {"ended": False}

    async def long_call() -> None:
        try:
            await asyncio.sleep(30)
        finally:
            state["ended"] = True

    _interrupted(lambda: fsspec_requests.run_on_loop(fs, long_call))
    assert state["ended"], "the call still runs on the event loop"


def test_a_failure_raised_in_the_waiting_thread_cancels_the_call(monkeypatch: Any) -> None:
    # the same, without signals: the wait of the calling thread fails (as Ctrl-C makes it)
    fs = SlowWrites(skip_instance_cache=True)
    set_request_limit(fs, 2)
    real_wait = threading.Event.wait
    waits = {"n": 0}
    waiter = threading.get_ident()

    def failing_wait(self: threading.Event, timeout: float | None = None) -> bool:
        # the second poll of the waiting thread (not its wait for the cancel to end)
        if timeout == 1 and threading.get_ident() == waiter:
            waits["n"] += 1
            if waits["n"] == 2:
                raise KeyboardInterrupt
        return real_wait(self, timeout)

    monkeypatch.setattr(threading.Event, "wait", failing_wait)
    with pytest.raises(KeyboardInterrupt):
        write_each(fs, {f"k/{i}": b"x" for i in range(100)}, timeout=None)
    monkeypatch.undo()
    assert fs.running == 0
    begun = fs.begun
    time.sleep(0.5)
    assert fs.begun == begun and 0 < begun < 100


def test_asynchronous_storage_option_is_refused() -> None:
    # fsspec's blocking methods of an asynchronous filesystem fail: "Loop is not running"
    with pytest.raises(InvalidArgumentError, match="asynchronous=True") as err:
        FsspecStore("s3://bkt/no-async", storage_options={"asynchronous": True})
    assert "event loop itself" in str(err.value) and "s3://bkt/no-async" in str(err.value)
    with pytest.raises(InvalidArgumentError, match="asynchronous"):
        tz.open("gs://bkt/no-async", storage_options={"asynchronous": True, "token": "anon"})
    # False is fsspec's default: taken
    store = FsspecStore("s3://bkt/async-false", storage_options={"asynchronous": False})
    assert store.storage_options == {"asynchronous": False}


def test_a_call_from_the_filesystems_own_loop_is_refused_not_left_waiting() -> None:
    fs = SlowWrites(skip_instance_cache=True)

    async def from_the_loop() -> Any:
        return fsspec_requests.run_on_loop(fs, fs._pipe_file, "k", b"x")

    waiting = asyncio.run_coroutine_threadsafe(from_the_loop(), fs.loop)
    with pytest.raises(NotImplementedError, match="within a running loop"):
        waiting.result(timeout=30)  # it would wait for itself forever
    assert fs.begun == 0
