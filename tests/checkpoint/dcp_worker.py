"""One gloo rank of the DCP tests in test_dcp.py: save and load sharded state, any world size.

Usage: python dcp_worker.py RANK WORLD INIT_FILE SAVED_BY_2 SAVED_BY_1
"""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import Shard, distribute_tensor

from torchzarr.distributed import ZarrStorageReader, ZarrStorageWriter


def reference() -> dict[str, torch.Tensor]:
    """The full tensors every test checks against (the same on every process)."""
    return {
        "w": torch.arange(36, dtype=torch.float32).reshape(9, 4),  # uneven rows: 5 + 4
        "c": torch.arange(24, dtype=torch.int64).reshape(4, 6),  # sharded on columns
        "b": torch.linspace(0, 1, 7, dtype=torch.float64),  # replicated, plain
    }


def sharded(mesh: object, ref: dict[str, torch.Tensor], empty: bool) -> dict[str, object]:
    make = torch.zeros_like if empty else (lambda t: t)
    return {
        "w": distribute_tensor(make(ref["w"]), mesh, [Shard(0)]),
        "c": distribute_tensor(make(ref["c"]), mesh, [Shard(1)]),
        "b": make(ref["b"]).clone(),
        "meta": {"step": 0 if empty else 7, "name": "" if empty else "run"},
    }


def main() -> None:
    rank, world, init_file, saved_by_2, saved_by_1 = sys.argv[1:6]
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=int(rank), world_size=int(world)
    )
    mesh = init_device_mesh("cpu", (int(world),))
    ref = reference()
    # save with 2 ranks, each writing its own shards
    dcp.save(sharded(mesh, ref, empty=False), storage_writer=ZarrStorageWriter(saved_by_2))
    # load it back with 2 ranks
    state = sharded(mesh, ref, empty=True)
    dcp.load(state, storage_reader=ZarrStorageReader(saved_by_2))
    for key in ("w", "c"):
        assert torch.equal(state[key].full_tensor(), ref[key]), key  # type: ignore[attr-defined]
    assert torch.equal(state["b"], ref["b"])  # type: ignore[arg-type]
    assert state["meta"] == {"step": 7, "name": "run"}, state["meta"]
    # load a checkpoint saved by one process into 2 ranks' shards
    state = sharded(mesh, ref, empty=True)
    dcp.load(state, storage_reader=ZarrStorageReader(saved_by_1))
    for key in ("w", "c"):
        assert torch.equal(state[key].full_tensor(), ref[key] + 1), key  # type: ignore[attr-defined]
    assert state["meta"] == {"step": 1, "name": "single"}, state["meta"]
    dist.barrier()
    dist.destroy_process_group()
    print(f"rank {rank} ok", flush=True)


if __name__ == "__main__":
    main()
    # Skip C++ static destructors: gloo's teardown at interpreter exit sometimes aborts
    # ("terminate called without an active exception") after all the work is done.
    os._exit(0)
