"""ZarrIterableDataset: coverage over ranks x workers, determinism, resume, workers, pinning."""

from __future__ import annotations

import functools
import multiprocessing as mp
import operator
import os
import pickle
from collections import Counter

import pytest
import torch
from datahelpers import CountingStore, counts, ids_of, make_array
from torch.utils.data import DataLoader

import torchzarr as tz
from torchzarr.data import DevicePrefetcher, ZarrIterableDataset


def run_ranks(arr, world, num_workers=0, epoch=0, **kw):
    """Every rank's batches (simulated ranks), each rank through its own DataLoader."""
    out = []
    for rank in range(world):
        ds = ZarrIterableDataset(arr, rank=rank, world_size=world, **kw)
        ds.set_epoch(epoch)
        out.append(list(DataLoader(ds, batch_size=None, num_workers=num_workers)))
    return out


@pytest.mark.parametrize("world", [1, 2, 4])
def test_every_sample_once_per_epoch_without_workers(memory_array, world):
    n = 100 if world == 4 else 103
    arr = make_array(tz.MemoryStore(), n=n) if n != 103 else memory_array
    per_rank = run_ranks(arr, world, batch_size=8, block_chunks=3, seed=1)
    assert len({len(r) for r in per_rank}) == 1
    seen = counts(b for r in per_rank for b in r)
    assert set(seen) == set(range(n))
    assert sum(seen.values()) - n < world
    assert all(len(ids_of(b)) <= 8 for r in per_rank for b in r)


def test_every_sample_once_with_two_workers_and_two_ranks(local_array):
    arr = make_array(tz.MemoryStore(), n=120)
    per_rank = run_ranks(arr, 2, num_workers=2, batch_size=8, block_chunks=2, seed=4)
    assert len(per_rank[0]) == len(per_rank[1])
    assert counts(b for r in per_rank for b in r) == Counter(range(120))
    ds = ZarrIterableDataset(local_array, batch_size=5, drop_last=True, seed=2)
    seen = counts(DataLoader(ds, batch_size=None, num_workers=2))
    assert max(seen.values()) == 1 and 103 - len(seen) < 2 * 6


def test_an_epoch_reads_each_chunk_once():
    store = CountingStore()
    arr = make_array(store, n=100, chunk=10)
    store.reads.clear()
    ds = ZarrIterableDataset(arr, batch_size=7, block_chunks=3, seed=0, prefetch=3)
    assert counts(ds) == Counter(range(100))
    chunk_reads = {k: v for k, v in store.reads.items() if not k.endswith("zarr.json")}
    assert len(chunk_reads) == 10 and set(chunk_reads.values()) == {1}


def test_worker_buffer_ring_delivers_every_batch_intact(memory_array):
    ds = ZarrIterableDataset(memory_array, batch_size=8, seed=3, worker_buffers=4)
    seen: Counter = Counter()
    for batch in DataLoader(ds, batch_size=None, num_workers=2):
        assert torch.equal(batch[:, 0], batch[:, 2])  # rows intact: no buffer reused under us
        seen.update(ids_of(batch))
    assert seen == Counter(range(103))  # the workers of one rank share its run: no pad
    with pytest.raises(ValueError):
        ZarrIterableDataset(memory_array, batch_size=8, worker_buffers=2)


def test_samples_mode_and_dict_sources(tmp_path):
    root = tz.open_group(tz.LocalStore(tmp_path / "g.zarr"), mode="w")
    root.create_array("x", shape=(30, 2), dtype=torch.int64, chunks=(8, 2))[:] = (
        torch.arange(30).repeat_interleave(2).reshape(30, 2)
    )
    root.create_array("label", shape=(30,), dtype=torch.int64, chunks=(4,))[:] = torch.arange(30)
    ds = ZarrIterableDataset(root, seed=3, block_chunks=2)
    items = list(ds)
    assert len(items) == 30 and all(int(i["x"][0]) == int(i["label"]) for i in items)
    loader = DataLoader(ds, batch_size=7)
    batches = list(loader)
    assert torch.equal(batches[0]["x"][:, 1], batches[0]["label"])
    assert sorted(torch.cat([b["label"] for b in batches]).tolist()) == list(range(30))
    ds = ZarrIterableDataset(root, batch_size=4, transform=lambda d: d["label"] * 2)
    assert sorted(torch.cat(list(ds)).tolist()) == [2 * i for i in range(30)]


