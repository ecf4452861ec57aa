"""tz.config and the engine's task runner."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

import torchzarr as tz
from torchzarr.config import config
from torchzarr.core.engine import is_all_fill, run_parallel


def test_config_set_restores_and_validates():
    before = config.threads
    with config.set(threads=1, task_bytes=10):
        assert config.threads == 1 and config.task_bytes == 10
    assert config.threads == before
    with pytest.raises(TypeError, match="unknown"):
        config.set(nope=1)
    with pytest.raises(ValueError, match="positive"):
        config.set(threads=0)


def test_run_parallel_keeps_order_and_uses_threads():
    seen: set[int] = set()

    def work(x: int) -> int:
        seen.add(threading.get_ident())
        return x * x

    with config.set(threads=2, task_bytes=1):
        assert run_parallel(work, list(range(50)), cost=lambda _: 1) == [x * x for x in range(50)]
    assert len(seen) >= 1


def test_run_parallel_raises_first_error_after_all_finish():
    done = []

    def work(x: int) -> int:
        if x == 3:
            raise RuntimeError("boom 3")
        done.append(x)
        return x

    with config.set(threads=2, task_bytes=1), pytest.raises(RuntimeError, match="boom 3"):
        run_parallel(work, list(range(8)), cost=lambda _: 1)
    assert len(done) == 7


def test_is_all_fill_cases():
    assert is_all_fill(np.zeros(5), 0.0)
    assert not is_all_fill(np.array([0.0, 1.0]), 0.0)
    assert is_all_fill(np.full(3, np.nan), np.nan)
    assert not is_all_fill(np.array([np.nan, 1.0]), np.nan)
    assert is_all_fill(np.full(2, complex(np.nan, 1)), complex(np.nan, 1))
    assert is_all_fill(np.zeros(0), 1)
    assert is_all_fill(np.ones((2, 3)).T, 1.0)


def test_a_durable_local_write_that_fails_midway_changes_nothing(tmp_path, monkeypatch):
    from torchzarr.storage.local import LocalStore

    store = LocalStore(tmp_path / "a.zarr", fsync=True)
    arr = tz.create_array(store, shape=(64, 8), dtype=torch.float32, chunks=(8, 8))
    arr[:] = torch.zeros(64, 8)
    real, calls = LocalStore.stage_many, []

    def fail_third(self, items):
        calls.append(len(items))
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return real(self, items)

    monkeypatch.setattr(LocalStore, "stage_many", fail_third)
    with tz.config.set(threads=2, task_bytes=256), pytest.raises(Exception, match="No space"):
        arr[:] = torch.ones(64, 8)
    monkeypatch.undo()
    assert len(calls) >= 3
    assert torch.equal(tz.open_array(store)[:], torch.zeros(64, 8))  # all or nothing
    assert not [p for p in (tmp_path / "a.zarr").rglob("*") if p.name.endswith(".partial")]
