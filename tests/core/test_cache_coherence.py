"""Caches never serve data older than a write made through any Array of the process."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

import torchzarr as tz
from torchzarr.core import engine
from torchzarr.core.cache import ChunkCache
from torchzarr.storage.locations import location


def test_put_after_an_invalidation_is_dropped():
    cache = ChunkCache(max_bytes=1 << 20)
    key = ("mem", "a", (0,))
    before = cache.generation
    cache.invalidate("mem", "a", [(0,)])  # a write finished while the chunk was being read
    cache.put(key, np.zeros(4), since=before)
    assert cache.get(key) is None
    cache.put(key, np.ones(4), since=cache.generation)
    assert cache.get(key) is not None


def test_a_cache_given_to_the_array_constructor_follows_writes():
    base = tz.create_array("memory://", shape=(8,), dtype=torch.int32, chunks=(4,))
    base[:] = 1
    arr = tz.Array(base.store, base.path, base.metadata, cache=ChunkCache())
    assert arr[:].tolist() == [1] * 8  # both chunks cached
    arr[:] = 2
    assert arr[:].tolist() == [2] * 8
    base[:4] = 3  # through another handle
    assert arr[:].tolist() == [3] * 4 + [2] * 4
    with pytest.raises(tz.errors.ArgumentTypeError, match="cache must be a ChunkCache"):
        tz.Array(base.store, base.path, base.metadata, cache="yes")


def test_reader_racing_writers_never_keeps_a_stale_chunk(tmp_path):
    arr = tz.create_array(tmp_path / "a.zarr", shape=(64,), dtype=torch.int64, chunks=(64,))
    cache = ChunkCache(max_bytes=1 << 20)
    reader = tz.open_array(tmp_path / "a.zarr", mode="r").with_cache(cache)
    stop = threading.Event()

    def read_forever() -> None:
        while not stop.is_set():
            reader[:]

    thread = threading.Thread(target=read_forever)
    thread.start()
    try:
        for value in range(1, 40):
            arr[:] = value
    finally:
        stop.set()
        thread.join()
    # whatever the interleaving, the cache now holds the last value or nothing
    assert torch.equal(reader[:], torch.full((64,), 39, dtype=torch.int64))


def test_read_only_shard_indexes_follow_writes_through_another_array(tmp_path):
    path = tmp_path / "s.zarr"
    writer = tz.create_array(path, shape=(16,), dtype=torch.int32, chunks=(2,), shards=(16,))
    writer[:] = torch.arange(16, dtype=torch.int32)
    reader = tz.open_array(path, mode="r")
    assert torch.equal(reader[2:6], torch.arange(2, 6, dtype=torch.int32))  # index cached
    # rewrite the shard so that its inner chunks move: some become fill (not stored)
    writer[:] = torch.zeros(16, dtype=torch.int32)
    writer[4:6] = torch.tensor([7, 8], dtype=torch.int32)
    assert torch.equal(reader[2:6], torch.tensor([0, 0, 7, 8], dtype=torch.int32))
    assert torch.equal(reader[:], writer[:])


def test_resize_drops_the_chunks_it_deletes_from_caches(tmp_path):
    arr = tz.create_array(tmp_path / "a.zarr", shape=(8,), dtype=torch.int32, chunks=(4,))
    arr[:] = torch.arange(1, 9, dtype=torch.int32)
    cache = ChunkCache(max_bytes=1 << 20)
    tz.open_array(tmp_path / "a.zarr").with_cache(cache)[:]  # both chunks cached
    arr.resize(2)  # chunk (1,) deleted, chunk (0,) cut
    arr.resize(8)
    expected = torch.tensor([1, 2, 0, 0, 0, 0, 0, 0], dtype=torch.int32)
    assert torch.equal(tz.open_array(tmp_path / "a.zarr").with_cache(cache)[:], expected)


def test_shrinking_a_sharded_array_to_a_shard_edge_drops_read_only_shard_indexes(tmp_path):
    path = tmp_path / "s.zarr"
    writer = tz.create_array(path, shape=(16,), dtype=torch.int32, chunks=(2,), shards=(8,))
    writer[:] = torch.arange(1, 17, dtype=torch.int32)
    reader = tz.open_array(path, mode="r")
    assert reader[9:11].tolist() == [10, 11]  # the index of shard (1,) is cached
    writer.resize(8)  # shard (1,) deleted, nothing rewritten
    writer.resize(16)
    assert reader[9:11].tolist() == [0, 0]


@pytest.mark.parametrize("how", ["overwrite", "mode_w", "del", "setitem"])
def test_replacing_a_node_drops_its_cached_chunks(tmp_path, how):
    root = tmp_path / "g.zarr"
    group = tz.open_group(root, mode="w")
    group.create_array("sub/x", shape=(8,), dtype=torch.int32, chunks=(4,), fill_value=0)[:] = 5
    cache = ChunkCache(max_bytes=1 << 20)
    assert tz.open_array(root, path="sub/x").with_cache(cache)[:].tolist() == [5] * 8
    new = {"shape": (8,), "dtype": torch.float64, "chunks": (4,), "fill_value": -1}
    if how == "overwrite":
        tz.create_array(root, path="sub/x", overwrite=True, **new)
    elif how == "mode_w":
        tz.open_array(root, path="sub/x", mode="w", **new)
    elif how == "del":
        del group["sub"]  # the parent: its whole subtree goes
        group.create_array("sub/x", **new)
    else:
        group["sub"] = torch.tensor([1.0])  # a group replaced by an array
        del group["sub"]
        group.create_array("sub/x", **new)
    assert tz.open_array(root, path="sub/x").with_cache(cache)[:].tolist() == [-1.0] * 8


def test_an_array_reached_through_its_group_or_its_own_directory_is_one_cache_entry(tmp_path):
    root = tmp_path / "g.zarr"
    group = tz.open_group(root, mode="w")
    group.require_group("sub")["x"] = torch.arange(4, dtype=torch.int32)
    group.require_group("sub").create_array(
        "s", shape=(16,), dtype=torch.int32, chunks=(2,), shards=(16,)
    )[:] = torch.arange(16, dtype=torch.int32)
    direct = tz.open_array(root / "sub" / "x").with_cache(ChunkCache(max_bytes=1 << 20))
    sharded = tz.open_array(root / "sub" / "s", mode="r")  # read-only: indexes cached
    assert direct[:].tolist() == [0, 1, 2, 3]
    assert sharded[2:6].tolist() == [2, 3, 4, 5]
    group["sub"]["x"][:] = 7
    group["sub"]["s"][:] = torch.zeros(16, dtype=torch.int32)  # the inner chunks move
    group["sub"]["s"][4:6] = torch.tensor([7, 8], dtype=torch.int32)
    assert direct[:].tolist() == [7, 7, 7, 7]
    assert sharded[2:6].tolist() == [0, 0, 7, 8]


def test_cache_entries_are_keyed_by_location():
    cache = ChunkCache(max_bytes=1 << 20)
    cache.put(("file:///d/g.zarr", "sub/x", (0,)), np.ones(2))
    assert cache.get(("file:///d/g.zarr/sub/x", "", (0,))) is not None
    cache.put(("file:///d/g.zarr", "sub/x", (3,)), np.ones(2))
    cache.put(("file:///d/g.zarr", "sub/xy", (0,)), np.ones(2))  # a sibling, not a child
    cache.invalidate_outside("file:///d/g.zarr/sub/x", "", (2,))
    assert len(cache) == 2
    cache.invalidate_tree("file:///d/g.zarr", "sub/x")
    assert len(cache) == 1 and cache.get(("file:///d/g.zarr", "sub/xy", (0,))) is not None


def test_locations_ignore_trailing_slashes_and_keep_fsspec_option_digests():
    digest = "#0123456789abcdef"
    assert location("s3://b/g" + digest, "sh") == location("s3://b/g/sh/" + digest, "")
    # the digest goes first: what lies below a node starts with the node's location + "/"
    assert location("s3://b/g" + digest, "sh/x").startswith(
        location("s3://b/g" + digest, "sh") + "/"
    )
    assert location("s3://b/g" + digest, "") != location("s3://b/g#fedcba9876543210", "")
    assert location("s3://b/p/", "") == location("s3://b/p", "") == "s3://b/p"
    assert location("file:///", "x") == "file:///x"
    assert location("file:///data/run#1", "x") == "file:///data/run#1/x"  # not a digest


def test_one_chunk_takes_one_lock_however_its_store_is_rooted(tmp_path):
    root = tmp_path / "g.zarr"
    group = tz.open_group(root, mode="w")
    group.create_array("sub/x", shape=(8,), dtype=torch.int32, chunks=(8,))
    via_group, direct = tz.LocalStore(root), tz.LocalStore(root / "sub" / "x")
    with engine._locked(via_group, ["sub/x/c/0"]):  # held here: the other root finds it taken
        where = location(direct.identity, "c/0")
        assert not engine._CHUNK_LOCKS[where].acquire(blocking=False)


def test_a_directory_reached_through_a_symlink_is_the_same_data(tmp_path):
    (tmp_path / "real.zarr").mkdir()
    (tmp_path / "link.zarr").symlink_to(tmp_path / "real.zarr")
    assert (
        tz.LocalStore(tmp_path / "link.zarr").identity
        == tz.LocalStore(tmp_path / "real.zarr").identity
    )


def _store_with_options(path):
    from torchzarr.storage import FsspecStore

    # an option that tells data apart (fsspec keeps unknown ones): the identity has a digest
    return FsspecStore("file://" + str(path), storage_options={"tag": "run-1"})


def test_replacing_a_group_drops_the_cached_chunks_below_it_in_stores_with_options(tmp_path):
    store = _store_with_options(tmp_path / "d.zarr")
    assert "#" in store.identity
    tz.open_group(store, mode="w").create_array("g/x", shape=(4,), dtype="int32", chunks=(2,))[
        :
    ] = 1
    assert tz.open_group(store, mode="r")["g/x"].with_cache()[:].tolist() == [1] * 4
    tz.open(store, mode="w")  # replaces the whole hierarchy
    tz.open_group(store, mode="r+").create_array("g/x", shape=(4,), dtype="int32", chunks=(2,))
    assert tz.open_group(store, mode="r")["g/x"].with_cache()[:].tolist() == [0] * 4


def test_from_array_refuses_a_group_holding_its_source_in_stores_with_options(tmp_path):
    store = _store_with_options(tmp_path / "d.zarr")
    x = tz.open_group(store, mode="w").create_array("g/x", shape=(4,), dtype="int32", chunks=(2,))
    x[:] = 7
    with pytest.raises(tz.errors.InvalidArgumentError, match="onto itself"):
        tz.from_array(store, path="g", data=x, overwrite=True)
    assert x[:].tolist() == [7] * 4


def test_copying_keys_over_an_array_drops_its_cached_chunks(tmp_path):
    from torchzarr.storage import copy_keys

    src, dst = tmp_path / "src.zarr", tmp_path / "dst.zarr"
    tz.create_array(src, shape=(4,), dtype="int32", chunks=(2,))[:] = 2
    tz.create_array(dst, shape=(4,), dtype="int32", chunks=(2,))[:] = 1
    cached = tz.open_array(dst, mode="r").with_cache()
    assert cached[:].tolist() == [1] * 4
    copy_keys(str(src), str(dst), overwrite=True)
    assert cached[:].tolist() == [2] * 4
    group = tz.open_group(tmp_path / "g.zarr", mode="w")
    member = group.create_array("x", shape=(4,), dtype="int32", chunks=(2,)).with_cache()
    assert member[:].tolist() == [0] * 4
    copy_keys(str(src), group.store, dest_path="x", overwrite=True)
    assert member[:].tolist() == [2] * 4


class DictStore(tz.Store):
    def __init__(self, data):
        self.data, self.read_only = data, True

    def get(self, key):
        return self.data.get(key)

    def set(self, key, value):
        raise AssertionError("read-only")

    def delete(self, key):
        raise AssertionError("read-only")

    def list_prefix(self, prefix):
        return iter([k for k in list(self.data) if k.startswith(prefix)])


def test_store_objects_without_an_identity_of_their_own_never_share_one():
    import copy
    import gc
    import pickle

    original = DictStore({"k": b"v"})
    named = original.identity  # asked before the copies are made
    copies = [copy.copy(original), copy.deepcopy(original), pickle.loads(pickle.dumps(original))]
    assert len({named, *(c.identity for c in copies)}) == 4  # copies: other data
    seen = set()
    for _ in range(50):  # CPython hands a freed object's id() to the next one
        store = DictStore({})
        assert store.identity == store.identity
        seen.add(store.identity)
        del store
        gc.collect()
    assert len(seen) == 50


@pytest.mark.parametrize(("zarr_format", "shards"), [(2, None), (3, None), (3, (8,))])
def test_a_chunk_the_arrays_end_cut_short_is_read_again_after_another_tool_appended(
    tmp_path, zarr_format, shards
):
    zarr = pytest.importorskip("zarr")
    path = tmp_path / "a.zarr"
    outside = zarr.create_array(
        path,
        shape=(10,),
        chunks=(4,),
        shards=shards,
        dtype="f8",
        fill_value=np.nan,
        zarr_format=zarr_format,
    )
    outside[:] = np.arange(10.0)
    hot = tz.open_array(path, mode="r").with_cache()
    assert hot[:].tolist() == list(range(10))  # the chunk of rows 8..11 held, 2 rows long
    outside.append(np.arange(10.0, 13.0))  # written by another tool: no invalidation
    fresh = tz.open_array(path, mode="r").with_cache()
    assert fresh[:].tolist() == list(range(13))  # not nan for rows 10 and 11
    assert fresh[4:8].tolist() == [4.0, 5.0, 6.0, 7.0]
    hits = fresh.cache.hits
    fresh[4:8]  # a whole chunk before the end: still served from the cache
    assert fresh.cache.hits == hits + 1
    outside.resize((9,))  # shrunk: the chunk of rows 8.. now ends after one row
    outside[8] = 100.0
    assert tz.open_array(path, mode="r").with_cache()[:].tolist() == [*range(8), 100.0]
