"""Handles kept from before an array was replaced, the lifetime of caches, and reads by
threads still running while the interpreter exits."""

from __future__ import annotations

import gc
import json
import shutil
import subprocess
import sys
import textwrap
import weakref

import pytest
import torch

import torchzarr as tz


@pytest.mark.parametrize(
    ("old_chunks", "new_dtype", "new_chunks", "new_shape", "shards"),
    [
        ((4,), "int32", (4,), (8,), None),
        ((4,), "int16", (8,), (16,), None),
        ((2,), "int32", (2,), (8,), (4,)),
    ],
    ids=["same-chunks", "other-chunks", "sharded"],
)
def test_a_handle_kept_from_before_a_replacement_never_feeds_the_new_array_its_chunks(
    tmp_path, old_chunks, new_dtype, new_chunks, new_shape, shards
):
    # the stale handle decodes the new chunks as its own (same bytes per chunk): garbage
    path = str(tmp_path / "a.zarr")
    old = tz.create_array(path, shape=(8,), dtype="float32", chunks=old_chunks, shards=shards)
    old[:] = torch.arange(8.0)
    stale = tz.open_array(path).with_cache(tz.ChunkCache())
    stale[:]
    new = tz.create_array(
        path, shape=new_shape, dtype=new_dtype, chunks=new_chunks, shards=shards, overwrite=True
    )
    expected = torch.arange(100, 100 + new_shape[0]).to(new.dtype)
    new[:] = expected
    stale[:]
    fresh = tz.open_array(path).with_cache(stale.cache)
    assert torch.equal(fresh[:], expected)
    assert torch.equal(fresh[:], expected)  # then served from the cache
    assert fresh.cache is not None and fresh.cache.hits > 0


def test_a_new_handle_reads_an_array_another_writer_replaced_not_the_old_cached_chunks(
    tmp_path,
):
    path = tmp_path / "a.zarr"
    tz.create_array(str(path), shape=(8,), dtype="float32", chunks=(4,))[:] = torch.arange(8.0)
    cache = tz.ChunkCache()
    tz.open_array(str(path)).with_cache(cache)[:]
    elsewhere = tmp_path / "elsewhere.zarr"  # written as another process would: no invalidation
    replacement = tz.create_array(str(elsewhere), shape=(16,), dtype="int16", chunks=(8,))
    replacement[:] = torch.arange(16, dtype=torch.int16)
    shutil.rmtree(path)
    shutil.copytree(elsewhere, path)
    fresh = tz.open_array(str(path)).with_cache(cache)
    assert torch.equal(fresh[:], torch.arange(16, dtype=torch.int16))


def test_invalidating_an_array_drops_its_chunks_whatever_metadata_they_were_read_under():
    arr = tz.create_array("memory://", shape=(8,), dtype="float32", chunks=(4,))
    arr[:] = torch.arange(8.0)
    cache = tz.ChunkCache()
    arr.with_cache(cache)[:]
    assert len(cache) == 2
    cache.invalidate_tree(arr.store.identity, "")
    assert len(cache) == 0


def test_an_append_through_a_handle_of_an_array_replaced_by_another_dtype_is_a_clear_error():
    store = tz.MemoryStore()
    stale = tz.create_array(store, shape=(4,), dtype="float32", chunks=(4,))
    stale[:] = torch.arange(4.0)
    new = tz.create_array(store, shape=(8,), dtype="int16", chunks=(8,), overwrite=True)
    new[:] = torch.arange(8, dtype=torch.int16) * 10
    with pytest.raises(
        tz.errors.ShapeMismatchError,
        match=r"replaced by one whose chunks decode otherwise .*dtype int16",
    ):
        stale.append(torch.tensor([1.5, 2.5]))
    assert stale.dtype == torch.float32 and stale.metadata.data_type.name == "float32"
    assert torch.equal(tz.open_array(store)[:], torch.arange(8, dtype=torch.int16) * 10)


def test_a_resize_through_a_handle_of_an_array_replaced_by_other_chunks_is_a_clear_error():
    store = tz.MemoryStore()
    stale = tz.create_array(store, shape=(8,), dtype="float32", chunks=(4,))
    new = tz.create_array(store, shape=(8,), dtype="float32", chunks=(2,), overwrite=True)
    new[:] = torch.arange(1.0, 9.0)
    with pytest.raises(tz.errors.ShapeMismatchError, match=r"chunks \(2,\)"):
        stale.resize(3)
    kept = tz.open_array(store)
    assert kept.shape == (8,) and torch.equal(kept[:], torch.arange(1.0, 9.0))


