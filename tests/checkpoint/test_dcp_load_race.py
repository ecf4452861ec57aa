"""Ranks of one ``dcp.load`` racing another job's save all load one version: each rank's
plan says which version it opened, the coordinator picks the newest, and a rank that
planned with another reads that one (or raises when its keys differ there)."""

from __future__ import annotations

import inspect
import pathlib
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.distributed.checkpoint as dcp
from ranks import run_ranks
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner

from torchzarr.checkpoint.prune import wait_pruned
from torchzarr.distributed import ZarrStorageReader, ZarrStorageWriter
from torchzarr.errors import CheckpointConflictError

pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled")

HERE = pathlib.Path(__file__).parent


def _save(path: str, step: int, keep: int = 2, dtype: torch.dtype = torch.float32) -> None:
    state = {"w": torch.full((4,), float(step), dtype=dtype), "step": step}
    dcp.save(state, storage_writer=ZarrStorageWriter(path, keep=keep), no_dist=True)
    wait_pruned()


def _load_on_two_ranks(
    path: str, between: Callable[[], None], extra: bool = False
) -> list[dict[str, Any]]:
    """DCP's steps of a 2-rank load, in one process: ``between`` runs after rank 0 read
    the metadata and before rank 1 does. ``extra``: a partial load of one more key."""
    readers = [ZarrStorageReader(path), ZarrStorageReader(path)]
    planners = [DefaultLoadPlanner(allow_partial_load=extra) for _ in range(2)]
    states: list[dict[str, Any]] = [{"w": torch.zeros(4), "step": 0} for _ in range(2)]
    if extra:
        for state in states:
            state["extra"] = torch.zeros(2)
    local = []
    for rank in (0, 1):
        if rank == 1:
            between()
        metadata = readers[rank].read_metadata()
        planners[rank].set_up_planner(states[rank], metadata, rank == 0)
        readers[rank].set_up_storage_reader(metadata, rank == 0)
        local.append(readers[rank].prepare_local_plan(planners[rank].create_local_plan()))
    central = readers[0].prepare_global_plan(planners[0].create_global_plan(local))
    for reader, planner, plan in zip(readers, planners, central, strict=True):
        reader.read_data(planner.finish_plan(plan), planner).wait()
    return states


@pytest.mark.parametrize("keep", [1, 2])
def test_ranks_that_opened_different_versions_all_load_the_newest(
    tmp_path: pathlib.Path, keep: int
) -> None:
    path = str(tmp_path / "ckpt")
    _save(path, 1, keep)
    states = _load_on_two_ranks(path, lambda: _save(path, 2, keep))
    for state in states:
        assert state["step"] == 2 and torch.equal(state["w"], torch.full((4,), 2.0))


def test_a_rank_whose_keys_differ_in_the_newest_version_raises_a_conflict(
    tmp_path: pathlib.Path,
) -> None:
    path = str(tmp_path / "ckpt")
    _save(path, 1)
    with pytest.raises(CheckpointConflictError, match=r"'w'.*float64.*load again"):
        _load_on_two_ranks(path, lambda: _save(path, 2, dtype=torch.float64))


def test_a_partial_load_whose_keys_differ_in_the_newest_version_raises_a_conflict(
    tmp_path: pathlib.Path,
) -> None:
    # rank 0 plans with a version without "extra" (a partial load skips it), rank 1 with
    # one holding it: switched to the newest, rank 0 would never load "extra"
    path = str(tmp_path / "ckpt")
    _save(path, 1)

    def save_with_extra() -> None:
        state = {"w": torch.full((4,), 2.0), "step": 2, "extra": torch.full((2,), 2.0)}
        dcp.save(state, storage_writer=ZarrStorageWriter(path, keep=2), no_dist=True)

    with pytest.raises(CheckpointConflictError, match=r"keys differ.*'extra'"):
        _load_on_two_ranks(path, save_with_extra, extra=True)


def test_a_version_pruned_before_it_is_opened_is_followed_to_the_new_one(
    tmp_path: pathlib.Path,
) -> None:
    path = str(tmp_path / "ckpt")
    _save(path, 1, keep=1)
    reader = ZarrStorageReader(path)
    read_manifest = reader._manifest
    raced: list[bool] = []

    def manifest_then_a_save_commits() -> Any:
        found = read_manifest()
        if not raced:  # the version just read is pruned before it is opened
            raced.append(True)
            _save(path, 2, keep=1)
        return found

    reader._manifest = manifest_then_a_save_commits  # type: ignore[method-assign]
    state: dict[str, Any] = {"w": torch.zeros(4), "step": 0}
    dcp.load(state, storage_reader=reader, no_dist=True)
    assert raced and state["step"] == 2 and torch.equal(state["w"], torch.full((4,), 2.0))


def test_a_failed_metadata_read_is_not_retried_as_a_rank_local_one(tmp_path: pathlib.Path) -> None:
    # torch retries a failed read_metadata() with rank=... when the reader's signature
    # has **kwargs, and then skips the load's collectives on that rank alone: the others
    # would wait for it until the timeout. Without them, the first read's error is all.
    assert "kwargs" not in inspect.signature(ZarrStorageReader("x").read_metadata).parameters
    missing = str(tmp_path / "none")
    with pytest.raises(CheckpointException) as info:
        dcp.load({"w": torch.zeros(2)}, storage_reader=ZarrStorageReader(missing), no_dist=True)
    failure = info.value.failures[0]
    err = failure[0] if isinstance(failure, tuple) else failure
    assert isinstance(err, AssertionError)  # torch's, with our error's text only
    assert str(err) == (
        "metadata is None; global metadata read failed: no committed checkpoint in "
        f"LocalStore({missing!r}, read-only)"
    )


def test_ranks_that_opened_one_version_load_it(tmp_path: pathlib.Path) -> None:
    path = str(tmp_path / "ckpt")
    _save(path, 1)
    for state in _load_on_two_ranks(path, lambda: None):
        assert state["step"] == 1 and torch.equal(state["w"], torch.ones(4))


def test_two_gloo_ranks_racing_a_save_load_one_version(tmp_path: pathlib.Path) -> None:
    """Also: a collective load of a missing memory:// checkpoint says the store is not
    shared."""
    args = [str(tmp_path / "pg-init"), str(tmp_path / "ckpt")]
    run_ranks(str(HERE / "dcp_race_worker.py"), 2, args, timeout=120)
