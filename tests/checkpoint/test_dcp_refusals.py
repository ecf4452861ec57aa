"""DCP saves and loads that cannot work are refused with a reason, before anything is written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.planner import SavePlan

import torchzarr.checkpoint.dcp_checks as dcp_checks
from torchzarr.checkpoint import save_checkpoint
from torchzarr.distributed import ZarrStorageReader, ZarrStorageWriter
from torchzarr.errors import (
    ArgumentTypeError,
    InvalidArgumentError,
    MetadataError,
    NodeNotFoundError,
    UnknownCodecError,
    UnsupportedDtypeError,
)

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


@pytest.mark.parametrize(
    ("option", "value", "error", "message"),
    [
        ("keep", "2", ArgumentTypeError, "keep must be an int, got '2'"),
        ("keep", 1.5, ArgumentTypeError, "keep must be an int, got 1.5"),
        ("keep", 0, InvalidArgumentError, "keep must be >= 1, got 0"),
        ("keep", -1, InvalidArgumentError, "keep must be >= 1, got -1"),
        ("chunk_bytes", 0, InvalidArgumentError, "chunk_bytes must be >= 1, got 0"),
        ("chunk_bytes", -5, InvalidArgumentError, "chunk_bytes must be >= 1, got -5"),
        ("threads", 0, InvalidArgumentError, "threads must be >= 1, got 0"),
        ("threads", "4", ArgumentTypeError, "threads must be an int, got '4'"),
        ("compressors", "bogus", UnknownCodecError, "bogus"),
    ],
)
def test_writer_options_are_checked_when_it_is_made(
    tmp_path: Path, option: str, value: object, error: type[Exception], message: str
) -> None:
    path = tmp_path / "ckpt"
    with pytest.raises(error, match=message):
        ZarrStorageWriter(path, **{option: value})  # type: ignore[arg-type]
    if option != "threads":  # as save_checkpoint refuses them
        with pytest.raises(error, match=message):
            save_checkpoint({"w": torch.ones(2)}, path, **{option: value})  # type: ignore[arg-type]
    assert not path.exists()
    writer = ZarrStorageWriter(path, keep=np.int64(2), chunk_bytes=64, threads=2)
    dcp.save({"w": torch.ones(2)}, storage_writer=writer, no_dist=True)


@pytest.mark.parametrize(
    "bad",
    [
        torch.zeros(4, dtype=torch.complex32),
        torch.zeros(4, dtype=torch.uint8).view(torch.float4_e2m1fn_x2),
        torch.quantize_per_tensor(torch.ones(3), 0.1, 0, torch.quint8),
    ],
    ids=["complex32", "float4_e2m1fn_x2", "quint8"],
)
def test_a_tensor_of_a_dtype_zarr_cannot_hold_is_refused_naming_its_key_before_any_write(
    tmp_path: Path, bad: torch.Tensor
) -> None:
    path = tmp_path / "ckpt"
    dcp.save({"w": torch.ones(2)}, storage_writer=ZarrStorageWriter(path), no_dist=True)
    state = {"w": torch.ones(2), "bad": bad}
    with pytest.raises(CheckpointException, match=r"DCP key 'bad'") as raised:
        dcp.save(state, storage_writer=ZarrStorageWriter(path), no_dist=True)
    assert isinstance(raised.value.failures[0][0], UnsupportedDtypeError)
    assert str(bad.dtype) in str(raised.value)
    assert sorted(os.listdir(path)) == ["v000001", "zarr.json"]  # no version reserved


def test_a_dtype_name_in_dcp_metadata_imports_nothing() -> None:
    """A stranger's DCP metadata naming a torch submodule as a dtype is refused without
    importing it (torch's module ``__getattr__`` would)."""
    script = """
import sys
import torch
from torch.distributed.checkpoint.metadata import Metadata
from torchzarr.checkpoint.dcp_metadata import metadata_from_json, metadata_to_json
from torchzarr.errors import MetadataError
from torch.distributed.checkpoint.metadata import (
    ChunkStorageMetadata, TensorProperties, TensorStorageMetadata,
)
entry = TensorStorageMetadata(
    TensorProperties(dtype=torch.float32), torch.Size([2]),
    [ChunkStorageMetadata(torch.Size([0]), torch.Size([2]))],
)
doc = metadata_to_json(Metadata({"w": entry}))
assert "torch.onnx" not in sys.modules
for found in doc["state_dict_metadata"].values():
    found["dtype"] = "onnx"
try:
    metadata_from_json(doc)
except MetadataError as err:
    assert "unknown dtype 'onnx'" in str(err), err
else:
    raise SystemExit("accepted")
assert "torch.onnx" not in sys.modules, "imported"
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    ("option", "value", "error", "message"),
    [
        ("version", 3, ArgumentTypeError, r"version=3\): must be a version's name"),
        ("version", "", InvalidArgumentError, r"version=''\): must be a version's name"),
        ("version", "v000001/", InvalidArgumentError, r"version='v000001/'\)"),
        ("version", "/v000001", InvalidArgumentError, r"version='/v000001'\)"),
        ("threads", 0, InvalidArgumentError, "threads must be >= 1, got 0"),
        ("threads", "4", ArgumentTypeError, "threads must be an int, got '4'"),
    ],
)
def test_reader_options_are_checked_when_it_is_made(
    option: str, value: object, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        ZarrStorageReader("ckpt", **{option: value})  # type: ignore[arg-type]
    ZarrStorageReader("ckpt", version="v000001", threads=2)  # what the writer takes


def test_reader_of_a_filesystem_writer_checkpoint_says_to_use_filesystem_reader(
    tmp_path: Path,
) -> None:
    path = tmp_path / "fs"
    dcp.save({"w": torch.ones(2)}, storage_writer=dcp.FileSystemWriter(path), no_dist=True)
    with pytest.raises(
        MetadataError, match="written by torch's FileSystemWriter: use FileSystemReader"
    ):
        ZarrStorageReader(path).read_metadata()
    with pytest.raises(CheckpointException, match="use FileSystemReader"):
        dcp.load({"w": torch.zeros(2)}, storage_reader=ZarrStorageReader(path), no_dist=True)
