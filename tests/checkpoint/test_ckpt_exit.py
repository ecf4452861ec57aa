"""Checkpoints saved while Python exits: pending background saves, saves from atexit handlers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from torchzarr.checkpoint import load_checkpoint, threads

_EXIT_REFUSAL = "cannot schedule new futures after interpreter shutdown"


def _run(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    # several threads, so that saves and loads would use their pools
    env = {**os.environ, "TORCHZARR_THREADS": "4"}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path
    )


def test_a_pending_async_save_is_finished_when_the_script_ends(tmp_path: Path) -> None:
    path = str(tmp_path / "ck")
    code = (
        "import torch\n"
        "from torchzarr.checkpoint import AsyncCheckpointer\n"
        "saver = AsyncCheckpointer()\n"
        f"saver.save({{'w': torch.arange(10.0), 'step': 1}}, {path!r})\n"
        "# the script ends: no wait(), no close()\n"
    )
    run = _run(code, tmp_path)
    assert run.returncode == 0, run.stderr
    out = load_checkpoint(path)
    assert out["step"] == 1 and torch.equal(out["w"], torch.arange(10.0))


def test_save_and_load_checkpoint_work_from_an_atexit_handler(tmp_path: Path) -> None:
    path = str(tmp_path / "ck")
    code = (
        "import atexit, torch\n"
        "from torchzarr.checkpoint import load_checkpoint, save_checkpoint\n"
        "def at_exit():\n"
        "    state = {'w': torch.arange(64.0), 'b': torch.ones(8), 'step': 2}\n"
        # compressed, many chunks: written on the save's pool; flushed on the fsync pool
        f"    save_checkpoint(state, {path!r}, fsync=True, compressors='balanced', "
        "chunk_bytes=64)\n"
        f"    out = load_checkpoint({path!r})\n"
        "    print('loaded', out['step'], float(out['w'].sum()))\n"
        "atexit.register(at_exit)\n"
    )
    run = _run(code, tmp_path)
    assert run.returncode == 0 and "loaded 2 2016.0" in run.stdout, run.stderr
    assert torch.equal(load_checkpoint(path)["w"], torch.arange(64.0))


def test_an_async_save_from_an_atexit_handler_is_written(tmp_path: Path) -> None:
    path = str(tmp_path / "ck")
    code = (
        "import atexit, torch\n"
        "from torchzarr.checkpoint import AsyncCheckpointer\n"
        "saver = AsyncCheckpointer()\n"
        f"atexit.register(lambda: saver.save({{'w': torch.ones(3)}}, {path!r}))\n"
    )
    run = _run(code, tmp_path)
    assert run.returncode == 0, run.stderr
    assert torch.equal(load_checkpoint(path)["w"], torch.ones(3))


def test_a_pending_async_save_that_fails_at_exit_is_logged(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")  # saving "into" a regular file fails
    code = (
        "import torch\n"
        "from torchzarr.checkpoint import AsyncCheckpointer\n"
        f"AsyncCheckpointer().save({{'w': torch.ones(3)}}, {str(blocker / 'ck')!r})\n"
    )
    run = _run(code, tmp_path)
    assert "background checkpoint save to" in run.stderr, run.stderr
    assert str(blocker / "ck") in run.stderr and "StoreError" in run.stderr


def test_run_all_runs_what_the_pool_refuses_at_exit_on_the_calling_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_submit = threads.ThreadPoolExecutor.submit
    calls = {"n": 0}

    def submit(self: Any, fn: Any, *args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] > 1:  # as concurrent.futures does once the main thread has ended
            raise RuntimeError(_EXIT_REFUSAL)
        return real_submit(self, fn, *args, **kwargs)

    monkeypatch.setattr(threads.ThreadPoolExecutor, "submit", submit)
    assert threads.run_all(lambda x: x * 10, [1, 2, 3, 4], threads=4) == [10, 20, 30, 40]
    with pytest.raises(RuntimeError, match="something else"):

        def refuse(self: Any, fn: Any, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("something else")

        monkeypatch.setattr(threads.ThreadPoolExecutor, "submit", refuse)
        threads.run_all(lambda x: x, [1, 2], threads=2)
