"""One gloo rank of test_dcp_load_race.py: ranks load while another job commits, and
loads of a memory:// checkpoint that does not exist.

Usage: python dcp_race_worker.py RANK WORLD INIT_FILE CHECKPOINT
"""

from __future__ import annotations

import os
import sys
import warnings
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException

from torchzarr.distributed import ZarrStorageReader, ZarrStorageWriter


def save(path: str, step: int) -> None:
    state = {"w": torch.full((4,), float(step)), "step": step}
    dcp.save(state, storage_writer=ZarrStorageWriter(path, keep=2), no_dist=True)


class RacedReader(ZarrStorageReader):
    """Rank 1 reads the metadata just after another job committed step 2."""

    def read_metadata(self) -> Any:
        if dist.get_rank() == 1:
            save(str(self.path), 2)
        return super().read_metadata()


def refused(state: dict[str, Any], reader: ZarrStorageReader, **options: Any) -> str:
    try:
        dcp.load(state, storage_reader=reader, **options)
    except CheckpointException as err:
        return str(err)
    raise AssertionError("the load did not fail")


def main() -> None:
    rank, world, init_file, path = sys.argv[1:5]
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=int(rank), world_size=int(world)
    )
    warnings.simplefilter("ignore")
    if rank == "0":
        save(path, 1)
    dist.barrier()
    state: dict[str, Any] = {"w": torch.zeros(4), "step": 0}
    dcp.load(state, storage_reader=RacedReader(path))
    assert state["step"] == 2 and state["w"].tolist() == [2.0] * 4, state  # one version
    # both ranks: a memory store is not shared, and the error says so
    shared = refused({"w": torch.zeros(4)}, ZarrStorageReader("memory://none"))
    assert "memory store" in shared and "other ranks" in shared, shared
    dist.barrier()
    dist.destroy_process_group()
    print(f"rank {rank} ok", flush=True)


if __name__ == "__main__":
    main()
    os._exit(0)  # skip gloo's teardown at exit (see dcp_worker.py)
