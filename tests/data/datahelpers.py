"""Helpers for the dataset tests: arrays whose rows carry their own index, counting stores."""

from __future__ import annotations

from collections import Counter

import torch

import torchzarr as tz


def make_array(store, n: int = 103, chunk: int = 10, cols: int = 3):
    """An int64 array whose row i holds i in every column (so a row names its sample)."""
    arr = tz.create_array(store, shape=(n, cols), dtype=torch.int64, chunks=(chunk, cols))
    arr[:] = torch.arange(n).repeat_interleave(cols).reshape(n, cols)
    return arr


def ids_of(batch) -> list[int]:
    """Sample ids in a batch (tensor, or dict with "x"), or in a single sample."""
    t = batch["x"] if isinstance(batch, dict) else batch
    return t[..., 0].reshape(-1).tolist()


def counts(batches) -> Counter:
    c: Counter = Counter()
    for b in batches:
        c.update(ids_of(b))
    return c


class CountingStore(tz.MemoryStore):
    """A MemoryStore that counts reads per key."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.reads: Counter = Counter()

    def __setstate__(self, state):
        super().__setstate__(state)
        self.reads = Counter()

    def get(self, key):
        self.reads[key] += 1
        return super().get(key)

    def get_many(self, keys):
        return {k: self.get(k) for k in keys}
