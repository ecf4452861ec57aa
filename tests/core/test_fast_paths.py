"""The engine's fast paths agree with numpy: raw local reads, zstd prefixes, small chunks, fsync."""

from __future__ import annotations

import os
from pathlib import Path

import numcodecs
import numpy as np
import pytest
import torch
import zarr

import torchzarr as tz
from torchzarr import telemetry
from torchzarr.codecs import BytesCodec, fast_decode
from torchzarr.core import fastpath
from torchzarr.core.indexing import basic_indexer, orthogonal_indexer
from torchzarr.errors import ChunkDecodeError, StoreError
from torchzarr.storage.local import LocalStore

SELECTIONS = [
    (slice(None), slice(None)),
    (slice(3, 29), slice(5, 17)),  # unaligned, partial chunks on every side
    (slice(8, 16), slice(None)),  # whole chunks (the direct path where contiguous)
    (slice(1, 30, 3), slice(2, None, 2)),  # steps
    (7, slice(None)),  # one row
    (slice(None), 6),  # one column
    (slice(30, 31), slice(19, 21)),  # the partial edge chunk alone
]


def _data(shape=(31, 21), dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * 100).astype(dtype)


def _check(arr, expected):
    for sel in SELECTIONS:
        np.testing.assert_array_equal(arr[sel].numpy(), expected[sel], err_msg=str(sel))
    rows = np.array([0, 3, 4, 17, 30])
    np.testing.assert_array_equal(arr.oindex[rows, :].numpy(), expected[rows, :])
    np.testing.assert_array_equal(
        arr.oindex[rows, [1, 20]].numpy(), expected[np.ix_(rows, [1, 20])]
    )


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("zarr_format", [2, 3])
def test_uncompressed_local_reads_match_numpy(tmp_path, threads, zarr_format):
    data = _data()
    arr = tz.create_array(
        LocalStore(tmp_path),
        shape=data.shape,
        chunks=(8, 7),
        dtype=data.dtype,
        compressors=None,
        zarr_format=zarr_format,
    )
    arr[:] = data
    assert fastpath.is_raw(arr._source.pipeline) and fastpath.local_root(arr.store)
    with tz.config.set(threads=threads):
        _check(tz.open_array(tmp_path, mode="r"), data)


def test_uncompressed_big_endian_and_missing_chunks_are_filled(tmp_path):
    data = _data(dtype=np.int32)
    arr = tz.create_array(
        LocalStore(tmp_path),
        shape=data.shape,
        chunks=(8, 7),
        dtype=np.int32,
        compressors=[BytesCodec("big")],
        fill_value=-7,
    )
    arr[:] = data
    (tmp_path / "c" / "1" / "2").unlink()  # a whole interior chunk ...
    (tmp_path / "c" / "3" / "0").unlink()  # ... and an edge chunk go missing
    expected = data.copy()
    expected[8:16, 14:21] = -7
    expected[24:31, 0:7] = -7
    assert (tmp_path / "c" / "0" / "0").read_bytes()[:4] == np.array(data[0, 0], ">i4").tobytes()
    _check(tz.open_array(tmp_path, mode="r"), expected)


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("dtype", ["<f4", ">f4", "<i2", "|u1"])
def test_v2_uncompressed_orders_and_byte_orders(tmp_path, order, dtype):
    data = _data(dtype=np.dtype(dtype).newbyteorder("="))
    z = zarr.create_array(
        str(tmp_path),
        shape=data.shape,
        chunks=(8, 7),
        dtype=dtype,
        compressors=None,
        zarr_format=2,
        order=order,
        fill_value=0,
    )
    z[:] = data
    _check(tz.open_array(tmp_path, mode="r"), data)


@pytest.mark.parametrize("size", ["short", "long"])
def test_a_raw_chunk_of_the_wrong_size_is_a_decode_error(tmp_path, size):
    arr = tz.create_array(
        LocalStore(tmp_path), shape=(4, 4), chunks=(2, 4), dtype="f4", compressors=None
    )
    arr[:] = np.ones((4, 4), "f4")
    chunk = tmp_path / "c" / "1" / "0"
    chunk.write_bytes(chunk.read_bytes()[:-1] if size == "short" else chunk.read_bytes() + b"x")
    with pytest.raises(ChunkDecodeError, match="c/1/0"):
        arr[:]
    with pytest.raises(ChunkDecodeError, match="c/1/0"):
        arr[3, 1:3]  # the scratch path checks the size too