_V2_FLOATS = {"zarr_format": 2, "shape": [8], "chunks": [4], "dtype": "<f4", "fill_value": 0.0}
_SPELLED_SHORT = {  # codecs written without the settings numcodecs and zarr-python fill in
    "v2 blosc without blocksize": (
        ".zarray",
        {
            **_V2_FLOATS,
            "order": "C",
            "filters": None,
            "compressor": {"id": "blosc", "cname": "lz4", "clevel": 5, "shuffle": 1},
        },
    ),
    "v2 delta without astype": (
        ".zarray",
        {
            **_V2_FLOATS,
            "order": "C",
            "filters": [{"id": "delta", "dtype": "<f4"}],
            "compressor": None,
        },
    ),
    "v3 blosc without typesize": (
        "zarr.json",
        {
            "zarr_format": 3,
            "node_type": "array",
            "shape": [8],
            "data_type": "float32",
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [4]}},
            "chunk_key_encoding": {"name": "default"},
            "fill_value": 0.0,
            "codecs": [
                {"name": "bytes", "configuration": {"endian": "little"}},
                {
                    "name": "blosc",
                    "configuration": {
                        "cname": "lz4",
                        "clevel": 5,
                        "shuffle": "shuffle",
                        "blocksize": 0,
                    },
                },
            ],
        },
    ),
}


@pytest.mark.parametrize("case", sorted(_SPELLED_SHORT))
def test_metadata_rewritten_by_another_tool_with_the_same_codecs_keeps_the_handle_working(
    tmp_path, case
):
    zarr = pytest.importorskip("zarr")
    name, document = _SPELLED_SHORT[case]
    (tmp_path / name).write_text(json.dumps(document))
    handle = tz.open_array(tmp_path, mode="r+").with_cache()
    handle[:] = torch.arange(8.0)
    assert torch.equal(handle[:], torch.arange(8.0))  # cached under the short spelling
    zarr.open_array(str(tmp_path), mode="r+").attrs["note"] = "hello"  # rewrites it all
    assert json.loads((tmp_path / name).read_text()) != document  # the defaults filled in
    handle.append(torch.tensor([8.0, 9.0]))
    handle.resize(12)
    fresh = tz.open_array(tmp_path, mode="r").with_cache()
    hits = fresh.cache.hits
    assert torch.equal(fresh[:10], torch.arange(10.0)) and fresh.cache.hits > hits  # shared


def test_an_attribute_change_through_a_handle_of_a_replaced_array_leaves_it_reading_the_new():
    store = tz.MemoryStore()
    stale = tz.create_array(store, shape=(4,), dtype="float32", chunks=(4,))
    assert stale.dtype == torch.float32
    new = tz.create_array(store, shape=(8,), dtype="int16", chunks=(8,), overwrite=True)
    new[:] = torch.arange(8, dtype=torch.int16)
    stale.attrs["note"] = "kept"  # the change is made to the metadata as stored
    assert stale.dtype == torch.int16
    assert torch.equal(stale[:], torch.arange(8, dtype=torch.int16))


def test_a_cache_is_freed_with_the_last_handle_reading_through_it():
    arr = tz.create_array("memory://", shape=(8, 4), dtype="float32", chunks=(2, 4))
    arr[:] = torch.ones(8, 4)
    caches = []
    for _ in range(3):
        cache = tz.ChunkCache()
        hot = arr.with_cache(cache)
        hot[:]
        caches.append(weakref.ref(cache))
        del hot, cache
    gc.collect()
    assert [ref() for ref in caches] == [None, None, None]
    arr[:2] = 2.0  # writes go on once the caches they invalidated are gone
    kept = tz.ChunkCache()
    hot = arr.with_cache(kept)
    hot[:]
    arr[:2] = 3.0
    assert float(hot[:2].sum()) == 3.0 * 8


def test_a_sharded_arrays_cache_is_freed_with_its_last_handle_without_a_collection():
    arr = tz.create_array("memory://", shape=(8, 4), dtype="float32", chunks=(2, 4), shards=(4, 4))
    arr[:] = torch.ones(8, 4)
    cache = tz.ChunkCache()
    hot = arr.with_cache(cache)
    assert float(hot[1:3].sum()) == 8.0  # a partial read: through the shard reader
    assert cache.nbytes > 0
    ref = weakref.ref(cache)
    gc.disable()  # reference counting alone must free it
    try:
        del hot, cache
        assert ref() is None
    finally:
        gc.enable()


def test_a_thread_reading_while_the_interpreter_exits_gets_its_data(tmp_path):
    script = textwrap.dedent(
        """
        import threading, time
        from concurrent.futures import ThreadPoolExecutor
        import torch, torchzarr as tz

        arr = tz.create_array("memory://", shape=(64, 4), dtype="float32", chunks=(4, 4))
        arr[:] = torch.ones(64, 4)
        tz.config.threads = 4
        tz.config.task_bytes = 1  # one task per chunk: the pool is used
        arr[:]

        def read_at_exit():
            probe = ThreadPoolExecutor(1)
            while True:  # until thread pools refuse work: the interpreter is exiting
                try:
                    probe.submit(int).result()
                except RuntimeError:
                    break
                time.sleep(0.01)
            print("sum", float(arr[:].sum()), flush=True)

        threading.Thread(target=read_at_exit).start()
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "sum 256.0" in done.stdout, done.stderr
    assert "RuntimeError" not in done.stderr
