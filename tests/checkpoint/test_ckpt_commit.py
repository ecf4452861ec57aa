"""Crash safety: a save interrupted at any point leaves the previous checkpoint loadable."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import torchzarr as tz
from torchzarr.checkpoint import (
    AsyncCheckpointer,
    commit,
    load_checkpoint,
    prune,
    rawio,
    read_manifest,
    save_checkpoint,
)
from torchzarr.checkpoint.commit import checkpoint_store, next_version
from torchzarr.checkpoint.prune import wait_pruned


class _Crash(Exception):
    pass


def _state(value: float) -> dict[str, Any]:
    return {
        "model": {"w": torch.full((64, 8), value), "b": torch.full((8,), value)},
        "step": int(value),
        "tags": ["x", value],
    }


def _failing_after(store: Any, writes: int) -> list[int]:
    """Make writes to ``store`` raise after ``writes`` calls; returns the call counter.

    For a local store the class's ``set`` is patched (undo with :func:`_restore`): a save
    writes its chunk files through a twin of the store without per-file fsync, and commits
    through one with it, so every write to any ``LocalStore`` counts as a crash point.
    """
    calls = [0]
    lock = threading.Lock()
    local = isinstance(store, (tz.LocalStore, os.PathLike))
    original = tz.LocalStore.set if local else store.set

    def set_(*args: Any) -> None:
        key = args[-2]
        with lock:
            calls[0] += 1
            crash = calls[0] > writes
        if crash:
            raise _Crash(f"injected crash before writing {key}")
        original(*args)

    if local:
        tz.LocalStore.set = set_  # type: ignore[method-assign]
    else:
        store.set = set_  # type: ignore[method-assign]
    return calls


def _restore(store: Any) -> None:
    tz.LocalStore.set = _LOCAL_SET  # type: ignore[method-assign]
    getattr(store, "__dict__", {}).pop("set", None)


_LOCAL_SET = tz.LocalStore.set


def _count_writes(make_store: Any) -> int:
    store = make_store()
    save_checkpoint(_state(1.0), store, chunk_bytes=512)
    try:
        calls = _failing_after(store, 10**9)
        save_checkpoint(_state(2.0), store, chunk_bytes=512)
    finally:
        _restore(store)
    return calls[0]


@pytest.mark.parametrize("kind", ["memory", "local", "local-path"])
def test_crash_at_every_write_keeps_previous_checkpoint(kind: str, tmp_path: Path) -> None:
    counter = iter(range(10**6))

    def make_store() -> Any:
        if kind == "memory":
            return tz.MemoryStore()
        path = tmp_path / f"s{next(counter)}"
        return tz.LocalStore(path, fsync=True) if kind == "local" else path

    total = _count_writes(make_store)
    assert total > 10  # many chunk and metadata writes: every one is a crash point
    for writes in range(total):
        store = make_store()
        save_checkpoint(_state(1.0), store, chunk_bytes=512)
        wait_pruned()
        try:
            _failing_after(store, writes)
            with pytest.raises(_Crash):
                save_checkpoint(_state(2.0), store, chunk_bytes=512)
        finally:
            _restore(store)
        out = load_checkpoint(store)
        assert out["step"] == 1 and torch.equal(out["model"]["w"], torch.full((64, 8), 1.0))
    # the failed save deleted what it wrote, even when its manifest write failed; the
    # next save succeeds
    st = checkpoint_store(store)
    assert st.list_dir("")[1] == ["v000001"]
    assert next_version(st) == "v000002"
    save_checkpoint(_state(3.0), store)
    assert load_checkpoint(store)["step"] == 3
    wait_pruned()
    _, dirs = st.list_dir("")
    assert dirs == ["v000002"]


@pytest.mark.parametrize("kind", ["memory", "local"])
def test_a_save_that_fails_while_writing_deletes_what_it_wrote(kind: str, tmp_path: Path) -> None:
    store: Any = tz.MemoryStore() if kind == "memory" else tz.LocalStore(tmp_path)
    save_checkpoint(_state(1.0), store, chunk_bytes=512)
    wait_pruned()
    try:
        _failing_after(store, 5)  # a few chunk files written, then the disk is "full"
        with pytest.raises(_Crash):
            save_checkpoint(_state(2.0), store, chunk_bytes=512)
    finally:
        _restore(store)
    st = checkpoint_store(store)
    assert st.list_dir("")[1] == ["v000001"] and not list(st.list_prefix("v000002/"))
    assert load_checkpoint(store)["step"] == 1


def test_failed_flush_does_not_commit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    save_checkpoint(_state(1.0), tmp_path, chunk_bytes=512)

    def fail(fd: int) -> None:
        raise OSError(5, "injected I/O error")

    monkeypatch.setattr(rawio.os, "fsync", fail)
    with pytest.raises(OSError, match="injected"):
        save_checkpoint(_state(2.0), tmp_path, chunk_bytes=512)
    monkeypatch.undo()
    assert load_checkpoint(tmp_path)["step"] == 1


def test_old_versions_pruned_only_after_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_checkpoint(_state(1.0), tmp_path, chunk_bytes=512)
    seen: list[tuple[str, str]] = []

    def rmtree(path: Path, ignore_errors: bool = False) -> None:
        name = Path(path).name.removeprefix(".torchzarr-deleting-").rsplit("-", 1)[0]
        seen.append((read_manifest(tz.LocalStore(tmp_path))["version"], name))  # type: ignore[index]
        shutil.rmtree(path, ignore_errors=ignore_errors)

    monkeypatch.setattr(prune, "shutil", types.SimpleNamespace(rmtree=rmtree))
    (tmp_path / "v000009").mkdir()  # the leftover of a killed save
    assert save_checkpoint(_state(2.0), tmp_path, chunk_bytes=512) == "v000010"
    wait_pruned()
    # deleted on a thread, after the commit
    assert sorted(seen) == [("v000010", "v000001"), ("v000010", "v000009")]
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["v000010"]
    assert load_checkpoint(tmp_path)["step"] == 2
    # a version above the committed one is a save in progress: never deleted
    (tmp_path / "v000011").mkdir()
    assert prune.prune_versions(checkpoint_store(tmp_path)) == []
    assert (tmp_path / "v000011").is_dir()


def test_chunks_written_raw_and_readable_by_zarr_python(tmp_path: Path) -> None:
    zarr = pytest.importorskip("zarr")
    w = torch.arange(6000, dtype=torch.float32).reshape(1000, 6)
    save_checkpoint({"w": w, "s": torch.tensor(3.5)}, tmp_path, chunk_bytes=4096)
    files = sorted(p.name for p in (tmp_path / "v000001" / "w").iterdir())
    assert files == [f"c.{i}.0" for i in range(6)] + ["zarr.json"]
    assert (tmp_path / "v000001" / "w" / "c.5.0").stat().st_size == 4080  # edge padded
    group = zarr.open_group(str(tmp_path / "v000001"), mode="r")
    assert (group["w"][...] == w.numpy()).all() and float(group["s"][...]) == 3.5


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
    stats = np.zeros(3)
    with AsyncCheckpointer() as saver:
        saver.save({"w": w, "stats": stats}, "memory://ckpt-async")
        w += 1  # after save() returned: must not leak into the checkpoint
        stats += 1
        assert saver.wait() == "v000001"
        assert torch.equal(load_checkpoint("memory://ckpt-async")["w"], torch.zeros(4))
        assert load_checkpoint("memory://ckpt-async")["stats"].tolist() == [0.0] * 3

        store = tz.MemoryStore()
        _failing_after(store, 2)
        saver.save({"w": w}, store)
        with pytest.raises(_Crash):
            saver.wait()
        saver.save({"w": w}, store)  # a failure does not stick
        with pytest.raises(_Crash):
            saver.save({"w": w}, "memory://ckpt-async")  # raised by the next call
        assert saver.wait() == "v000002"  # which started its own save all the same
    with pytest.raises(tz.checkpoint.UnrepresentableError):
        AsyncCheckpointer().save({"x": object()}, "memory://ckpt-async2")


def test_checkpoint_store_forces_fsync_locally(tmp_path: Path) -> None:
    store = checkpoint_store(tmp_path)
    assert isinstance(store, tz.LocalStore) and store.fsync
    assert not checkpoint_store(tmp_path, fsync=False).fsync


def test_keep_2_keeps_the_previous_commit_not_a_killed_saves_leftover(tmp_path: Path) -> None:
    save_checkpoint(_state(1.0), tmp_path, keep=2)
    save_checkpoint(_state(2.0), tmp_path, keep=2)
    leftover = tmp_path / "v000003"  # a save killed before its commit: never committed
    shutil.copytree(tmp_path / "v000002", leftover)
    assert save_checkpoint(_state(4.0), tmp_path, keep=2) == "v000004"
    wait_pruned()
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["v000002", "v000004"]
    assert load_checkpoint(tmp_path, version="v000002")["step"] == 2
    assert read_manifest(tz.LocalStore(tmp_path))["previous"][:2] == ["v000002", "v000001"]  # type: ignore[index]


def _drop_history(path: Path) -> None:
    """The manifest as code before the list of earlier commits wrote it."""
    root = tz.open_group(str(path), mode="r+", use_consolidated=False)
    manifest = dict(root.attrs[commit.MANIFEST_ATTRIBUTE])
    manifest.pop("previous", None)
    root.attrs[commit.MANIFEST_ATTRIBUTE] = manifest


def test_keep_3_after_a_manifest_without_history_keeps_the_newest_versions(tmp_path: Path) -> None:
    for value in (1.0, 2.0, 3.0, 4.0):
        save_checkpoint(_state(value), tmp_path, keep=3)
        wait_pruned()
    _drop_history(tmp_path)  # as older torchzarr left it
    save_checkpoint(_state(5.0), tmp_path, keep=3)
    wait_pruned()
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == [
        "v000003",
        "v000004",
        "v000005",
    ]


def test_the_history_of_commits_keeps_only_versions_below_once_each(tmp_path: Path) -> None:
    save_checkpoint(_state(1.0), tmp_path, keep=5)
    root = tz.open_group(str(tmp_path), mode="r+", use_consolidated=False)
    manifest = dict(root.attrs[commit.MANIFEST_ATTRIBUTE])
    manifest["previous"] = ["v000009", 1, None, {"a": 1}, "v000001", "bad"]
    root.attrs[commit.MANIFEST_ATTRIBUTE] = manifest
    save_checkpoint(_state(2.0), tmp_path, keep=5)
    save_checkpoint(_state(3.0), tmp_path, keep=5)
    wait_pruned()
    previous = read_manifest(tz.LocalStore(tmp_path))["previous"]  # type: ignore[index]
    assert previous == ["v000002", "v000001"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == [
        "v000001",
        "v000002",
        "v000003",
    ]


def test_folders_of_others_named_like_versions_are_never_pruned(tmp_path: Path) -> None:
    for name in ("v000001", "v000003"):  # a user's notes, and a Zarr array of theirs
        (tmp_path / name).mkdir()
    (tmp_path / "v000001" / "notes.txt").write_text("mine")
    tz.create_array(tmp_path / "v000003", shape=(2,), dtype="int8")[:] = 1
    (tmp_path / "v000002").mkdir()  # a save killed right after claiming its directory
    for step in range(3):
        save_checkpoint({"step": step}, tmp_path)
        wait_pruned()
    assert (tmp_path / "v000001" / "notes.txt").read_text() == "mine"
    assert tz.open_array(tmp_path / "v000003", mode="r")[:].tolist() == [1, 1]
    assert not (tmp_path / "v000002").exists()  # the save's own leftover goes
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("v")) == [
        "v000001",
        "v000003",
        "v000006",
    ]
    assert load_checkpoint(tmp_path) == {"step": 2}


def test_the_rest_of_an_interrupted_deletion_goes_and_old_manifests_name_no_folders_of_others(
    tmp_path: Path,
) -> None:
    save_checkpoint({"w": torch.ones(4)}, tmp_path)  # v000001
    save_checkpoint({"w": torch.ones(4)}, tmp_path, keep=2)  # v000002
    wait_pruned()
    # a deletion killed midway: the version renamed out of the way, part of it deleted
    (tmp_path / "v000001").rename(tmp_path / ".torchzarr-deleting-v000001-1")
    root = json.loads((tmp_path / "zarr.json").read_text())
    del root["attributes"]["torchzarr_checkpoint"]["previous"]  # as older torchzarr wrote it
    (tmp_path / "zarr.json").write_text(json.dumps(root))
    (tmp_path / "v000000").mkdir()  # folders of someone else's, named like versions
    (tmp_path / "v000000" / "c").write_text("mine")
    zarr = pytest.importorskip("zarr")
    zarr.create_array(str(tmp_path / "v000003" / "mine"), shape=(2,), dtype="i1")[:] = 1
    for _ in range(2):
        save_checkpoint({"w": torch.zeros(4)}, tmp_path)
        wait_pruned()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "v000000",
        "v000003",
        "v000005",
        "zarr.json",
    ]
    assert (tmp_path / "v000000" / "c").read_text() == "mine"
    assert zarr.open_array(str(tmp_path / "v000003" / "mine"))[:].tolist() == [1, 1]