def test_order_is_a_pure_function_of_seed_and_epoch(memory_array):
    def epoch(seed, e, workers=0):
        return [
            ids_of(b)
            for r in run_ranks(memory_array, 1, workers, e, batch_size=8, seed=seed)
            for b in r
        ]

    assert epoch(0, 0) == epoch(0, 0)
    assert epoch(0, 0) != epoch(0, 1)
    assert epoch(0, 0) != epoch(1, 0)
    assert sorted(functools.reduce(operator.iadd, epoch(0, 0), [])) == list(range(103))
    plain = ZarrIterableDataset(memory_array, batch_size=10, shuffle=False)
    assert functools.reduce(operator.iadd, (ids_of(b) for b in plain), []) == list(range(103))


def _iterate(ds, steps):
    it = iter(ds)
    return [ids_of(next(it)) for _ in range(steps)], ds.state_dict()


@pytest.mark.parametrize("stop", [0, 3, 13])  # start, mid epoch, end of epoch (13 batches)
def test_resume_exactly_where_it_stopped(memory_array, stop):
    make = lambda: ZarrIterableDataset(memory_array, batch_size=8, block_chunks=2, seed=9)  # noqa: E731
    ds = make()
    ds.set_epoch(1)
    full = [ids_of(b) for b in ds]
    ds = make()
    ds.set_epoch(1)
    head, state = _iterate(ds, stop)
    resumed = make()
    resumed.load_state_dict(state)
    resumed.set_epoch(1)
    assert head + [ids_of(b) for b in resumed] == full
    resumed.set_epoch(2)  # the next epoch starts fresh
    again = make()
    again.set_epoch(2)
    assert [ids_of(b) for b in resumed] == [ids_of(b) for b in again]


def test_resume_on_another_number_of_ranks(memory_array):
    seen: Counter = Counter()
    states = []
    for rank in range(2):
        ds = ZarrIterableDataset(memory_array, batch_size=4, seed=5, rank=rank, world_size=2)
        batches, state = _iterate(ds, 6)
        seen.update(i for b in batches for i in b)
        states.append(state)
    assert states[0] == states[1]
    for world in (1, 4):  # same global batch size 8
        rest: Counter = Counter()
        for rank in range(world):
            ds = ZarrIterableDataset(
                memory_array, batch_size=8 // world, seed=5, rank=rank, world_size=world
            )
            ds.load_state_dict(states[0])
            rest.update(counts(ds))
        total = seen + rest
        assert set(total) == set(range(103)) and sum(total.values()) - 103 < world


def test_state_at_with_workers(memory_array):
    ds = ZarrIterableDataset(memory_array, batch_size=8, seed=2)
    seen: Counter = Counter()
    for step, batch in enumerate(DataLoader(ds, batch_size=None, num_workers=2), 1):
        seen.update(ids_of(batch))
        if step == 5:
            break
    state = ds.state_at(5, num_workers=2)
    for workers in (0, 2):
        again = ZarrIterableDataset(memory_array, batch_size=8, seed=2)
        again.load_state_dict(state)
        rest = counts(DataLoader(again, batch_size=None, num_workers=workers))
        assert set(seen + rest) == set(range(103)) and sum((seen + rest).values()) - 103 < 2


