"""Batches from DataLoader workers through a shared ring per worker (copies or views)."""

from __future__ import annotations

import contextlib
import copy
import gc
import io
import os
import pickle
import sys
import threading
from collections import Counter, OrderedDict, UserDict, namedtuple
from dataclasses import dataclass
from multiprocessing.reduction import ForkingPickler
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from datahelpers import counts, ids_of
from torch.utils.data import DataLoader

import torchzarr as tz
from torchzarr.data import worker_ring
from torchzarr.data.worker_ring import RingTensor, WorkerRing, ring_slots
from torchzarr.errors import WorkerBatchError

pytestmark = pytest.mark.skipif(
    not hasattr(os, "memfd_create"), reason="shared rings need memfd (Linux)"
)


def _every_sample(batches, ds, batch_size: int = 8) -> None:
    """Each sample once (one rank: no padding), in as many batches as dealt."""
    if isinstance(batches[0], list):
        seen = Counter(i for b in batches for i in b)
    else:
        seen = counts(batches)
    assert seen == Counter(range(103))
    assert len(batches) == ds.num_items(num_workers=2) == len(ds)


def _check(batch) -> None:
    """Every row of a batch holds its own sample id in every column."""
    x = batch["x"] if isinstance(batch, dict) else batch
    assert type(x) is torch.Tensor  # rebuilt as a plain tensor in the main process
    assert torch.equal(x, x[:, :1].expand_as(x))


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_batches_kept_across_steps_stay_intact(local_array, method):
    worker_ring._mapped.clear()
    ds = tz.ZarrIterableDataset(local_array, batch_size=4, seed=1, block_chunks=2)
    loader = DataLoader(ds, batch_size=None, num_workers=2, multiprocessing_context=method)
    batches = list(loader)  # 26 kept: more than a ring's 8 slots, so some go the usual way
    _every_sample(batches, ds, batch_size=4)
    for batch in batches:
        _check(batch)
    assert worker_ring._mapped, "the workers' rings were not used"
    on_ring = [b for b in batches if any(_inside(b.data_ptr(), m[1]) for m in _rings())]
    assert 0 < len(on_ring) < len(batches)


def test_batches_are_views_of_the_ring_lent_until_freed(local_array):
    worker_ring._mapped.clear()
    ds = tz.ZarrIterableDataset(local_array, batch_size=8, seed=2, worker_buffers=3)
    seen: list = []
    for batch in DataLoader(ds, batch_size=None, num_workers=2, prefetch_factor=1):
        _check(batch)
        seen.append(ids_of(batch))
        assert any(_inside(batch.data_ptr(), m[1]) for m in _rings())
    _every_sample(seen, ds)


def _rings():
    return list(worker_ring._mapped.values())


def _inside(address: int, mapping) -> bool:
    import numpy as np

    low = np.frombuffer(mapping, np.uint8, count=1).ctypes.data
    return low <= address < low + len(mapping)


def test_dict_sources_transforms_and_collation(tmp_path):
    group = tz.open_group(str(tmp_path / "g.zarr"), mode="w")
    n = 50
    group.create_array("x", shape=(n, 4), dtype=torch.int64, chunks=(10, 4))[:] = (
        torch.arange(n).repeat_interleave(4).reshape(n, 4)
    )
    group.create_array("y", shape=(n,), dtype=torch.bfloat16, chunks=(10,))[:] = torch.arange(n)

    def transform(batch):  # views derived from the slot (tensor, numpy) and a new tensor
        x = batch["x"]
        return {"x": x[:, :2], "y": batch["y"].float(), "raw": x, "np": x[:, 0].numpy()}

    ds = tz.ZarrIterableDataset(group, batch_size=5, seed=0, transform=transform)
    batches = list(DataLoader(ds, batch_size=None, num_workers=2))
    assert sorted(v for b in batches for v in b["x"][:, 0].tolist()) == list(range(n))
    for b in batches:
        assert torch.equal(b["y"], b["x"][:, 0].float()) and torch.equal(b["raw"][:, :2], b["x"])
        assert b["np"].tolist() == b["x"][:, 0].tolist()
    # The DataLoader may also collate the dataset's batches (RingTensors are tensors there).
    plain = tz.ZarrIterableDataset(group, batch_size=5, seed=0, drop_last=True)
    stacked = list(DataLoader(plain, batch_size=2, num_workers=2))
    assert all(b["x"].shape[1:] == (5, 4) and type(b["x"]) is torch.Tensor for b in stacked)
    ids = sorted(v for b in stacked for v in b["x"][..., 0].reshape(-1).tolist())
    assert len(ids) == len(set(ids)) and set(ids) <= set(range(n))


