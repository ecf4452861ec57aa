"""ZarrDataset (map-style, one planned read per batch) and ChunkBlockSampler."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from datahelpers import CountingStore, counts, ids_of, make_array
from torch.utils.data import DataLoader

import torchzarr as tz
from torchzarr.data import ChunkBlockSampler, ZarrDataset


def test_items_of_an_array_a_group_and_a_dict(tmp_path):
    root = tz.open_group(tz.LocalStore(tmp_path / "g.zarr"), mode="w")
    x = root.create_array("x", shape=(20, 2), dtype=torch.float32, chunks=(8, 2))
    y = root.create_array("y", shape=(20,), dtype=torch.int64, chunks=(5,))
    x[:] = torch.arange(40.0).reshape(20, 2)
    y[:] = torch.arange(20) * 10
    assert torch.equal(ZarrDataset(x)[3], torch.tensor([6.0, 7.0]))
    item = ZarrDataset(root)[-1]
    assert set(item) == {"x", "y"} and item["y"].item() == 190
    ds = ZarrDataset({"a": x, "b": y}, transform=lambda d: d["a"].sum() + d["b"])
    assert ds[2].item() == 4 + 5 + 20
    assert ZarrDataset(str(tmp_path / "g.zarr"))[1]["y"].item() == 10
    assert len(ds) == 20


def test_bad_sources_raise(memory_array):
    other = tz.create_array("memory://", shape=(7,), dtype=torch.int8, chunks=(7,))
    with pytest.raises(ValueError, match=r"first dimension: \{[^}]*\}$"):  # no hint to pass a dict
        ZarrDataset({"a": memory_array, "b": other})
    group = tz.open_group("memory://", mode="w")
    group.create_array("a", shape=(8,), dtype="int8")
    group.create_array("b", shape=(7,), dtype="int8")
    with pytest.raises(ValueError, match=r"first dimension: .*pass a dict of the arrays"):
        ZarrDataset(group)
    with pytest.raises(TypeError):
        ZarrDataset(42)
    with pytest.raises(IndexError):
        ZarrDataset(memory_array).__getitems__([0, 500])


def test_getitems_reads_each_chunk_once():
    store = CountingStore()
    arr = make_array(store, n=100, chunk=10)
    ds = ZarrDataset(arr)
    store.reads.clear()
    indices = [55, 3, 57, 9, 3, 99, 50, 51, 0]
    items = ds.__getitems__(indices)
    assert [ids_of(t)[0] for t in items] == indices
    chunk_reads = {k: v for k, v in store.reads.items() if not k.endswith("zarr.json")}
    assert sorted(chunk_reads) == ["c/0/0", "c/5/0", "c/9/0"]
    assert set(chunk_reads.values()) == {1}
    batch = ds.get_batch(indices)
    assert ids_of(batch) == indices


def test_repeated_indices_give_independent_items():
    arr = tz.create_array("memory://", shape=(8,), dtype=torch.float32, chunks=(4,))
    arr[:] = torch.arange(8.0)
    scaled = ZarrDataset(arr, transform=lambda x: x.mul_(10))  # an in-place transform
    assert [t.item() for t in scaled.__getitems__([3, 5, 3])] == [30.0, 50.0, 30.0]
    loader = DataLoader(scaled, batch_size=3, sampler=[3, 5, 3])  # sampling with replacement
    assert next(iter(loader)).tolist() == [30.0, 50.0, 30.0]
    first, second = ZarrDataset({"a": arr, "b": arr}).__getitems__([1, 1])
    first["a"].fill_(-1)
    assert second["a"].item() == 1.0 and second["b"].item() == 1.0


def test_cache_decodes_each_chunk_once_per_block():
    store = CountingStore()
    arr = make_array(store, n=100, chunk=10)
    ds = ZarrDataset(arr, cache=True)
    sampler = ChunkBlockSampler(ds, 5, block_chunks=2, seed=0)
    store.reads.clear()
    assert counts(DataLoader(ds, batch_sampler=sampler)) == Counter(range(100))
    chunk_reads = {k: v for k, v in store.reads.items() if not k.endswith("zarr.json")}
    assert len(chunk_reads) == 10 and set(chunk_reads.values()) == {1}


def test_dataloader_uses_getitems(memory_array):
    loader = DataLoader(ZarrDataset(memory_array), batch_size=16, shuffle=True)
    assert counts(loader) == Counter(range(103))


@pytest.mark.parametrize("world", [1, 2, 3])
def test_sampler_covers_every_sample_once_per_epoch(memory_array, world):
    ds = ZarrDataset(memory_array)
    per_rank = []
    for rank in range(world):
        sampler = ChunkBlockSampler(ds, 8, block_chunks=2, seed=3, rank=rank, world_size=world)
        sampler.set_epoch(1)
        batches = list(sampler)
        assert len(batches) == len(sampler)
        per_rank.append(batches)
        for b in batches:  # a batch draws from at most two blocks of two chunks
            assert len({i // 10 for i in b}) <= 4
    assert len({len(b) for b in per_rank}) == 1
    seen = Counter(i for batches in per_rank for b in batches for i in b)
    assert set(seen) == set(range(103))
    assert sum(seen.values()) - 103 < world  # padding by wrapping round: fewer than W


def test_sampler_order_depends_only_on_seed_and_epoch(memory_array):
    ds = ZarrDataset(memory_array)

    def epoch(seed, e):
        s = ChunkBlockSampler(ds, 8, block_chunks=3, seed=seed)
        s.set_epoch(e)
        return list(s)

    assert epoch(0, 0) == epoch(0, 0)
    assert epoch(0, 0) != epoch(0, 1)
    assert epoch(0, 0) != epoch(1, 0)
    flat = [i for b in epoch(0, 0) for i in b]
    assert flat != sorted(flat)
    plain = ChunkBlockSampler(ds, 10, shuffle=False)
    assert [i for b in plain for i in b] == list(range(103))


def test_sampler_resumes_mid_epoch_on_another_world_size(memory_array):
    ds = ZarrDataset(memory_array)
    seen: Counter = Counter()
    states = []
    for rank in range(2):  # 2 ranks x 4 = global batch 8; stop after 5 steps
        s = ChunkBlockSampler(ds, 4, block_chunks=2, seed=7, rank=rank, world_size=2)
        s.set_epoch(2)
        for _, b in zip(range(5), s, strict=False):
            seen.update(b)
        states.append(s.state_dict())
    assert states[0] == states[1]
    s = ChunkBlockSampler(ds, 8, block_chunks=2, seed=7, rank=0, world_size=1)
    s.load_state_dict(states[0])
    s.set_epoch(2)  # same epoch: the resume state stays
    assert s.epoch == 2
    for b in s:
        seen.update(b)
    assert seen == Counter(range(103))
    s.set_epoch(3)
    assert len(list(s)) == 13


def test_sampler_set_epoch_to_its_epoch_keeps_the_pass_under_way(memory_array):
    """Lightning calls set_epoch on ``batch_sampler.sampler`` (the sampler itself) after a
    first epoch's iterator has begun: the position of that pass stays in the state."""
    ds = ZarrDataset(memory_array)
    s = ChunkBlockSampler(ds, 8, block_chunks=2, seed=5)
    assert s.sampler is s
    s.set_epoch(1)
    batches = iter(s)
    for _ in range(3):
        next(batches)
    s.set_epoch(1)
    assert s.state_dict()["steps"] == 3
    s.set_epoch(2)  # another epoch: the next pass starts it whole
    assert s.state_dict()["steps"] == 0 and s.state_dict()["epoch"] == 2


