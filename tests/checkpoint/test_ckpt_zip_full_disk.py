"""A save to a zip checkpoint that fails on a full disk leaves the previous checkpoint, on disk.

A full disk is stood in for by a file size limit (``RLIMIT_FSIZE``, with ``SIGXFSZ``
ignored), held only around the save that should fail, or by a directory write that reports
no room. "Another process" reads a copy of the file: a path this process never opened.
"""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch
from zip_faults import directory_fails_once, room_left

import torchzarr as tz
from torchzarr.errors import StoreError

resource = pytest.importorskip("resource")
signal = pytest.importorskip("signal")
if not hasattr(signal, "SIGXFSZ"):  # pragma: no cover - platforms without file size limits
    pytest.skip("no SIGXFSZ", allow_module_level=True)

TENSORS = 40  # many small entries: a directory of several KiB


def state(step: int) -> dict[str, Any]:
    return {**{f"t{i}": torch.full((100,), i + step / 10) for i in range(TENSORS)}, "step": step}


def assert_holds(loaded: dict[str, Any], step: int) -> None:
    assert loaded["step"] == step
    for key, value in state(step).items():
        if key != "step":
            assert torch.equal(loaded[key], value), key


def load_elsewhere(path: Path, tmp_path: Path) -> dict[str, Any]:
    """Load the checkpoint as another process would: from the file's bytes alone."""
    copy = tmp_path / f"copy-{len(list(tmp_path.iterdir()))}.zip"
    shutil.copyfile(path, copy)
    loaded: dict[str, Any] = tz.load_checkpoint(str(copy))
    return loaded


@pytest.mark.parametrize("room", [1024, 4096, 16384])
def test_a_save_failing_on_a_full_disk_leaves_the_zip_as_it_was(tmp_path: Path, room: int) -> None:
    path = tmp_path / "ckpt.zip"
    tz.save_checkpoint(state(1), str(path))
    before = path.read_bytes()
    with room_left(path, room), pytest.raises(StoreError, match=r"ckpt\.zip") as info:
        tz.save_checkpoint(state(2), str(path))
    # the failed save's entries are cut off and the old directory is back, while the
    # disk is still full: a process that exits now leaves a whole zip
    assert path.stat().st_size == len(before)
    with zipfile.ZipFile(path) as zf:
        assert zf.testzip() is None and not any(n.startswith("v000002") for n in zf.namelist())
    assert_holds(load_elsewhere(path, tmp_path), 1)
    assert_holds(tz.load_checkpoint(str(path)), 1)
    assert "holds the previous checkpoint" in " ".join(getattr(info.value, "__notes__", []))
    tz.save_checkpoint(state(3), str(path))  # room again: saves go on
    assert_holds(load_elsewhere(path, tmp_path), 3)


def test_a_save_whose_directory_does_not_fit_after_the_commit_keeps_the_previous_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "ckpt.zip"
    tz.save_checkpoint(state(1), str(path))
    failed = directory_fails_once(monkeypatch)
    with pytest.raises(StoreError, match=r"directory of zip .*ckpt\.zip"):
        tz.save_checkpoint(state(2), str(path))
    assert failed  # the new version was committed before its directory failed to fit
    assert_holds(tz.load_checkpoint(str(path)), 1)  # raised: this process has the old one
    assert_holds(load_elsewhere(path, tmp_path), 1)  # and so does the file
