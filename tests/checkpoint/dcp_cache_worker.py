"""One gloo rank of test_dcp_plan_caching.py: repeated saves under DCP's plan caching.

Usage: python dcp_cache_worker.py RANK WORLD INIT_FILE CHECKPOINT
"""

from __future__ import annotations

import os
import sys
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import DefaultSavePlanner
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import Shard, distribute_tensor

from torchzarr.checkpoint.commit import read_manifest
from torchzarr.distributed import ZarrStorageReader, ZarrStorageWriter
from torchzarr.storage import resolve_store


class CachingPlanner(DefaultSavePlanner):
    def __init__(self) -> None:
        super().__init__(enable_plan_caching=True)


def state(mesh: Any, rank: int, step: int, extra: bool) -> dict[str, Any]:
    """Step ``step``'s state on ``rank``; ``extra``: rank 1 holds one more key."""
    full = torch.arange(36, dtype=torch.float32).reshape(9, 4) + step
    out: dict[str, Any] = {
        "w": distribute_tensor(full, mesh, [Shard(0)]),
        f"own{rank}": torch.full((3,), float(10 * rank + step)),
        "meta": {"step": step},
    }
    if extra and rank == 1:
        out["extra1"] = torch.full((2,), float(step))
    return out


def blank(mesh: Any, rank: int, extra: bool) -> dict[str, Any]:
    out = state(mesh, rank, 0, extra)
    out["w"] = distribute_tensor(torch.zeros(9, 4), mesh, [Shard(0)])
    return {
        k: (torch.zeros_like(v) if k.startswith(("own", "extra")) else v) for k, v in out.items()
    }


def dtypes_change(mesh: Any, rank: int, path: str) -> None:
    """Plans cached, dtypes changed: a key one rank writes is laid out again in its new
    dtype and stored exactly (step 5); one both ranks write is refused (step 6)."""
    own = f"own{rank}"
    five = state(mesh, rank, 5, True)
    five[own] = five[own].double() + 2**-40  # no float32 holds it
    dcp.save(five, storage_writer=ZarrStorageWriter(path), planner=CachingPlanner())
    loaded = blank(mesh, rank, True)
    loaded[own] = torch.zeros(3, dtype=torch.float64)
    dcp.load(loaded, storage_reader=ZarrStorageReader(path))
    assert torch.equal(loaded[own], five[own]), loaded[own]
    assert torch.equal(loaded["w"].full_tensor(), five["w"].full_tensor())
    six = dict(five, w=distribute_tensor(torch.ones(9, 4, dtype=torch.float64), mesh, [Shard(0)]))
    try:
        dcp.save(six, storage_writer=ZarrStorageWriter(path), planner=CachingPlanner())
    except CheckpointException as err:
        assert "other ranks write too" in str(err) and "'w'" in str(err), err
    else:
        raise AssertionError("a save of w in another dtype was not refused")
    dist.barrier()
    manifest = read_manifest(resolve_store(path))
    assert manifest is not None and manifest["version"] == "v000005", manifest


def main() -> None:
    rank, world, init_file, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    mesh = init_device_mesh("cpu", (world,))
    # step 2 reuses every cached plan; step 3 changes rank 1's only; step 4 reuses again
    for step, extra in ((1, False), (2, False), (3, True), (4, True)):
        dcp.save(
            state(mesh, rank, step, extra),
            storage_writer=ZarrStorageWriter(path),
            planner=CachingPlanner(),
        )
        dist.barrier()
        manifest = read_manifest(resolve_store(path))
        assert manifest is not None and manifest["version"] == f"v{step:06d}", manifest
        loaded = blank(mesh, rank, extra)
        dcp.load(loaded, storage_reader=ZarrStorageReader(path))
        expected = state(mesh, rank, step, extra)
        assert torch.equal(loaded["w"].full_tensor(), expected["w"].full_tensor()), step
        for key in expected:
            if key.startswith(("own", "extra")):
                assert torch.equal(loaded[key], expected[key]), (step, key)
        assert loaded["meta"] == {"step": step}, (step, loaded["meta"])
        dist.barrier()
    dtypes_change(mesh, rank, path)
    dist.destroy_process_group()
    print(f"rank {rank} ok", flush=True)


if __name__ == "__main__":
    main()
    # Skip C++ static destructors: gloo's teardown at interpreter exit sometimes aborts.
    os._exit(0)