# 13 batches of 8: worker 0 yields 7, worker 1 yields 6. Stop mid epoch, before the last
# batch (worker 0's, in a round of its own), at the end of the epoch.
@pytest.mark.parametrize("stop", [5, 12, 13])
def test_stateful_dataloader_with_workers(memory_array, stop):
    sdl = pytest.importorskip("torchdata.stateful_dataloader")

    def loader():
        ds = ZarrIterableDataset(memory_array, batch_size=8, seed=6)
        return ds, sdl.StatefulDataLoader(ds, batch_size=None, num_workers=2)

    full = [ids_of(b) for b in loader()[1]]
    assert len(full) == 13 and Counter(i for b in full for i in b) == Counter(range(103))
    _, first = loader()
    it = iter(first)
    head = [ids_of(next(it)) for _ in range(stop)]
    state = first.state_dict()
    del it
    ds, fresh = loader()
    fresh.load_state_dict(state)
    assert head + [ids_of(b) for b in fresh] == full
    ds.set_epoch(1)  # the next epoch: a fresh order, every sample again
    assert set(counts(fresh)) == set(range(103))


@pytest.mark.parametrize("method", ["spawn", "forkserver", "fork"])
def test_workers_start_by_any_method_after_the_parent_read(local_array, method):
    if method not in mp.get_all_start_methods():
        pytest.skip(f"{method} unavailable")
    assert ids_of(local_array[5:6]) == [5]  # the parent has read (pools, handles) before forking
    ds = ZarrIterableDataset(local_array, batch_size=16, seed=1)
    loader = DataLoader(ds, batch_size=None, num_workers=2, multiprocessing_context=method)
    assert set(counts(loader)) == set(range(103))


def test_pinned_ring_and_prefetcher_fall_back_quietly(memory_array):
    ds = ZarrIterableDataset(memory_array, batch_size=8, seed=0, pin_memory=True)
    batches = [b.clone() for b in DevicePrefetcher(DataLoader(ds, batch_size=None), "cpu")]
    assert counts(batches) == Counter(range(103))
    if not torch.cuda.is_available():
        assert not ds._ring.pinned
    moved = list(DevicePrefetcher([{"x": torch.ones(2)}, [torch.zeros(1)]], "cpu"))
    assert moved[0]["x"].sum().item() == 2 and moved[1][0].item() == 0
    if not torch.cuda.is_available():  # asking for CUDA without it: quietly stays on the host
        assert next(iter(DevicePrefetcher([torch.ones(1)], "cuda"))).device.type == "cpu"


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_persistent_workers_follow_set_epoch(local_array, method):
    def order(loader):
        return [ids_of(b) for b in loader]

    ds = ZarrIterableDataset(local_array, batch_size=8, seed=7, block_chunks=2)
    persistent = DataLoader(
        ds, batch_size=None, num_workers=2, persistent_workers=True, multiprocessing_context=method
    )
    seen = []
    for epoch in range(3):
        ds.set_epoch(epoch)
        seen.append(order(persistent))
        fresh = ZarrIterableDataset(local_array, batch_size=8, seed=7, block_chunks=2)
        fresh.set_epoch(epoch)
        assert seen[-1] == order(DataLoader(fresh, batch_size=None, num_workers=2))
    assert seen[0] != seen[1] != seen[2]


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts /proc/self/fd")
def test_datasets_hold_no_file_descriptor_until_sent_to_a_spawned_worker(memory_array):
    def open_descriptors() -> int:
        return len(os.listdir("/proc/self/fd"))

    before = open_descriptors()
    shards = [ZarrIterableDataset(memory_array, batch_size=8, seed=i) for i in range(64)]
    for epoch, ds in enumerate(shards):  # one per shard file, as a ChainDataset holds them
        ds.set_epoch(epoch % 3)
    shards[1].load_state_dict(shards[1].state_at(2))
    copies = pickle.loads(pickle.dumps(shards))  # a plain pickle copies the shared state
    assert open_descriptors() < before + 8  # (one each before: 64 more)
    assert [c.epoch for c in copies] == [ds.epoch for ds in shards] and len(copies[1]) == 11
    chained = torch.utils.data.ChainDataset(shards[:3])
    loader = DataLoader(chained, batch_size=None, num_workers=1, persistent_workers=True)
    for epoch in (4, 5):  # forked before any publication, persistent workers still follow
        for ds in shards[:3]:
            ds.set_epoch(epoch)
        expected = []
        for seed in range(3):
            fresh = ZarrIterableDataset(memory_array, batch_size=8, seed=seed)
            fresh.set_epoch(epoch)
            expected += [ids_of(b) for b in fresh]
        assert [ids_of(b) for b in loader] == expected


