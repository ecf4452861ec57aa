"""A torch.distributed.checkpoint save to a zip that raises is undone: the zip holds the
previous checkpoint, on disk, even when the process exits right after (disk still full).

"Another process" reads a copy of the file: a path this process never opened. A full disk
is stood in for by a file size limit (see ``zip_faults.room_left``).
"""

from __future__ import annotations

import shutil
import uuid
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import DefaultSavePlanner
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.planner import SavePlan
from zip_faults import directory_fails_once, room_left

import torchzarr as tz
from torchzarr.checkpoint import commit
from torchzarr.distributed import ZarrStorageReader, ZarrStorageWriter
from torchzarr.errors import StoreError
from torchzarr.storage.wrappers import ForwardingStore
from torchzarr.storage.zip import ZipStore

pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled")

TENSORS = 6  # 16 KiB each: their data far outweighs their metadata


def state(step: int) -> dict[str, Any]:
    tensors = {f"t{i}": torch.full((4096,), i + step / 10) for i in range(TENSORS)}
    return {**tensors, "step": step}


def save(step: int, store: Any) -> None:
    dcp.save(state(step), storage_writer=ZarrStorageWriter(store))


def load(store: Any) -> dict[str, Any]:
    loaded = state(0)
    dcp.load(loaded, storage_reader=ZarrStorageReader(store))
    return loaded


def load_elsewhere(path: Path, tmp_path: Path) -> dict[str, Any]:
    """Load the checkpoint as another process would: from the file's bytes alone."""
    copy = tmp_path / f"copy-{uuid.uuid4().hex}.zip"
    shutil.copyfile(path, copy)
    return load(str(copy))


def assert_holds(loaded: dict[str, Any], step: int) -> None:
    assert loaded["step"] == step
    for key, value in state(step).items():
        if key != "step":
            assert torch.equal(loaded[key], value), key


def versions_in(path: Path) -> set[str]:
    with zipfile.ZipFile(path) as zf:
        assert zf.testzip() is None
        return {name.partition("/")[0] for name in zf.namelist() if "/" in name}


def assert_previous_checkpoint_kept(path: Path, tmp_path: Path, before: bytes) -> None:
    assert path.read_bytes() == before  # cut back, its old directory written again
    assert versions_in(path) == {"v000001"}
    assert_holds(load_elsewhere(path, tmp_path), 1)
    assert_holds(load(str(path)), 1)


@pytest.mark.parametrize("room", [512, 4096, 32768, 107000])
def test_a_dcp_save_failing_on_a_full_disk_leaves_the_zip_as_it_was(
    tmp_path: Path, room: int
) -> None:
    # 512: no room for the arrays' metadata; 4096, 32768: for part of the tensors (96 KiB);
    # 107000: the tensors fit, the consolidated metadata does not. Wherever it fails, the
    # outcome must be the same.
    path = tmp_path / "ckpt.zip"
    save(1, str(path))
    before = path.read_bytes()
    with room_left(path, room), pytest.raises(CheckpointException, match=r"ckpt\.zip") as info:
        save(2, str(path))
    assert_previous_checkpoint_kept(path, tmp_path, before)
    assert "holds the previous checkpoint" in str(info.value)
    save(3, str(path))  # room again: saves go on
    assert_holds(load_elsewhere(path, tmp_path), 3)
    assert versions_in(path) == {"v000002"}  # the failed save left nothing behind


def test_a_dcp_save_failing_while_writing_its_tensors_is_undone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "ckpt.zip"
    save(1, str(path))
    before = path.read_bytes()
    write_item = ZarrStorageWriter._write_item
    written: list[str] = []

    def fail_on_the_third(self: ZarrStorageWriter, *args: Any) -> Any:
        if len(written) == 2:
            raise StoreError("connection lost")
        written.append("one")
        return write_item(self, *args)

    monkeypatch.setattr(ZarrStorageWriter, "_write_item", fail_on_the_third)
    with pytest.raises(CheckpointException, match="connection lost") as info:
        save(2, str(path))
    assert_previous_checkpoint_kept(path, tmp_path, before)
    assert "the save was undone" in str(info.value)


def test_a_dcp_save_failing_before_its_commit_is_undone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "ckpt.zip"
    store = ZipStore(path, mode="a")
    save(1, store)
    before = path.read_bytes()

    def no_room(*args: Any, **kwargs: Any) -> None:
        raise StoreError("no space left on device")

    monkeypatch.setattr(commit, "commit_version", no_room)
    with pytest.raises(CheckpointException, match="no space left"):
        save(2, store)
    assert_previous_checkpoint_kept(path, tmp_path, before)


def test_a_dcp_save_whose_directory_does_not_fit_after_its_commit_keeps_the_previous_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "ckpt.zip"
    save(1, str(path))
    before = path.read_bytes()
    failed = directory_fails_once(monkeypatch)
    with pytest.raises(CheckpointException, match=r"directory of zip .*ckpt\.zip"):
        save(2, str(path))
    assert failed  # the new version was committed before its directory failed to fit
    assert_previous_checkpoint_kept(path, tmp_path, before)


