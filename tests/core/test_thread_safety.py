"""Threads of one process: reads of sharded arrays that overlap a rewrite, and metadata
changes (attributes, resizes, consolidated entries) that overlap each other."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

import torchzarr as tz
from torchzarr.core import array as array_module
from torchzarr.core import nodes, shards
from torchzarr.core.engine import run_parallel
from torchzarr.core.shard_pieces import PieceFetcher
from torchzarr.errors import ChunkDecodeError, NodeExistsError

# -- reads of a shard that a write replaces ---------------------------------------------------


def _versions() -> tuple[np.ndarray, np.ndarray]:
    """Two contents of a 64-element shard of 4-element inner chunks whose inner chunks lie
    at other offsets: the old one's first two and last six are fill (not stored)."""
    old = np.zeros(64, np.int32)
    old[8:40] = 1
    new = np.full(64, 2, np.int32)
    new[8:12] = 0
    return old, new


def _sharded(compressors, cached: bool = False) -> tz.Array:
    arr = tz.create_array(
        "memory://",
        shape=(64,),
        dtype="int32",
        chunks=(4,),
        shards=(64,),
        compressors=compressors,
        fill_value=0,
    )
    return arr.with_cache(tz.ChunkCache(1 << 20)) if cached else arr


def _once_before_pieces(monkeypatch, action) -> list[int]:
    """Run ``action`` when the next read has fetched its shard indexes and is about to
    fetch the inner chunks; returns the list the fetches are counted in."""
    fetch = PieceFetcher.fetch
    calls: list[int] = []

    def hooked(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            action()
        return fetch(self, *args, **kwargs)

    monkeypatch.setattr(PieceFetcher, "fetch", hooked)
    return calls


@pytest.mark.parametrize("cached", [False, True], ids=["uncached", "cached"])
@pytest.mark.parametrize("compressors", [None, "zstd"], ids=["raw", "zstd"])
def test_a_partial_read_overlapping_a_rewrite_reads_the_new_shard_again(
    monkeypatch, compressors, cached
):
    old, new = _versions()
    arr = _sharded(compressors, cached)
    arr[:] = torch.from_numpy(old)

    def rewrite() -> None:
        arr[:] = torch.from_numpy(new)

    calls = _once_before_pieces(monkeypatch, rewrite)
    got = arr[8:40].numpy()  # index of the old shard, then the pieces: read again
    np.testing.assert_array_equal(got, new[8:40])
    assert len(calls) == 2
    np.testing.assert_array_equal(arr[8:40].numpy(), new[8:40])  # nothing torn was cached


def test_a_row_gather_overlapping_a_rewrite_reads_the_new_shard_again(monkeypatch):
    old, new = _versions()
    arr = _sharded(None)
    arr[:] = torch.from_numpy(old)
    reader = arr._source.shard_reader
    _once_before_pieces(monkeypatch, lambda: arr.__setitem__(slice(None), torch.from_numpy(new)))
    out = np.empty(4, np.int32)
    assert reader.gather_rows(np.array([9, 20, 30, 39]), out, run_parallel)
    assert out.tolist() == new[[9, 20, 30, 39]].tolist()


@pytest.mark.parametrize("cached", [False, True], ids=["uncached", "cached"])
def test_a_read_that_overlaps_the_end_of_a_write_waits_for_it(monkeypatch, cached):
    """The shard is replaced after the read fetched its index, but the write has not
    finished (so has not told the readers yet) when the read checks what it got."""
    old, new = _versions()
    arr = _sharded(None, cached)
    arr[:] = torch.from_numpy(old)
    store = arr.store
    replaced, finish = threading.Event(), threading.Event()
    set_many = store.set_many

    def slow_set_many(items):
        set_many(items)
        if threading.current_thread() is writer:
            replaced.set()
            finish.wait(timeout=30)

    monkeypatch.setattr(store, "set_many", slow_set_many)
    writer = threading.Thread(target=arr.__setitem__, args=(slice(None), torch.from_numpy(new)))

    def start_writer() -> None:
        writer.start()
        replaced.wait(timeout=30)

    _once_before_pieces(monkeypatch, start_writer)
    quiet = shards._quiet
    cached_when_torn: list[int] = []

    def quiet_once_the_write_may_end(identity):
        if arr.cache is not None:
            cached_when_torn.append(len(arr.cache))
        finish.set()  # the read holds further writes off and waits for this one
        return quiet(identity)

    monkeypatch.setattr(shards, "_quiet", quiet_once_the_write_may_end)
    try:
        got = arr[8:40].numpy()
    finally:
        finish.set()
        writer.join(timeout=30)
    np.testing.assert_array_equal(got, new[8:40])
    assert cached_when_torn == ([0] if cached else [])  # what it read first was not kept


def test_a_damaged_shard_raises_at_once_when_no_write_overlapped(monkeypatch):
    arr = _sharded("zstd")
    arr[:] = torch.arange(64, dtype=torch.int32)
    key = "c/0"
    data = bytearray(arr.store.get(key))
    data[:16] = b"\xff" * 16  # the first inner chunk's frame
    arr.store.set(key, bytes(data))
    calls = _once_before_pieces(monkeypatch, lambda: None)
    with pytest.raises(ChunkDecodeError):
        arr[0:8]
    assert len(calls) == 1


def test_a_write_in_progress_is_seen_by_readers_of_any_array_object(monkeypatch):
    arr = _sharded(None)
    other = tz.open_array(arr.store, mode="r")
    identity = other._source.shard_reader._identity
    seen: list[int | None] = []
    set_many = arr.store.set_many

    def spying(items):
        seen.append(shards._stamp(identity))
        set_many(items)

    monkeypatch.setattr(arr.store, "set_many", spying)
    before = shards._writes_to(identity)
    arr[:] = 1
    assert seen == [None]  # in progress while the shard is replaced
    assert shards._stamp(identity) == shards._writes_to(identity) > before + 1


# -- metadata changes that overlap -------------------------------------------------------------


def _interleaved(monkeypatch, store, key: str, first, second) -> None:
    """Run ``first`` here; when it is about to write ``key`` (having read what it changes),
    run ``second`` on another thread until it is done or waits for a node lock."""
    reached = threading.Event()
    errors: list[BaseException] = []

    def run_second() -> None:
        try:
            second()
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)
        finally:
            reached.set()

    other = threading.Thread(target=run_second)
    node_lock = nodes.node_lock

    def spy(*args, **kwargs):
        if threading.current_thread() is other:
            reached.set()
        return node_lock(*args, **kwargs)

    monkeypatch.setattr(nodes, "node_lock", spy)
    monkeypatch.setattr(array_module, "node_lock", spy)
    set_many, set_one = store.set_many, store.set
    here = threading.current_thread()

    def pause(keys):
        if key in keys and threading.current_thread() is here and other.ident is None:
            other.start()
            reached.wait(timeout=30)

    def hooked(items):
        pause(items)
        return set_many(items)

    def hooked_one(name, value):
        pause([name])
        return set_one(name, value)

    monkeypatch.setattr(store, "set_many", hooked)
    monkeypatch.setattr(store, "set", hooked_one)
    first()
    assert other.ident is not None, f"{key} was not written"
    other.join(timeout=30)
    assert not errors