def test_ring_tensor_is_a_tensor_in_the_worker():
    ring = WorkerRing({"x": ((3,), torch.float32)}, batch_size=4, slots=3)
    views = ring.next(4)
    views["x"].copy_(torch.arange(12.0).reshape(4, 3))
    batch = ring.wrap(views)
    assert isinstance(batch["x"], RingTensor) and type(batch["x"] * 2) is torch.Tensor
    assert batch["x"].data_ptr() == views["x"].data_ptr()
    assert torch.equal(batch["x"].sum(0), torch.tensor([18.0, 22.0, 26.0]))


def test_a_slot_rewritten_before_it_was_read_raises():
    worker_ring._mapped.clear()
    ring = WorkerRing({"x": ((2,), torch.int32)}, batch_size=2, slots=3)
    first = ForkingPickler.dumps(ring.wrap(ring.next(2)))
    ring._seqs[0] += 2  # as a worker ignoring the lease would
    with pytest.raises(WorkerBatchError, match="rewrote slot 0"):
        pickle.loads(first)


def test_a_batch_without_its_ring_raises():
    worker_ring._mapped.clear()
    ring = WorkerRing({"x": ((2,), torch.int32)}, batch_size=2, slots=3)
    ring._descriptor._mapped[0] = 1  # as if another process had mapped the ring: no descriptor
    later = ForkingPickler.dumps(ring.wrap(ring.next(2)))
    with pytest.raises(WorkerBatchError, match="never received"):
        pickle.loads(later)


def test_the_first_batch_pickled_carries_the_descriptor_whichever_it_is():
    worker_ring._mapped.clear()
    ring = WorkerRing({"x": ((2,), torch.int32), "y": ((), torch.int8)}, batch_size=2, slots=4)
    dropped = ring.wrap(ring.next(2))  # a wrapper skips the dataset's first batch
    views = ring.next(2)
    views["x"].copy_(torch.tensor([[1, 2], [3, 4]]))
    second, third = ring.wrap(views), ring.wrap(ring.next(2))
    sent = [ForkingPickler.dumps(b) for b in (third, second)]  # reordered, too
    got = [pickle.loads(payload) for payload in sent]
    assert got[1]["x"].tolist() == [[1, 2], [3, 4]] and got[0]["x"].shape == (2, 2)
    del dropped


def test_batches_pickled_but_never_sent_leave_the_descriptor_to_the_next():
    worker_ring._mapped.clear()
    ring = WorkerRing({"x": ((2,), torch.int32)}, batch_size=2, slots=3)
    views = ring.next(2)
    views["x"].copy_(torch.tensor([[1, 2], [3, 4]]))
    batch = ring.wrap(views)
    pickle.dumps(batch)  # a wrapper measuring or hashing the batch in the worker
    torch.save(batch, io.BytesIO())
    assert pickle.loads(ForkingPickler.dumps(batch))["x"].tolist() == [[1, 2], [3, 4]]
    # rebuilt by the worker itself (a copy it made): the main process still needs the ring
    assert ring._descriptor._mapped[0] == 0
    os.close(ring._descriptor.attach().detach())  # still attached (and fetched here)


class _PickleEach(torch.utils.data.IterableDataset):
    """A wrapper that pickles each batch in the worker before yielding it, then yields how
    many descriptors of its ring the worker has open (the ring's own, and duplicates kept
    for receivers that never fetched them)."""

    def __init__(self, ds, how: str) -> None:
        self.ds, self.how = ds, how

    def __iter__(self):
        for batch in self.ds:
            if self.how == "pickle":
                pickle.dumps(batch)
            else:
                torch.save(batch, io.BytesIO())
            yield batch
        yield {"ring_fds": sum("torchzarr-batches" in link for link in _fd_links())}


def _fd_links() -> list[str]:
    links = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(FileNotFoundError):  # the listing's own, closed since
            links.append(os.readlink(f"/proc/self/fd/{fd}"))
    return links


