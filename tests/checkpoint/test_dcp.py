"""torch.distributed.checkpoint through ZarrStorageWriter/Reader: 1 and 2 gloo ranks, resharding."""

from __future__ import annotations

import json
import math
import pathlib
import subprocess
import sys
import warnings
from typing import Any

import pytest
import torch
import torch.distributed.checkpoint as dcp
from ranks import run_ranks
from torch.distributed.checkpoint.api import CheckpointException

import torchzarr as tz
from torchzarr.checkpoint import save_checkpoint
from torchzarr.checkpoint.commit import read_manifest
from torchzarr.checkpoint.prune import wait_pruned
from torchzarr.distributed import (
    ZarrStorageReader,
    ZarrStorageWriter,
    aligned_chunks,
    metadata_from_json,
    metadata_to_json,
)
from torchzarr.errors import MetadataError

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from dcp_worker import reference  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled")


class Opaque:
    """A value only the full unpickler can rebuild."""

    def __init__(self, x: int) -> None:
        self.x = x


def _model_and_optimizer(seed: int) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(5, 4)).sum().backward()
    opt.step()
    return model, opt


def _state(model: torch.nn.Module, opt: torch.optim.Optimizer, step: int) -> dict[str, Any]:
    return {"model": model.state_dict(), "optim": opt.state_dict(), "extra": {"step": step}}


def _stores(tmp_path: pathlib.Path) -> list[Any]:
    pytest.importorskip("fsspec")
    from torchzarr.storage.fsspec_store import FsspecStore

    return [
        str(tmp_path / "local"),
        f"memory://dcp-{tmp_path.name}",
        FsspecStore(f"memory://fsspec-dcp-{tmp_path.name}"),
    ]


@pytest.mark.parametrize("which", [0, 1, 2], ids=["local", "memory", "fsspec-memory"])
def test_single_process_round_trip_with_optimizer(tmp_path: pathlib.Path, which: int) -> None:
    store = _stores(tmp_path)[which]
    model, opt = _model_and_optimizer(0)
    saved = _state(model, opt, 12)
    dcp.save(saved, storage_writer=ZarrStorageWriter(store))
    model2, opt2 = _model_and_optimizer(1)  # different weights and moments
    state = _state(model2, opt2, 0)
    dcp.load(state, storage_reader=ZarrStorageReader(store))
    model2.load_state_dict(state["model"])
    opt2.load_state_dict(state["optim"])
    for key, value in model.state_dict().items():
        assert torch.equal(model2.state_dict()[key], value), key
    for pid, moments in opt.state_dict()["state"].items():
        for name, value in moments.items():
            assert torch.equal(opt2.state_dict()["state"][pid][name], value), (pid, name)
    assert opt2.state_dict()["param_groups"] == opt.state_dict()["param_groups"]
    assert state["extra"]["step"] == 12


