"""The decoded-chunk cache, chunk streaming and telemetry counters."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

import torchzarr as tz
from torchzarr import telemetry
from torchzarr.core.cache import ChunkCache


@pytest.fixture
def filled():
    arr = tz.create_array(tz.MemoryStore(), shape=(100, 8), dtype=torch.float32, chunks=(10, 8))
    data = torch.arange(800, dtype=torch.float32).reshape(100, 8)
    arr[:] = data
    return arr, data


def test_cache_serves_hot_chunks_and_is_invalidated_by_writes(filled):
    arr, data = filled
    cache = ChunkCache(max_bytes=1 << 20)
    cached = arr.with_cache(cache)
    assert torch.equal(cached[5:25], data[5:25])
    assert (cache.hits, cache.misses) == (0, 3) and len(cache) == 3
    telemetry.reset()
    assert torch.equal(cached[12:18], data[12:18])
    assert cache.hits == 1 and telemetry.snapshot()["chunks_fetched"] == 0
    arr[12] = -1.0  # written through another Array object of the same store
    assert (cached[12] == -1.0).all()
    assert cache.misses == 4


def test_cache_respects_its_byte_budget(filled):
    arr, _ = filled
    cache = ChunkCache(max_bytes=3 * 10 * 8 * 4)
    cached = arr.with_cache(cache)
    with tz.config.set(threads=1):  # chunks enter the cache in order
        cached[:]
    assert len(cache) == 3 and cache.nbytes <= cache.max_bytes
    cached[90:100]  # most recent: kept
    assert cache.get((arr.store.identity, arr.path, (9, 0))) is not None
    assert cache.get((arr.store.identity, arr.path, (0, 0))) is None
    cache.clear()
    assert len(cache) == 0 and cache.nbytes == 0
    with pytest.raises(ValueError):
        ChunkCache(max_bytes=-1)


def test_cache_stays_pageable_without_cuda():
    cache = ChunkCache(1 << 20, pinned=True)
    cache.put(("s", "a", (0,)), np.ones(3))
    held = cache.get(("s", "a", (0,)))
    assert held is not None and not held.flags.writeable
    if not torch.cuda.is_available():
        assert not cache.pinned


def test_cached_array_pickles_to_a_fresh_cache(tmp_path):
    import pickle

    arr = tz.create_array(tmp_path / "a", shape=(4,), dtype=torch.int32, chunks=(2,)).with_cache()
    arr[:] = torch.arange(4, dtype=torch.int32)
    clone = pickle.loads(pickle.dumps(arr))
    assert clone.cache is not None and clone[:].tolist() == [0, 1, 2, 3]


def test_iter_chunks_in_order_with_regions(filled):
    arr, data = filled
    seen = []
    progress = []
    for coords, region, tensor in arr.iter_chunks(
        parallel=3, progress=lambda d, t: progress.append((d, t))
    ):
        seen.append(coords)
        assert torch.equal(tensor, data[region])
    assert seen == [(i, 0) for i in range(10)]
    assert progress[-1] == (10, 10)


def test_iter_chunks_reads_ahead_in_bounded_memory(filled):
    arr, _ = filled
    started = []
    lock = threading.Lock()
    original = arr.read

    def spy(selection, **kwargs):
        with lock:
            started.append(selection)
        return original(selection, **kwargs)

    arr.read = spy  # type: ignore[method-assign]
    stream = arr.iter_chunks(parallel=2)
    next(stream)
    assert len(started) <= 3  # the consumed chunk plus at most `parallel` ahead
    stream.close()
    with pytest.raises(ValueError):
        next(arr.iter_chunks(parallel=0))


def test_iter_chunks_progress_true_works_without_tqdm(filled, caplog):
    arr, _ = filled
    with caplog.at_level("INFO", logger="torchzarr"):
        assert sum(1 for _ in arr.iter_chunks(progress=True)) == 10


def test_telemetry_counts_and_listeners(filled):
    arr, _ = filled
    events = []

    def listener(event, amounts):
        events.append(event)

    telemetry.reset()
    telemetry.add_listener(listener)
    try:
        arr[0:20]
        arr[95:100] = 0.0
    finally:
        telemetry.remove_listener(listener)
    snap = telemetry.snapshot()
    assert snap["chunks_fetched"] >= 2 and snap["bytes_delivered"] == 20 * 8 * 4
    assert snap["bytes_decoded"] == 2 * 10 * 8 * 4
    assert snap["read_amplification"] == 1.0
    assert snap["writes"] == 1 and snap["chunks_written"] == 1
    assert "read" in events and "write" in events
    telemetry.remove_listener(listener)  # unknown now: not an error


def test_broken_listener_does_not_break_io(filled, caplog):
    arr, _ = filled

    def broken(event, amounts):
        raise RuntimeError("listener bug")

    telemetry.add_listener(broken)
    try:
        arr[0]
    finally:
        telemetry.remove_listener(broken)
    assert "listener" in caplog.text