@pytest.mark.skipif(sys.platform != "linux", reason="fork")
@pytest.mark.parametrize("how", ["pickle", "torch.save"])
def test_a_wrapper_pickling_each_batch_in_the_worker(local_array, how):
    worker_ring._mapped.clear()
    ds = tz.ZarrIterableDataset(local_array, batch_size=4, seed=6)
    wrapped = _PickleEach(ds, how)
    loader = DataLoader(wrapped, batch_size=None, num_workers=2, multiprocessing_context="fork")
    items = list(loader)
    batches = [b for b in items if not isinstance(b, dict)]
    _every_sample(batches, ds, batch_size=4)
    assert worker_ring._mapped, "the rings were not used"
    for batch in batches:
        _check(batch)
    # a duplicate per batch pickled before the ring was mapped (at most prefetch_factor 2
    # and one), not per batch (13 a worker): once mapped, the worker attaches no descriptor
    assert [1 <= item["ring_fds"] <= 4 for item in items if isinstance(item, dict)] == [True] * 2


class _SkipFirst(torch.utils.data.IterableDataset):
    """A wrapper that drops the first batch of the dataset it wraps (a warm-up, a filter)."""

    def __init__(self, ds) -> None:
        self.ds = ds

    def __iter__(self):
        it = iter(self.ds)
        next(it)
        return it


def test_a_wrapper_dropping_the_first_batch_of_each_worker(local_array):
    worker_ring._mapped.clear()
    ds = tz.ZarrIterableDataset(local_array, batch_size=8, seed=3)
    batches = list(DataLoader(_SkipFirst(ds), batch_size=None, num_workers=2))
    assert len(batches) == 13 - 2 and worker_ring._mapped, "the rings were not used"
    for batch in batches:
        _check(batch)


def test_a_slot_is_lent_until_every_tensor_on_it_is_freed():
    worker_ring._mapped.clear()
    ring = WorkerRing({"x": ((2,), torch.int16), "y": ((), torch.int64)}, batch_size=3, slots=3)
    received = []
    for i in range(3):
        views = ring.next(3)
        views["x"].fill_(i)
        views["y"].fill_(10 + i)
        received.append(pickle.loads(ForkingPickler.dumps(ring.wrap(views))))
    assert ring.next(3) is None  # all three slots lent
    part = received[1]["x"][1:]  # a view keeps the batch's slot lent
    del received[1]
    gc.collect()
    assert ring.next(3) is None
    y = received[0]["y"]
    del received[0], part
    gc.collect()
    views = ring.next(3)  # slot 1 came back first; slot 0 still has y on it
    assert views is not None and ring._current[0] == 1
    assert y.tolist() == [10, 10, 10] and type(y) is torch.Tensor
    assert received[0]["x"].tolist() == [[2, 2]] * 3
    ring.wrap({"other": torch.zeros(1)})  # nothing of the slot sent: free once unheld here
    assert ring.next(3) is None  # ... but `views` still holds slot 1 in this process
    del views
    assert ring.next(3) is not None


def test_ring_sizes_and_fallbacks(local_array, monkeypatch):
    assert ring_slots(1 << 20) == 8
    assert ring_slots(16 << 20) == 4  # budget-bound
    assert ring_slots(32 << 20) == 0  # too big: the DataLoader's usual way
    with pytest.raises(ValueError, match="at least 3"):
        WorkerRing({"x": ((1,), torch.int8)}, batch_size=1, slots=2)
    monkeypatch.delattr(os, "memfd_create")
    assert WorkerRing.create({"x": ((1,), torch.int8)}, 4, 5) is None


@pytest.mark.skipif(sys.platform != "linux", reason="fork")
def test_without_a_ring_batches_still_arrive(local_array, monkeypatch):
    monkeypatch.setattr(worker_ring, "DEFAULT_RING_BYTES", 1)  # inherited by forked workers
    monkeypatch.setattr(worker_ring.ring_slots, "__defaults__", (1,))
    worker_ring._mapped.clear()
    ds = tz.ZarrIterableDataset(local_array, batch_size=8, seed=5)
    batches = list(DataLoader(ds, batch_size=None, num_workers=2, multiprocessing_context="fork"))
    _every_sample(batches, ds)
    assert not worker_ring._mapped
    for batch in batches:
        _check(batch)


