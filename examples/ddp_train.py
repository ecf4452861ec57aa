"""Data-parallel training from one Zarr store: each rank streams its own share of every epoch.

Run on CPU with 2 ranks (gloo):
    torchrun --standalone --nproc-per-node 2 examples/ddp_train.py
    python -m torch.distributed.run --standalone --nproc-per-node 2 examples/ddp_train.py \
        --samples 4000 --seen-dir /tmp/seen    # each rank writes the sample ids it trained on

``ZarrIterableDataset`` reads the rank and world size from torch.distributed when it splits
an epoch, and deals each epoch so that the ranks together see every sample once, with the same number
of batches on every rank (DDP needs that: a rank with one more batch would hang the others).
"""

from __future__ import annotations

import argparse
import gc
import os
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

import torchzarr as tz
from torchzarr.data import ZarrIterableDataset


def build_store(path: Path, samples: int, features: int) -> None:
    """Features, labels and the id of each sample (so the ranks can report what they saw)."""
    root = tz.open_group(str(path), mode="w")
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(samples, features, generator=gen)
    teacher = torch.randn(features, generator=gen)
    root.create_array("x", shape=x.shape, dtype=torch.float32, chunks=(512, features))[:] = x
    root.create_array("y", shape=(samples,), dtype=torch.float32, chunks=(2048,))[:] = x @ teacher
    ids = torch.arange(samples)
    root.create_array("id", shape=(samples,), dtype=torch.int64, chunks=(2048,))[:] = ids


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--store", type=Path, default=None, help="shared store (default: a temp dir)")
    p.add_argument("--samples", type=int, default=50_000)
    p.add_argument("--features", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=128, help="per rank")
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--seen-dir", type=Path, default=None, help="write seen ids per rank here")
    args = p.parse_args()

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    tmp = tempfile.TemporaryDirectory() if args.store is None and rank == 0 else None
    # The ranks must agree on the path: rank 0 picks it and broadcasts it.
    box = [str(args.store) if args.store else (tmp.name if tmp else "")]
    dist.broadcast_object_list(box, src=0)
    path = Path(box[0]) / "ddp.zarr" if args.store is None else Path(box[0])
    if rank == 0 and not path.exists():
        build_store(path, args.samples, args.features)
    dist.barrier()

    dataset = ZarrIterableDataset(tz.open_group(str(path), mode="r"), batch_size=args.batch_size)
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=args.workers)
    model = DistributedDataParallel(torch.nn.Linear(args.features, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    seen: list[torch.Tensor] = []
    for epoch in range(args.epochs):
        dataset.set_epoch(epoch)
        start, count, steps = time.perf_counter(), 0, 0
        for batch in loader:
            loss = torch.nn.functional.mse_loss(model(batch["x"]).squeeze(1), batch["y"])
            opt.zero_grad()
            loss.backward()  # all-reduce: every rank must run the same number of steps
            opt.step()
            count, steps = count + len(batch["id"]), steps + 1
            if epoch == 0:
                seen.append(batch["id"])
        rate = count / (time.perf_counter() - start)
        print(f"rank {rank}/{world} epoch {epoch}: {steps} steps, {count} samples, {rate:,.0f}/s")
    if args.seen_dir is not None:
        args.seen_dir.mkdir(parents=True, exist_ok=True)
        ids = torch.cat(seen).tolist() if seen else []
        (args.seen_dir / f"rank{rank}.txt").write_text("\n".join(map(str, ids)))
    dist.barrier()
    # DDP holds the process group: drop it first, so that gloo's threads are joined here by
    # destroy_process_group and not later, during interpreter shutdown (where that aborts).
    del model, opt
    gc.collect()
    dist.destroy_process_group()
    if tmp is not None:
        tmp.cleanup()
    print(f"rank {rank} done (pid {os.getpid()})")


if __name__ == "__main__":
    main()
