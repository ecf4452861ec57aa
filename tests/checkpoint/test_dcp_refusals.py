"""DCP saves and loads that cannot work are refused with a reason, before anything is written."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.planner import SavePlan

import torchzarr.checkpoint.dcp_checks as dcp_checks
from torchzarr.distributed import ZarrStorageReader, ZarrStorageWriter
from torchzarr.errors import InvalidArgumentError, NodeNotFoundError

pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled")


def _ranks(monkeypatch: pytest.MonkeyPatch, world: int) -> None:
    monkeypatch.setattr(dcp_checks, "world_size", lambda: world)


def test_save_without_collectives_on_several_ranks_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _ranks(monkeypatch, 2)
    path = tmp_path / "ckpt"
    writer = ZarrStorageWriter(path)
    with pytest.raises(InvalidArgumentError, match="use_collectives=True"):
        writer.set_up_storage_writer(True, rank=0, use_collectives=False)
    with pytest.raises(InvalidArgumentError, match="use_collectives=True"):
        dcp.save({"w": torch.ones(3)}, storage_writer=writer, no_dist=True, use_collectives=False)
    assert not path.exists()


def test_a_save_of_several_ranks_to_a_zip_is_refused_before_it_touches_the_zip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "ckpt.zip"
    dcp.save({"w": torch.ones(3)}, storage_writer=ZarrStorageWriter(path), no_dist=True)
    before = path.read_bytes()
    writer = ZarrStorageWriter(path)
    writer.set_up_storage_writer(True, rank=0)
    with pytest.raises(InvalidArgumentError, match="zip, which takes writes from one process"):
        writer.prepare_global_plan([SavePlan([]), SavePlan([])])  # the plans of two ranks
    assert path.read_bytes() == before  # the checkpoint in it is intact
    state = {"w": torch.zeros(3)}
    dcp.load(state, storage_reader=ZarrStorageReader(path), no_dist=True)
    assert torch.equal(state["w"], torch.ones(3))


def test_independent_zip_saves_of_each_rank_are_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _ranks(monkeypatch, 2)  # a zip per process, each saving alone (no_dist), as advised
    path = tmp_path / "rank1.zip"
    dcp.save({"w": torch.full((3,), 2.0)}, storage_writer=ZarrStorageWriter(path), no_dist=True)
    state = {"w": torch.zeros(3)}
    dcp.load(state, storage_reader=ZarrStorageReader(path), no_dist=True)
    assert torch.equal(state["w"], torch.full((3,), 2.0))


def test_save_without_collectives_in_one_process_works(tmp_path: Path) -> None:
    path = str(tmp_path / "ckpt")
    writer = ZarrStorageWriter(path)
    dcp.save({"w": torch.ones(3)}, storage_writer=writer, no_dist=True, use_collectives=False)
    state = {"w": torch.zeros(3)}
    dcp.load(state, storage_reader=ZarrStorageReader(path), no_dist=True)
    assert torch.equal(state["w"], torch.ones(3))


def test_collective_save_on_several_ranks_is_not_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    _ranks(monkeypatch, 2)
    writer = ZarrStorageWriter("memory://")
    writer.set_up_storage_writer(False, rank=1, use_collectives=True)
    assert writer.is_coordinator is False


def test_memory_store_seen_from_another_rank_says_it_is_not_shared(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _ranks(monkeypatch, 2)
    writer = ZarrStorageWriter("memory://dcp-not-shared-w")
    plan = SavePlan(items=[], storage_data={"version": "v000001", "names": {}})
    with pytest.raises(InvalidArgumentError, match=r"memory store.*other ranks"):
        writer.write_data(plan, planner=None)  # type: ignore[arg-type]
    reader = ZarrStorageReader("memory://dcp-not-shared-r")
    with pytest.raises(CheckpointException, match=r"memory store.*other ranks"):
        dcp.load({"w": torch.zeros(3)}, storage_reader=reader, no_dist=True)


def test_empty_memory_store_in_one_process_is_just_missing() -> None:
    reader = ZarrStorageReader("memory://dcp-empty-one-process")
    with pytest.raises(NodeNotFoundError, match="no committed checkpoint"):
        reader.read_metadata()