def test_a_slot_whose_batch_was_never_wrapped_comes_back():
    ring = WorkerRing({"x": ((1,), torch.int8)}, batch_size=2, slots=3)
    ring.next(2)  # gathering failed: wrap never called for it
    for _ in range(6):  # every slot stays usable, the abandoned one included
        assert ring.next(2) is not None
        ring.wrap({"other": torch.zeros(1)})
    assert all(ring._seqs % 2 == 0) and (ring._seqs == ring._released).all()


def test_forked_workers_use_their_own_ring_after_a_pinned_pass(local_array):
    ds = tz.ZarrIterableDataset(local_array, batch_size=8, seed=4, pin_memory=True)
    assert len(list(ds)) == 13  # the main process made its pinned ring
    worker_ring._mapped.clear()
    batches = list(DataLoader(ds, batch_size=None, num_workers=2, multiprocessing_context="fork"))
    _every_sample(batches, ds)
    assert worker_ring._mapped, "the forked workers kept the parent's pinned ring"


@dataclass
class _Box:
    x: torch.Tensor
    head: torch.Tensor


class _Holder:
    """Any object: tensors in its attributes, not a container the ring knows."""

    def __init__(self, x) -> None:
        self.inner = {"deep": [x]}


class _Batch(dict):
    pass


class _Pair(tuple):
    pass


_Named = namedtuple("_Named", "x tag")


def _cycle_other_slots(ring: WorkerRing, times: int = 6) -> list[int]:
    """Gather and send batches of 0s, as a worker goes on; the slots it used."""
    used = []
    for _ in range(times):
        views = ring.next(2)
        if views is None:
            break
        used.append(ring._current[0])
        views["x"].fill_(0)
        ring.wrap({"other": torch.zeros(1)})
        del views
    return used


@pytest.mark.parametrize(
    ("make", "tensors_of", "on_ring"),
    [
        (lambda x: _Box(x, x[:, :1]), lambda b: [b.x, b.head], True),
        (lambda x: UserDict(x=x), lambda b: [b["x"]], True),
        (_Holder, lambda b: [b.inner["deep"][0]], True),
        (lambda x: {"a": [_Holder(x[:1])]}, lambda b: [b["a"][0].inner["deep"][0]], False),
    ],
    ids=["dataclass", "UserDict", "object", "nested-view"],
)
def test_ring_tensors_in_any_container_leave_before_the_slot_is_reused(make, tensors_of, on_ring):
    worker_ring._mapped.clear()
    ring = WorkerRing({"x": ((2,), torch.int64)}, batch_size=2, slots=3)
    views = ring.next(2)
    views["x"].fill_(7)
    item = ring.wrap(make(views["x"]))
    del views
    _cycle_other_slots(ring)  # the worker gathers on before the queue thread pickles item
    got = pickle.loads(ForkingPickler.dumps(item))
    assert type(got) is type(item)
    assert all(bool((t == 7).all()) for t in tensors_of(got))
    assert bool(worker_ring._mapped) == on_ring  # the slot's own tensor went as a RingTensor


def test_a_slot_stays_held_while_the_worker_refers_to_it():
    ring = WorkerRing({"x": ((2,), torch.int64)}, batch_size=2, slots=3)
    views = ring.next(2)
    views["x"].fill_(5)
    kept = views["x"][1:]  # a transform keeping a view for later
    ring.wrap({"other": torch.zeros(1)})
    del views
    assert 0 not in _cycle_other_slots(ring)
    assert ring.next(2) is not None
    later = ring.wrap(kept)  # sent with a later batch: copied out
    assert type(later) is torch.Tensor and later.tolist() == [[5, 5]]
    del kept, later
    assert 0 in _cycle_other_slots(ring)


def test_an_item_that_cannot_be_pickled_keeps_its_slot_for_good():
    ring = WorkerRing({"x": ((2,), torch.int64)}, batch_size=2, slots=3)
    views = ring.next(2)
    item = ring.wrap({"x": views["x"], "f": lambda: 0})
    assert item["x"] is views["x"]  # left as it was: the DataLoader reports it
    del views, item
    assert 0 not in _cycle_other_slots(ring, times=9)


def _containers(batch):
    return {
        "batch": _Batch(x=batch, head=batch[:, :1]),
        "ordered": OrderedDict(x=batch),
        "pair": _Pair((batch, 1)),
        "named": _Named(batch, "t"),
        "box": _Box(batch, batch[:, 0].clone()),
    }


def _types(item) -> dict[str, type]:
    return {k: type(v) for k, v in item.items()}


