"""A load that overlaps a newer save, which prunes the version being read, never returns
fill values for the pruned chunks: it loads the newer version, or raises."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException

import torchzarr.checkpoint.dcp as zarr_dcp
import torchzarr.checkpoint.load as load_module
from torchzarr.checkpoint import commit, load_checkpoint, prune, save_checkpoint
from torchzarr.checkpoint.commit import checkpoint_store
from torchzarr.checkpoint.prune import wait_pruned
from torchzarr.distributed import ZarrStorageReader, ZarrStorageWriter
from torchzarr.errors import CheckpointConflictError

pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled")

KEYS = ("a", "b", "c")


def _state(value: float) -> dict[str, torch.Tensor]:
    return {key: torch.full((4, 4), value) for key in KEYS}


def _values(state: dict[str, Any]) -> dict[str, float]:
    return {key: float(state[key].flatten()[0]) for key in KEYS}


def _hook(original: Callable[..., Any], before_read: dict[int, Callable[[], None]]) -> Any:
    """``original`` run after ``before_read[n]()`` on its ``n``-th call (counted from 1)."""
    calls = [0]

    def hooked(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        action = before_read.get(calls[0])
        if action is not None:
            action()
        return original(*args, **kwargs)

    return hooked


def _save_and_prune(path: Path, value: float, *, keep: int = 1) -> Callable[[], None]:
    def run() -> None:  # another process's save, between two tensor reads of the load
        save_checkpoint(_state(value), path, keep=keep)
        wait_pruned()

    return run


@pytest.mark.parametrize("lazy", [False, True])
def test_load_overlapping_a_pruning_save_loads_the_newer_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lazy: bool
) -> None:
    path = tmp_path / "ckpt"
    save_checkpoint(_state(1.0), path)
    name = "map_array" if lazy else "read_array"
    hooked = _hook(getattr(load_module, name), {2: _save_and_prune(path, 2.0)})
    monkeypatch.setattr(load_module, name, hooked)
    out = load_checkpoint(path, lazy=lazy)
    assert _values(out) == {"a": 2.0, "b": 2.0, "c": 2.0}


def test_load_whose_version_went_before_it_was_opened_loads_the_newer_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "ckpt"
    save_checkpoint(_state(1.0), path)
    hooked = _hook(load_module.open_group, {1: _save_and_prune(path, 2.0)})
    monkeypatch.setattr(load_module, "open_group", hooked)
    assert _values(load_checkpoint(path)) == {"a": 2.0, "b": 2.0, "c": 2.0}


def test_load_gives_up_when_every_attempt_is_pruned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "ckpt"
    save_checkpoint(_state(1.0), path)
    # a new save during every attempt's second read
    per_attempt = len(KEYS)
    actions = {
        attempt * per_attempt + 2: _save_and_prune(path, 2.0 + attempt)
        for attempt in range(load_module.LOAD_ATTEMPTS)
    }
    monkeypatch.setattr(load_module, "read_array", _hook(load_module.read_array, actions))
    with pytest.raises(CheckpointConflictError, match="3 times"):
        load_checkpoint(path)
    monkeypatch.undo()
    assert _values(load_checkpoint(path)) == {k: 1.0 + load_module.LOAD_ATTEMPTS for k in KEYS}


def test_load_of_a_named_version_pruned_meanwhile_raises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "ckpt"
    save_checkpoint(_state(1.0), path, keep=2)
    save_checkpoint(_state(2.0), path, keep=2)

    def two_more_saves() -> None:
        _save_and_prune(path, 3.0, keep=2)()
        _save_and_prune(path, 4.0, keep=2)()

    monkeypatch.setattr(
        load_module, "read_array", _hook(load_module.read_array, {2: two_more_saves})
    )
    with pytest.raises(CheckpointConflictError, match="v000001"):
        load_checkpoint(path, version="v000001")


def test_load_overlapping_a_save_that_keeps_the_version_needs_no_retry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "ckpt"
    save_checkpoint(_state(1.0), path, keep=2)
    hooked = _hook(load_module.read_array, {2: _save_and_prune(path, 2.0, keep=2)})
    monkeypatch.setattr(load_module, "read_array", hooked)
    assert _values(load_checkpoint(path)) == {"a": 1.0, "b": 1.0, "c": 1.0}


def test_compressed_checkpoint_with_unstored_zero_chunks_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "ckpt"
    state = {"zeros": torch.zeros(64, 4), "ones": torch.ones(64, 4)}
    save_checkpoint(state, path, compressors="balanced", chunk_bytes=256)
    out = load_checkpoint(path)
    assert torch.equal(out["zeros"], state["zeros"]) and torch.equal(out["ones"], state["ones"])


@pytest.mark.skipif(sys.platform == "win32", reason="a mapped file cannot be deleted there")
def test_lazy_tensor_stays_valid_after_its_version_is_pruned(tmp_path: Path) -> None:
    path = tmp_path / "ckpt"
    save_checkpoint({"w": torch.arange(4096, dtype=torch.float32)}, path)
    out = load_checkpoint(path, lazy=True)
    save_checkpoint({"w": torch.zeros(4096)}, path)
    wait_pruned()
    assert not (path / "v000001").exists()
    assert torch.equal(out["w"], torch.arange(4096, dtype=torch.float32))


def test_every_deletion_removes_the_version_metadata_first(tmp_path: Path, monkeypatch) -> None:
    st = checkpoint_store("memory://")
    save_checkpoint(_state(1.0), st)
    deleted: list[str] = []
    original = st.delete

    def recording_delete(key: str) -> None:
        deleted.append(key)
        original(key)

    st.delete = recording_delete  # type: ignore[method-assign]
    prune.delete_version(st, "v000001")
    assert deleted[:1] == ["v000001/zarr.json"]
    assert not prune.version_intact(st, "v000001")
    # a local version leaves its name whole (its metadata with it) before any file goes
    local = checkpoint_store(tmp_path / "ckpt")
    save_checkpoint(_state(1.0), local)
    wait_pruned()
    steps: list[str] = []
    real_rename, real_rmtree = prune.os.rename, prune.shutil.rmtree
    monkeypatch.setattr(
        prune.os, "rename", lambda a, b: (steps.append("rename"), real_rename(a, b))[1]
    )
    monkeypatch.setattr(
        prune.shutil, "rmtree", lambda p, **k: (steps.append("rmtree"), real_rmtree(p, **k))[1]
    )
    prune.delete_version(local, "v000001")
    assert steps == ["rename", "rmtree"] and not prune.version_intact(local, "v000001")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["zarr.json"]


def test_remove_all_removes_version_metadata_before_chunks() -> None:
    st = checkpoint_store("memory://")
    save_checkpoint(_state(1.0), st, keep=2)
    save_checkpoint(_state(2.0), st, keep=2)
    deleted: list[str] = []
    original_delete, original_prefix = st.delete, st.delete_prefix
    st.delete = lambda key: (deleted.append(key), original_delete(key))[1]  # type: ignore[method-assign]
    st.delete_prefix = lambda p: (deleted.append("*"), original_prefix(p))[1]  # type: ignore[method-assign]
    prune.remove_all(st)
    before_chunks = deleted[: deleted.index("*")]
    assert {"v000001/zarr.json", "v000002/zarr.json"} <= set(before_chunks)
    assert not any(key.startswith("v") and "/c" in key for key in before_chunks)


def test_dcp_load_overlapping_a_pruning_save_raises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(tmp_path / "dcp")
    dcp.save(_state(1.0), storage_writer=ZarrStorageWriter(path), no_dist=True)

    def newer_save() -> None:
        dcp.save(_state(2.0), storage_writer=ZarrStorageWriter(path), no_dist=True)
        wait_pruned()

    hooked = _hook(zarr_dcp.ZarrStorageReader._read_tensor, {2: newer_save})
    monkeypatch.setattr(zarr_dcp.ZarrStorageReader, "_read_tensor", hooked)
    out = _state(-7.0)
    with pytest.raises(CheckpointException, match="deleted while it was being loaded"):
        dcp.load(out, storage_reader=ZarrStorageReader(path, threads=1), no_dist=True)
    monkeypatch.undo()
    dcp.load(out, storage_reader=ZarrStorageReader(path), no_dist=True)
    assert _values(out) == {"a": 2.0, "b": 2.0, "c": 2.0}


def test_dcp_load_whose_version_went_before_it_was_opened_raises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(tmp_path / "dcp")
    dcp.save(_state(1.0), storage_writer=ZarrStorageWriter(path), no_dist=True)
    reader = ZarrStorageReader(path)
    manifest = commit.read_manifest(checkpoint_store(path))
    dcp.save(_state(2.0), storage_writer=ZarrStorageWriter(path), no_dist=True)
    wait_pruned()
    st = checkpoint_store(path, "r")
    with pytest.raises(CheckpointConflictError, match="v000001"):
        reader._open_version(st, manifest)  # type: ignore[arg-type]


def test_lazy_load_whose_chunk_file_goes_just_before_it_is_mapped_loads_the_newer_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torchzarr.checkpoint.rawio as rawio

    path = tmp_path / "ckpt"
    state = {key: torch.full((1024,), 1.0) for key in KEYS}  # one raw 4 KiB chunk each
    save_checkpoint(state, path)
    newer = {key: torch.full((1024,), 2.0) for key in KEYS}

    def prune() -> None:  # between map_array's look at the chunk file and its mmap
        save_checkpoint(newer, path)
        wait_pruned()

    monkeypatch.setattr(rawio, "_map_one", _hook(rawio._map_one, {2: prune}))
    out = load_checkpoint(path, lazy=True)
    assert _values(out) == {"a": 2.0, "b": 2.0, "c": 2.0}
