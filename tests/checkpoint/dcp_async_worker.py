"""One gloo rank of test_dcp_async_stage.py: async_save of a conjugate DTensor view (tied
under two keys, beside a replicated DTensor) through ZarrStorageWriter, loaded back and
checked.

Usage: python dcp_async_worker.py RANK WORLD INIT_FILE PATH
"""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import Replicate, Shard, distribute_tensor

from torchzarr.distributed import ZarrStorageReader, ZarrStorageWriter


def main() -> None:
    rank, world, init_file, path = sys.argv[1:5]
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=int(rank), world_size=int(world)
    )
    mesh = init_device_mesh("cpu", (int(world),))
    z = torch.tensor([1 + 2j, 3 + 4j, 5 + 6j, 7 + 8j])
    x = torch.arange(1.0, 5.0)
    conj = distribute_tensor(z, mesh, [Shard(0)]).conj()
    state = {
        "conj": conj,
        "tied": conj,
        "plain": distribute_tensor(x, mesh, [Replicate()]),
    }
    dcp.async_save(state, storage_writer=ZarrStorageWriter(path)).result()
    out = {
        "conj": distribute_tensor(torch.zeros_like(z), mesh, [Shard(0)]),
        "tied": distribute_tensor(torch.zeros_like(z), mesh, [Shard(0)]),
        "plain": distribute_tensor(torch.zeros_like(x), mesh, [Replicate()]),
    }
    dcp.load(out, storage_reader=ZarrStorageReader(path))
    for key in ("conj", "tied"):
        assert torch.equal(out[key].full_tensor(), z.conj().resolve_conj()), key
    assert torch.equal(out["plain"].full_tensor(), x), out["plain"]
    dist.barrier()
    dist.destroy_process_group()
    print(f"rank {rank} ok", flush=True)


if __name__ == "__main__":
    main()
    os._exit(0)  # skip gloo's teardown at exit, which sometimes aborts (see dcp_worker.py)