def test_a_dcp_save_whose_prune_fails_midway_is_undone(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.zip"
    save(1, str(path))
    before = path.read_bytes()

    class PrefixDeletesFail(ForwardingStore):
        def delete_prefix(self, prefix: str) -> None:
            raise StoreError("interrupted during the prune")

    with pytest.raises(CheckpointException, match="interrupted during the prune") as info:
        save(2, PrefixDeletesFail(ZipStore(path, mode="a")))
    assert_previous_checkpoint_kept(path, tmp_path, before)
    assert "the save was undone" in str(info.value)


def test_a_failed_dcp_save_keeps_what_others_wrote_to_the_zip_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "ckpt.zip"
    save(1, str(path))
    other = ZipStore(path, mode="a")  # e.g. run notes kept in the same zip

    def note_then_fail(*args: Any, **kwargs: Any) -> None:
        other.set("notes/log.txt", b"epoch 2 done")
        raise StoreError("no space left on device")

    monkeypatch.setattr(commit, "commit_version", note_then_fail)
    with pytest.raises(CheckpointException, match="no space") as info:
        save(2, str(path))
    assert other.get("notes/log.txt") == b"epoch 2 done"
    assert versions_in(path) == {"v000001", "notes"}  # the failed save's files deleted
    assert_holds(load_elsewhere(path, tmp_path), 1)
    assert "was not cut back" in str(info.value)


def test_a_dcp_save_to_a_directory_failing_in_finish_before_its_commit_deletes_its_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """finish() runs once every rank's write_data returned: no rank writes to the version
    any more, so its files go, as a failed save_checkpoint's do (a full disk is common)."""
    path = tmp_path / "ckpt"
    save(1, str(path))

    def no_room(*args: Any, **kwargs: Any) -> None:
        raise StoreError("no space left on device")

    monkeypatch.setattr(commit, "commit_version", no_room)
    with pytest.raises(CheckpointException, match="no space left"):
        save(2, str(path))
    assert not (path / "v000002").exists()
    assert_holds(load(str(path)), 1)
    assert tz.open_group(str(path), mode="r").attrs["torchzarr_checkpoint"]["version"] == (
        "v000001"
    )


def test_a_dcp_commit_that_raises_after_writing_its_manifest_keeps_its_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "ckpt"
    save(1, str(path))
    real = commit.commit_version

    def written_then_failed(*args: Any, **kwargs: Any) -> None:
        real(*args, **kwargs)
        raise StoreError("the flush after the manifest failed")

    monkeypatch.setattr(commit, "commit_version", written_then_failed)
    with pytest.raises(CheckpointException, match="flush after the manifest"):
        save(2, str(path))
    assert (path / "v000002").is_dir()  # the manifest names it: never deleted
    assert_holds(load(str(path)), 2)

    def overtaken_then_failed(store: Any, version: str, *args: Any, **kwargs: Any) -> None:
        real(store, version, *args, **kwargs)
        real(store, "v000004")  # another job commits a newer one, keeping this one
        raise StoreError("the flush after the manifest failed")

    monkeypatch.setattr(commit, "commit_version", overtaken_then_failed)
    with pytest.raises(CheckpointException, match="flush after the manifest"):
        save(3, str(path))
    assert (path / "v000003").is_dir()  # kept by the newer manifest's previous: not deleted


def test_a_failed_first_dcp_save_to_a_new_zip_leaves_it_empty(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The root group the save created with its version is its own: undone with it."""
    path = tmp_path / "new.zip"

    def no_room(*args: Any, **kwargs: Any) -> None:
        raise StoreError("no space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(commit, "commit_version", no_room)
        with pytest.raises(CheckpointException, match="no space left") as info:
            save(1, str(path))
    assert "the save was undone" in str(info.value)
    assert versions_in(path) == set() and zipfile.ZipFile(path).namelist() == []
    save(2, str(path))
    assert_holds(load_elsewhere(path, tmp_path), 2)


def test_a_dcp_save_whose_planner_fails_leaves_the_zip_untouched(tmp_path: Path) -> None:
    """A failure in DCP between the planning and write_data (a planner's finish_plan)
    reaches no storage writer code: the zip's arrays are created in write_data, so the
    file still holds the previous checkpoint, also if the process is killed right after."""

    class BrokenPlanner(DefaultSavePlanner):
        def finish_plan(self, new_plan: SavePlan) -> SavePlan:
            raise RuntimeError("planner broke")

    path = tmp_path / "ckpt.zip"
    save(1, str(path))
    before = path.read_bytes()
    with pytest.raises(CheckpointException, match="planner broke"):
        dcp.save(state(2), storage_writer=ZarrStorageWriter(str(path)), planner=BrokenPlanner())
    assert_previous_checkpoint_kept(path, tmp_path, before)
    save(3, str(path))
    assert_holds(load_elsewhere(path, tmp_path), 3)
    assert len(versions_in(path)) == 1
