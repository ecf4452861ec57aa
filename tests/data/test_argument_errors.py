"""Bad arguments to the datasets, samplers and settings raise torchzarr errors naming them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import zarr

import torchzarr as tz
from torchzarr.data.pinned import PinnedRing
from torchzarr.errors import (
    ArgumentTypeError,
    BoundsError,
    InvalidArgumentError,
    SelectionError,
    ShapeMismatchError,
    TorchZarrError,
)


@pytest.fixture
def rows():
    arr = tz.create_array("memory://", shape=(10, 3), dtype=torch.float32, chunks=(4, 3))
    arr[:] = torch.arange(30, dtype=torch.float32).reshape(10, 3)
    return arr


def test_map_style_indices_are_integers_in_range(rows):
    ds = tz.ZarrDataset(rows)
    assert ds[np.int64(2)].tolist() == [6.0, 7.0, 8.0] == ds[torch.tensor(2)].tolist()
    assert ds[-1].tolist() == [27.0, 28.0, 29.0]
    with pytest.raises(SelectionError, match=r"must be an integer, got 1\.0"):
        ds[1.0]
    with pytest.raises(SelectionError, match="must be integers, got float64"):
        ds.__getitems__([0.5, 1.0])
    with pytest.raises(BoundsError, match="index 12 is out of range for a dataset of 10"):
        ds.__getitems__([0, 3, 12, 40])  # the first index at fault is named
    with pytest.raises(IndexError):  # the built-in base: iteration protocols stop on it
        ds[-11]
    assert ds.__getitems__([]) == []


def test_booleans_are_refused_as_indices_everywhere(rows):
    ds = tz.ZarrDataset(rows)
    for index in (True, False, np.True_, torch.tensor(True)):
        with pytest.raises(SelectionError, match="must be an integer"):
            ds[index]
    for indices in ([True], [1, True], (np.False_, 2), np.array([True]), torch.tensor([True])):
        with pytest.raises(SelectionError, match="must be integers"):
            ds.__getitems__(indices)
        with pytest.raises(SelectionError, match="must be integers"):
            ds.get_batch(indices)
    assert ds[torch.tensor(1)].tolist() == [3.0, 4.0, 5.0]


def test_zero_d_bool_tensors_and_arrays_inside_an_index_list_are_refused(rows):
    ds = tz.ZarrDataset(rows)  # numpy would read them as the indices 1 and 0
    for indices in ([3, torch.tensor(True)], (torch.tensor(False), 5), [2, np.array(True)]):
        with pytest.raises(SelectionError, match="not booleans"):
            ds.__getitems__(indices)
        with pytest.raises(SelectionError, match="not booleans"):
            ds.get_batch(indices)
    assert ds.get_batch([torch.tensor(3), np.array(1)])[:, 0].tolist() == [9.0, 3.0]


def test_a_ragged_batch_of_batches_names_the_batch_sampler(rows):
    ds = tz.ZarrDataset(rows)
    sampler = tz.ChunkBlockSampler(ds, batch_size=7)  # batches of 7 and 3
    loader = torch.utils.data.DataLoader(ds, sampler=sampler, batch_size=4)  # the mistake
    with pytest.raises(SelectionError, match=r"DataLoader\(batch_sampler=\.\.\.\)"):
        next(iter(loader))
    with pytest.raises(SelectionError, match="sequence of sequences"):
        ds.__getitems__([1, [2, 3]])


def test_get_batch_refuses_a_dataset_with_a_transform(rows):
    ds = tz.ZarrDataset(rows, transform=lambda x: x * 100)
    assert ds.__getitems__([2])[0].tolist() == [600.0, 700.0, 800.0]
    with pytest.raises(InvalidArgumentError, match="cannot apply this dataset's per-item"):
        ds.get_batch([2, 3])
    assert tz.ZarrDataset(ds.source).get_batch([2, 3])[:, 0].tolist() == [6.0, 9.0]


def test_cache_takes_booleans_none_or_a_chunk_cache(rows):
    for bad in (0, 1, "yes", 1 << 20):
        with pytest.raises(ArgumentTypeError, match="cache must be True, False, None or a"):
            tz.ZarrDataset(rows, cache=bad)
    for good in (True, False, None, np.True_, tz.ChunkCache(max_bytes=1 << 20)):
        assert tz.ZarrDataset(rows, cache=good)[9].tolist() == [27.0, 28.0, 29.0]
    assert tz.ZarrDataset(rows, cache=True).source.arrays[""].cache is not None
    assert tz.ZarrDataset(rows, cache=False).source.arrays[""].cache is None


@pytest.mark.parametrize("index", [2**64 - 1, 2**64 - 3, 2**63, 2**70, -(2**70)])
def test_map_style_indices_past_int64_are_out_of_range_not_wrapped(rows, index):
    ds = tz.ZarrDataset(rows)
    message = f"index {index} is out of range for a dataset of 10"
    with pytest.raises(BoundsError, match=message):
        ds[index]
    with pytest.raises(BoundsError, match=message):
        ds.get_batch([index])
    with pytest.raises(BoundsError, match=message):
        ds.__getitems__([1, index])  # numpy would make the pair float64
    if 0 <= index < 2**64:
        with pytest.raises(BoundsError, match=message):
            ds[np.uint64(index)]
    assert ds.get_batch([1, -1, np.uint64(3)])[:, 0].tolist() == [3.0, 27.0, 9.0]


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda a: tz.ZarrIterableDataset(a, seed="a"), ArgumentTypeError, "seed must be an int"),
        (lambda a: tz.ZarrIterableDataset(a, seed=1.5), ArgumentTypeError, "seed must be an int"),
        (lambda a: tz.ZarrIterableDataset(a, seed=-1), InvalidArgumentError, "seed must be >= 0"),
        (lambda a: tz.ZarrIterableDataset(a, batch_size=0), InvalidArgumentError, "batch_size"),
        (lambda a: tz.ZarrIterableDataset(a, batch_size=2.5), ArgumentTypeError, "batch_size"),
        (lambda a: tz.ZarrIterableDataset(a, prefetch=0), InvalidArgumentError, "prefetch"),
        (lambda a: tz.ZarrIterableDataset(a, worker_buffers=2), InvalidArgumentError, "0 or >= 3"),
        (  # would reach os.posix_fallocate as an OverflowError inside the worker
            lambda a: tz.ZarrIterableDataset(a, worker_buffers=2**62),
            InvalidArgumentError,
            "worker_buffers must be <= 1024",
        ),
        (lambda a: tz.ZarrIterableDataset(a, block_chunks=0), InvalidArgumentError, "block_chunks"),
        (
            lambda a: tz.ChunkBlockSampler(tz.ZarrDataset(a), batch_size=0),
            InvalidArgumentError,
            "batch_size",
        ),
        (
            lambda a: tz.ChunkBlockSampler(tz.ZarrDataset(a), batch_size="8"),
            ArgumentTypeError,
            "batch_size",
        ),
        (lambda a: tz.ZarrDataset([a]), ArgumentTypeError, "expected an Array, a Group or a dict"),
        (  # what Lightning's use_distributed_sampler=True does to a ChunkBlockSampler
            lambda a: tz.ChunkBlockSampler(
                torch.utils.data.DistributedSampler(range(4), num_replicas=2, rank=0),
                batch_size=8,
            ),
            ArgumentTypeError,
            r"sampler \(DistributedSampler\).*use_distributed_sampler=False",
        ),
        (
            lambda a: tz.ZarrDataset({"x": a, "y": 3}),
            ArgumentTypeError,
            "member 'y' is <class 'int'>",
        ),
        (  # another library's Array: named by its module, not as if it were ours
            lambda a: tz.ZarrDataset({"x": zarr.create_array({}, shape=(2,), dtype="i8")}),
            ArgumentTypeError,
            r"member 'x' is <class 'zarr\.core\.array\.Array'>, not a torchzarr Array",
        ),
        (lambda a: tz.ZarrDataset({}), InvalidArgumentError, "holds no arrays"),
        (
            lambda a: tz.ZarrDataset({"x": a, "y": a[:9]}),
            ArgumentTypeError,
            "member 'y' is <class 'torch.Tensor'>",
        ),
        (
            lambda a: tz.data.DevicePrefetcher([], "toaster:0"),
            InvalidArgumentError,
            "no device 'toaster:0'",
        ),
    ],
)
def test_bad_dataset_arguments_raise_torchzarr_errors(rows, make, error, message):
    with pytest.raises(error, match=message):
        make(rows)


def test_arrays_of_other_lengths_are_a_shape_mismatch(rows):
    short = tz.create_array("memory://", shape=(9,), dtype=torch.int64)
    with pytest.raises(ShapeMismatchError, match=r"'y': \(9,\)"):
        tz.ZarrDataset({"x": rows, "y": short})


@pytest.mark.parametrize("new_length", [6, 14])
def test_reading_an_array_resized_after_the_dataset_was_built_is_a_shape_mismatch(new_length):
    from torch.utils.data import DataLoader

    def build():
        arr = tz.create_array("memory://", data=torch.arange(40), chunks=(4,))
        return arr, (
            tz.ZarrDataset(arr),
            tz.ZarrDataset(arr, cache=True),
            tz.ZarrIterableDataset(arr, batch_size=8, shuffle=False),
            tz.ZarrIterableDataset(arr, batch_size=8),
        )

    arr, datasets = build()
    arr.resize((new_length,))
    message = rf"array / .* was resized .*: its length changed from 40 to {new_length}; rebuild"
    for ds in datasets:
        with pytest.raises(ShapeMismatchError, match=message):
            ds[3] if isinstance(ds, tz.ZarrDataset) else list(ds)
    mapped, streamed = datasets[0], datasets[2]
    with pytest.raises(ShapeMismatchError, match=message):
        list(DataLoader(mapped, batch_size=8))
    with pytest.raises(ShapeMismatchError, match=message):  # raised in the worker, passed on
        list(DataLoader(streamed, batch_size=None, num_workers=1))
    group = tz.open_group("memory://", mode="w")
    x = group.create_array("x", data=torch.zeros(40, 2))
    ds = tz.ZarrDataset({"x": x, "y": group.create_array("y", data=torch.arange(40))})
    x.resize((40, 3))
    with pytest.raises(
        ShapeMismatchError, match=r"/x .*\(member 'x'\).*from \(40, 2\) to \(40, 3\)"
    ):
        ds[0]


@pytest.mark.parametrize("new_length", [8, 24])
def test_persistent_workers_refuse_an_array_resized_between_epochs(tmp_path, new_length):
    """Their copies of the handle, made when they started, cannot show the resize."""
    from torch.utils.data import DataLoader

    arr = tz.create_array(str(tmp_path / "a.zarr"), data=torch.arange(1, 21), chunks=(4,))
    cached = tz.ZarrDataset(arr, cache=True)
    common = {"num_workers": 1, "persistent_workers": True}
    loaders = [
        DataLoader(
            tz.ZarrIterableDataset(arr, batch_size=5, shuffle=False), batch_size=None, **common
        ),
        DataLoader(tz.ZarrDataset(arr), batch_size=5, **common),
        DataLoader(cached, batch_sampler=tz.ChunkBlockSampler(cached, 5, shuffle=False), **common),
    ]
    for loader in loaders:
        assert torch.cat(list(loader)).tolist() == list(range(1, 21))
    arr.resize((new_length,))  # through the very handle the datasets were given
    message = rf"array / .* was resized .*: its length changed from 20 to {new_length}; rebuild"
    if new_length > 20:  # the iterable workers' stored-shape check lets appended rows be
        assert torch.cat(list(loaders.pop(0))).tolist() == list(range(1, 21))
    for loader in loaders:
        with pytest.raises(ShapeMismatchError, match=message):
            list(loader)  # not rows 9 to 20 read as the fill value 0


def test_an_iterable_pass_checks_the_stored_shape_whatever_handle_resized_it(tmp_path):
    path = str(tmp_path / "a.zarr")
    ds = tz.ZarrIterableDataset(tz.create_array(path, data=torch.arange(20), chunks=(4,)))
    other = tz.open_array(path, mode="r+")
    other.append(torch.arange(20, 24))  # rows appended: the 20 read are all still there
    assert sorted(torch.cat([b.reshape(-1) for b in ds]).tolist()) == list(range(20))
    other.resize((12,))  # another handle
    with pytest.raises(ShapeMismatchError, match="its length changed from 20 to 12"):
        iter(ds)


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_a_group_whose_consolidated_metadata_went_stale_after_an_append_still_trains(
    tmp_path, zarr_format
):
    """zarr-python's usual workflow: consolidate, then append without consolidating again."""
    group = zarr.open_group(str(tmp_path), mode="w", zarr_format=zarr_format)
    x = group.create_array("x", shape=(100, 4), chunks=(10, 4), dtype="f4")
    x[:] = np.arange(400, dtype="f4").reshape(100, 4)
    zarr.consolidate_metadata(str(tmp_path))
    x.append(np.zeros((20, 4), "f4"))
    ds = tz.ZarrIterableDataset(tz.open_group(str(tmp_path), mode="r"), batch_size=10)
    for _ in range(2):  # every pass
        assert sum(len(batch["x"]) for batch in ds) == 100


