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
