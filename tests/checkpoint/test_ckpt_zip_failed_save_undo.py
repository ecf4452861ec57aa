"""A zip checkpoint save that raises is undone: its own changes only, also through wrappers."""

from __future__ import annotations

import shutil
import uuid
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch
from zip_faults import directory_fails_once

import torchzarr as tz
from torchzarr.checkpoint import commit, prune
from torchzarr.errors import StoreError
from torchzarr.storage.wrappers import ForwardingStore, LoggingStore
from torchzarr.storage.zip import ZipStore


def state(step: int) -> dict[str, Any]:
    return {"w": torch.full((8,), float(step)), "step": step}


def names(path: Path) -> list[str]:
    with zipfile.ZipFile(path) as zf:
        assert zf.testzip() is None
        return zf.namelist()


def load_elsewhere(path: Path, tmp_path: Path) -> dict[str, Any]:
    """Load the checkpoint as another process would: from the file's bytes alone."""
    copy = tmp_path / f"copy-{uuid.uuid4().hex}.zip"
    shutil.copyfile(path, copy)
    loaded: dict[str, Any] = tz.load_checkpoint(str(copy))
    return loaded


def test_a_failed_save_keeps_what_others_wrote_to_the_zip_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "ckpt.zip"
    tz.save_checkpoint(state(1), str(path))
    other = ZipStore(path, mode="a")  # e.g. run notes kept in the same zip

    def note_then_fail(*args: Any, **kwargs: Any) -> None:
        other.set("notes/log.txt", b"epoch 2 done")
        raise StoreError("no space left on device")

    monkeypatch.setattr(commit, "commit_version", note_then_fail)
    with pytest.raises(StoreError, match="no space") as info:
        tz.save_checkpoint(state(2), str(path))
    assert "was not cut back" in " ".join(getattr(info.value, "__notes__", []))
    assert other.get("notes/log.txt") == b"epoch 2 done"
    listed = names(path)  # closed by the failed save: its directory is on disk
    assert "notes/log.txt" in listed and not any(n.startswith("v000002/") for n in listed)
    assert tz.load_checkpoint(str(path))["step"] == 1
    assert load_elsewhere(path, tmp_path)["step"] == 1


def test_a_wrapped_zip_save_whose_directory_does_not_fit_keeps_the_previous_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "wrapped.zip"
    store = LoggingStore(ZipStore(path, mode="a"))
    tz.save_checkpoint(state(1), store)
    failed = directory_fails_once(monkeypatch)
    with pytest.raises(StoreError, match=r"directory of zip .*wrapped\.zip") as info:
        tz.save_checkpoint(state(2), store)
    assert failed  # the new version was committed before its directory failed to fit
    assert "holds the previous checkpoint" in " ".join(getattr(info.value, "__notes__", []))
    assert tz.load_checkpoint(store)["step"] == 1
    assert load_elsewhere(path, tmp_path)["step"] == 1


def test_a_save_to_another_store_failing_after_its_commit_has_committed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = f"memory://ckpt-{uuid.uuid4().hex}"
    tz.save_checkpoint(state(1), url)

    def prune_fails(store: Any, keep: int = 1) -> list[str]:
        raise StoreError("connection lost")

    monkeypatch.setattr(prune, "prune_versions", prune_fails)
    with pytest.raises(StoreError, match="connection lost"):
        tz.save_checkpoint(state(2), url)
    assert tz.load_checkpoint(url)["step"] == 2


def test_a_root_attribute_another_writer_set_before_the_commit_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "ckpt.zip"
    tz.save_checkpoint(state(1), str(path))
    other = ZipStore(path, mode="a")

    def annotate_then_fail(*args: Any, **kwargs: Any) -> None:
        tz.open_group(other, mode="r+").attrs["run_note"] = "set meanwhile"
        raise StoreError("no space left on device")

    monkeypatch.setattr(commit, "commit_version", annotate_then_fail)
    with pytest.raises(StoreError, match="no space"):
        tz.save_checkpoint(state(2), str(path))
    root = tz.open_group(ZipStore(path, mode="r"), mode="r")
    assert root.attrs["run_note"] == "set meanwhile"  # the manifest was not the save's yet
    assert tz.load_checkpoint(str(path))["step"] == 1


def test_a_save_whose_prune_fails_midway_is_rolled_back(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.zip"
    tz.save_checkpoint(state(1), str(path))

    class PrefixDeletesFail(ForwardingStore):
        def delete_prefix(self, prefix: str) -> None:
            raise KeyboardInterrupt("interrupted during the prune")

    store = PrefixDeletesFail(ZipStore(path, mode="a"))
    with pytest.raises(KeyboardInterrupt) as info:
        tz.save_checkpoint(state(2), store)
    assert "the save was undone" in " ".join(getattr(info.value, "__notes__", []))
    assert tz.load_checkpoint(str(path))["step"] == 1
    assert load_elsewhere(path, tmp_path)["step"] == 1


def test_a_failed_first_save_to_a_new_zip_leaves_it_empty(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The root group the save created with its version is its own: undone with it."""
    path = tmp_path / "new.zip"

    def no_room(*args: Any, **kwargs: Any) -> None:
        raise StoreError("no space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(commit, "commit_version", no_room)
        with pytest.raises(StoreError, match="no space") as info:
            tz.save_checkpoint(state(1), str(path))
    assert "the save was undone" in " ".join(getattr(info.value, "__notes__", []))
    assert names(path) == []  # an empty zip, as the file was before the save's writes
    with pytest.raises(tz.errors.NodeNotFoundError):
        tz.load_checkpoint(str(path))
    tz.save_checkpoint(state(2), str(path))
    assert load_elsewhere(path, tmp_path)["step"] == 2