def test_epochs_and_saved_states_are_checked(rows):
    ds = tz.ZarrIterableDataset(rows, batch_size=4)
    ds.set_epoch(np.int64(2))
    assert ds.state_dict()["epoch"] == 2
    with pytest.raises(InvalidArgumentError, match="epoch must be >= 0"):
        ds.set_epoch(-1)
    with pytest.raises(ArgumentTypeError, match="epoch must be an int"):
        ds.set_epoch("3")
    with pytest.raises(InvalidArgumentError, match="unsupported dataset state version"):
        ds.load_state_dict({"bogus": 1})
    # version 1 split batches over workers otherwise: taken only when one worker saved it
    saved = {**ds.state_at(3), "version": 1}
    ds.load_state_dict(saved)
    with pytest.raises(InvalidArgumentError, match="set_epoch"):
        ds.load_state_dict({**saved, "layout": [1, 2, 4, 0]})


@pytest.mark.parametrize(
    "call",
    [
        lambda: tz.config.set(threads=0),
        lambda: tz.config.set(no_such_setting=1),
        lambda: tz.open_array("memory://", mode="q"),
        lambda: tz.create_array("memory://", shape=(), dtype="int8").__len__(),
        lambda: tz.create_array("memory://", shape=(4,), dtype="int8").iter_chunks(parallel=0),
    ],
)
def test_settings_and_modes_raise_torchzarr_errors(call):
    with pytest.raises(TorchZarrError):
        result = call()
        if hasattr(result, "__next__"):
            next(result)


