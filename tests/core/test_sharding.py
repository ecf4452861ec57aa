"""Sharded arrays: whole and partial shard reads and writes, interop both ways."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import tensorstore as ts
import torch
import zarr
import zarr.codecs

import torchzarr as tz
from torchzarr.errors import MetadataError
from torchzarr.storage.base import Store


class RecordingStore(Store):
    """Records the byte ranges read through it."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.read_only = inner.read_only
        self.ranges: list[tuple[str, int, int | None]] = []
        self.full_reads: list[str] = []

    def get(self, key):
        self.full_reads.append(key)
        return self.inner.get(key)

    def get_many(self, keys):
        self.full_reads.extend(k for k in keys if "/c/" in k or k.startswith("c/"))
        return self.inner.get_many(keys)

    def get_ranges(self, requests):
        self.ranges.extend((k, r.start, r.length) for k, r in requests)
        return self.inner.get_ranges(requests)

    def set(self, key, value):
        self.inner.set(key, value)

    def delete(self, key):
        self.inner.delete(key)

    def list_prefix(self, prefix):
        return self.inner.list_prefix(prefix)

    @property
    def identity(self):
        return self.inner.identity

    def with_read_only(self, read_only=True):
        clone = RecordingStore(self.inner.with_read_only(read_only))
        clone.ranges, clone.full_reads = self.ranges, self.full_reads
        return clone


def _filled(store, **kwargs):
    arr = tz.create_array(
        store, shape=(16, 12), dtype=torch.float32, chunks=(2, 3), shards=(8, 6), **kwargs
    )
    data = torch.arange(16 * 12, dtype=torch.float32).reshape(16, 12)
    arr[:] = data
    return arr, data


def test_sharded_round_trip_and_metadata(any_store):
    arr, data = _filled(any_store)
    assert arr.chunks == (2, 3) and arr.shards == (8, 6)
    assert torch.equal(arr[:], data)
    assert torch.equal(arr[3:11, 2:9], data[3:11, 2:9])
    assert torch.equal(arr.oindex[[0, 15, 7], [11, 0]], data[[0, 15, 7]][:, [11, 0]])
    assert torch.equal(arr.vindex[[0, 15], [11, 0]], data[[0, 15], [11, 0]])
    doc = json.loads(any_store.get("zarr.json"))
    assert doc["chunk_grid"]["configuration"]["chunk_shape"] == [8, 6]
    (codec,) = doc["codecs"]
    assert codec["name"] == "sharding_indexed"
    assert codec["configuration"]["chunk_shape"] == [2, 3]
    assert [c["name"] for c in codec["configuration"]["index_codecs"]] == ["bytes", "crc32c"]
    assert len(list(any_store.list_prefix("c/"))) == 4


def test_partial_read_fetches_index_and_needed_ranges_only():
    inner = tz.MemoryStore()
    _filled(inner, compressors=None)
    recording = RecordingStore(inner)
    arr = tz.open_array(recording, mode="r")
    got = arr[0:2, 0:3]  # one inner chunk of one shard
    assert got.flatten().tolist() == [0, 1, 2, 12, 13, 14]
    assert recording.full_reads == []
    index_reads = [r for r in recording.ranges if r[1] < 0]
    data_reads = [r for r in recording.ranges if r[1] >= 0]
    assert len(index_reads) == 1 and index_reads[0][1] == -(8 * 16 + 4)
    assert len(data_reads) == 1 and data_reads[0][2] == 2 * 3 * 4
    recording.ranges.clear()
    arr[1, 4]  # same shard: its index read again (another writer may have rewritten it)
    assert [r for r in recording.ranges if r[1] < 0] == index_reads


def test_neighbouring_inner_chunks_are_coalesced():
    inner = tz.MemoryStore()
    _filled(inner, compressors=None)
    recording = RecordingStore(inner)
    arr = tz.open_array(recording, mode="r")
    arr[0:4, 0:6]  # 4 inner chunks stored next to each other
    data_reads = [r for r in recording.ranges if r[1] >= 0]
    assert len(data_reads) == 1


def test_missing_inner_chunks_and_shards_read_as_fill(any_store):
    arr = tz.create_array(
        any_store, shape=(8, 8), dtype=torch.int16, chunks=(2, 2), shards=(4, 4), fill_value=-3
    )
    arr[0:2, 0:2] = 7
    assert torch.equal(arr[0:2, 0:2], torch.full((2, 2), 7, dtype=torch.int16))
    assert (arr[2:4, 0:4] == -3).all() and (arr[4:, 4:] == -3).all()
    assert len(list(any_store.list_prefix("c/"))) == 1
    arr[0:2, 0:2] = -3
    assert list(any_store.list_prefix("c/")) == []


