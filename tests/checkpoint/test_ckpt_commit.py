"""Crash safety: a save interrupted at any point leaves the previous checkpoint loadable."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import torch

import torchzarr as tz
from torchzarr.checkpoint import AsyncCheckpointer, load_checkpoint, read_manifest, save_checkpoint
from torchzarr.checkpoint.commit import checkpoint_store, next_version


class _Crash(Exception):
    pass


def _state(value: float) -> dict[str, Any]:
    return {
        "model": {"w": torch.full((64, 8), value), "b": torch.full((8,), value)},
        "step": int(value),
        "tags": ["x", value],
    }


def _failing_after(store: tz.Store, writes: int) -> list[int]:
    """Make ``store.set`` raise after ``writes`` calls; returns the call counter."""
    calls = [0]
    original = store.set

    def set_(key: str, value: Any) -> None:
        calls[0] += 1
        if calls[0] > writes:
            raise _Crash(f"injected crash before writing {key}")
        original(key, value)

    store.set = set_  # type: ignore[method-assign]
    return calls


def _count_writes(make_store: Any) -> int:
    store = make_store()
    save_checkpoint(_state(1.0), store, chunk_bytes=512)
    calls = _failing_after(store, 10**9)
    save_checkpoint(_state(2.0), store, chunk_bytes=512)
    return calls[0]


@pytest.mark.parametrize("kind", ["memory", "local"])
def test_crash_at_every_write_keeps_previous_checkpoint(kind: str, tmp_path: Path) -> None:
    counter = iter(range(10**6))

    def make_store() -> tz.Store:
        if kind == "memory":
            return tz.MemoryStore()
        return tz.LocalStore(tmp_path / f"s{next(counter)}", fsync=True)

    total = _count_writes(make_store)
    assert total > 10  # many chunk and metadata writes: every one is a crash point
    for writes in range(total):
        store = make_store()
        save_checkpoint(_state(1.0), store, chunk_bytes=512)
        _failing_after(store, writes)
        with pytest.raises(_Crash):
            save_checkpoint(_state(2.0), store, chunk_bytes=512)
        out = load_checkpoint(store)
        assert out["step"] == 1 and torch.equal(out["model"]["w"], torch.full((64, 8), 1.0))
    # the next save succeeds, and cleans up the leftover of the crashed one
    store.set = type(store).set.__get__(store)  # type: ignore[method-assign]
    assert next_version(store) == "v000003"
    save_checkpoint(_state(3.0), store)
    assert load_checkpoint(store)["step"] == 3
    _, dirs = store.list_dir("")
    assert dirs == ["v000003"]


def test_first_save_crash_leaves_nothing_loadable() -> None:
    store = tz.MemoryStore()
    _failing_after(store, 3)
    with pytest.raises(_Crash):
        save_checkpoint(_state(1.0), store)
    assert read_manifest(store) is None
    with pytest.raises(tz.errors.NodeNotFoundError, match="no committed checkpoint"):
        load_checkpoint(store)


def test_keep_older_versions() -> None:
    store = tz.MemoryStore()
    for value in (1.0, 2.0, 3.0):
        save_checkpoint(_state(value), store, keep=2)
    _, dirs = store.list_dir("")
    assert dirs == ["v000002", "v000003"]
    assert load_checkpoint(store)["step"] == 3
    assert load_checkpoint(store, version="v000002")["step"] == 2


_WRITER = textwrap.dedent(
    """
    import sys, torch
    from torchzarr.checkpoint import save_checkpoint
    path = sys.argv[1]
    i = 0
    while True:
        i += 1
        save_checkpoint({"a": torch.full((256, 1024), float(i)), "b": torch.full((300,), float(i)),
                         "i": i}, path, chunk_bytes=64 * 1024)
        print(i, flush=True)
    """
)


def test_sigkill_mid_save_leaves_a_consistent_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "ckpt"
    for attempt in range(4):
        proc = subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(path)],
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": os.getcwd()},
        )
        assert proc.stdout is not None
        proc.stdout.readline()  # at least one save committed
        time.sleep(0.01 * (attempt + 1))  # then kill it somewhere in a later save
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        out = load_checkpoint(path)
        i = out["i"]
        assert torch.equal(out["a"], torch.full((256, 1024), float(i)))
        assert torch.equal(out["b"], torch.full((300,), float(i)))


def test_async_checkpointer_snapshots_and_reports_errors() -> None:
    w = torch.zeros(4)
    with AsyncCheckpointer() as saver:
        saver.save({"w": w}, "memory://ckpt-async")
        w += 1  # after save() returned: must not leak into the checkpoint
        assert saver.wait() == "v000001"
        assert torch.equal(load_checkpoint("memory://ckpt-async")["w"], torch.zeros(4))

        store = tz.MemoryStore()
        _failing_after(store, 2)
        saver.save({"w": w}, store)
        with pytest.raises(_Crash):
            saver.wait()
        saver.save({"w": w}, store)  # a failure does not stick
        with pytest.raises(_Crash):
            saver.save({"w": w}, "memory://ckpt-async")  # raised by the next call
        saver.save({"w": w}, "memory://ckpt-async")
        assert saver.wait() == "v000002"
    with pytest.raises(tz.checkpoint.UnrepresentableError):
        AsyncCheckpointer().save({"x": object()}, "memory://ckpt-async2")


def test_checkpoint_store_forces_fsync_locally(tmp_path: Path) -> None:
    store = checkpoint_store(tmp_path)
    assert isinstance(store, tz.LocalStore) and store.fsync
    assert not checkpoint_store(tmp_path, fsync=False).fsync