def test_states_from_another_order_or_malformed_are_refused(rows):
    ds = tz.ZarrIterableDataset(rows, batch_size=2, seed=3, block_chunks=2)
    good = ds.state_at(1)
    for key, value in (("seed", 4), ("block_chunks", 1), ("num_samples", 11)):
        with pytest.raises(InvalidArgumentError, match=f"saved with {key}={value}.*order would"):
            ds.load_state_dict({**good, key: value})
    with pytest.raises(InvalidArgumentError, match="neither rank steps nor worker steps"):
        ds.load_state_dict({**good, "steps": None})
    without_seed = {k: v for k, v in good.items() if k != "seed"}
    with pytest.raises(InvalidArgumentError, match=r"malformed dataset state.*'seed'"):
        ds.load_state_dict(without_seed)
    with pytest.raises(InvalidArgumentError, match="malformed dataset state"):
        ds.load_state_dict({**good, "remaining": [[0]]})
    with pytest.raises(ArgumentTypeError, match="epoch must be an int"):
        ds.load_state_dict({**good, "epoch": "1"})
    with pytest.raises(ArgumentTypeError, match="a dataset state is a dict, got list"):
        ds.load_state_dict([good])
    ds.load_state_dict(good)  # the refusals left nothing half-loaded
    assert len(list(ds)) == 4  # 5 batches of 2 in the epoch, 1 already trained on


