"""Caches, streams and counters stay true when a write fails part way or the array shrinks."""

from __future__ import annotations

import pytest
import torch

import torchzarr as tz
from torchzarr import telemetry
from torchzarr.errors import InvalidArgumentError, ShapeMismatchError, StoreError
from torchzarr.storage import LocalStore, MemoryStore


class _FailingMemoryStore(MemoryStore):
    """Stores keys one by one and fails at ``fail_key`` (one PUT of a batch failing)."""

    fail_key: str | None = None

    def set_many(self, items):
        for key, value in dict(items).items():
            if key == self.fail_key:
                raise StoreError(f"PUT {key} failed")
            self.set(key, value)


class _FailingLocalStore(LocalStore):
    fail_key: str | None = None

    def set(self, key, value):
        if key == self.fail_key:
            raise StoreError(f"write of {key} failed")
        super().set(key, value)


@pytest.mark.parametrize("shards", [None, (4,)])
@pytest.mark.parametrize("kind", ["memory", "local"])
def test_a_write_failing_part_way_leaves_no_stale_chunk_in_the_cache(tmp_path, kind, shards):
    store = _FailingMemoryStore() if kind == "memory" else _FailingLocalStore(str(tmp_path))
    arr = tz.create_array(store, shape=(8,), dtype=torch.int32, chunks=(2,), shards=shards)
    arr[:] = torch.ones(8, dtype=torch.int32)
    cached = arr.with_cache()
    assert cached[:].tolist() == [1] * 8  # every chunk now in the cache
    store.fail_key = "c/1" if shards else "c/3"  # the last chunk (shard) of the only batch
    with pytest.raises(StoreError, match="failed"):
        arr[:] = torch.full((8,), 7, dtype=torch.int32)
    stored = tz.open_array(store)[:].tolist()
    assert stored != [1] * 8  # the failed batch did store some of its chunks
    assert cached[:].tolist() == stored


class _FailingDeletes(MemoryStore):
    """Deletes the first key of a batch, then fails."""

    fail = False

    def delete_many(self, keys):
        keys = list(keys)
        if self.fail:
            self.delete(keys[0])
            raise StoreError("delete failed part way")
        for key in keys:
            self.delete(key)


def test_a_resize_whose_deletes_fail_part_way_leaves_no_stale_chunk_in_the_cache():
    store = _FailingDeletes()
    arr = tz.create_array(store, shape=(8,), chunks=(2,), dtype=torch.int32)
    arr[:] = torch.arange(8, dtype=torch.int32)
    cached = arr.with_cache()
    assert cached[:].tolist() == list(range(8))
    store.fail = True
    with pytest.raises(StoreError, match="part way"):
        cached.resize((2,))
    assert cached.shape == (8,)  # the shape stays; chunk 1 is gone, read as fill
    assert cached[:].tolist() == tz.open_array(store)[:].tolist() == [0, 1, 0, 0, 4, 5, 6, 7]


def test_resize_counts_the_chunks_it_deletes_as_one_write():
    arr = tz.create_array("memory://", shape=(16,), dtype=torch.int32, chunks=(4,))
    arr[:] = torch.ones(16, dtype=torch.int32)
    events = []

    def listen(event, amounts):
        events.append((event, amounts))

    telemetry.add_listener(listen)
    try:
        telemetry.reset()
        arr.resize((8,))
    finally:
        telemetry.remove_listener(listen)
    assert telemetry.snapshot()["chunks_deleted"] == 2
    assert telemetry.snapshot()["writes"] == 1
    assert events == [("write", {"writes": 1, "chunks_deleted": 2})]


def test_resize_resets_cut_chunks_with_one_write_per_axis_cut():
    """As docs/performance.md says: the corner chunk cut on both axes is written twice."""
    arr = tz.create_array("memory://", shape=(16, 16), dtype=torch.int32, chunks=(4, 4))
    arr[:] = 1
    telemetry.reset()
    arr.resize((6, 6))
    counted = telemetry.snapshot()
    assert (counted["writes"], counted["chunks_written"]) == (3, 4)  # deletes, then 2 axes
    arr.resize((8, 8))
    assert int(arr[:].sum()) == 36


def test_resize_of_a_sharded_array_counts_inner_chunks():
    arr = tz.create_array(
        "memory://", shape=(16,), dtype=torch.int32, chunks=(2,), shards=(4,)
    )  # 2 inner chunks a shard
    arr[:] = torch.ones(16, dtype=torch.int32)
    telemetry.reset()
    arr.resize((8,))
    assert telemetry.snapshot()["chunks_deleted"] == 4  # two shards of two


def test_iter_chunks_refuses_a_chunk_cut_by_a_resize_while_streaming():
    arr = tz.create_array("memory://", shape=(10,), dtype=torch.int32, chunks=(3,))
    arr[:] = torch.arange(10, dtype=torch.int32)
    stream = arr.iter_chunks(parallel=1)
    assert next(stream)[2].tolist() == [0, 1, 2]
    arr.resize((4,))
    with pytest.raises(ShapeMismatchError, match=r"changed shape from \(10,\) to \(4,\)"):
        for _ in stream:
            pass


def test_telemetry_names_an_unknown_counter_and_keeps_the_blocks_error():
    before = telemetry.snapshot()
    with pytest.raises(InvalidArgumentError, match=r"'fetch_secs'.*fetch_seconds"):
        telemetry.add(fetch_secs=1, bytes_fetched=5)
    assert telemetry.snapshot()["bytes_fetched"] == before["bytes_fetched"]  # nothing moved
    with pytest.raises(tz.errors.ArgumentTypeError, match="telemetry amounts are numbers"):
        telemetry.add("read", reads=1, bytes_fetched="10")
    after = telemetry.snapshot()
    assert (after["reads"], after["bytes_fetched"]) == (before["reads"], before["bytes_fetched"])
    ran = []
    # refused before the block runs, not after it
    with pytest.raises(InvalidArgumentError, match="'fetch_secs'"), telemetry.timed("fetch_secs"):
        ran.append(True)
    assert not ran
    with pytest.raises(ValueError, match="original"), telemetry.timed("fetch_seconds"):
        raise ValueError("original")
    # a counter that is no seconds counter, refused before the block too (not, after it,
    # in place of the block's own error)
    with pytest.raises(InvalidArgumentError, match="not to 'reads'"), telemetry.timed("reads"):
        ran.append(True)
    assert not ran


def test_chunks_deleted_counts_deletes_issued_stored_or_not():
    """As docs/performance.md says: every chunk a write leaves all fill value is deleted and
    counted, stored or not (asking the store first would cost a request a chunk)."""
    arr = tz.create_array("memory://", shape=(10,), dtype=torch.int8, chunks=(5,))
    telemetry.reset()
    arr[:] = 0  # nothing was stored
    assert telemetry.snapshot()["chunks_deleted"] == 2
    assert arr.nchunks_initialized == 0
    sharded = tz.create_array(
        "memory://", shape=(100,), dtype=torch.int8, chunks=(2,), shards=(10,)
    )
    sharded[55] = 1  # shard 5 only
    telemetry.reset()
    sharded.resize((25,))  # 7 shards removed; shard 2, never stored, is cut and left fill
    assert telemetry.snapshot()["chunks_deleted"] == 7 * 5 + 5
    sharded[20:25] = 1
    sharded.resize((22,))  # the stored shard 2 is cut: rows 22 to 24 reset to fill
    sharded.resize((25,))
    assert sharded[20:25].tolist() == [1, 1, 0, 0, 0]
    assert "stored or not" in (telemetry.Counters.__doc__ or "")
