"""The CUDA path of pinning and device prefetch (runs only where a GPU is present)."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from datahelpers import ids_of
from torch.utils.data import DataLoader

from torchzarr.data import DevicePrefetcher, ZarrIterableDataset

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def test_pinned_ring_feeds_the_device_prefetcher(memory_array):
    ds = ZarrIterableDataset(memory_array, batch_size=8, seed=1, pin_memory=True)
    loader = DataLoader(ds, batch_size=None)
    seen: Counter = Counter()
    for batch in DevicePrefetcher(loader, "cuda"):
        assert batch.is_cuda
        assert torch.equal(batch[:, 0], batch[:, 2])
        seen.update(ids_of(batch.cpu()))
    assert ds._ring is not None and ds._ring.pinned
    assert set(seen) == set(range(103))


def test_prefetcher_moves_nested_batches(memory_array):
    batches = [{"x": torch.ones(4, 2).pin_memory(), "y": [torch.arange(3)]} for _ in range(3)]
    out = list(DevicePrefetcher(batches, torch.device("cuda", 0)))
    assert len(out) == 3
    assert all(b["x"].is_cuda and b["y"][0].is_cuda for b in out)
    assert float(out[-1]["x"].sum()) == 8.0


def test_two_iterators_over_one_prefetcher_keep_their_own_copies():
    batches = [torch.full((1024,), float(i)).pin_memory() for i in range(6)]
    prefetcher = DevicePrefetcher(batches, "cuda")
    first, second = iter(prefetcher), iter(prefetcher)
    pairs = [(next(first), next(second)) for _ in range(6)]
    assert [(float(a[0]), float(b[0])) for a, b in pairs] == [(i, i) for i in range(6)]