def test_a_worker_state_resumes_only_under_its_own_layout(rows):
    ds = tz.ZarrIterableDataset(rows, batch_size=2)
    two_workers = {**ds.state_at(0), "worker": 0, "worker_steps": 0, "steps": None}
    two_workers["layout"] = [1, 2, 2, 0]  # saved by worker 0 of 2
    ds.load_state_dict(two_workers)
    with pytest.raises(InvalidArgumentError, match=r"cannot resume under \[1, 1, 2, 0\]"):
        list(ds)  # no workers here
    sampler = tz.ChunkBlockSampler(tz.ZarrDataset(rows), batch_size=2)
    sampler.load_state_dict({**sampler.state_dict(), "worker": 0, "worker_steps": 0})
    with pytest.raises(InvalidArgumentError, match="state of one DataLoader worker"):
        list(sampler)


def test_settings_assigned_directly_are_checked_and_misspelt_ones_refused():
    before = tz.config.threads
    with pytest.raises(InvalidArgumentError, match="'threads' must be a positive int"):
        tz.config.threads = -1
    with pytest.raises(ArgumentTypeError, match="unknown torchzarr setting 'thread'"):
        tz.config.thread = 3
    assert tz.config.threads == before and not hasattr(tz.config, "thread")
    tz.config.threads = before  # a valid value is taken
    with tz.config.set(timeout=None):  # None where a setting allows it
        assert tz.config.timeout is None


