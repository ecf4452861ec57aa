"""The decoded-chunk cache, chunk streaming and telemetry counters."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

import torchzarr as tz
from torchzarr import telemetry, tensors
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


def test_a_pinned_cache_stays_pageable_in_a_worker_forked_after_cuda(monkeypatch):
    monkeypatch.setattr(tensors, "_cuda_present", lambda: True)
    monkeypatch.setattr(torch.cuda, "_is_in_bad_fork", lambda: False)
    cache = ChunkCache(1 << 20, pinned=True)  # made in the parent, which has CUDA
    assert cache.pinned
    monkeypatch.setattr(torch.cuda, "_is_in_bad_fork", lambda: True)  # now in the worker
    cache.put(("s", "a", (0,)), np.ones(3))  # no pinning: CUDA cannot start here
    assert cache.get(("s", "a", (0,))).tolist() == [1.0, 1.0, 1.0]


def test_reads_through_a_pinned_cache_ask_for_pinned_tensors(monkeypatch, filled):
    arr, data = filled
    monkeypatch.setattr(tensors, "_cuda_present", lambda: True)
    monkeypatch.setattr(torch.cuda, "_is_in_bad_fork", lambda: False)
    cache = ChunkCache(1 << 20, pinned=True, max_pinned_bytes=160)  # 5 rows, no chunk
    asked = []

    def allocate(shape, dt, *, pin_memory=False):  # records; pinning needs a real GPU
        asked.append(pin_memory)
        return tensors.allocate(shape, dt)

    monkeypatch.setattr("torchzarr.core.array.allocate", allocate)
    hot = arr.with_cache(cache)
    assert torch.equal(hot[:5], data[:5]) and torch.equal(arr[:5], data[:5])
    assert asked == [True, False]  # through the pinned cache, then without a cache
    assert torch.equal(hot[:6], data[:6]) and asked[-1] is False  # past max_pinned_bytes
    out = torch.empty(8, 5).t()  # not filled in place: read into a new tensor, copied
    assert torch.equal(hot.read(slice(0, 5), out=out), data[:5])
    assert asked[-2:] == [False, False]  # no pinned tensor for a copy into out
    monkeypatch.setattr(cache, "_home", -1)  # as in a DataLoader worker: never pinned there
    assert torch.equal(hot[:5], data[:5]) and asked[-1] is False


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


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"parallel": 0}, tz.errors.InvalidArgumentError),
        ({"parallel": "3"}, tz.errors.ArgumentTypeError),
        ({"parallel": 2.0}, tz.errors.ArgumentTypeError),
        ({"parallel": True}, tz.errors.ArgumentTypeError),
        ({"progress": "yes"}, tz.errors.ArgumentTypeError),
    ],
)
def test_iter_chunks_checks_its_arguments_at_the_call(filled, kwargs, error):
    arr, _ = filled
    with pytest.raises(error, match=next(iter(kwargs))):
        arr.iter_chunks(**kwargs)  # no next(): refused before the iteration starts


def test_iter_chunks_reads_nothing_before_the_first_next(filled):
    arr, data = filled
    telemetry.reset()
    stream = arr.iter_chunks(parallel=np.int64(2))  # a numpy int is an int
    assert telemetry.snapshot()["reads"] == 0
    coords, region, tensor = next(stream)
    assert coords == (0, 0) and torch.equal(tensor, data[region])
    assert telemetry.snapshot()["reads"] >= 1
    stream.close()


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


def test_a_listener_added_again_is_called_once_and_removed_by_one_call(filled):
    """As logging's handlers: a callback registering at every fit does not pile up."""
    arr, _ = filled
    events = []

    class Recorder:
        def hear(self, event, amounts):
            events.append(event)

    recorder = Recorder()
    for _ in range(3):
        telemetry.add_listener(recorder.hear)  # a new bound method object each time
    try:
        arr[0:20]
        assert events == ["read"]
    finally:
        telemetry.remove_listener(recorder.hear)
    arr[0:20]
    assert events == ["read"]


def test_listeners_equal_as_values_are_distinct_listeners(filled):
    """Dataclass collectors compare equal: the second was dropped, and one holding a
    numpy array made add_listener raise numpy's ambiguous-truth ValueError."""
    import dataclasses

    arr, _ = filled

    @dataclasses.dataclass
    class Collector:
        reads: int = 0
        bins: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(4))

        def __call__(self, event, amounts):
            self.reads += event == "read"

    train, val = Collector(), Collector()
    telemetry.add_listener(train)
    telemetry.add_listener(val)
    try:
        arr[0:20]
    finally:
        telemetry.remove_listener(val)
    arr[0:20]
    telemetry.remove_listener(train)
    assert (train.reads, val.reads) == (2, 1)


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


