"""The engine's pool interrupted (Ctrl-C in the calling thread while it submits or waits):
no queued group starts afterwards and every group begun has ended before the interrupt
goes on, so no chunk write lands after the caller's cleanup."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest

import torchzarr as tz
from torchzarr.core.pool import run_parallel


class Work:
    """Items that take a while; records those begun and those ended."""

    def __init__(self) -> None:
        self.begun: list[int] = []
        self.ended: list[int] = []
        self.lock = threading.Lock()

    def __call__(self, item: int) -> int:
        with self.lock:
            self.begun.append(item)
        time.sleep(0.05)
        with self.lock:
            self.ended.append(item)
        return item


def _settled(work: Work) -> None:
    """Every item begun had ended when the call raised, and none begins afterwards."""
    with work.lock:
        begun, ended = sorted(work.begun), sorted(work.ended)
    assert begun == ended, (begun, ended)
    time.sleep(0.4)
    with work.lock:
        assert sorted(work.begun) == begun, "an item began after the interrupt"


def test_an_interrupt_inside_submit_leaves_no_group_running(monkeypatch) -> None:
    real_submit = ThreadPoolExecutor.submit
    submitted: list[Any] = []

    def submit(self: ThreadPoolExecutor, fn: Any, *args: Any, **kwargs: Any) -> Future[Any]:
        future = real_submit(self, fn, *args, **kwargs)
        submitted.append(future)
        if len(submitted) == 2:  # queued, its future never handed back: as Ctrl-C does
            raise KeyboardInterrupt
        return future

    monkeypatch.setattr(ThreadPoolExecutor, "submit", submit)
    work = Work()
    with tz.config.set(threads=2), pytest.raises(KeyboardInterrupt):
        run_parallel(work, list(range(12)))
    _settled(work)
    assert len(work.begun) < 12


def test_an_interrupt_while_waiting_leaves_no_group_running(monkeypatch) -> None:
    real_result = Future.result
    waits: list[int] = []

    def result(self: Future[Any], timeout: float | None = None) -> Any:
        waits.append(1)
        if len(waits) == 1:
            raise KeyboardInterrupt
        return real_result(self, timeout)

    monkeypatch.setattr(Future, "result", result)
    work = Work()
    with tz.config.set(threads=2), pytest.raises(KeyboardInterrupt):
        run_parallel(work, list(range(12)))
    _settled(work)
    assert len(work.begun) < 12  # the groups still queued were dropped


@pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread(), reason="needs the main thread"
)
def test_a_second_interrupt_ends_the_wait_for_a_hung_group() -> None:
    import _thread

    hung = threading.Event()

    def work(item: int) -> int:
        if item == 0:
            assert hung.wait(5)
            raise ValueError("the first group fails while the other hangs")
        hung.set()
        time.sleep(3)  # hung, as a read of a stalled server
        return item

    timer = threading.Timer(0.5, _thread.interrupt_main)  # Ctrl-C while it waits
    began = time.monotonic()
    timer.start()
    try:
        with tz.config.set(threads=2), pytest.raises(KeyboardInterrupt) as caught:
            run_parallel(work, [0, 1])
    finally:
        timer.cancel()
    assert time.monotonic() - began < 2.5  # not held until the hung group ends
    assert isinstance(caught.value.__context__, ValueError)  # the error it interrupted