@pytest.mark.parametrize("compressor", ["zstd", "blosc", "gzip"])
@pytest.mark.parametrize("zarr_format", [2, 3])
def test_compressed_local_reads_and_row_gathers(tmp_path, compressor, zarr_format):
    data = _data(shape=(64, 33))
    arr = tz.create_array(
        LocalStore(tmp_path),
        shape=data.shape,
        chunks=(16, 33),
        dtype=data.dtype,
        compressors=compressor,
        zarr_format=zarr_format,
    )
    arr[:] = data
    reopened = tz.open_array(tmp_path, mode="r")
    _check(reopened, data)
    for rows in ([0], [15], [1, 2, 40], [3, 17, 18, 63], list(range(0, 64, 5))):
        got = reopened.oindex[np.array(rows), :].numpy()
        np.testing.assert_array_equal(got, data[rows])
    for row in (0, 5, 15, 16, 63):
        np.testing.assert_array_equal(reopened[row].numpy(), data[row])


def test_corrupt_zstd_chunks_name_their_key_on_every_path(tmp_path):
    arr = tz.create_array(
        LocalStore(tmp_path), shape=(32, 8), chunks=(16, 8), dtype="f4", compressors="zstd"
    )
    arr[:] = _data(shape=(32, 8))
    chunk = tmp_path / "c" / "1" / "0"
    chunk.write_bytes(chunk.read_bytes()[:12])  # a prefix read stops early: cut the head
    for sel in (slice(None), slice(17, 18), slice(30, 32)):  # whole, prefix, scratch
        with pytest.raises(ChunkDecodeError, match="c/1/0"):
            arr[sel]


def test_fast_decoders_check_sizes():
    if not fast_decode.available("zstd"):
        pytest.skip("numcodecs' zstd does not export its C API here")
    payload = np.arange(1000, dtype=np.int32)
    frame = numcodecs.Zstd(1).encode(payload)
    out = np.empty(4000, np.uint8)
    fast_decode.decompress_into("zstd", frame, out)
    assert out.tobytes() == payload.tobytes()
    fast_decode.decompress_prefix(frame, out[:10])
    assert out[:10].tobytes() == payload.tobytes()[:10]
    with pytest.raises(ChunkDecodeError):
        fast_decode.decompress_into("zstd", frame, np.empty(3999, np.uint8))
    with pytest.raises(ChunkDecodeError):
        fast_decode.decompress_into("zstd", frame, np.empty(4001, np.uint8))
    with pytest.raises(ChunkDecodeError):
        fast_decode.decompress_prefix(frame, np.empty(4001, np.uint8))
    with pytest.raises(ChunkDecodeError):
        fast_decode.decompress_prefix(frame[:-20], np.empty(4000, np.uint8))
    blosc = numcodecs.Blosc("lz4").encode(payload)
    fast_decode.decompress_into("blosc", memoryview(blosc), out)
    assert out.tobytes() == payload.tobytes()
    with pytest.raises(ChunkDecodeError, match="truncated"):
        fast_decode.decompress_into("blosc", blosc[:-1], out)


@pytest.mark.parametrize("threads", [1, 2])
def test_many_small_chunks_are_batched_and_counted_once(tmp_path, threads):
    data = _data(shape=(40, 36))
    arr = tz.create_array(
        LocalStore(tmp_path),
        shape=data.shape,
        chunks=(2, 3),
        dtype="f4",
        compressors="zstd",
        fill_value=0,
    )
    arr[:] = data
    arr[0:2, 0:3] = 0  # all fill value: not stored
    expected = data.copy()
    expected[0:2, 0:3] = 0
    with tz.config.set(threads=threads, task_bytes=64):
        telemetry.reset()
        np.testing.assert_array_equal(arr[:].numpy(), expected)
        snap = telemetry.snapshot()
        _check(arr, expected)
    assert snap["chunks_fetched"] == 20 * 12 - 1 and snap["chunks_missing"] == 1
    assert snap["bytes_decoded"] == snap["chunks_fetched"] * 2 * 3 * 4