@pytest.mark.parametrize("location", ["start", "end"])
def test_index_location_start_written_by_zarr_python(tmp_path, location):
    z = zarr.create_array(
        str(tmp_path),
        shape=(10, 10),
        dtype="int32",
        fill_value=0,
        chunks=(4, 10),
        serializer=zarr.codecs.ShardingCodec(chunk_shape=(2, 5), index_location=location),
    )
    z[:] = np.arange(100).reshape(10, 10)
    arr = tz.open_array(tmp_path, mode="r")
    np.testing.assert_array_equal(arr[:].numpy(), np.arange(100).reshape(10, 10))
    np.testing.assert_array_equal(arr[5:9, 3:7].numpy(), np.arange(100).reshape(10, 10)[5:9, 3:7])


def test_zarr_python_and_tensorstore_read_our_shards(tmp_path):
    arr, data = _filled(tmp_path)
    arr[9, 9] = -1.0
    data[9, 9] = -1.0
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path))[:], data.numpy())
    t = ts.open({"driver": "zarr3", "kvstore": {"driver": "file", "path": str(tmp_path)}}).result()
    np.testing.assert_array_equal(t.read().result(), data.numpy())


def test_tensorstore_shards_read_partially(tmp_path):
    spec = {
        "driver": "zarr3",
        "kvstore": {"driver": "file", "path": str(tmp_path)},
        "metadata": {
            "shape": [12, 12],
            "data_type": "uint16",
            "fill_value": 0,
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [6, 6]}},
            "codecs": [
                {
                    "name": "sharding_indexed",
                    "configuration": {
                        "chunk_shape": [3, 3],
                        "codecs": [
                            {"name": "bytes", "configuration": {"endian": "little"}},
                            {"name": "zstd", "configuration": {"level": 1}},
                        ],
                        "index_codecs": [
                            {"name": "bytes", "configuration": {"endian": "little"}},
                            {"name": "crc32c"},
                        ],
                    },
                }
            ],
        },
    }
    t = ts.open(spec, create=True).result()
    data = np.arange(144, dtype=np.uint16).reshape(12, 12)
    t[...].write(data).result()
    arr = tz.open_array(tmp_path, mode="r")
    np.testing.assert_array_equal(arr[4:8, 1:11].numpy(), data[4:8, 1:11])
    np.testing.assert_array_equal(arr.oindex[[11, 0], [5, 6]].numpy(), data[[11, 0]][:, [5, 6]])