@pytest.mark.parametrize("zarr_format", [2, 3])
@pytest.mark.parametrize("through", ["same", "another"])
@pytest.mark.parametrize("kind", ["array", "group"])
def test_concurrent_attribute_changes_of_one_node_keep_every_key(
    monkeypatch, kind, through, zarr_format
):
    if kind == "array":
        node: tz.Array | tz.Group = tz.create_array(
            "memory://", shape=(4,), dtype="int32", attributes={"a": 0}, zarr_format=zarr_format
        )
    else:
        node = tz.open_group("memory://", mode="w", zarr_format=zarr_format)
        node.attrs["a"] = 0
    second = node if through == "same" else tz.open(node.store, mode="r+")

    def first() -> None:
        node.attrs["k1"] = 1

    def then() -> None:
        second.attrs.update(k2=2)

    key = "zarr.json" if zarr_format == 3 else ".zattrs"
    _interleaved(monkeypatch, node.store, key, first, then)
    assert dict(tz.open(node.store, mode="r").attrs) == {"a": 0, "k1": 1, "k2": 2}


def test_a_resize_keeps_attributes_set_through_another_array_object(monkeypatch):
    arr = tz.create_array("memory://", shape=(4,), dtype="int32")
    other = tz.open_array(arr.store, mode="r+")

    def then() -> None:
        del other.attrs["gone"]

    arr.attrs["gone"] = 1
    _interleaved(monkeypatch, arr.store, "zarr.json", lambda: arr.resize(10), then)
    stored = tz.open_array(arr.store, mode="r")
    assert stored.shape == (10,) and dict(stored.attrs) == {}
    assert dict(other.attrs) == {} and other.shape == (10,)


