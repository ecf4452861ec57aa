"""States saved by older torchzarr versions: resumed identically, or refused when the order changed."""

from __future__ import annotations

import pytest
from datahelpers import ids_of, make_array

import torchzarr as tz
from torchzarr.errors import ArgumentTypeError, InvalidArgumentError

# Saved by torchzarr with state versions 2 and 1, 40 rows in chunks of 10, batches of 8,
# block_chunks=2, epoch 3, after 2 batches (a dataset and a sampler save the same state).
_SMALL_SEED_STATE = {
    "version": 2,
    "num_samples": 40,
    "chunk_len": 10,
    "block_chunks": 2,
    "seed": 9,
    "shuffle": True,
    "epoch": 3,
    "remaining": [[0, 40]],
    "layout": [1, 1, 8, 0],
    "steps": 2,
    "worker": None,
    "worker_steps": None,
}
# ... and the batches those versions went on to yield.
_SMALL_SEED_REST = [
    [28, 20, 33, 21, 4, 15, 11, 10],
    [18, 13, 0, 3, 2, 1, 17, 5],
    [14, 6, 9, 19, 16, 12, 8, 7],
]
# The same run with seed 2**40: those versions drew another order for it than this one.
_BIG_SEED_STATE = {**_SMALL_SEED_STATE, "seed": 2**40}


@pytest.fixture
def rows():
    return make_array(tz.MemoryStore(), n=40, chunk=10)


def _dataset(rows, seed=9, shuffle=True):
    return tz.ZarrIterableDataset(rows, batch_size=8, seed=seed, block_chunks=2, shuffle=shuffle)


def _sampler(rows, seed=9, shuffle=True):
    data = tz.ZarrDataset(rows)
    return tz.ChunkBlockSampler(data, batch_size=8, block_chunks=2, seed=seed, shuffle=shuffle)


def _rest(source):
    return [ids_of(b) for b in source] if hasattr(source, "source") else list(source)


@pytest.mark.parametrize("make", [_dataset, _sampler])
@pytest.mark.parametrize("version", [1, 2])
def test_older_states_with_small_seeds_resume_as_they_were_saved(rows, make, version):
    source = make(rows)
    source.load_state_dict({**_SMALL_SEED_STATE, "version": version})
    assert _rest(source) == _SMALL_SEED_REST


@pytest.mark.parametrize("make", [_dataset, _sampler])
@pytest.mark.parametrize("version", [2.5, 3.9, "1", True])
def test_a_version_that_is_not_an_int_is_refused(rows, make, version):
    source = make(rows)
    with pytest.raises(ArgumentTypeError, match=r"version must be an int, got"):
        source.load_state_dict({**_SMALL_SEED_STATE, "version": version})


@pytest.mark.parametrize("make", [_dataset, _sampler])
@pytest.mark.parametrize(
    "change", [{"seed": 2**40}, {"seed": 2**32 + 5}, {"seed": 0, "epoch": 2**32}]
)
def test_older_states_whose_order_changed_with_seeds_of_32_bits_and_more_are_refused(
    rows, make, change
):
    state = {**_BIG_SEED_STATE, **change}
    source = make(rows, seed=state["seed"])
    for version in (1, 2):
        with pytest.raises(InvalidArgumentError, match=r"older torchzarr.*restart the epoch"):
            source.load_state_dict({**state, "version": version})
    assert len(source) == 5  # nothing was loaded


def test_older_unshuffled_states_with_big_seeds_still_resume(rows):
    # without shuffling the seed draws nothing: the order is the same in every version
    ds = _dataset(rows, seed=2**40, shuffle=False)
    ds.load_state_dict({**_BIG_SEED_STATE, "shuffle": False})
    assert _rest(ds) == [list(range(16, 24)), list(range(24, 32)), list(range(32, 40))]


@pytest.mark.parametrize("make", [_dataset, _sampler])
def test_states_saved_now_with_big_seeds_resume_identically(rows, make):
    saved = make(rows, seed=2**40)
    saved.set_epoch(2**32 + 1)
    full = _rest(saved)
    it = iter(saved)
    head = [next(it) for _ in range(2)]
    head = [ids_of(b) for b in head] if hasattr(saved, "source") else head
    resumed = make(rows, seed=2**40)
    resumed.load_state_dict(saved.state_dict())
    assert head + _rest(resumed) == full
