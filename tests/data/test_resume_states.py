"""Resume states: what they may hold, where they stop, and how workers follow them."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from datahelpers import counts, ids_of, make_array
from torch.utils.data import DataLoader

import torchzarr as tz
from torchzarr.data.cursor import Cursor, SharedCursor
from torchzarr.data.partition import Layout
from torchzarr.errors import ArgumentTypeError, InvalidArgumentError

# 103 rows in chunks of 10, batches of 8: 13 batches per epoch (worker 0 of 2 yields 6, worker 1 yields 7)


@pytest.fixture
def rows():
    return make_array(tz.MemoryStore())


def _dataset(rows, **kw):
    return tz.ZarrIterableDataset(rows, batch_size=8, seed=9, block_chunks=2, **kw)


def _sampler(rows):
    return tz.ChunkBlockSampler(tz.ZarrDataset(rows), batch_size=8, block_chunks=2, seed=9)


def _order(loader):
    return [ids_of(b) for b in loader]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_state_at_past_the_end_of_the_epoch_is_refused(rows, num_workers):
    ds = _dataset(rows)
    with pytest.raises(InvalidArgumentError, match=r"steps=20 is past the end.*yields 13 items"):
        ds.state_at(20, num_workers=num_workers)
    done = ds.state_at(13, num_workers=num_workers)  # the end itself is a state
    again = _dataset(rows)
    again.load_state_dict(done)
    assert len(again) == 0 and list(again) == []
    with pytest.raises(InvalidArgumentError, match=r"steps=20 is past the end.*yields 13 items"):
        _sampler(rows).state_at(20)


def test_state_at_counts_the_steps_of_a_resumed_pass(rows):
    ds = _dataset(rows)
    ds.load_state_dict(ds.state_at(10))
    with pytest.raises(InvalidArgumentError, match=r"this pass yields 3 items per rank \(13 in"):
        ds.state_at(4)
    assert ds.state_at(3)["steps"] == 13


def test_loaded_states_past_the_end_of_the_epoch_are_refused(rows):
    for source in (_dataset(rows), _sampler(rows)):
        good = source.state_at(1)
        with pytest.raises(InvalidArgumentError, match="steps=14 is past the end of the epoch"):
            source.load_state_dict({**good, "steps": 14})
        worker = {**good, "steps": None, "worker": 0, "worker_steps": 7, "layout": [1, 2, 8, 0]}
        with pytest.raises(InvalidArgumentError, match="worker_steps=7 but worker 0 yields 6"):
            source.load_state_dict(worker)
        with pytest.raises(InvalidArgumentError, match="worker 2 of a layout with 2 workers"):
            source.load_state_dict({**worker, "worker": 2, "worker_steps": 0})
        assert len(source) == 13  # nothing was loaded


@pytest.mark.parametrize(
    "change, error, message",
    [
        ({"remaining": [[0, 200]]}, InvalidArgumentError, r"remaining\[0\] = \[0, 200\]"),
        ({"remaining": [[50, 10]]}, InvalidArgumentError, r"remaining\[0\] = \[50, 10\]"),
        ({"remaining": [[-5, 3]]}, InvalidArgumentError, r"remaining\[0\]\[0\] must be >= 0"),
        ({"remaining": [[0, 60], [40, 103]]}, InvalidArgumentError, "sorted, disjoint"),
        ({"remaining": [[60, 103], [0, 10]]}, InvalidArgumentError, "sorted, disjoint"),
        ({"remaining": [[0, 10.5]]}, ArgumentTypeError, r"remaining\[0\]\[1\] must be an int"),
        ({"remaining": [[0, True]]}, ArgumentTypeError, r"remaining\[0\]\[1\] must be an int"),
        ({"remaining": [[0, 1, 2]]}, InvalidArgumentError, "not a \\[start, stop\\] pair"),
        ({"remaining": 5}, ArgumentTypeError, "remaining must be a list"),
        ({"layout": [1, 1, 8]}, InvalidArgumentError, "layout must be \\[world_size, workers"),
        ({"layout": [1, 0, 8, 0]}, InvalidArgumentError, r"layout\[1\] \(workers\) must be >= 1"),
        ({"layout": [1, 1, 8, 2]}, InvalidArgumentError, r"drop_last\) must be 0 or 1"),
        ({"layout": [1, 1, 8.0, 0]}, ArgumentTypeError, r"batch_size\) must be an int"),
        ({"shuffle": "False"}, ArgumentTypeError, "shuffle must be True or False, got 'False'"),
        ({"seed": "9"}, ArgumentTypeError, "seed must be an int, got '9'"),
        ({"seed": 9.7}, ArgumentTypeError, "seed must be an int, got 9.7"),
    ],
)
def test_loaded_states_with_bad_intervals_layouts_or_types_are_refused(
    rows, change, error, message
):
    for source in (_dataset(rows), _sampler(rows)):
        good = source.state_dict()
        with pytest.raises(error, match=message):
            source.load_state_dict({**good, **change})
        assert len(source) == 13  # nothing was loaded


def test_loaded_states_keep_numpy_scalars_and_tuples(rows):
    ds = _dataset(rows)
    state = ds.state_at(3)
    loose = {**state, "seed": np.int64(9), "shuffle": np.bool_(True), "layout": (1, 1, 8, False)}
    ds.load_state_dict(loose)
    assert len(ds) == 10


def test_persistent_workers_resume_a_loaded_state_on_every_pass_of_its_epoch(rows):
    source = _dataset(rows)
    source.set_epoch(2)
    state = source.state_at(3, num_workers=2)
    ds = _dataset(rows)
    ds.load_state_dict(state)
    loader = DataLoader(ds, batch_size=None, num_workers=2, persistent_workers=True)
    first = _order(loader)
    assert len(first) == 10 and sum(map(len, first)) == 103 - 3 * 8
    assert len(loader) == 10 and _order(loader) == first  # again, as fresh workers would
    ds.set_epoch(3)
    ds.set_epoch(2)  # back before the workers saw the move, which dropped the state
    assert len(loader) == 13 and counts(loader) == Counter(range(103))
    ds.set_epoch(3)  # the next epoch starts fresh
    assert len(loader) == 13 and set(counts(loader)) == set(range(103))


def test_a_stateful_dataloader_resume_in_workers_leaves_the_main_epoch_alone(rows):
    sdl = pytest.importorskip("torchdata.stateful_dataloader")
    saved = _dataset(rows)
    saved.set_epoch(1)
    loader = sdl.StatefulDataLoader(saved, batch_size=None, num_workers=2)
    full = _order(loader)
    it = iter(loader)
    head = [ids_of(next(it)) for _ in range(4)]
    state = loader.state_dict()
    del it

    ds = _dataset(rows)  # a new process: no set_epoch before the resume
    resumed = sdl.StatefulDataLoader(ds, batch_size=None, num_workers=2, persistent_workers=True)
    resumed.load_state_dict(state)
    assert head + _order(resumed) == full  # the workers resumed epoch 1
    assert ds.epoch == 0
    epoch0 = _order(DataLoader(_dataset(rows), batch_size=None, num_workers=2))
    assert _order(DataLoader(ds, batch_size=None, num_workers=2)) == epoch0
    ds.set_epoch(0)  # the persistent workers follow the main process again
    assert _order(resumed) == epoch0


def test_persistent_workers_take_a_state_the_main_process_loads_after_they_started(rows):
    source = _dataset(rows)
    source.set_epoch(2)
    after5, after9 = source.state_at(5, num_workers=2), source.state_at(9, num_workers=2)
    expected = {}
    for steps, state in ((5, after5), (9, after9)):
        fresh = _dataset(rows)
        fresh.load_state_dict(state)
        expected[steps] = _order(DataLoader(fresh, batch_size=None, num_workers=2))
    assert (len(expected[5]), len(expected[9])) == (8, 4)

    ds = _dataset(rows)
    ds.load_state_dict(after5)
    loader = DataLoader(ds, batch_size=None, num_workers=2, persistent_workers=True)
    assert _order(loader) == expected[5]  # the workers start with that state
    ds.load_state_dict(after9)  # a later state of the same epoch
    ds.set_epoch(2)
    assert len(loader) == 4 and _order(loader) == expected[9]
    done = _dataset(rows)
    done.load_state_dict(ds.state_at(4, num_workers=2))
    assert len(done) == 0

    ds = _dataset(rows)
    loader = DataLoader(ds, batch_size=None, num_workers=2, persistent_workers=True)
    _order(loader)  # the workers start on epoch 0, with nothing loaded
    ds.load_state_dict(after5)
    assert len(loader) == 8 and _order(loader) == expected[5]


def test_persistent_workers_follow_the_main_epoch_once_a_stateful_dataloader_resume_is_done(
    rows,
):
    sdl = pytest.importorskip("torchdata.stateful_dataloader")
    saved = _dataset(rows)
    saved.set_epoch(1)
    loader = sdl.StatefulDataLoader(saved, batch_size=None, num_workers=2)
    epoch1 = _order(loader)
    at_the_end = loader.state_dict()
    it = iter(loader)
    head = [ids_of(next(it)) for _ in range(4)]
    mid_epoch = loader.state_dict()
    del it
    epoch2 = _dataset(rows)
    epoch2.set_epoch(2)
    expected2 = _order(DataLoader(epoch2, batch_size=None, num_workers=2))

    ds = _dataset(rows)  # a new process, moving on to the next epoch
    ds.set_epoch(2)
    resumed = sdl.StatefulDataLoader(ds, batch_size=None, num_workers=2, persistent_workers=True)
    resumed.load_state_dict(at_the_end)
    assert _order(resumed) == expected2

    ds = _dataset(rows)  # a new process, finishing epoch 1
    ds.set_epoch(1)
    resumed = sdl.StatefulDataLoader(ds, batch_size=None, num_workers=2, persistent_workers=True)
    resumed.load_state_dict(mid_epoch)
    assert head + _order(resumed) == epoch1
    assert _order(resumed) == epoch1  # no set_epoch: the main process's epoch 1 again


def test_a_loaded_state_too_large_to_hand_to_persistent_workers_is_refused_there():
    cursor = Cursor(10**6, chunk_len=10, block_chunks=1, seed=0, shuffle=True)
    scattered = [(4 * i, 4 * i + 2) for i in range(SharedCursor.capacity // 8)]
    cursor.load(cursor.state(scattered, Layout(), steps=0))
    shared = SharedCursor()
    shared.publish(cursor)
    worker_copy = Cursor(10**6, chunk_len=10, block_chunks=1, seed=0, shuffle=True)
    with pytest.raises(InvalidArgumentError, match="too large to hand to persistent"):
        shared.take(worker_copy)
    cursor.load(cursor.state(scattered[:10], Layout(), steps=0))
    shared.publish(cursor)
    assert shared.take(worker_copy) == 2 and worker_copy.pending == cursor.pending


def test_a_state_too_large_for_persistent_workers_is_raised_by_the_loader_and_they_live_on():
    import torch

    arr = tz.create_array("memory://", data=torch.arange(20000), chunks=(100,))
    ds = tz.ZarrIterableDataset(arr, batch_size=10)
    loader = DataLoader(ds, batch_size=None, num_workers=1, persistent_workers=True)
    assert sum(len(b) for b in loader) == 20000
    state = {**ds.state_dict(), "steps": 0}
    ds.load_state_dict({**state, "remaining": [[2 * i, 2 * i + 1] for i in range(8000)]})
    with pytest.raises(InvalidArgumentError, match="too large to hand to persistent"):
        list(loader)  # not "DataLoader worker exited unexpectedly"
    ds.load_state_dict({**state, "remaining": [[0, 35]]})
    assert [len(b) for b in loader] == [10, 10, 10, 5]  # the same worker takes it


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("where", ["last step", "after the loop"])
def test_a_state_saved_as_the_epoch_ended_resumes_the_next_epoch_set_before_the_load(
    rows, num_workers, where
):
    sdl = pytest.importorskip("torchdata.stateful_dataloader")
    saved = _dataset(rows)
    saved.set_epoch(1)
    loader = sdl.StatefulDataLoader(saved, batch_size=None, num_workers=num_workers)
    for step, _ in enumerate(loader, 1):
        if where == "last step" and step == len(loader):  # inside the loop
            state = loader.state_dict()
    if where == "after the loop":
        state = loader.state_dict()
    expected = {}
    for epoch in (2, 3):
        fresh = _dataset(rows)
        fresh.set_epoch(epoch)
        expected[epoch] = _order(DataLoader(fresh, batch_size=None, num_workers=num_workers))

    ds = _dataset(rows)  # a new process, moving on to the next epoch
    ds.set_epoch(2)
    resumed = sdl.StatefulDataLoader(ds, batch_size=None, num_workers=num_workers)
    resumed.load_state_dict(state)
    assert _order(resumed) == expected[2] and ds.epoch == 2
    ds.set_epoch(3)
    assert _order(resumed) == expected[3]


def test_an_ended_state_of_an_earlier_epoch_loaded_after_set_epoch_is_dropped(rows):
    for make in (_dataset, _sampler):
        source = make(rows)
        source.set_epoch(1)
        ended, mid = source.state_at(13), source.state_at(4)
        later = make(rows)
        later.set_epoch(2)
        later.load_state_dict(ended)  # epoch 1 is over: epoch 2 stays, whole
        assert later.epoch == 2 and len(list(later)) == 13
        later.load_state_dict(mid)  # something left: the saved epoch resumes
        assert later.epoch == 1 and len(list(later)) == 9
        same = make(rows)
        same.set_epoch(1)
        same.load_state_dict(ended)  # the epoch set: its (empty) rest, as before
        assert same.epoch == 1 and len(list(same)) == 0
