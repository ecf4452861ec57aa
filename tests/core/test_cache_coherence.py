"""Caches never serve data older than a write made through any Array of the process."""

from __future__ import annotations

import threading

import numpy as np
import torch

import torchzarr as tz
from torchzarr.core.cache import ChunkCache


def test_put_after_an_invalidation_is_dropped():
    cache = ChunkCache(max_bytes=1 << 20)
    key = ("mem", "a", (0,))
    before = cache.generation
    cache.invalidate("mem", "a", [(0,)])  # a write finished while the chunk was being read
    cache.put(key, np.zeros(4), since=before)
    assert cache.get(key) is None
    cache.put(key, np.ones(4), since=cache.generation)
    assert cache.get(key) is not None


def test_reader_racing_writers_never_keeps_a_stale_chunk(tmp_path):
    arr = tz.create_array(tmp_path / "a.zarr", shape=(64,), dtype=torch.int64, chunks=(64,))
    cache = ChunkCache(max_bytes=1 << 20)
    reader = tz.open_array(tmp_path / "a.zarr", mode="r").with_cache(cache)
    stop = threading.Event()

    def read_forever() -> None:
        while not stop.is_set():
            reader[:]

    thread = threading.Thread(target=read_forever)
    thread.start()
    try:
        for value in range(1, 40):
            arr[:] = value
    finally:
        stop.set()
        thread.join()
    # whatever the interleaving, the cache now holds the last value or nothing
    assert torch.equal(reader[:], torch.full((64,), 39, dtype=torch.int64))


def test_read_only_shard_indexes_follow_writes_through_another_array(tmp_path):
    path = tmp_path / "s.zarr"
    writer = tz.create_array(path, shape=(16,), dtype=torch.int32, chunks=(2,), shards=(16,))
    writer[:] = torch.arange(16, dtype=torch.int32)
    reader = tz.open_array(path, mode="r")
    assert torch.equal(reader[2:6], torch.arange(2, 6, dtype=torch.int32))  # index cached
    # rewrite the shard so that its inner chunks move: some become fill (not stored)
    writer[:] = torch.zeros(16, dtype=torch.int32)
    writer[4:6] = torch.tensor([7, 8], dtype=torch.int32)
    assert torch.equal(reader[2:6], torch.tensor([0, 0, 7, 8], dtype=torch.int32))
    assert torch.equal(reader[:], writer[:])