def test_metadata_is_json_and_no_pickle_file(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "ckpt"
    model, opt = _model_and_optimizer(0)
    dcp.save(_state(model, opt, 3), storage_writer=ZarrStorageWriter(str(path)))
    files = {p.name for p in path.rglob("*")}
    assert ".metadata" not in files and not any(name.endswith(".distcp") for name in files)
    root = json.loads((path / "zarr.json").read_text())
    doc = root["attributes"]["torchzarr_checkpoint"]["dcp"]
    assert doc["state_dict_metadata"]["model.0.weight"]["size"] == [8, 4]
    assert doc["planner_data"]["dict"]  # fqn -> object path, typed JSON
    md = ZarrStorageReader(str(path)).read_metadata()
    again = metadata_from_json(json.loads(json.dumps(metadata_to_json(md))))
    assert again.state_dict_metadata == md.state_dict_metadata
    assert again.planner_data == md.planner_data
    path = md.planner_data["optim.state.0.exp_avg"]
    assert isinstance(path, tuple) and path[0] == "optim" and path[-1] == "exp_avg"


def test_zarr_python_reads_it(tmp_path: pathlib.Path) -> None:
    zarr = pytest.importorskip("zarr")
    ref = reference()
    dcp.save({**ref, "step": 4}, storage_writer=ZarrStorageWriter(str(tmp_path)))
    group = zarr.open_group(str(tmp_path), mode="r")
    version = group.attrs["torchzarr_checkpoint"]["version"]
    for key, value in ref.items():
        assert (group[f"{version}/{key}"][...] == value.numpy()).all(), key
    step = group[f"{version}/step"]
    assert step.dtype == "uint8" and step.attrs["torchzarr_dcp_key"]["kind"] == "bytes"


def test_resave_is_atomic_and_prunes(tmp_path: pathlib.Path, monkeypatch: Any) -> None:
    store = str(tmp_path)
    dcp.save({"w": torch.ones(4), "step": 1}, storage_writer=ZarrStorageWriter(store))

    def crash(self: Any, plan: Any, planner: Any) -> Any:
        raise RuntimeError("killed mid-save")

    monkeypatch.setattr(ZarrStorageWriter, "write_data", crash)
    with pytest.raises(CheckpointException, match="killed mid-save"):
        dcp.save({"w": torch.full((4,), 2.0), "step": 2}, storage_writer=ZarrStorageWriter(store))
    monkeypatch.undo()
    state = {"w": torch.zeros(4), "step": 0}
    dcp.load(state, storage_reader=ZarrStorageReader(store))
    assert torch.equal(state["w"], torch.ones(4)) and state["step"] == 1
    dcp.save({"w": torch.full((4,), 3.0), "step": 3}, storage_writer=ZarrStorageWriter(store))
    dcp.load(state, storage_reader=ZarrStorageReader(store))
    assert torch.equal(state["w"], torch.full((4,), 3.0)) and state["step"] == 3
    wait_pruned()  # old versions are deleted on a thread, after the commit
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["v000003"]


def test_non_weights_values_need_opt_in() -> None:
    store = "memory://dcp-opaque"
    dcp.save({"w": torch.ones(2), "obj": Opaque(5)}, storage_writer=ZarrStorageWriter(store))
    state: dict[str, Any] = {"w": torch.zeros(2), "obj": None}
    with pytest.raises(CheckpointException, match="weights_only=False"):
        dcp.load(state, storage_reader=ZarrStorageReader(store))
    dcp.load(state, storage_reader=ZarrStorageReader(store, weights_only=False))
    assert isinstance(state["obj"], Opaque) and state["obj"].x == 5


def test_reader_refuses_a_plain_torchzarr_checkpoint() -> None:
    save_checkpoint({"w": torch.ones(2)}, "memory://dcp-not-dcp")
    with pytest.raises(MetadataError, match="load_checkpoint"):
        ZarrStorageReader("memory://dcp-not-dcp").read_metadata()
    with pytest.raises(CheckpointException, match="load_checkpoint"):
        dcp.load({"w": torch.zeros(2)}, storage_reader=ZarrStorageReader("memory://dcp-not-dcp"))


def test_aligned_chunks() -> None:
    boxes_rows = [((0, 0), (5, 4)), ((5, 0), (4, 4))]
    assert aligned_chunks((9, 4), boxes_rows, 4, 2**20) == (5, 4)
    assert aligned_chunks((4, 6), [((0, 0), (4, 3)), ((0, 3), (4, 3))], 8, 2**20) == (4, 3)
    # one writer for the whole tensor, split to the chunk size by a divisor of the rows
    assert aligned_chunks((1024, 256), [((0, 0), (1024, 256))], 4, 2**18) == (256, 256)
    assert aligned_chunks((), [((), ())], 4, 2**20) == ()
    assert aligned_chunks((0, 3), [((0, 0), (0, 3))], 4, 2**20) == (1, 3)
    # a prime extent is not cut into thousands of one-row chunks: the next axis is split
    assert aligned_chunks((10007, 256), [((0, 0), (10007, 256))], 4, 2**20) == (10007, 16)
    assert aligned_chunks((1009, 64), [((0, 0), (1009, 64))], 4, 16384) == (1009, 4)
    assert aligned_chunks((32003, 4096), [((0, 0), (32003, 4096))], 4, 64 << 20) == (32003, 512)
    # no axis to split: one large chunk
    assert aligned_chunks((10007,), [((0,), (10007,))], 4, 1024) == (10007,)


def test_a_prime_first_axis_still_gets_chunks_of_about_chunk_bytes(tmp_path: pathlib.Path) -> None:
    path = str(tmp_path / "ckpt")
    emb = torch.arange(1009 * 64, dtype=torch.float32).reshape(1009, 64)
    dcp.save({"emb": emb}, storage_writer=ZarrStorageWriter(path, chunk_bytes=16384), no_dist=True)
    arr = tz.open_array(path, path="v000001/emb", mode="r")
    assert arr.chunks == (1009, 4) and 4 * math.prod(arr.chunks) <= 16384
    loaded = {"emb": torch.zeros(1009, 64)}
    dcp.load(loaded, storage_reader=ZarrStorageReader(path), no_dist=True)
    assert torch.equal(loaded["emb"], emb)


def test_two_ranks_save_and_reshard(tmp_path: pathlib.Path) -> None:
    """Save with 2 gloo ranks; load with 2 and with 1; a 1-process save loads on 2."""
    ref = reference()
    saved_by_1 = tmp_path / "by1"
    saved_by_2 = tmp_path / "by2"
    single = {
        "w": ref["w"] + 1,
        "c": ref["c"] + 1,
        "b": ref["b"],
        "meta": {"step": 1, "name": "single"},
    }
    dcp.save(single, storage_writer=ZarrStorageWriter(str(saved_by_1)))
    init = tmp_path / "pg-init"
    args = [str(init), str(saved_by_2), str(saved_by_1)]
    run_ranks(str(HERE / "dcp_worker.py"), 2, args, timeout=120)
    # the 2-rank save, loaded by one process into whole tensors
    state: dict[str, Any] = {k: torch.zeros_like(v) for k, v in ref.items()}
    state["meta"] = {"step": 0, "name": ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.load(state, storage_reader=ZarrStorageReader(str(saved_by_2)))
    for key, value in ref.items():
        assert torch.equal(state[key], value), key
    assert state["meta"] == {"step": 7, "name": "run"}
    # chunk boundaries on the shard boxes: every chunk had one writer
    version = read_manifest(tz.storage.resolve_store(str(saved_by_2)))["version"]  # type: ignore[index]
    root = tz.open_group(str(saved_by_2), mode="r", path=version)
    assert root["w"].chunks == (5, 4) and root["c"].chunks == (4, 3)
    # the ranks' shards cover each tensor: marked, and checked by the loads above
    for key, chunks in {"w": [5, 4], "c": [4, 3], "b": [7]}.items():
        assert root[key].attrs["torchzarr_dcp_key"]["every_chunk"] == chunks, key


def test_checkpoint_benchmark_runs(tmp_path: pathlib.Path) -> None:
    """benchmarks/checkpoint_bench.py end to end on a tiny state (times never asserted)."""
    out = tmp_path / "bench.json"
    script = HERE.parents[1] / "benchmarks" / "checkpoint_bench.py"
    args = ["--mib", "16", "--rounds", "1", "--no-peak", "--json", str(out)]
    result = subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads(out.read_text())["results"]
    assert {"torchzarr", "torchzarr-dcp", "torch.save", "dcp-filesystem"} <= set(
        rows[0]["median_s"]
    )


def test_load_without_a_template_rebuilds_the_tree(tmp_path: pathlib.Path) -> None:
    """DCP's empty-state-dict planner rebuilds nesting from planner_data (stored as JSON)."""
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict_from_keys

    model, opt = _model_and_optimizer(0)
    dcp.save(_state(model, opt, 4), storage_writer=ZarrStorageWriter(str(tmp_path)))
    out = _load_state_dict_from_keys(storage_reader=ZarrStorageReader(str(tmp_path)))
    assert out["extra"] == {"step": 4}
    assert torch.equal(out["model"]["0.weight"], model.state_dict()["0.weight"])
    assert out["optim"]["param_groups"] == opt.state_dict()["param_groups"]


def test_async_save(tmp_path: pathlib.Path) -> None:
    state = {"w": torch.arange(10.0), "step": 3}
    future = dcp.async_save(state, storage_writer=ZarrStorageWriter(str(tmp_path)), no_dist=True)
    state["w"] += 100  # staged before async_save returned
    future.result()
    out = {"w": torch.zeros(10), "step": 0}
    dcp.load(out, storage_reader=ZarrStorageReader(str(tmp_path)))
    assert torch.equal(out["w"], torch.arange(10.0)) and out["step"] == 3


def test_an_older_version_loads_with_its_own_metadata(tmp_path):
    from torchzarr.checkpoint.format import DCP_KEY_ATTRIBUTE

    path = str(tmp_path / "ckpt")
    first = {"emb": torch.arange(8.0).reshape(4, 2), "step": 100}
    dcp.save(first, storage_writer=ZarrStorageWriter(path, keep=2), no_dist=True)
    second = {"emb": torch.full((3, 2), -1.0), "step": 200, "extra": torch.ones(2)}
    dcp.save(second, storage_writer=ZarrStorageWriter(path, keep=2), no_dist=True)
    old = {"emb": torch.zeros(4, 2), "step": 0}  # its own shapes and keys, not the newest's
    dcp.load(old, storage_reader=ZarrStorageReader(path, version="v000001"), no_dist=True)
    assert torch.equal(old["emb"], first["emb"]) and old["step"] == 100
    new = {"emb": torch.zeros(3, 2), "step": 0, "extra": torch.zeros(2)}
    dcp.load(new, storage_reader=ZarrStorageReader(path, version="v000002"), no_dist=True)
    assert torch.equal(new["emb"], second["emb"]) and new["step"] == 200
    group = tz.open_group(path, mode="r+", path="v000001", use_consolidated=False)
    group.attrs[DCP_KEY_ATTRIBUTE] = {"kind": "torch.distributed.checkpoint"}  # as before
    with pytest.raises(CheckpointException, match="keeps no DCP metadata of its own"):
        dcp.load(old, storage_reader=ZarrStorageReader(path, version="v000001"), no_dist=True)
    with pytest.raises(MetadataError, match="only that one can be loaded"):
        ZarrStorageReader(path, version="v000001").read_metadata()
    # saved before versions kept their own: read through the committed one's where it fits
    dcp.save(second, storage_writer=ZarrStorageWriter(path, keep=2), no_dist=True)  # v000003
    group = tz.open_group(path, mode="r+", path="v000002", use_consolidated=False)
    group.attrs[DCP_KEY_ATTRIBUTE] = {"kind": "torch.distributed.checkpoint"}
    again = {"emb": torch.zeros(3, 2), "step": 0, "extra": torch.zeros(2)}
    dcp.load(again, storage_reader=ZarrStorageReader(path, version="v000002"), no_dist=True)
    assert torch.equal(again["emb"], second["emb"]) and again["step"] == 200


def test_a_save_overtaken_by_another_process_deletes_its_files_and_says_so(tmp_path, monkeypatch):
    import torchzarr.checkpoint.dcp as dcp_writer

    path = str(tmp_path / "ckpt")
    competing = (
        "import torch, torch.distributed.checkpoint as dcp, warnings\n"
        "warnings.simplefilter('ignore')\n"
        "from torchzarr.distributed import ZarrStorageWriter\n"
        f"dcp.save({{'w': torch.zeros(64, 8)}}, storage_writer=ZarrStorageWriter({path!r}, "
        "keep=1), no_dist=True)\n"
    )
    real = dcp_writer.write_rows

    def overtaken_midway(*args, **kwargs):  # another job saves, commits and prunes ours
        subprocess.run([sys.executable, "-c", competing], check=True, timeout=120)
        return real(*args, **kwargs)

    monkeypatch.setattr(dcp_writer, "write_rows", overtaken_midway)
    with pytest.raises(CheckpointException, match=r"CheckpointConflictError|another save"):
        dcp.save({"w": torch.ones(64, 8)}, storage_writer=ZarrStorageWriter(path), no_dist=True)
    assert sorted(p.name for p in pathlib.Path(path).iterdir() if p.is_dir()) == ["v000002"]
    state = {"w": torch.ones(64, 8)}
    dcp.load(state, storage_reader=ZarrStorageReader(path), no_dist=True)
    assert torch.equal(state["w"], torch.zeros(64, 8))  # the committed save's


def test_a_rank_whose_write_fails_after_another_commit_raises_a_conflict(tmp_path, monkeypatch):
    from torchzarr.errors import GroupNotFoundError

    path = str(tmp_path / "ckpt")
    competing = (
        "import torch, torch.distributed.checkpoint as dcp, warnings\n"
        "warnings.simplefilter('ignore')\n"
        "from torchzarr.distributed import ZarrStorageWriter\n"
        f"dcp.save({{'w': torch.zeros(4)}}, storage_writer=ZarrStorageWriter({path!r}, "
        "keep=1), no_dist=True)\n"
    )

    def pruned_under_it(self, plan, planner):  # as a rank finds its version pruned
        subprocess.run([sys.executable, "-c", competing], check=True, timeout=120)
        raise GroupNotFoundError(f"no group at {plan.storage_data['version']!r}")

    monkeypatch.setattr(ZarrStorageWriter, "_write_plan", pruned_under_it)
    with pytest.raises(CheckpointException, match=r"CheckpointConflictError: another save"):
        dcp.save({"w": torch.ones(4)}, storage_writer=ZarrStorageWriter(path), no_dist=True)
    assert sorted(p.name for p in pathlib.Path(path).iterdir() if p.is_dir()) == ["v000002"]