def test_the_cache_is_filled_from_the_direct_and_scratch_paths(tmp_path):
    data = _data(shape=(32, 8))
    arr = tz.create_array(
        LocalStore(tmp_path), shape=data.shape, chunks=(8, 8), dtype="f4", compressors="zstd"
    )
    arr[:] = data
    cache = tz.ChunkCache(max_bytes=1 << 20) if hasattr(tz, "ChunkCache") else None
    if cache is None:
        from torchzarr.core.cache import ChunkCache

        cache = ChunkCache(max_bytes=1 << 20)
    cached = arr.with_cache(cache)
    np.testing.assert_array_equal(cached[0:16].numpy(), data[0:16])  # direct, then cached
    np.testing.assert_array_equal(cached[17:18].numpy(), data[17:18])  # partial: whole chunk
    assert len(cache) == 3
    np.testing.assert_array_equal(cached[:].numpy(), data)
    assert cache.hits == 3


def test_grid_indexer_matches_the_nested_walk():
    shape, chunks = (50, 7, 9), (8, 3, 4)
    for sel in [
        (slice(None),) * 3,
        (slice(3, 40, 2), 4, slice(1, None)),
        (5, 6, 7),
        (slice(0, 0), slice(None), slice(None)),
    ]:
        ix = basic_indexer(sel, shape, chunks)
        assert list(ix) == list(ix._walk(0, ())) if ix.nchunks else list(ix) == []
    ix = orthogonal_indexer(
        (np.array([0, 9, 10, 49]), slice(None), np.array([8, 1])), shape, chunks
    )
    fast, slow = list(ix), list(ix._walk(0, ()))
    assert [p.chunk_coords for p in fast] == [p.chunk_coords for p in slow]
    for a, b in zip(fast, slow, strict=True):
        for x, y in zip(
            a.chunk_selection + a.out_selection, b.chunk_selection + b.out_selection, strict=True
        ):
            np.testing.assert_array_equal(
                np.asarray(x) if not isinstance(x, slice) else 0,
                np.asarray(y) if not isinstance(y, slice) else 0,
            )
            assert isinstance(x, slice) == isinstance(y, slice) and (
                x == y if isinstance(x, slice) else True
            )


def test_large_outputs_are_ordinary_tensors(tmp_path):
    arr = tz.create_array(
        LocalStore(tmp_path),
        shape=(1100, 1024),
        chunks=(100, 1024),
        dtype=torch.bfloat16,
        compressors=None,
    )
    data = torch.randn(1100, 1024).to(torch.bfloat16)
    arr[:] = data
    out = arr[:]
    assert out.dtype == torch.bfloat16 and out.shape == (1100, 1024) and out.is_contiguous()
    assert torch.equal(out, data)
    out += 1  # writable, owns its memory
    assert torch.equal(arr[:], data)


# -- writes ------------------------------------------------------------------------------------
def _partials(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".partial")]


def test_fsync_set_many_syncs_each_directory_once(tmp_path, monkeypatch):
    store = LocalStore(tmp_path, fsync=True)
    synced: list[Path] = []
    fsyncs: list[int] = []
    monkeypatch.setattr(LocalStore, "_fsync_dir", staticmethod(synced.append))
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (fsyncs.append(fd), real_fsync(fd)))
    items = {f"a/{i}": bytes([i]) * 10 for i in range(200)} | {"b/x": b"1", "b/y": b"2"}
    store.set_many(items)
    assert {k: store.get(k) for k in items} == items
    # the root too: directories made for the files are entries of it
    assert sorted(synced) == [tmp_path, tmp_path / "a", tmp_path / "b"]
    assert len(fsyncs) == len(items)
    assert _partials(tmp_path) == []
    synced.clear()
    # rewrites: their directory and those above, which another writer may have made
    store.set_many({"a/0": b"new", "a/1": b"new"})
    assert sorted(synced) == [tmp_path, tmp_path / "a"]
    synced.clear()
    store.set_many({"a/2": b"new", "c/d/0": b"new"})  # c and c/d made: up to the root
    assert sorted(synced) == [tmp_path, tmp_path / "a", tmp_path / "c", tmp_path / "c" / "d"]
    synced.clear()
    store.set("a/e/0", b"1")  # one key: the same rule
    assert sorted(synced) == [tmp_path, tmp_path / "a", tmp_path / "a" / "e"]


def test_fsync_deletes_sync_each_directory_they_changed_once(tmp_path, monkeypatch):
    store = LocalStore(tmp_path, fsync=True)
    store.set_many({"a/0": b"0", "a/1": b"1", "a/2": b"2", "b/c/0": b"3", "d/0": b"4"})
    synced: list[Path] = []
    monkeypatch.setattr(LocalStore, "_fsync_dir", staticmethod(synced.append))
    store.delete_many(["a/0", "a/1", "b/c/0", "missing/0"])  # b/c and b are pruned
    assert sorted(synced) == [tmp_path, tmp_path / "a"]
    assert sorted(store.list_prefix("")) == ["a/2", "d/0"]
    synced.clear()
    store.delete("d/0")
    assert synced == [tmp_path]
    synced.clear()
    LocalStore(tmp_path).delete("a/2")  # no fsync asked: nothing flushed
    assert synced == []


