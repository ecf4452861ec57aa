"""The shared decoded-chunk cache follows tz.config.cache_bytes; ChunkCache.resize."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import torchzarr as tz
from torchzarr.core.cache import ChunkCache, default_cache
from torchzarr.errors import ArgumentTypeError

CHUNK = 100 * 8  # bytes of one float64 chunk below


@pytest.fixture
def hot():
    arr = tz.create_array("memory://", shape=(1000,), dtype=torch.float64, chunks=(100,))
    arr[:] = torch.arange(1000.0)
    return arr.with_cache()


def test_lowering_cache_bytes_shrinks_the_shared_cache(hot):
    hot[:]  # the shared cache exists and holds these chunks
    with tz.config.set(cache_bytes=2 * CHUNK):
        assert torch.equal(hot[:], torch.arange(1000.0))
        cache = default_cache()
        assert cache.max_bytes == 2 * CHUNK and cache.nbytes <= 2 * CHUNK
    assert default_cache().max_bytes == tz.config.cache_bytes  # back to the default


def test_a_lowered_budget_evicts_at_the_next_lookup(hot):
    with tz.config.set(threads=1):  # chunks enter the cache in order
        hot[:]
    cache = default_cache()
    assert cache.nbytes >= 10 * CHUNK
    with tz.config.set(cache_bytes=3 * CHUNK):
        hot[900:]  # a hit: the lookup evicts the least recently used first
        assert cache.nbytes <= 3 * CHUNK


def test_cache_bytes_zero_turns_the_shared_cache_off(hot):
    with tz.config.set(cache_bytes=0):
        assert torch.equal(hot[:], torch.arange(1000.0))
        assert torch.equal(hot[:], torch.arange(1000.0))
        cache = default_cache()
        assert cache.nbytes == 0 and len(cache) == 0 and cache.max_bytes == 0
    with pytest.raises(tz.errors.InvalidArgumentError, match="cache_bytes"):
        tz.config.set(cache_bytes=-1)


def test_resize_evicts_least_recently_used_and_checks_its_argument():
    cache = ChunkCache(max_bytes=3 * 32)
    for i in range(3):
        cache.put(("mem", "a", (i,)), np.zeros(4))
    cache.get(("mem", "a", (0,)))  # most recent now
    cache.resize(32)
    assert len(cache) == 1 and cache.get(("mem", "a", (0,))) is not None
    cache.resize(0)
    cache.put(("mem", "a", (1,)), np.zeros(0))  # not even an empty chunk is kept
    assert len(cache) == 0 and cache.nbytes == 0
    with pytest.raises(tz.errors.InvalidArgumentError, match="max_bytes"):
        cache.resize(-1)


@pytest.mark.parametrize("size", ["1GB", None, 1.5, True])
def test_cache_sizes_that_are_not_whole_numbers_are_refused(size):
    with pytest.raises(tz.errors.ArgumentTypeError, match="max_bytes"):
        tz.ChunkCache(max_bytes=size)
    with pytest.raises(tz.errors.ArgumentTypeError, match="max_pinned_bytes"):
        tz.ChunkCache(max_pinned_bytes=size)
    with pytest.raises(tz.errors.ArgumentTypeError, match="max_bytes"):
        tz.ChunkCache().resize(size)


def test_resizing_the_shared_cache_is_refused_and_names_the_setting(hot):
    hot[:]
    cache = default_cache()
    with pytest.raises(tz.errors.InvalidArgumentError, match=r"tz\.config\.cache_bytes"):
        cache.resize(CHUNK)
    assert cache.max_bytes == tz.config.cache_bytes and cache.nbytes >= 10 * CHUNK


_CHILD = """
import pickle, sys
first, second = pickle.load(sys.stdin.buffer)
print(first.cache.max_bytes, first.cache is second.cache, first[:4].tolist())
"""


def test_a_cache_of_your_own_travels_as_its_settings(tmp_path):
    import copy
    import pickle
    import subprocess
    import sys

    arr = tz.create_array(tmp_path / "a.zarr", shape=(8,), dtype=torch.int32, chunks=(4,))
    arr[:] = torch.arange(8, dtype=torch.int32)
    mine = ChunkCache(max_bytes=0)  # caching off
    handle = arr.with_cache(mine)
    # in this process: the very cache (copies of a handle read through what it reads through)
    assert copy.copy(handle).cache is mine and copy.deepcopy(handle).cache is mine
    assert pickle.loads(pickle.dumps(handle)).cache is mine
    assert pickle.loads(pickle.dumps(arr.with_cache())).cache is default_cache()
    # in another process (a spawned DataLoader worker): one cache made like it, shared
    other = tz.open_array(tmp_path / "a.zarr").with_cache(mine)
    child = subprocess.run(
        [sys.executable, "-c", _CHILD],
        input=pickle.dumps((handle, other)),
        capture_output=True,
        check=True,
        timeout=120,
    )
    assert child.stdout.decode().split("\n")[0] == "0 True [0, 1, 2, 3]"


def test_a_pickled_cache_is_found_again_at_home_and_is_pageable_elsewhere(monkeypatch):
    from torchzarr import tensors
    from torchzarr.core import cache as cache_module

    made = ChunkCache(max_bytes=1 << 10)  # never pickled here before
    assert cache_module._cache_named(made._token, 1 << 10, False, 0) is made
    monkeypatch.setattr(tensors, "_cuda_present", lambda: True)
    monkeypatch.setattr(torch.cuda, "_is_in_bad_fork", lambda: False)
    # a pinned cache arriving in a worker: its settings, but no pinned memory there
    arrived = cache_module._cache_named("4242:0:feedface", 1 << 10, True, 1 << 10)
    assert not arrived.pinned and arrived.max_bytes == 1 << 10
    arrived.put(("s", "a", (0,)), np.ones(3))
    pinned_at_home = ChunkCache(1 << 10, pinned=True)
    assert pinned_at_home.pinned
    monkeypatch.setattr(cache_module.os, "getpid", lambda: -5)  # a forked worker's copy
    pinned_at_home.put(("s", "a", (0,)), np.ones(3))  # pageable: CUDA stays in the parent
    assert pinned_at_home.get(("s", "a", (0,))).tolist() == [1.0, 1.0, 1.0]


@pytest.mark.parametrize(
    "key", [("x",), "abc", ("id", "path", (0,), 1), ("id", "path", [0]), (1, "path", (0,))]
)
def test_a_key_not_of_identity_path_and_coords_is_refused_by_name(key):
    cache = tz.ChunkCache(100)
    with pytest.raises(ArgumentTypeError, match=r"chunk cache key is .*got"):
        cache.get(key)
    with pytest.raises(ArgumentTypeError, match="chunk cache key"):
        cache.put(key, np.ones(2))


def test_a_chunk_or_coords_of_the_wrong_kind_is_refused_by_name():
    cache = tz.ChunkCache(100)
    with pytest.raises(
        ArgumentTypeError, match="a cached chunk is a numpy array, got <class 'list'>"
    ):
        cache.put(("id", "path", (0,)), [1, 2])
    for coords in (5, "ab", [(0,), [1]]):
        with pytest.raises(ArgumentTypeError, match="coords is a list of chunk coords tuples"):
            cache.invalidate("id", "path", coords)
    cache.invalidate("id", "path", [(0,), ((0,), (1,))])  # chunks, and a shard's inner chunks


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda c, a: c.invalidate(a.store, a.path, [(0,)]), r"invalidate identity .*MemoryStore"),
        (lambda c, a: c.invalidate_tree(a.store, a.path), r"invalidate_tree identity .*identity"),
        (lambda c, a: c.invalidate(a.store.identity, None, [(0,)]), r"invalidate path .*None"),
        (lambda c, a: c.invalidate_tree(a.store.identity, 3), r"invalidate_tree path .*int"),
        (lambda c, a: c.invalidate_outside(a.store, a.path, (2,)), r"invalidate_outside identity"),
        (lambda c, a: c.invalidate_outside(a.store.identity, a.path, 2), r"grid .*got int: 2"),
        (lambda c, a: c.invalidate_outside(a.store.identity, a.path, "2"), r"grid .*got str"),
        (lambda c, a: c.put(("i", "p", (0,)), np.ones(2), since="x"), r"since .*got 'x'"),
        (lambda c, a: c.put(("i", "p", (0,)), np.ones(2), since=1.0), r"since .*got 1.0"),
    ],
)
def test_invalidations_and_since_of_the_wrong_kind_are_refused_by_name(call, message):
    arr = tz.create_array("memory://", shape=(4,), dtype=torch.int8, chunks=(2,))
    cache = ChunkCache(100)
    cache.put((arr.store.identity, arr.path, (1,)), np.ones(2))
    with pytest.raises(ArgumentTypeError, match=message):
        call(cache, arr)
    assert len(cache) == 1  # nothing dropped by a refused call
    cache.invalidate_outside(arr.store.identity, arr.path, [np.int64(1)])  # numpy ints are ints
    cache.put(("i", "p", (0,)), np.ones(2), since=cache.generation)
    assert len(cache) == 1
