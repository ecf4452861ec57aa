"""Ctrl-C while a checkpoint's threads write: no item runs on after the interrupt is raised.

An interrupt landing in ``ThreadPoolExecutor.submit`` after the item was queued, while the
pool starts a thread for it, leaves a thread the pool does not know of (its ``shutdown``
does not wait for it). A zip save undone while that thread still wrote kept its chunks
for good. These tests put the interrupt there without signals, by patching
``Thread.start``.
"""

from __future__ import annotations

import threading
import time
import zipfile
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
import torch

import torchzarr as tz
from torchzarr.checkpoint import threads
from torchzarr.storage.zip import ZipStore

PREFIX = "tz-test-interrupt"


class Items:
    """Work items that sleep, recording when each starts and ends."""

    def __init__(self, sleeps: list[float], fail: dict[int, str] | None = None) -> None:
        self.sleeps, self.fail = sleeps, fail or {}
        self.begun = [threading.Event() for _ in sleeps]
        self.started: set[int] = set()
        self.ended: set[int] = set()

    def __call__(self, i: int) -> int:
        self.started.add(i)
        self.begun[i].set()
        time.sleep(self.sleeps[i])
        self.ended.add(i)
        if i in self.fail:
            raise ValueError(self.fail[i])
        return i * 10

    def snapshot(self) -> tuple[set[int], set[int]]:
        return set(self.started), set(self.ended)


def interrupt_second_start(
    monkeypatch: pytest.MonkeyPatch, prefix: str, started: Any, before: bool = False
) -> dict[str, int]:
    """Make the second start of a pool thread named ``prefix...`` raise KeyboardInterrupt
    (its item already queued): once ``started(thread, n)`` returns, after starting it, or
    ``before`` starting it. ``started`` also runs after the first start."""
    real_start = threading.Thread.start
    count = {"n": 0}

    def start(self: threading.Thread) -> None:
        if not self.name.startswith(prefix):
            return real_start(self)
        count["n"] += 1
        if count["n"] == 2 and before:
            raise KeyboardInterrupt
        real_start(self)
        if count["n"] <= 2:
            started(self, count["n"])
        if count["n"] == 2:
            raise KeyboardInterrupt  # the pool has not recorded this thread yet

    monkeypatch.setattr(threading.Thread, "start", start)
    return count


def pool_threads_end(prefix: str) -> bool:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if not any(t.name.startswith(prefix) for t in threading.enumerate()):
            return True
        time.sleep(0.02)
    return False


def test_an_interrupt_while_a_thread_starts_waits_for_the_item_it_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    items = Items([0.05, 0.6, 0.05, 0.05])
    count = interrupt_second_start(monkeypatch, PREFIX, lambda _t, n: items.begun[n - 1].wait(5))
    with pytest.raises(KeyboardInterrupt):
        threads.run_all(items, [0, 1, 2, 3], threads=4, name=PREFIX)
    at_raise = items.snapshot()
    assert count["n"] == 2
    assert at_raise == ({0, 1}, {0, 1})  # item 1 ran on the unrecorded thread: it ended
    time.sleep(0.3)
    assert items.snapshot() == at_raise  # and nothing started afterwards
    assert pool_threads_end(PREFIX)


def test_an_item_queued_when_the_interrupt_came_does_not_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    items = Items([0.3, 0.05, 0.05])
    interrupt_second_start(monkeypatch, PREFIX, lambda _t, n: items.begun[0].wait(5), True)
    with pytest.raises(KeyboardInterrupt):
        threads.run_all(items, [0, 1, 2], threads=3, name=PREFIX)
    assert items.snapshot() == ({0}, {0})
    time.sleep(0.4)  # item 1 waits in the queue: the pool's thread skips it
    assert items.snapshot() == ({0}, {0})
    assert pool_threads_end(PREFIX)


def test_an_interrupt_while_waiting_starts_nothing_more(monkeypatch: pytest.MonkeyPatch) -> None:
    items = Items([0.2] * 6)
    real_result = Future.result
    calls = {"n": 0}

    def result(self: Future[Any], timeout: float | None = None) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            assert items.begun[0].wait(5) and items.begun[1].wait(5)
            raise KeyboardInterrupt
        return real_result(self, timeout)

    monkeypatch.setattr(Future, "result", result)
    with pytest.raises(KeyboardInterrupt):
        threads.run_all(items, list(range(6)), threads=2, name=PREFIX)
    assert items.snapshot() == ({0, 1}, {0, 1})
    time.sleep(0.4)
    assert items.snapshot() == ({0, 1}, {0, 1})


def test_the_first_error_in_item_order_is_raised_and_results_keep_their_order() -> None:
    items = Items([0.3, 0.1, 0.0, 0.0, 0.0, 0.0], fail={1: "one", 3: "three"})
    with pytest.raises(ValueError, match="one"):
        threads.run_all(items, list(range(6)), threads=2, name=PREFIX)
    started, ended = items.snapshot()
    assert started == ended  # every item that started had ended
    sleeps = Items([0.05, 0.0, 0.03, 0.0, 0.01])
    assert threads.run_all(sleeps, list(range(5)), threads=3) == [0, 10, 20, 30, 40]


@pytest.fixture
def slow_zip_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Zip writes from the second save thread take a while (0.05 s each)."""
    for method in ("set", "set_many"):
        real = getattr(ZipStore, method)

        def slow(self: ZipStore, *args: Any, _real: Any = real, **kwargs: Any) -> Any:
            if threading.current_thread().name == "torchzarr-ckpt-save_1":
                time.sleep(0.05)
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(ZipStore, method, slow)


@pytest.mark.usefixtures("slow_zip_writes")
def test_an_interrupted_zip_save_leaves_no_entries_of_its_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "ck.zip"
    tz.save_checkpoint({"w": torch.arange(8.0), "step": 1}, str(path), fsync=False)
    # The second save thread starts, unrecorded by its pool, and writes its tensor slowly.
    count = interrupt_second_start(monkeypatch, "torchzarr-ckpt-save", lambda _t, _n: None)
    bad = {"a": torch.randn(64, 256), "b": torch.randn(64, 256), "step": -1}
    with tz.config.set(threads=4), pytest.raises(KeyboardInterrupt):
        tz.save_checkpoint(bad, str(path), chunk_bytes=4096, fsync=False)
    assert count["n"] == 2
    time.sleep(1.2)  # a save thread left writing would have added its entries by now
    with ZipStore(path, mode="r") as store:
        assert {k.split("/")[0] for k in store.list_prefix("")} == {"v000001", "zarr.json"}
    with zipfile.ZipFile(path) as zf:
        assert zf.testzip() is None
        assert {n.split("/")[0] for n in zf.namelist()} == {"v000001", "zarr.json"}
    loaded = tz.load_checkpoint(str(path))
    assert loaded["step"] == 1 and torch.equal(loaded["w"], torch.arange(8.0))
    tz.save_checkpoint({"w": torch.ones(8), "step": 2}, str(path), fsync=False)
    assert tz.load_checkpoint(str(path))["step"] == 2