@pytest.mark.parametrize("fail_at", ["write", "fsync", "replace"])
def test_fsync_set_many_failure_leaves_no_half_written_value(tmp_path, monkeypatch, fail_at):
    store = LocalStore(tmp_path, fsync=True)
    old = {f"k/{i}": b"old" * 100 for i in range(6)}
    store.set_many(old)
    calls = {"n": 0}
    target = {"write": os, "fsync": os, "replace": os}[fail_at]
    real = getattr(target, fail_at)

    def failing(*args):
        calls["n"] += 1
        if calls["n"] == 4:
            raise OSError(28, "No space left on device")
        return real(*args)

    monkeypatch.setattr(target, fail_at, failing)
    new = {f"k/{i}": b"new" * 1000 for i in range(6)}
    with pytest.raises(StoreError, match="No space left"):
        store.set_many(new)
    monkeypatch.undo()
    for key in new:  # every key holds its whole old or whole new value
        assert store.get(key) in (old[key], new[key])
    if fail_at != "replace":
        assert all(store.get(k) == old[k] for k in old)  # nothing renamed before the sync
    assert _partials(tmp_path) == []


@pytest.mark.parametrize("threads", [1, 2])
def test_engine_writes_through_fsync_stores(tmp_path, threads):
    data = _data(shape=(50, 20))
    with tz.config.set(threads=threads, task_bytes=256):
        arr = tz.create_array(
            LocalStore(tmp_path, fsync=True),
            shape=data.shape,
            chunks=(4, 5),
            dtype="f4",
            compressors="zstd",
        )
        arr[:] = data
        arr[8:12, 5:10] = 0  # a whole chunk of fill: deleted
        arr[1:3, 1:3] = 5  # read-modify-write
    expected = data.copy()
    expected[8:12, 5:10] = 0
    expected[1:3, 1:3] = 5
    np.testing.assert_array_equal(tz.open_array(tmp_path, mode="r")[:].numpy(), expected)
    assert not (tmp_path / "c" / "2" / "1").exists()
    assert _partials(tmp_path) == []


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_whole_chunks_are_encoded_from_any_layout(tmp_path, zarr_format):
    arr = tz.create_array(
        LocalStore(tmp_path),
        shape=(12, 10),
        chunks=(4, 5),
        dtype="f4",
        fill_value=1,
        zarr_format=zarr_format,
        order="F" if zarr_format == 2 else "C",
    )
    source = _data(shape=(10, 12)).T  # not C-contiguous
    arr[:] = source
    np.testing.assert_array_equal(arr[:].numpy(), source)
    arr[0:8, :] = np.float32(1)  # a broadcast scalar, the fill value: chunks deleted
    arr[8:12, 5:10] = np.float32(3)
    expected = source.copy()
    expected[0:8] = 1
    expected[8:12, 5:10] = 3
    np.testing.assert_array_equal(arr[:].numpy(), expected)
    assert arr.nchunks_initialized == 2  # the four chunks of rows 0-7 were deleted


def test_a_chunk_file_longer_than_the_read_hint_is_read_to_its_end(tmp_path):
    tz.create_array(
        str(tmp_path / "a.zarr"),
        shape=(4096,),
        chunks=(4096,),
        dtype=torch.float32,
        compressors="balanced",
    )
    values = torch.rand(4096)  # incompressible: zstd frames as long as the data
    raw = values.numpy().tobytes()
    zstd = numcodecs.Zstd(level=1)
    skippable = b"\x50\x2a\x4d\x18" + (8192).to_bytes(4, "little") + bytes(8192)
    # two frames with a skippable frame between: well past nbytes + nbytes/128 + 1024
    (tmp_path / "a.zarr" / "c" / "0").parent.mkdir(parents=True, exist_ok=True)
    blob = zstd.encode(raw[:8192]) + skippable + zstd.encode(raw[8192:])
    (tmp_path / "a.zarr" / "c" / "0").write_bytes(blob)
    assert len(blob) > 16384 + 16384 // 128 + 1024
    assert torch.equal(tz.open_array(str(tmp_path / "a.zarr"))[:], values)