@pytest.mark.parametrize(("rows", "batch_size"), [(100, None), (100, 64), (100, 1000), (37, 401)])
def test_block_buffers_stay_within_the_bound_the_docs_give(rows, batch_size):
    from pathlib import Path

    doc = " ".join((Path(__file__).parents[2] / "docs" / "datasets.md").read_text().split())
    assert "at most `prefetch + 3 + ceil(batch_size / (K x chunk_len))` buffers" in doc
    arr = tz.create_array("memory://", shape=(5000,), dtype=torch.int64, chunks=(rows,))
    ds = ZarrIterableDataset(arr, batch_size=batch_size, block_chunks=2, seed=3)
    made, empty = [], ds.source.empty

    def counting(n, *shared):  # blocks: empty(capacity); batches: empty(rows, shared)
        if not shared:
            made.append(n)
        return empty(n, *shared)

    ds.source.empty = counting
    assert sum(b.numel() for b in ds) == 5000
    block = 2 * rows
    bound = ds.prefetch + 2 + (-(-batch_size // block) + 1 if batch_size else 0)
    assert made and set(made) == {block} and len(made) <= bound


def _with_threads(batch):
    return batch, tz.config.threads


@pytest.mark.parametrize("explicit", [False, True])
def test_workers_share_the_cores_unless_threads_were_set(local_array, explicit):
    from torchzarr.config import default_threads

    cores = default_threads()
    wanted = cores + 3 if explicit else max(1, cores // 2)
    ds = ZarrIterableDataset(local_array, batch_size=8, transform=_with_threads)
    with tz.config.set(threads=cores + 3 if explicit else cores):
        loader = DataLoader(ds, batch_size=None, num_workers=2, multiprocessing_context="fork")
        seen = {threads for _, threads in loader}
        assert tz.config.threads == (cores + 3 if explicit else cores)  # the main process
    assert seen == {wanted}
    mapped = tz.ZarrDataset(local_array, transform=lambda x: x)
    in_map = DataLoader(mapped, batch_size=4, num_workers=2, multiprocessing_context="fork")
    assert next(iter(in_map)).shape == (4, 3)


@pytest.mark.parametrize("drop_last", [False, True])
def test_len_is_what_the_loader_delivers_for_any_number_of_workers(memory_array, drop_last):
    for rank in (0, 1):
        ds = ZarrIterableDataset(
            memory_array, batch_size=8, seed=2, rank=rank, world_size=2, drop_last=drop_last
        )
        expected = len(ds)
        assert expected == (6 if drop_last else 7)  # 103 samples: 51 or 52 a rank
        for workers in (0, 2):
            loader = DataLoader(ds, batch_size=None, num_workers=workers)
            assert len(loader) == expected == len(list(loader))
    ds = ZarrIterableDataset(memory_array, batch_size=8, seed=2)
    ds.load_state_dict(ds.state_at(5))
    assert len(ds) == 13 - 5 == len(list(DataLoader(ds, batch_size=None, num_workers=2)))
    samples = ZarrIterableDataset(memory_array, seed=2)  # no batch_size: items are samples
    assert samples.num_items() == 103 == len(list(samples))
    with pytest.raises(TypeError, match="without batch_size has no len"):
        len(DataLoader(samples, batch_size=8, num_workers=2))  # 2 workers x ceil(n_w / 8)


@pytest.mark.parametrize("workers", [0, 2, 3])
def test_only_the_last_batch_of_a_rank_is_short_whatever_the_workers(workers):
    for n in (50, 46, 9):  # batches 13, 12 and 3 over 2 or 3 workers: uneven, even, fewer
        arr = make_array(tz.MemoryStore(), n=n, chunk=5)
        ds = ZarrIterableDataset(arr, batch_size=4, block_chunks=2, seed=3)
        kw = {"multiprocessing_context": "fork"} if workers else {}
        batches = list(DataLoader(ds, batch_size=None, num_workers=workers, **kw))
        sizes = [len(ids_of(b)) for b in batches]
        assert sizes == [4] * (n // 4) + ([n % 4] if n % 4 else []), (n, sizes)
        assert counts(batches) == Counter(range(n))


def test_ranks_are_read_when_used_so_loaders_built_before_init_still_split(
    memory_array, monkeypatch
):
    import pickle

    import torch.distributed as dist

    ds = ZarrIterableDataset(memory_array, batch_size=8, seed=1)  # before the group exists
    sampler = tz.ChunkBlockSampler(tz.ZarrDataset(memory_array), batch_size=8)
    assert (ds.rank, ds.world_size, len(ds), len(sampler)) == (0, 1, 13, 13)
    # torch.distributed comes up afterwards (as Lightning's fit does): rank 1 of 2
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_rank", lambda: 1)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    assert (ds.rank, ds.world_size, len(ds), len(sampler)) == (1, 2, 7, 7)
    shipped = pickle.dumps(ds)  # what a spawned DataLoader worker receives
    ours = Counter(i for batch in ds for i in ids_of(batch))
    assert sum(ours.values()) == 52 and len(ours) == 52
    monkeypatch.setattr(dist, "is_initialized", lambda: False)  # a worker cannot ask
    copy = pickle.loads(shipped)
    assert (copy.rank, copy.world_size) == (1, 2)
    assert Counter(i for batch in copy for i in ids_of(batch)) == ours


def test_copies_made_before_the_group_exists_ask_where_they_are_used(memory_array, monkeypatch):
    """A dataset handed to ``mp.spawn`` / ``ddp_spawn`` or deep-copied before
    ``init_process_group`` must split over the ranks of the process that uses it."""
    import copy
    import pickle

    import torch.distributed as dist

    ds = ZarrIterableDataset(memory_array, batch_size=8, seed=1)
    sampler = tz.ChunkBlockSampler(tz.ZarrDataset(memory_array), batch_size=8)
    given = ZarrIterableDataset(memory_array, batch_size=8, rank=0, world_size=3)
    shipped = [pickle.dumps(ds), pickle.dumps(sampler), pickle.dumps(given)]
    deep = copy.deepcopy(ds)
    # the receiving process joins a group of 2 as rank 1
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_rank", lambda: 1)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    ds_copy, sampler_copy, given_copy = (pickle.loads(s) for s in shipped)
    assert (ds_copy.rank, ds_copy.world_size, len(ds_copy)) == (1, 2, 7)
    assert (sampler_copy.rank, sampler_copy.world_size, len(sampler_copy)) == (1, 2, 7)
    assert (deep.rank, deep.world_size) == (1, 2)
    assert (given_copy.rank, given_copy.world_size) == (0, 3)  # as given, wherever it goes


def _late_second_worker(worker_id: int) -> None:
    import time

    if worker_id == 1:
        time.sleep(1.0)  # starts its pass after the main process set the epoch


def test_set_epoch_after_iter_never_splits_one_pass_over_two_epochs(tmp_path):
    tz.create_array(tmp_path / "ids.zarr", shape=(1000,), dtype=torch.int64, chunks=(100,))[:] = (
        torch.arange(1000)
    )
    ds = ZarrIterableDataset(tz.open_array(tmp_path / "ids.zarr", mode="r"), batch_size=100)
    loader = DataLoader(
        ds,
        batch_size=None,
        num_workers=2,
        multiprocessing_context="fork",
        worker_init_fn=_late_second_worker,
    )
    it = iter(loader)
    first = next(it)  # worker 0 is dealing its share already
    ds.set_epoch(2)  # Lightning's on_train_epoch_start comes after iter(loader)
    ids = torch.cat([first, *it]).tolist()
    assert sorted(ids) == list(range(1000))  # one epoch's order: each sample once


def test_set_epoch_to_the_current_epoch_keeps_the_position(tmp_path):
    tz.create_array(tmp_path / "ids.zarr", shape=(1000,), dtype=torch.int64, chunks=(100,))[:] = (
        torch.arange(1000)
    )
    ds = ZarrIterableDataset(tz.open_array(tmp_path / "ids.zarr", mode="r"), batch_size=100)
    it = iter(ds)
    trained = [next(it) for _ in range(7)]
    ds.set_epoch(0)  # the epoch it is in: nothing changes
    state = ds.state_dict()
    again = ZarrIterableDataset(tz.open_array(tmp_path / "ids.zarr", mode="r"), batch_size=100)
    again.load_state_dict(state)
    rest = list(again)
    assert len(rest) == 3 and sorted(torch.cat(trained + rest).tolist()) == list(range(1000))


def test_a_copy_for_a_spawned_worker_waits_for_a_write_in_progress():
    # a spawned DataLoader started in another thread during a set_epoch must not send a
    # half-written state: the copy for the new process waits for the write to finish
    import threading

    from torchzarr.data.shared_words import SharedWords

    words = SharedWords(4)
    sent: list[list[int]] = []
    copier = threading.Thread(target=lambda: sent.append(words._for_process().tolist()))
    with words.writing() as memories:
        memories[0][0] = 7  # the first half of a write
        copier.start()
        copier.join(0.5)
        assert copier.is_alive()  # waiting for the write, not copying half of it
        memories[0][1] = 8
    copier.join(30)
    assert sent == [[7, 8, 0, 0]]


def test_publishing_the_epoch_writes_under_the_lock_copies_take():
    from torchzarr.data import shared_words
    from torchzarr.data.cursor import Cursor, SharedCursor

    class CheckedWords(list):
        def __setitem__(self, index, value):
            assert shared_words._guard.locked(), "written without the lock"
            super().__setitem__(index, value)

    shared, main = SharedCursor(), Cursor(10, 4, block_chunks=1, seed=0, shuffle=True)
    words = CheckedWords([0, 0, 0])
    shared._words._memories = [words]  # what a copy for a spawned worker reads
    main.set_epoch(3)
    shared.publish(main)
    assert words == [3, 1, 0]


@pytest.mark.parametrize("kind", ["pinned", "worker"])
def test_a_ring_gives_no_more_rows_than_its_batches_hold(kind):
    """More rows would reach past a slot's first array into the next one."""
    from torchzarr.data.worker_ring import WorkerRing

    specs = {"x": ((2,), torch.float32), "y": ((1,), torch.int64)}
    if kind == "pinned":
        ring = tz.data.PinnedRing(specs, batch_size=4, slots=2)
    else:
        ring = WorkerRing.create(specs, batch_size=4, slots=3)
        if ring is None:
            pytest.skip("no memfd here")
    assert ring.next(4)["x"].shape == (4, 2)
    for rows, error in [
        (5, "InvalidArgumentError"),
        (-1, "InvalidArgumentError"),
        (True, "ArgumentTypeError"),
    ]:
        with pytest.raises(getattr(tz.errors, error), match="rows must be"):
            ring.next(rows)


def test_a_pinned_ring_names_a_bad_argument():
    specs = {"x": ((3,), torch.float32)}
    for args, kwargs, error, message in [
        ((specs, -1), {}, "InvalidArgumentError", "batch_size must be >= 1, got -1"),
        ((specs, 2), {"slots": 2.5}, "ArgumentTypeError", "slots must be an int, got 2.5"),
        ((specs, 2), {"slots": 1}, "InvalidArgumentError", "slots must be >= 2, got 1"),
        (([1, 2], 2), {}, "ArgumentTypeError", "specs must be a dict"),
        (({"x": ((3,), "f4")}, 2), {}, "ArgumentTypeError", r"specs\['x'\]: dtype must be"),
        (({"x": ((-3,), torch.float32)}, 2), {}, "InvalidArgumentError", "row_shape.0. must be"),
    ]:
        with pytest.raises(getattr(tz.errors, error), match=message):
            tz.data.PinnedRing(*args, **kwargs)