def test_transform_container_types_survive_the_ring(memory_array):
    worker_ring._mapped.clear()
    ds = tz.ZarrIterableDataset(memory_array, batch_size=8, seed=0, transform=_containers)
    in_process = _types(next(iter(DataLoader(ds, batch_size=None))))
    batches = list(DataLoader(ds, batch_size=None, num_workers=2))
    assert worker_ring._mapped, "the workers' rings were not used"
    for b in batches:
        assert _types(b) == in_process  # (the DataLoader itself makes the _Pair a list)
        assert type(b["batch"]) is _Batch and type(b["ordered"]) is OrderedDict
        assert type(b["named"]) is _Named and b["named"].tag == "t" and type(b["box"]) is _Box
        for x in (b["batch"]["x"], b["ordered"]["x"], b["pair"][0], b["named"].x, b["box"].x):
            _check(x)
        assert torch.equal(b["batch"]["head"], b["batch"]["x"][:, :1])
    assert counts([b["named"].x for b in batches]) == Counter(range(103))
    ring = WorkerRing({"x": ((2,), torch.int64)}, batch_size=2, slots=3)
    item = ring.wrap(_containers(ring.next(2)["x"]))
    assert _types(item) == _types(_containers(torch.zeros(2, 2)))  # the tuple subclass too


class _Handle:
    """Holds a lock: plain pickle refuses it, a reducer registered for multiprocessing not."""

    def __init__(self) -> None:
        self.lock = threading.Lock()


ForkingPickler.register(_Handle, lambda handle: (_Handle, ()))


def test_objects_the_dataloader_can_send_leave_through_the_ring():
    ring = WorkerRing({"x": ((2,), torch.int64)}, batch_size=2, slots=3)
    views = ring.next(2)
    item = ring.wrap({"x": views["x"], "handle": _Handle(), "n": np.int64(3)})
    assert isinstance(item["x"], RingTensor)  # not given up on: the slot goes back
    assert type(item["handle"]) is _Handle and item["n"] == 3


class _Row:
    """Pickles its tensor as a numpy array made on the spot (a common __getstate__)."""

    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor = tensor

    def __getstate__(self):
        return self.tensor.numpy()

    def __setstate__(self, array) -> None:
        self.tensor = torch.from_numpy(array)


def test_arrays_made_while_pickling_are_each_copied_off_the_ring():
    ring = WorkerRing({"x": ((1,), torch.int64)}, batch_size=8, slots=3)
    x = ring.next(8)["x"]
    x.copy_(torch.arange(8).reshape(8, 1))
    item = ring.wrap(SimpleNamespace(rows=[_Row(x[i]) for i in range(8)]))
    got = pickle.loads(ForkingPickler.dumps(item))
    assert [int(row.tensor) for row in got.rows] == list(range(8))


def test_plain_namedtuples_are_walked_without_a_pickle_rebuild(monkeypatch):
    def no_rebuild(self, value):
        raise AssertionError("rebuilt through pickle")

    monkeypatch.setattr(worker_ring._Outgoing, "rebuild", no_rebuild)
    Pair = namedtuple("Pair", "x n")
    ring = WorkerRing({"x": ((2,), torch.int64)}, batch_size=2, slots=3)
    item = ring.wrap(Pair(ring.next(2)["x"], 1))
    assert type(item) is Pair and isinstance(item.x, RingTensor) and item.n == 1


def test_a_deep_copy_of_a_batch_in_the_worker_is_a_plain_tensor_of_its_own():
    ring = WorkerRing({"x": ((2,), torch.int32)}, batch_size=2, slots=3)
    views = ring.next(2)
    views["x"].copy_(torch.tensor([[1, 2], [3, 4]], dtype=torch.int32))
    batch = ring.wrap(views)
    copied = copy.deepcopy(batch)  # a wrapper keeping batches, as transforms sometimes do
    assert type(copied["x"]) is torch.Tensor and torch.equal(copied["x"], batch["x"])
    assert copied["x"].data_ptr() != batch["x"].data_ptr()
    twice = copy.deepcopy([batch["x"], batch["x"]])  # one copy for one tensor, as deepcopy does
    assert twice[0] is twice[1]
    shallow = copy.copy(batch["x"])
    assert type(shallow) is torch.Tensor and torch.equal(shallow, batch["x"])
    assert shallow.data_ptr() != batch["x"].data_ptr()