def test_listeners_hear_cache_lookups(filled):
    arr, _ = filled
    events = []

    def listener(event, amounts):
        events.append((event, dict(amounts)))

    cached = arr.with_cache(ChunkCache(max_bytes=1 << 20))
    telemetry.add_listener(listener)
    try:
        cached[0:10]
        cached[0:10]
    finally:
        telemetry.remove_listener(listener)
    lookups = [amounts for event, amounts in events if event == "cache"]
    assert lookups == [{"cache_misses": 1}, {"cache_hits": 1}]


# -- sharded arrays: the inner chunk is what telemetry counts and what the cache holds ------
def _sharded(store):
    """Two shards of four inner chunks (4 rows each); the last two inner chunks not stored."""
    arr = tz.create_array(
        store, shape=(32, 8), dtype=torch.float32, chunks=(4, 8), shards=(16, 8), compressors=None
    )
    data = torch.arange(256, dtype=torch.float32).reshape(32, 8)
    arr[:24] = data[:24]
    data[24:] = 0.0
    return arr, data


INNER = 4 * 8 * 4  # bytes of one inner chunk
INDEX = 4 * 16 + 4  # bytes of a shard's index (crc32c included)


def _counts(read):
    telemetry.reset()
    read()
    snap = telemetry.snapshot()
    keys = ("chunks_fetched", "chunks_missing", "bytes_fetched", "bytes_decoded")
    return tuple(snap[k] for k in keys), snap["read_amplification"]


def test_sharded_reads_count_inner_chunks(any_store):
    _sharded(any_store)
    arr = tz.open_array(any_store, mode="r")
    assert _counts(lambda: arr[0:4]) == ((1, 0, INNER + INDEX, INNER), 1.0)
    # a read-only local array keeps the index (checked against its file); others read it again
    index = 0 if isinstance(any_store, tz.LocalStore) else INDEX
    assert _counts(lambda: arr[2:6]) == ((2, 0, 2 * INNER + index, 2 * INNER), 2.0)
    assert _counts(lambda: arr[26:30]) == ((0, 2, INDEX, 0), 0.0)  # not stored: fill
    assert _counts(lambda: arr[:, 3]) == ((6, 2, 6 * INNER + 2 * index, 6 * INNER), 6.0)
    # whole shards are read and decoded whole: all their inner chunks count
    stored = sum(len(any_store.get(k)) for k in any_store.list_prefix("c/"))
    assert _counts(lambda: arr[:]) == ((8, 0, stored, 8 * INNER), 1.0)
    snap = telemetry.snapshot()
    assert snap["reads"] == 1 and snap["decode_seconds"] >= 0.0


def test_row_gathers_count_as_reads_of_inner_chunks(any_store):
    from torchzarr.core.row_gather import gather_rows

    _sharded(any_store)
    arr = tz.open_array(any_store, mode="r")
    out = np.empty((3, 8), np.float32)
    telemetry.reset()
    assert gather_rows(arr, np.array([1, 2, 30]), out)
    snap = telemetry.snapshot()
    assert (snap["reads"], snap["bytes_delivered"]) == (1, out.nbytes)
    assert (snap["chunks_fetched"], snap["chunks_missing"]) == (1, 1)
    assert snap["bytes_decoded"] == INNER


def _store_calls(caplog):
    return [r for r in caplog.records if r.name == "torchzarr.store"]


@pytest.mark.parametrize("mode", ["r", "r+"])
def test_the_cache_holds_the_inner_chunks_of_sharded_arrays(caplog, mode):
    store = tz.MemoryStore()
    writer, data = _sharded(store)
    cache = ChunkCache(max_bytes=1 << 20)
    logged = tz.storage.wrappers.LoggingStore(store)
    arr = tz.open_array(logged, mode=mode).with_cache(cache)
    caplog.set_level("DEBUG", logger="torchzarr.store")
    assert torch.equal(arr[0:4], data[0:4])
    assert (cache.hits, cache.misses, len(cache)) == (0, 1, 1)
    caplog.clear()
    assert _counts(lambda: arr[0:4])[0] == (0, 0, 0, 0)
    assert (cache.hits, cache.misses) == (1, 1) and _store_calls(caplog) == []  # no index read
    assert _counts(lambda: arr[2:6])[0] == (1, 0, INNER + INDEX, INNER)  # index read again
    assert torch.equal(arr[:], data) and len(cache) == 6  # 2 inner chunks not stored
    caplog.clear()
    assert torch.equal(arr.oindex[[30, 1, 17], [2, 5]], data[[30, 1, 17]][:, [2, 5]])
    assert torch.equal(arr.vindex[[30, 1, 17], [2, 5, 0]], data[[30, 1, 17], [2, 5, 0]])
    assert torch.equal(arr[:, 3], data[:, 3])
    assert [r for r in _store_calls(caplog) if "get_ranges" not in r.getMessage()] == []
    writer[1] = -1.0  # written through another Array: shard (0, 0) rewritten
    data[1] = -1.0
    assert len(cache) == 2  # its inner chunks dropped, shard (1, 0)'s kept
    assert torch.equal(arr[0:4], data[0:4])
    cache.invalidate(store.identity, "", [(1, 0)])  # a shard's coords drop its inner chunks
    assert len(cache) == 1
    assert torch.equal(arr[:], data)


