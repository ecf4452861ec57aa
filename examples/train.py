"""Train a small model for one epoch straight from a Zarr store, with chunk-aware shuffling.

Builds a synthetic classification dataset (features + labels) in a local Zarr store, then
streams it through ``ZarrIterableDataset`` and prints samples/s. The dataset reads the next
block of chunks on a background thread while a batch trains, so on a local disk no
DataLoader workers are needed (each worker batch would cross processes through shared
memory, which costs more than reading it here); ``--workers 2`` shows the difference.

Run: python examples/train.py                      # 200k samples, well under a minute on 2 cores
     python examples/train.py --samples 5000
     python examples/train.py --store /data/my.zarr  # reuse (or build once) a store
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numcodecs
import torch

import torchzarr as tz
from torchzarr.data import DevicePrefetcher, ZarrIterableDataset


def build_store(path: Path, samples: int, features: int, classes: int, chunk_rows: int) -> None:
    """Features from a Gaussian, labels from a fixed random linear teacher."""
    root = tz.open_group(str(path), mode="w")
    x = root.create_array(
        "x",
        shape=(samples, features),
        dtype=torch.float32,
        chunks=(chunk_rows, features),
        compressors=numcodecs.Zstd(1),
    )
    y = root.create_array(
        "y", shape=(samples,), dtype=torch.int64, chunks=(chunk_rows,), compressors=None
    )
    gen = torch.Generator().manual_seed(0)
    teacher = torch.randn(features, classes, generator=gen)
    step = chunk_rows * 16
    for start in range(0, samples, step):
        stop = min(samples, start + step)
        block = torch.randn(stop - start, features, generator=gen)
        x[start:stop] = block
        y[start:stop] = (block @ teacher).argmax(dim=1)


def train(path: Path, batch_size: int, workers: int, epochs: int, device: str) -> dict[str, float]:
    """One pass per epoch over the store; returns loss, accuracy and samples/s of the last epoch."""
    root = tz.open_group(str(path), mode="r")
    features = root["x"].shape[1]
    classes = int(root["y"][:].max()) + 1
    dataset = ZarrIterableDataset(root, batch_size=batch_size, block_chunks=8, seed=0)
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=workers)
    model = torch.nn.Sequential(
        torch.nn.Linear(features, 256), torch.nn.ReLU(), torch.nn.Linear(256, classes)
    ).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    stats: dict[str, float] = {}
    for epoch in range(epochs):
        dataset.set_epoch(epoch)
        seen = correct = 0
        loss_sum = 0.0
        start = time.perf_counter()
        for batch in DevicePrefetcher(loader, device):
            logits = model(batch["x"])
            loss = torch.nn.functional.cross_entropy(logits, batch["y"])
            opt.zero_grad()
            loss.backward()
            opt.step()
            n = batch["y"].shape[0]
            seen += n
            loss_sum += float(loss.detach()) * n
            correct += int((logits.argmax(dim=1) == batch["y"]).sum())
        elapsed = time.perf_counter() - start
        stats = {
            "samples": seen,
            "loss": loss_sum / max(seen, 1),
            "accuracy": correct / max(seen, 1),
            "samples_per_s": seen / elapsed,
        }
        print(
            f"epoch {epoch}: {seen} samples, loss {stats['loss']:.3f}, "
            f"accuracy {stats['accuracy']:.3f}, {stats['samples_per_s']:,.0f} samples/s"
        )
    return stats


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--store", type=Path, default=None, help="store path (default: a temp dir)")
    p.add_argument("--samples", type=int, default=200_000)
    p.add_argument("--features", type=int, default=128)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--chunk-rows", type=int, default=1024)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    p.add_argument(
        "--torch-threads",
        type=int,
        default=max(1, (cpus or 2) // 2),
        help="intra-op threads for training; the rest decode (default: half the CPUs)",
    )
    args = p.parse_args(argv)
    # Decode threads and torch's OpenMP threads on the same cores stall each other badly
    # (a parallel region waits for a descheduled thread): leave the decoder its share.
    torch.set_num_threads(args.torch_threads)
    with tempfile.TemporaryDirectory() as tmp:
        path = args.store or Path(tmp) / "train.zarr"
        if not path.exists():
            start = time.perf_counter()
            build_store(path, args.samples, args.features, args.classes, args.chunk_rows)
            print(f"built {path} ({args.samples} samples) in {time.perf_counter() - start:.1f}s")
        stats = train(path, args.batch_size, args.workers, args.epochs, args.device)
    print(f"samples/s: {stats['samples_per_s']:,.0f}")


if __name__ == "__main__":
    main()
