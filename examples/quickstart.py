"""Quickstart: write a Zarr array from tensors, read slices back, organise a group.

Run: python examples/quickstart.py [STORE_PATH]   (default: ./quickstart.zarr)
"""

from __future__ import annotations

import argparse
import time

import torch

import torchzarr as tz


def main(path: str = "quickstart.zarr") -> None:
    # A group holds arrays and other groups; mode="w" starts from an empty store.
    root = tz.open_group(path, mode="w", attributes={"description": "torchzarr quickstart"})

    # A float32 array of 20k x 256 (20 MiB), 2k-row chunks compressed with zstd level 1.
    images = root.create_array(
        "data/images", shape=(20_000, 256), dtype=torch.float32, chunks=(2_000, 256)
    )
    labels = root.create_array("data/labels", shape=(20_000,), dtype=torch.int64)

    generator = torch.Generator().manual_seed(0)
    features = torch.randn(20_000, 256, generator=generator)
    started = time.perf_counter()
    images[:] = features
    labels[:] = torch.arange(20_000) % 10
    write_s = time.perf_counter() - started

    # Reads return torch tensors; any selection numpy understands works.
    started = time.perf_counter()
    everything = images[:]
    read_s = time.perf_counter() - started
    assert torch.equal(everything, features)
    batch = images.oindex[torch.tensor([5, 17_000, 3]), :8]
    assert torch.equal(batch, features[[5, 17_000, 3], :8])

    # Attributes are JSON stored beside the data.
    images.attrs["normalised"] = False

    # Reopen read-only, as a training job would; the format is detected.
    reopened = tz.open_group(path, mode="r")
    print(reopened.tree())
    print(reopened["data/images"].info)
    mib = features.numel() * 4 / 2**20
    print(f"wrote {mib:.0f} MiB in {write_s:.2f}s, read it back in {read_s:.2f}s")
    print("labels[:12] =", reopened["data/labels"][:12].tolist())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store", nargs="?", default="quickstart.zarr", help="store path or URL")
    main(parser.parse_args().store)