def test_caches_and_progress_arguments_are_checked(rows):
    with pytest.raises(ArgumentTypeError, match="cache must be a ChunkCache or None, got 'big'"):
        rows.with_cache("big")
    with pytest.raises(ArgumentTypeError, match="progress must be True, False, None"):
        next(rows.iter_chunks(progress="yes"))
    seen = []
    assert sum(1 for _ in rows.iter_chunks(progress=lambda d, t: seen.append(d))) == 3
    assert seen == [1, 2, 3]


def test_state_at_and_loaded_states_take_only_whole_steps(rows):
    ds = tz.ZarrIterableDataset(rows, batch_size=2)
    sampler = tz.ChunkBlockSampler(tz.ZarrDataset(rows), batch_size=2)
    for source in (ds, sampler):
        with pytest.raises(InvalidArgumentError, match="steps must be >= 0, got -1"):
            source.state_at(-1)
        with pytest.raises(ArgumentTypeError, match=r"steps must be an int, got 2\.7"):
            source.state_at(2.7)
        assert source.state_at(np.int64(2))["steps"] == 2
        good = source.state_at(1)
        with pytest.raises(InvalidArgumentError, match="steps must be >= 0, got -1"):
            source.load_state_dict({**good, "steps": -1})
        worker = {**good, "steps": None, "worker": 0, "worker_steps": -2}
        with pytest.raises(InvalidArgumentError, match="worker_steps must be >= 0, got -2"):
            source.load_state_dict(worker)
        with pytest.raises(ArgumentTypeError, match="steps must be an int"):
            source.load_state_dict({**good, "steps": 1.5})
        source.load_state_dict(good)
        assert len(list(source)) == 4  # the rest of the epoch after 1 step
    with pytest.raises(InvalidArgumentError, match="num_workers must be >= 0, got -1"):
        ds.state_at(1, num_workers=-1)
    with pytest.raises(ArgumentTypeError, match=r"num_workers must be an int, got 1\.5"):
        ds.state_at(1, num_workers=1.5)


def test_a_group_that_does_not_fit_is_told_to_pass_a_dict_of_its_arrays():
    group = tz.open_group("memory://", mode="w")
    group["x"] = torch.zeros(8, 3)
    group["scale"] = torch.tensor(1.5)  # an xarray group's scalar
    with pytest.raises(tz.errors.InvalidArgumentError, match="pass a dict of the arrays"):
        tz.ZarrDataset(group)
    del group["scale"]
    group["f"] = torch.zeros(3)  # a coordinate of another dimension
    with pytest.raises(ShapeMismatchError, match="pass a dict of the arrays"):
        tz.ZarrIterableDataset(group)
    assert len(tz.ZarrDataset({"x": group["x"]})) == 8


def test_a_0d_member_of_a_dict_is_named_by_its_key():
    x = tz.create_array("memory://", shape=(10,), dtype=torch.int64)
    scale = tz.create_array("memory://", shape=(), dtype=torch.float32)
    with pytest.raises(InvalidArgumentError, match=r"member 'scale' of the dict .* out of the"):
        tz.ZarrDataset({"x": x, "scale": scale})
    with pytest.raises(InvalidArgumentError, match="array / is 0-d") as err:
        tz.ZarrIterableDataset(scale)
    assert "dict" not in str(err.value)


@pytest.mark.parametrize("rank", [1.5, True, "1"])
def test_a_rank_or_world_size_that_is_no_int_is_refused(rows, rank):
    with pytest.raises(ArgumentTypeError, match="rank must be an int"):
        tz.ZarrIterableDataset(rows, rank=rank, world_size=2).num_items()
    with pytest.raises(ArgumentTypeError, match="world_size must be an int"):
        tz.ZarrIterableDataset(rows, rank=0, world_size=2.5).num_items()
    with pytest.raises(ArgumentTypeError, match="rank must be an int"):
        list(tz.ChunkBlockSampler(tz.ZarrDataset(rows), batch_size=4, rank=rank, world_size=2))
    ids = list(tz.ZarrIterableDataset(rows, rank=np.int64(1), world_size=2))
    assert len(ids) == 5  # numpy ints count as ints