def _consolidated_group(zarr_format: int) -> tz.Group:
    g = tz.open_group("memory://", mode="w", zarr_format=zarr_format)
    for name in ("a0", "a1"):
        g.create_array(name, shape=(4,), dtype="int32", chunks=(4,))
    tz.consolidate_metadata(g.store)
    return tz.open_group(g.store, mode="a")


def _consolidated_view(g: tz.Group) -> tz.Group:
    view = tz.open_group(g.store, mode="r")
    assert view._consolidated is not None
    return view


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_concurrent_changes_below_a_consolidated_group_keep_every_entry(monkeypatch, zarr_format):
    g = _consolidated_group(zarr_format)
    a0 = g["a0"]
    root_key = "zarr.json" if zarr_format == 3 else ".zmetadata"

    def then() -> None:
        g.create_array("new", shape=(3,), dtype="int32")

    _interleaved(monkeypatch, g.store, root_key, lambda: a0.resize(10), then)
    view = _consolidated_view(g)
    assert sorted(view) == ["a0", "a1", "new"]
    assert view["a0"].shape == (10,)


def test_a_group_attribute_change_keeps_a_concurrent_consolidated_refresh(monkeypatch):
    g = _consolidated_group(3)
    a1 = g["a1"]

    def first() -> None:
        g.attrs["x"] = 1

    _interleaved(monkeypatch, g.store, "zarr.json", first, lambda: a1.resize(7))
    view = _consolidated_view(g)
    assert view["a1"].shape == (7,) and dict(view.attrs) == {"x": 1}


def test_many_threads_changing_a_consolidated_hierarchy_lose_nothing():
    g = _consolidated_group(3)
    start = threading.Barrier(4)

    def work(i: int) -> None:
        start.wait()
        g.create_array(f"new{i}", shape=(3,), dtype="int32")
        child = g["a0"] if i % 2 else g["a1"]
        child.attrs[f"k{i}"] = i
        g.attrs[f"g{i}"] = i

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    view = _consolidated_view(g)
    assert sorted(view) == ["a0", "a1", "new0", "new1", "new2", "new3"]
    assert dict(view.attrs) == {f"g{i}": i for i in range(4)}
    assert dict(view["a0"].attrs) == {"k1": 1, "k3": 3}
    assert dict(view["a1"].attrs) == {"k0": 0, "k2": 2}


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_a_node_created_while_consolidating_is_kept(monkeypatch, zarr_format):
    g = _consolidated_group(zarr_format)
    root_key = "zarr.json" if zarr_format == 3 else ".zmetadata"

    def then() -> None:
        g.create_array("new", shape=(3,), dtype="int32")

    # consolidate_metadata has listed the members and is about to write them
    _interleaved(monkeypatch, g.store, root_key, lambda: tz.consolidate_metadata(g.store), then)
    assert sorted(_consolidated_view(g)) == ["a0", "a1", "new"]


def test_two_threads_creating_one_new_node_leave_one_winner(monkeypatch):
    g = tz.open_group("memory://", mode="w")
    outcome: list[str] = []

    def then() -> None:
        try:
            g.create_array("dup", shape=(2,), dtype="int8", fill_value=2)
            outcome.append("created")
        except NodeExistsError:
            outcome.append("refused")

    first = lambda: g.create_array("dup", shape=(3,), dtype="int8")  # noqa: E731
    _interleaved(monkeypatch, g.store, "dup/zarr.json", first, then)
    assert outcome == ["refused"] and tz.open_array(g.store, path="dup").shape == (3,)
