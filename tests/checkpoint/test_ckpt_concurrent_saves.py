"""Saves to one checkpoint at the same time: each commits whole or raises, never a bad store."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch

import torchzarr as tz
from torchzarr.checkpoint import AsyncCheckpointer, commit, load_checkpoint, prune, save_checkpoint
from torchzarr.checkpoint import save as save_module
from torchzarr.checkpoint.commit import checkpoint_store
from torchzarr.checkpoint.format import NODE_ATTRIBUTE
from torchzarr.checkpoint.prune import wait_pruned
from torchzarr.core.api import create_group
from torchzarr.errors import CheckpointConflictError


def _state(step: int) -> dict[str, Any]:
    return {"step": step, **{f"w{i}": torch.full((20_000,), float(step)) for i in range(6)}}


@pytest.mark.parametrize("kind", ["local", "memory"])
def test_threads_saving_at_once_each_commit_and_the_last_wins(kind: str, tmp_path: Path) -> None:
    store: Any = tmp_path / "ckpt" if kind == "local" else tz.MemoryStore()
    save_checkpoint(_state(0), store)
    returned: dict[int, str] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def saver(step: int) -> None:
        start.wait()
        try:
            returned[step] = save_checkpoint(_state(step), store, keep=2)
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=saver, args=(step,)) for step in (1, 2, 3, 4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wait_pruned()
    assert errors == []
    assert len(set(returned.values())) == 4  # no two saves shared a version
    last = max(returned, key=lambda step: returned[step])
    out = load_checkpoint(store)
    assert out["step"] == last and torch.equal(out["w5"], torch.full((20_000,), float(last)))
    _, dirs = checkpoint_store(store).list_dir("")
    assert dirs == sorted(returned.values())[-2:]  # keep=2: the two newest
    step, version = sorted(returned.items(), key=lambda item: item[1])[-2]
    assert load_checkpoint(store, version=version)["step"] == step


def test_async_and_direct_saves_interleave_safely(tmp_path: Path) -> None:
    path = tmp_path / "ckpt"
    with AsyncCheckpointer() as saver:
        for step in range(1, 6):
            saver.save(_state(step), path)
            save_checkpoint(_state(100 + step), path)
        saver.wait()
    wait_pruned()
    assert load_checkpoint(path)["step"] in (5, 105)
    assert len(checkpoint_store(path).list_dir("")[1]) == 1


def test_a_save_overtaken_by_another_process_raises_and_leaves_the_newer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "ckpt"
    save_checkpoint(_state(1), path)
    write_tree = save_module._write_tree

    def overtaken(st: Any, version: str, *args: Any) -> None:
        write_tree(st, version, *args)
        # meanwhile "another process" reserves, writes and commits a later version
        other = commit.reserve_version(st)
        write_tree(st, other, save_module.encode_tree(_state(9)), None, 1 << 20)
        commit.commit_version(st, other)
        commit.release_version(st, other)

    monkeypatch.setattr(save_module, "_write_tree", overtaken)
    with pytest.raises(CheckpointConflictError, match=r"v000003.*v000002"):
        save_checkpoint(_state(2), path)
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 9  # the manifest never went back
    assert "v000002" not in checkpoint_store(path).list_dir("")[1]  # the loser's files went


def test_commit_never_moves_the_manifest_back() -> None:
    st = checkpoint_store("memory://")
    for version in ("v000001", "v000002"):
        create_group(st, path=version)
    commit.commit_version(st, "v000002")
    with pytest.raises(CheckpointConflictError):
        commit.commit_version(st, "v000001")
    assert commit.committed_version(st) == "v000002"
    commit.commit_version(st, "v000002")  # committing the same one again is fine


def test_local_reservations_are_exclusive_between_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    st = checkpoint_store(tmp_path / "ckpt")
    # another process listed the store before this one's version directory appeared
    monkeypatch.setattr(commit, "next_version", lambda store: "v000001")
    first = commit.reserve_version(st)
    commit.release_version(st, first)  # released here, but its directory stays
    assert (first, commit.reserve_version(st)) == ("v000001", "v000002")


def test_prune_spares_versions_this_process_is_writing() -> None:
    st = checkpoint_store("memory://")
    saved = {NODE_ATTRIBUTE: {"type": "dict", "entries": []}}  # how a save marks its group
    writing = commit.reserve_version(st)  # v000001, a save still in progress
    create_group(st, path=writing, attributes=saved)
    done = commit.reserve_version(st)
    create_group(st, path=done, attributes=saved)
    commit.commit_version(st, done)
    commit.release_version(st, done)
    assert prune.prune_versions(st) == []
    commit.release_version(st, writing)
    assert prune.prune_versions(st) == [writing]


def test_a_save_to_another_checkpoint_does_not_wait_for_a_slow_store() -> None:
    class StalledStore(tz.MemoryStore):
        """Its listings hang until released: a remote store that stopped answering."""

        def __init__(self) -> None:
            super().__init__()
            self.entered, self.release = threading.Event(), threading.Event()

        def list_dir(self, prefix: str) -> tuple[list[str], list[str]]:
            self.entered.set()
            assert self.release.wait(30)
            return super().list_dir(prefix)

    stalled = StalledStore()
    slow = threading.Thread(target=save_checkpoint, args=(_state(1), stalled))
    slow.start()
    try:
        assert stalled.entered.wait(30)
        other = tz.MemoryStore()
        done = threading.Event()
        fast = threading.Thread(target=lambda: (save_checkpoint(_state(2), other), done.set()))
        fast.start()
        finished = done.wait(30)  # a deadline, not a timing: it waits forever if it fails
    finally:
        stalled.release.set()
        slow.join()
    fast.join()
    assert (
        finished and load_checkpoint(other)["step"] == 2 and load_checkpoint(stalled)["step"] == 1
    )


def test_two_store_objects_of_one_checkpoint_share_its_commit_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from torchzarr.storage.wrappers import LoggingStore

    plain = tz.LocalStore(tmp_path)
    wrapped = LoggingStore(tz.LocalStore(tmp_path))  # the same directory, another object
    commit.commit_version(plain, "v000001")
    real = commit.read_manifest
    checked, go = threading.Event(), threading.Event()

    def slow_check(store: Any) -> Any:  # the older commit pauses between check and write
        manifest = real(store)
        if threading.current_thread().name == "older":
            checked.set()
            assert go.wait(30)
        return manifest

    monkeypatch.setattr(commit, "read_manifest", slow_check)
    errors: list[str] = []

    def run(store: Any, version: str) -> None:
        try:
            commit.commit_version(store, version)
        except CheckpointConflictError:
            errors.append(version)

    older = threading.Thread(target=run, args=(wrapped, "v000002"), name="older")
    older.start()
    assert checked.wait(30)
    newer = threading.Thread(target=run, args=(plain, "v000003"))
    newer.start()
    newer.join(0.5)  # it waits for the older commit's lock: no time is asserted
    go.set()
    older.join()
    newer.join()
    assert real(plain)["version"] == "v000003" and errors == []


def test_a_commit_waits_for_another_process_holding_the_checkpoints_lock(tmp_path: Path) -> None:
    import fcntl

    st = checkpoint_store(tmp_path)
    version = commit.reserve_version(st)
    fd = os.open(tmp_path, os.O_RDONLY)  # the checkpoint's directory, as another process
    fcntl.flock(fd, fcntl.LOCK_EX)
    done = threading.Event()
    worker = threading.Thread(target=lambda: (commit.commit_version(st, version), done.set()))
    worker.start()
    try:
        assert not done.wait(0.5)  # its check and write wait: the holder may be committing
        assert commit.read_manifest(st) is None
    finally:
        os.close(fd)  # released
    worker.join(10)
    assert done.is_set() and commit.read_manifest(st)["version"] == version  # type: ignore[index]
    commit.release_version(st, version)
    import zarr

    assert [name for name, _ in zarr.open_group(tmp_path, mode="r").members()] == []


def test_a_child_forked_during_a_commit_does_not_hold_the_lock_after_it(tmp_path: Path) -> None:
    import signal

    st = checkpoint_store(tmp_path)
    first = commit.reserve_version(st)
    with commit.commit_lock(st):
        child = os.fork()  # a DataLoader worker started while a background save commits
        if child == 0:
            time.sleep(60)
            os._exit(0)
    try:
        done = threading.Event()
        thread = threading.Thread(target=lambda: (commit.commit_version(st, first), done.set()))
        thread.start()
        assert done.wait(30)  # the child's copy of the descriptor holds nothing
        thread.join()
    finally:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
    commit.release_version(st, first)


def test_saves_go_on_unlocked_where_the_file_system_has_no_flock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import errno
    import types

    from torchzarr.storage import file_locks

    def no_flock(fd: int, operation: int) -> None:
        raise OSError(errno.ENOSYS, "Function not implemented")

    fake = types.SimpleNamespace(flock=no_flock, LOCK_EX=2, LOCK_NB=4, LOCK_UN=8)
    monkeypatch.setattr(file_locks, "_fcntl", fake)
    save_checkpoint({"step": 1}, tmp_path / "ckpt")
    assert load_checkpoint(tmp_path / "ckpt") == {"step": 1}
    assert "takes no flock locks" in caplog.text