def test_cached_inner_chunks_outside_a_shrunk_grid_are_dropped():
    cache = ChunkCache(max_bytes=3 * 32)
    for i in range(3):
        cache.put(("m", "a", ((0, 0), (i, 0))), np.zeros(4))  # 32 bytes each
    cache.put(("m", "a", ((1, 0), (0, 0))), np.zeros(4))  # evicts the least recent
    assert len(cache) == 3 and cache.get(("m", "a", ((0, 0), (0, 0)))) is None
    cache.invalidate("m", "a", [(0, 0)])
    assert len(cache) == 1 and cache.nbytes == 32
    cache.invalidate_outside("m", "a", (1, 1))  # the shard grid: shard (1, 0) is outside
    assert len(cache) == 0 and cache.nbytes == 0


def test_a_listener_changing_its_amounts_changes_no_other_listeners(filled):
    arr, _ = filled
    seen = []

    def meddler(event, amounts):
        amounts.clear()  # its own copy

    def recorder(event, amounts):
        seen.append(dict(amounts))

    telemetry.add_listener(meddler)
    telemetry.add_listener(recorder)
    try:
        arr[0]
    finally:
        telemetry.remove_listener(meddler)
        telemetry.remove_listener(recorder)
    assert seen and all(seen), seen


@pytest.mark.parametrize("pinned", ["yes", 1, None])
def test_pinned_must_be_a_bool(pinned):
    with pytest.raises(tz.errors.ArgumentTypeError, match=r"pinned must be True or False"):
        ChunkCache(pinned=pinned)
    assert ChunkCache(pinned=np.False_).pinned is False  # numpy's bools are bools


@pytest.mark.parametrize("pin_memory", ["no", 1, None])
def test_read_pin_memory_must_be_a_bool(pin_memory):
    arr = tz.create_array("memory://", shape=(4,), dtype=torch.int8, chunks=(2,))
    with pytest.raises(
        tz.errors.ArgumentTypeError, match=r"pin_memory=.*of array / must be True or False"
    ):
        arr.read(pin_memory=pin_memory)
    assert arr.read(pin_memory=np.False_).tolist() == [0, 0, 0, 0]  # numpy's bools are bools


@pytest.mark.parametrize("listener", [None, "x", 3])
def test_a_listener_that_is_not_callable_is_refused(listener, caplog):
    try:
        with pytest.raises(
            tz.errors.ArgumentTypeError, match="telemetry listener must be a callable"
        ):
            telemetry.add_listener(listener)
        arr = tz.create_array("memory://", shape=(4,), dtype=torch.int8, chunks=(2,))
        arr[:] = 1
    finally:
        telemetry.remove_listener(listener)  # were it added, later tests would log its failure
    assert f"listener {listener!r} failed" not in caplog.text  # never added: nothing logged


@pytest.mark.parametrize(
    ("amounts", "error", "message"),
    [
        ({"reads": float("nan")}, tz.errors.ArgumentTypeError, "reads takes a whole number"),
        ({"reads": 2.0}, tz.errors.ArgumentTypeError, "reads takes a whole number"),
        ({"reads": True}, tz.errors.ArgumentTypeError, "reads takes a whole number"),
        ({"chunks_fetched": -5}, tz.errors.InvalidArgumentError, "chunks_fetched .* at least 0"),
        ({"fetch_seconds": float("nan")}, tz.errors.InvalidArgumentError, "fetch_seconds"),
        ({"decode_seconds": -1.0}, tz.errors.InvalidArgumentError, "decode_seconds"),
    ],
)
def test_telemetry_refuses_amounts_the_engine_never_adds(amounts, error, message):
    telemetry.reset()
    with pytest.raises(error, match=message):
        telemetry.add("x", bytes_fetched=7, **amounts)
    snap = telemetry.snapshot()
    assert (snap["bytes_fetched"], snap["reads"], snap["chunks_fetched"]) == (0, 0, 0)
    telemetry.add(reads=np.int64(2), fetch_seconds=np.float32(0.5), decode_seconds=1)
    snap = telemetry.snapshot()
    assert (snap["reads"], snap["fetch_seconds"], snap["decode_seconds"]) == (2, 0.5, 1.0)
    assert type(snap["reads"]) is int


def test_read_amplification_names_the_counters_it_misses():
    with pytest.raises(tz.errors.InvalidArgumentError, match="'bytes_decoded', 'bytes_delivered'"):
        telemetry.read_amplification({})
    with pytest.raises(tz.errors.InvalidArgumentError, match="'bytes_delivered'"):
        telemetry.read_amplification({"bytes_decoded": 3})
    with pytest.raises(tz.errors.ArgumentTypeError, match="takes a dict of counters"):
        telemetry.read_amplification([1, 2])
    assert telemetry.read_amplification({"bytes_decoded": 6, "bytes_delivered": 3}) == 2.0