def test_sampler_len_counts_the_whole_epoch_also_in_a_resumed_pass(memory_array):
    """As the iterable dataset's under workers: Lightning reads it once, right after the
    restore, and keeps it for every later epoch."""
    ds = ZarrDataset(memory_array)
    s = ChunkBlockSampler(ds, 8, block_chunks=2, seed=5)
    it = iter(s)
    head = [next(it) for _ in range(3)]
    resumed = ChunkBlockSampler(ds, 8, block_chunks=2, seed=5)
    resumed.load_state_dict(s.state_dict())
    assert len(resumed) == 13
    it = iter(resumed)
    first = next(it)
    assert len(resumed) == 13  # the resumed pass yields 10 of them
    epoch = [*head, first, *list(it)]
    assert len(epoch) == 13 and Counter(i for b in epoch for i in b) == Counter(range(103))
    assert len(resumed) == 13 and len(list(resumed)) == 13  # the next pass: a whole epoch
    it = iter(resumed)
    next(it)
    assert len(resumed) == 13
    del it  # a pass left unfinished: len counts the next one
    assert len(resumed) == 13 and len(DataLoader(ds, batch_sampler=resumed)) == 13


def test_sampler_with_workers_and_state_at(memory_array):
    ds = ZarrDataset(memory_array)
    s = ChunkBlockSampler(ds, 8, block_chunks=2, seed=1)
    loader = DataLoader(ds, batch_sampler=s, num_workers=2)
    seen: Counter = Counter()
    for step, batch in enumerate(loader, 1):
        seen.update(ids_of(batch))
        if step == 4:
            state = s.state_at(4)  # the workers read ahead: count what was trained on
            break
    s2 = ChunkBlockSampler(ds, 8, block_chunks=2, seed=1)
    s2.load_state_dict(state)
    seen.update(counts(DataLoader(ds, batch_sampler=s2)))
    assert seen == Counter(range(103))


def test_sampler_state_is_plain_and_checked(memory_array):
    ds = ZarrDataset(memory_array)
    state = ChunkBlockSampler(ds, 8, seed=2).state_dict()

    def plain(v):
        if isinstance(v, dict):
            return all(isinstance(k, str) and plain(x) for k, x in v.items())
        if isinstance(v, list):
            return all(plain(x) for x in v)
        return v is None or isinstance(v, bool | int)

    assert plain(state)
    with pytest.raises(ValueError, match="seed"):
        ChunkBlockSampler(ds, 8, seed=3).load_state_dict(state)


@pytest.mark.parametrize("workers", [0, 2])
def test_sampler_with_stateful_dataloader(memory_array, workers):
    sdl = pytest.importorskip("torchdata.stateful_dataloader")
    ds = ZarrDataset(memory_array)

    def loader():
        sampler = ChunkBlockSampler(ds, 8, block_chunks=2, seed=4)
        return sdl.StatefulDataLoader(ds, batch_sampler=sampler, num_workers=workers)

    full = [ids_of(b) for b in loader()]
    first = loader()
    it = iter(first)
    head = [ids_of(next(it)) for _ in range(5)]
    state = first.state_dict()
    del it
    resumed = loader()
    resumed.load_state_dict(state)
    assert head + [ids_of(b) for b in resumed] == full


def test_batches_of_batches_are_refused_not_flattened():
    arr = tz.create_array("memory://", shape=(8,), dtype=torch.float32, chunks=(4,))
    with pytest.raises(tz.errors.SelectionError, match="batch_sampler"):
        ZarrDataset(arr).__getitems__([[1, 2], [3, 4]])