def test_concurrent_partial_writes_to_one_shard_lose_nothing(any_store):
    arr = tz.create_array(any_store, shape=(8, 8), dtype=torch.int32, chunks=(1, 8), shards=(8, 8))

    def write_row(i: int) -> None:
        arr[i] = i + 1

    threads = [threading.Thread(target=write_row, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    expected = torch.arange(1, 9, dtype=torch.int32)[:, None].expand(8, 8)
    assert torch.equal(arr[:], expected)


def test_shards_must_be_multiples_of_chunks():
    with pytest.raises(MetadataError, match="multiple"):
        tz.create_array(tz.MemoryStore(), shape=(10,), dtype="int8", chunks=(3,), shards=(4,))
    with pytest.raises(MetadataError, match="zarr_format=3"):
        tz.create_array(
            tz.MemoryStore(), shape=(10,), dtype="int8", chunks=(2,), shards=(4,), zarr_format=2
        )


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("compressors", ["zstd", "gzip", "raw", "raw-big-endian"])
def test_local_partial_shard_reads_of_tile_chunks_match_numpy(tmp_path, threads, compressors):
    codec = {
        "zstd": [tz.codecs.ZstdCodec(level=1)],
        "gzip": [tz.codecs.GzipCodec(1)],
        "raw": None,
        "raw-big-endian": [tz.codecs.BytesCodec("big")],
    }[compressors]
    rng = np.random.default_rng(3)
    data = rng.standard_normal((96, 80)).astype(np.float32)
    arr = tz.create_array(
        tz.LocalStore(tmp_path),
        shape=data.shape,
        dtype=data.dtype,
        chunks=(8, 8),  # inner chunks are non-contiguous regions of a shard
        shards=(32, 40),
        compressors=codec,
    )
    arr[:] = data
    reader = tz.open_array(tmp_path, mode="r")
    with tz.config.set(threads=threads, task_bytes=1024):  # several pieces per task
        for sel in [
            (slice(None), slice(None)),  # whole shards
            (slice(3, 90), slice(5, 77)),
            (slice(0, 32), slice(1, 40)),
            (7, slice(None)),
            (slice(8, 16), slice(8, 16)),  # one whole inner chunk, decoded in place
            (slice(2, 60, 3), slice(None, None, 7)),  # steps
        ]:
            np.testing.assert_array_equal(reader[sel].numpy(), data[sel], err_msg=str(sel))


def test_a_corrupt_inner_chunk_names_its_shard_and_coordinates(tmp_path):
    data = np.arange(32 * 32, dtype=np.float32).reshape(32, 32)
    arr = tz.create_array(
        tz.LocalStore(tmp_path),
        shape=data.shape,
        dtype=data.dtype,
        chunks=(8, 8),
        shards=(16, 16),
        compressors=[tz.codecs.ZstdCodec(level=1)],
    )
    arr[:] = data
    shard = tmp_path / "c" / "1" / "0"
    raw = bytearray(shard.read_bytes())
    raw[:16] = b"\xff" * 16  # the first inner chunk's frame (the index sits at the end)
    shard.write_bytes(bytes(raw))
    reader = tz.open_array(tmp_path, mode="r")
    with pytest.raises(tz.errors.ChunkDecodeError, match=r"c/1/0\[\(0, 0\)\]"):
        reader[17:30, 1:15]  # part of the shard: its pieces
    with pytest.raises(tz.errors.ChunkDecodeError, match=r"c/1/0.*inner chunk \(0, 0\)"):
        reader[16:32, 0:16]  # the whole shard


@pytest.mark.filterwarnings("ignore:Combining a `sharding_indexed` codec")
def test_a_truncated_shard_is_a_decode_error_naming_it(tmp_path):
    data = np.arange(32 * 32, dtype=np.float32).reshape(32, 32)
    z = zarr.create_array(
        str(tmp_path),
        shape=data.shape,
        dtype=data.dtype,
        chunks=(16, 16),
        serializer=zarr.codecs.ShardingCodec(
            chunk_shape=(8, 8), codecs=[zarr.codecs.BytesCodec()], index_location="start"
        ),
        compressors=None,
    )
    z[:] = data
    shard = tmp_path / "c" / "0" / "1"
    shard.write_bytes(shard.read_bytes()[:-40])  # the last inner chunk loses its tail
    reader = tz.open_array(tmp_path, mode="r")
    with pytest.raises(tz.errors.ChunkDecodeError, match=r"c/0/1.*\(1, 1\).*past the end"):
        reader[0:15, 16:32]  # part of the shard: its pieces, checked against its size
    with pytest.raises(tz.errors.ChunkDecodeError, match=r"c/0/1.*past the end"):
        reader[0:16, 16:32]  # the whole shard, read in one piece


@pytest.mark.parametrize("compressors", ["zstd", None])
def test_a_0d_sharded_array_round_trips(tmp_path, compressors):
    arr = tz.create_array(
        tmp_path, shape=(), shards=(), dtype=torch.float32, compressors=compressors
    )
    arr[...] = 5.0
    assert tz.open_array(tmp_path)[...].item() == 5.0
    assert tz.open_array(tmp_path).with_cache(tz.ChunkCache())[...].item() == 5.0
    assert zarr.open_array(str(tmp_path))[...] == 5.0


@pytest.mark.parametrize("nbytes", [0, 10])
@pytest.mark.parametrize("store", ["local", "memory"])
def test_a_shard_shorter_than_its_index_is_a_decode_error_naming_it(tmp_path, nbytes, store):
    root = tz.LocalStore(tmp_path) if store == "local" else tz.MemoryStore()
    arr = tz.create_array(root, shape=(16, 8), chunks=(4, 8), shards=(8, 8), dtype=torch.float32)
    arr[:] = 1.0
    root.set("c/0/0", root.get("c/0/0")[:nbytes])
    reader = tz.open_array(root, mode="r")
    message = rf"'c/0/0'(: shard)? is {nbytes} bytes, shorter than its 36-byte index"
    with pytest.raises(tz.errors.ChunkDecodeError, match=message):
        reader[0:1]  # part of the shard: its index first
    with pytest.raises(tz.errors.ChunkDecodeError, match=message):
        reader[:]  # the whole shard


def test_info_names_a_damaged_shard_where_nchunks_initialized_raises(tmp_path):
    theirs = zarr.create_array(
        str(tmp_path), shape=(20, 8), chunks=(5, 4), shards=(10, 8), dtype="f4"
    )
    theirs[:] = 1.0
    (tmp_path / "c" / "1" / "0").write_bytes(b"x")
    assert "Shards Initialized" in str(zarr.open_array(str(tmp_path)).info_complete())
    ours = tz.open_array(tmp_path, mode="r")
    info = ours.info  # reported, not raised: the other shard still counts
    assert info.damaged_shards == ("c/1/0",) and info.nchunks_initialized == 4
    assert "Damaged shards     : 1 (c/1/0): index unreadable" in str(info)
    with pytest.raises(tz.errors.ChunkDecodeError, match="shard 'c/1/0' is 1 bytes"):
        _ = ours.nchunks_initialized  # a count of stored chunks: it cannot be given
    (tmp_path / "c" / "1" / "0").unlink()
    healthy = tz.open_array(tmp_path, mode="r").info
    assert healthy.damaged_shards == () and "Damaged" not in str(healthy)


def test_chunk_counts_are_of_inner_chunks_as_in_zarr_python(tmp_path):
    args = dict(shape=(10, 4), dtype="int16", chunks=(2, 2), shards=(4, 4))
    ours = tz.create_array(tmp_path / "t", **args)
    theirs = zarr.create_array(str(tmp_path / "z"), **args)
    assert ours.cdata_shape == theirs.cdata_shape == (5, 2)
    assert ours.nchunks == theirs.nchunks == 10 and ours.nchunks_initialized == 0
    ours[:3] = 1  # shard (0, 0): its 4 inner chunks
    ours[9, 0] = 1  # the edge shard (2, 0): 1 inner chunk stored of the 2 inside the array
    assert ours.nchunks_initialized == 5 == ours.info.nchunks_initialized
    assert "Chunks initialized : 5/10" in str(ours.info)
    assert [coords for coords, _, _ in ours.iter_chunks()][:3] == [(0, 0), (0, 1), (1, 0)]
    assert ours.blocks[1].shape == (4, 4)  # blocks stay shards, as zarr-python's


@pytest.mark.parametrize(
    ("shape", "orders", "inner"),
    [
        ((8, 6), [[1, 0]], [3, 2]),
        ((4, 6, 10), [[2, 0, 1]], [5, 2, 3]),
        ((4, 6, 10), [[2, 0, 1], [1, 0, 2]], [2, 5, 3]),
    ],
)
def test_shards_behind_a_transpose_read_copy_and_report_whole_shards_as_chunks(
    tmp_path, tmp_path_factory, shape, orders, inner
):
    codecs = [{"name": "transpose", "configuration": {"order": o}} for o in orders]
    sharding = {"chunk_shape": inner, "codecs": [{"name": "bytes", "configuration": {}}]}
    codecs.append({"name": "sharding_indexed", "configuration": sharding})
    t = ts.open(
        {
            "driver": "zarr3",
            "kvstore": {"driver": "file", "path": str(tmp_path)},
            "metadata": {
                "shape": list(shape),
                "data_type": "int16",
                "fill_value": 0,
                "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(shape)}},
                "codecs": codecs,
            },
        },
        create=True,
    ).result()
    data = np.arange(np.prod(shape), dtype=np.int16).reshape(shape)
    t[...].write(data).result()
    arr = tz.open_array(tmp_path, mode="r")
    # read and written a whole shard at a time: the shard is the chunk (zarr-python, where
    # it opens one, says the same)
    assert arr.chunks == shape and arr.shards is None
    assert arr.nchunks == arr.nchunks_initialized == 1 and arr.blocks[0].shape == shape
    assert len(list(arr.iter_chunks())) == 1  # one decode of the shard, not one per inner chunk
    np.testing.assert_array_equal(arr[...].numpy(), data)
    elsewhere = tmp_path_factory.mktemp("copy")  # not inside the source array
    copy = tz.from_array(elsewhere, data=arr)  # keeps the layout, codecs and all
    assert (copy.chunks, copy.shards, copy.metadata.codecs) == (
        arr.chunks,
        arr.shards,
        arr.metadata.codecs,
    )
    np.testing.assert_array_equal(copy[...].numpy(), data)
    again = ts.open({"driver": "zarr3", "kvstore": {"driver": "file", "path": str(elsewhere)}})
    np.testing.assert_array_equal(again.result().read().result(), data)


@pytest.mark.parametrize("written", [False, True])
def test_shrinking_into_a_shard_too_big_for_memory_resets_only_what_is_stored(written):
    side = 2**33  # a 32 GiB shard of float32: no block of it could be built here
    arr = tz.create_array(
        "memory://", shape=(2 * side,), dtype="float32", chunks=(2**20,), shards=(side,)
    )
    if written:
        arr[5] = 1.0
        arr[side + 5] = 2.0
        with pytest.raises(tz.errors.InvalidArgumentError, match="cannot write to shard 'c/0'"):
            arr.resize(1000)  # the stored shard 'c/0' is cut: refused before anything changes
        assert arr.shape == (2 * side,) and (arr[5].item(), arr[side + 5].item()) == (1.0, 2.0)
        return
    arr.resize(1000)  # nothing stored in the cut shard: nothing to reset
    assert arr.shape == (1000,) and list(arr.store.list_prefix("")) == ["zarr.json"]
    huge = tz.create_array("memory://", shape=(2**36,), dtype="float32", chunks=(2**36,))
    huge.resize(10)  # a never-written chunk bigger than memory
    assert huge.shape == (10,)