@pytest.mark.parametrize("bad", [0, 1, "", "no", None])
def test_pin_memory_is_true_or_false_wherever_it_is_taken(rows, bad):
    for flag in (np.False_, np.True_, False, True):  # numpy's bools are bools
        assert torch.equal(rows.read(pin_memory=flag), rows[:])
    features = tz.FeatureStore("memory://", mode="w")
    features.write([1], {"x": torch.tensor([2.0])})
    calls = [
        lambda: rows.read(pin_memory=bad),
        lambda: tz.ZarrIterableDataset(rows, pin_memory=bad),
        lambda: PinnedRing({"x": ((), torch.float32)}, 2, pin_memory=bad),
        lambda: features.read([1], pin_memory=bad),
        lambda: features.prefetch([1], pin_memory=bad),
    ]
    for call in calls:  # "no" would be read as True, 0 hides a mistaken argument
        with pytest.raises(ArgumentTypeError, match=r"pin_memory.* must be True or False"):
            call()


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (
            lambda a: tz.ZarrDataset(a, transform=3),
            ArgumentTypeError,
            "transform must be a callable",
        ),
        (
            lambda a: tz.ZarrIterableDataset(a, transform="x"),
            ArgumentTypeError,
            "transform must be a callable",
        ),
        (
            lambda a: tz.ZarrIterableDataset(a, block_chunks=2**70),
            InvalidArgumentError,
            "block_chunks must be <= 9223372036854775807",
        ),
        (
            lambda a: tz.ChunkBlockSampler(tz.ZarrDataset(a), batch_size=4, block_chunks=2**70),
            InvalidArgumentError,
            "block_chunks must be <= 9223372036854775807",
        ),
        (
            lambda a: tz.data.DevicePrefetcher(3, "cpu"),
            ArgumentTypeError,
            "loader must be an iterable of batches",
        ),
        (
            lambda a: tz.data.DevicePrefetcher(torch.tensor(3), "cpu"),
            ArgumentTypeError,
            "loader must be an iterable of batches",
        ),
        (
            lambda a: tz.data.DevicePrefetcher(np.int64(3), "cpu"),
            ArgumentTypeError,
            "loader must be an iterable of batches",
        ),
        (lambda a: tz.data.DevicePrefetcher([], 2**70), InvalidArgumentError, "no device"),
        pytest.param(
            lambda a: tz.data.DevicePrefetcher([], "mps"),
            InvalidArgumentError,
            "device 'mps' is not available here",  # was torch's raw error at the first batch
            marks=pytest.mark.skipif(torch.backends.mps.is_available(), reason="has mps"),
        ),
        (lambda a: tz.data.DevicePrefetcher([], "hpu"), InvalidArgumentError, "not available"),
        (lambda a: tz.data.DevicePrefetcher([], 1.5), ArgumentTypeError, "device must be a str"),
    ],
)
def test_callbacks_block_sizes_and_loaders_are_checked_when_made(rows, make, error, message):
    with pytest.raises(error, match=message):
        make(rows)


def test_datasets_and_samplers_take_the_same_epochs_and_block_sizes(rows):
    top = 2**63 - 1  # what an epoch handed to persistent workers (an int64) holds
    ds = tz.ZarrIterableDataset(rows, batch_size=4)
    sampler = tz.ChunkBlockSampler(tz.ZarrDataset(rows), batch_size=4)
    for source in (ds, sampler):
        source.set_epoch(top)
        assert len(list(source)) == 3
        with pytest.raises(InvalidArgumentError, match="epoch must be <= 9223372036854775807"):
            source.set_epoch(top + 1)
        with pytest.raises(InvalidArgumentError, match="epoch must be <= 9223372036854775807"):
            source.load_state_dict({**source.state_dict(), "epoch": top + 1})
        assert source.epoch == top
    whole = tz.ZarrIterableDataset(rows, batch_size=4, block_chunks=top)
    assert sorted(int(v) for batch in whole for v in batch[:, 0]) == list(range(0, 30, 3))
    blocks = tz.ChunkBlockSampler(tz.ZarrDataset(rows), batch_size=4, block_chunks=top)
    assert sorted(i for batch in blocks for i in batch) == list(range(10))
