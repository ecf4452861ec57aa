"""Tiled reads of many small local chunks agree with numpy on every codec path and selection."""

from __future__ import annotations

import shutil

import numcodecs
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import torchzarr as tz
from torchzarr import telemetry
from torchzarr.codecs import BytesCodec, ZstdCodec, key_encoding
from torchzarr.codecs.key_encoding import DefaultChunkKeyEncoding, register_chunk_key_encoding
from torchzarr.core import fastpath, tiles
from torchzarr.errors import ChunkDecodeError, StoreError
from torchzarr.storage.local import LocalStore
from torchzarr.storage.memory import MemoryStore


def _data(shape, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * 100).astype(dtype)


def _array(path, data, chunks, **kwargs):
    arr = tz.create_array(
        LocalStore(path), shape=data.shape, chunks=chunks, dtype=data.dtype, **kwargs
    )
    arr[:] = data
    return tz.open_array(path, mode="r")


def _tiled_reads(arr, selection, as_tensor=False):
    """Read ``selection`` and say how many tiles it took (by counting tile decodes)."""
    calls = []
    original = tiles._TileReader.__call__

    def counting(self, tile):
        calls.append(tile)
        return original(self, tile)

    tiles._TileReader.__call__ = counting
    try:
        got = arr[selection]
        return (got if as_tensor else got.numpy()), len(calls)
    finally:
        tiles._TileReader.__call__ = original


SELECTIONS = [
    (slice(None), slice(None)),
    (slice(3, 61), slice(5, 47)),  # cut chunks on every side
    (slice(8, 40), slice(None)),  # whole chunk rows
    (slice(0, 64), slice(0, 48)),  # aligned, short of the array's own edge chunks
    (5, slice(None)),  # an int axis drops
    (slice(None), slice(7, 8)),  # one column: no whole chunk, the general way
]

CODECS = {
    "zstd": {"compressors": [ZstdCodec(level=1)]},
    "blosc": {"compressors": [tz.codecs.BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")]},
    "gzip": {"compressors": [tz.codecs.GzipCodec(level=1)]},
    "raw": {"compressors": None},
    "raw-big-endian": {"compressors": [BytesCodec("big")]},
}


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("codec", sorted(CODECS))
def test_tiled_reads_match_numpy(tmp_path, codec, threads):
    data = _data((67, 53))
    arr = _array(tmp_path, data, (8, 6), **CODECS[codec])
    with tz.config.set(threads=threads):
        for sel in SELECTIONS:
            got, _ = _tiled_reads(arr, sel)
            np.testing.assert_array_equal(got, data[sel], err_msg=str(sel))
    _, used = _tiled_reads(arr, slice(None))
    assert used >= 1  # the full read went through tiles


@pytest.mark.parametrize("chunk_side", [8, 128])  # 256 B (calling thread) and 64 KiB chunks
def test_tiny_and_small_chunks_are_tiled(tmp_path, chunk_side):
    data = _data((chunk_side * 5 + 3, chunk_side * 4 + 1))
    arr = _array(tmp_path, data, (chunk_side, chunk_side), compressors=[ZstdCodec(level=1)])
    with tz.config.set(threads=2):
        got, used = _tiled_reads(arr, slice(None))
    np.testing.assert_array_equal(got, data)
    assert used >= 1


@pytest.mark.parametrize("compressor", [numcodecs.Zstd(level=1), None])
def test_v2_arrays_with_either_separator_and_order(tmp_path, compressor):
    data = _data((40, 36), dtype=np.int16)
    layouts = [(".", "C", "<i2"), ("/", "C", "<i2"), (".", "F", "<i2"), ("/", "F", ">i2")]
    for i, (sep, order, dtype) in enumerate(layouts):
        arr = tz.create_array(
            LocalStore(tmp_path / str(i)),
            shape=data.shape,
            chunks=(4, 4),
            dtype=np.dtype(dtype),
            zarr_format=2,
            order=order,
            compressors=compressor,
            chunk_key_encoding={"name": "v2", "separator": sep},
        )
        arr[:] = data
        reader = tz.open_array(tmp_path / str(i), mode="r")
        for sel in SELECTIONS:  # raw F-order chunks are not C-order bytes: no raw tile copy
            got, _ = _tiled_reads(reader, sel)
            np.testing.assert_array_equal(got, data[sel], err_msg=f"{sep} {order} {sel}")
        _, used = _tiled_reads(reader, slice(None))
        assert used >= 1


@pytest.mark.parametrize("codec", ["zstd", "raw", "raw-big-endian"])
def test_missing_chunks_become_the_fill_value(tmp_path, codec):
    data = _data((48, 48), dtype=np.int32)
    arr = tz.create_array(
        LocalStore(tmp_path),
        shape=data.shape,
        chunks=(8, 8),
        dtype=data.dtype,
        fill_value=-3,
        **CODECS[codec],
    )
    arr[:] = data
    reader = tz.open_array(tmp_path, mode="r")
    np.testing.assert_array_equal(reader[:].numpy(), data)  # tile memory now holds real data
    (tmp_path / "c" / "2" / "3").unlink()
    (tmp_path / "c" / "5" / "0").unlink()
    expected = data.copy()
    expected[16:24, 24:32] = -3
    expected[40:48, 0:8] = -3
    stored = sum(f.stat().st_size for f in (tmp_path / "c").rglob("*") if f.is_file())
    telemetry.reset()
    got, used = _tiled_reads(reader, slice(None))
    stats = telemetry.snapshot()
    np.testing.assert_array_equal(got, expected)
    assert used >= 1
    assert stats["chunks_missing"] == 2 and stats["chunks_fetched"] == 34
    assert stats["bytes_fetched"] == stored  # the bytes read, nothing for a missing chunk


@pytest.mark.parametrize("relative_open", [True, False])
def test_a_missing_directory_of_chunks_is_the_fill_value(tmp_path, monkeypatch, relative_open):
    monkeypatch.setattr(fastpath, "_RELATIVE_OPEN", relative_open and fastpath._RELATIVE_OPEN)
    data = _data((48, 40), dtype=np.int16)
    root = tz.create_group(LocalStore(tmp_path))
    arr = root.create_array("sub/arr", shape=data.shape, chunks=(4, 4), dtype=data.dtype)
    arr[:] = data
    shutil.rmtree(tmp_path / "sub" / "arr" / "c" / "3")  # a whole row of chunks
    (tmp_path / "sub" / "arr" / "c" / "5" / "2").unlink()
    (tmp_path / "sub" / "arr" / "c" / "5" / "2").mkdir()  # a directory where a chunk was
    expected = data.copy()
    expected[12:16] = 0
    expected[20:24, 8:12] = 0
    got, used = _tiled_reads(tz.open_array(tmp_path, path="sub/arr", mode="r"), slice(None))
    np.testing.assert_array_equal(got, expected)
    assert used >= 1


def test_three_dims_and_tiles_cut_on_inner_axes(tmp_path, monkeypatch):
    data = _data((9, 20, 22))
    arr = _array(tmp_path, data, (2, 4, 4), compressors=[ZstdCodec(level=1)])
    # A tile budget below one row of chunks cuts tiles along the inner axes too.
    monkeypatch.setattr(tiles, "_TILE_BYTES", 2 * 4 * 4 * 4 * 3)
    for sel in [slice(None), (slice(1, 8), slice(3, 19), slice(2, 21)), slice(4, 6)]:
        got, used = _tiled_reads(arr, sel)
        np.testing.assert_array_equal(got, data[sel], err_msg=str(sel))
        assert used > 1


def test_an_int_on_an_axis_of_one_element_chunks_is_tiled(tmp_path):
    data = _data((6, 24, 24))
    arr = _array(tmp_path, data, (1, 4, 4), compressors=[ZstdCodec(level=1)])
    got, used = _tiled_reads(arr, (3, slice(None), slice(2, 24)))
    np.testing.assert_array_equal(got, data[3, :, 2:])
    assert used >= 1


def test_reads_into_a_given_out_and_one_dimension(tmp_path):
    data = _data((1000,), dtype=np.float64)
    arr = _array(tmp_path, data, (16,), compressors=[ZstdCodec(level=1)])
    out = tz.tensors.allocate((990,), arr.data_type, pin_memory=False)
    arr.read(slice(5, 995), out=out)
    np.testing.assert_array_equal(out.numpy(), data[5:995])


def test_corrupt_and_wrong_sized_chunks_name_their_key(tmp_path):
    data = _data((32, 32))
    arr = _array(tmp_path / "z", data, (4, 4), compressors=[ZstdCodec(level=1)])
    (tmp_path / "z" / "c" / "3" / "2").write_bytes(b"not zstd")
    with pytest.raises(ChunkDecodeError, match="c/3/2"):
        arr[:]
    raw = _array(tmp_path / "r", data, (4, 4), compressors=None)
    (tmp_path / "r" / "c" / "1" / "1").write_bytes(b"\0" * 10)
    with pytest.raises(ChunkDecodeError, match="c/1/1"):
        raw[:]


def test_cached_remote_and_sharded_arrays_take_the_general_way(tmp_path):
    data = _data((64, 64))
    memory = tz.create_array(MemoryStore(), shape=data.shape, chunks=(4, 4), dtype=data.dtype)
    memory[:] = data
    local = _array(tmp_path / "l", data, (4, 4))
    cached = local.with_cache(tz.ChunkCache(1 << 20))
    sharded = tz.create_array(
        LocalStore(tmp_path / "s"), shape=data.shape, chunks=(4, 4), shards=(32, 32), dtype="f4"
    )
    sharded[:] = data
    for arr in (memory, cached, sharded):
        got, used = _tiled_reads(arr, slice(None))
        np.testing.assert_array_equal(got, data)
        assert used == 0


def test_interior_edges_and_tile_shapes():
    assert tiles.interior([(0, 0)], (4,)) is None
    assert tiles.interior([], ()) is None
    spans, inner = [(3, 61), (5, 47)], [(8, 56), (6, 42)]
    boxes = tiles.split_edges(spans, inner)
    covered = np.zeros((70, 70), dtype=int)
    for box in [*boxes, inner]:
        covered[tuple(slice(a, b) for a, b in box)] += 1
    expected = np.zeros_like(covered)
    expected[3:61, 5:47] = 1
    np.testing.assert_array_equal(covered, expected)  # a partition of the selection
    assert tiles._tile_shape([10, 10], 100, 1000) == [1, 10]
    assert tiles._tile_shape([10, 10], 100, 250) == [1, 2]
    assert tiles._tile_shape([10, 10], 100, 50) == [1, 1]


def test_keys_come_from_the_encoding_unless_it_is_a_built_in_one():
    def padded(coords):
        return "k" + "-".join(f"{c:03d}" for c in coords)

    assert tiles._keys(padded, [(0, 1), (8, 11)], False) == ["k000-008", "k000-009", "k000-010"]
    default = DefaultChunkKeyEncoding().encode
    assert tiles._keys(default, [(1, 3), (9, 11)], True) == [
        "c/1/9",
        "c/1/10",
        "c/2/9",
        "c/2/10",
    ]


class _Padded(DefaultChunkKeyEncoding):
    """A plug-in encoding whose keys do not end in the plain decimal coordinate."""

    name = "test.tiles-padded"

    def encode(self, chunk_coords):
        return "c/" + "/".join(f"{c:03d}" for c in chunk_coords)


def test_a_plug_in_key_encoding_is_asked_for_every_key(tmp_path, monkeypatch):
    monkeypatch.setattr(key_encoding, "_registry", dict(key_encoding._registry))  # undone after
    register_chunk_key_encoding(_Padded.name, _Padded)
    data = _data((40, 44))
    _array(tmp_path, data, (2, 2), compressors=[ZstdCodec(level=1)], chunk_key_encoding=_Padded())
    assert (tmp_path / "c" / "019" / "010").is_file()
    got, used = _tiled_reads(tz.open_array(tmp_path, mode="r"), slice(None))
    np.testing.assert_array_equal(got, data)
    assert used >= 1


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    shape=st.lists(st.integers(1, 40), min_size=1, max_size=3),
    chunk=st.lists(st.integers(1, 6), min_size=3, max_size=3),
    cuts=st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1)), min_size=3, max_size=3),
    codec=st.sampled_from(["zstd", "raw"]),
)
def test_tiled_reads_match_numpy_for_any_slices(tmp_path_factory, shape, chunk, cuts, codec):
    path = tmp_path_factory.mktemp("tiles")
    data = _data(tuple(shape), dtype=np.int16)
    chunks = tuple(chunk[: len(shape)])
    arr = _array(path, data, chunks, **CODECS[codec])
    selection = []
    for extent, (a, b) in zip(shape, cuts, strict=False):
        lo, hi = sorted((int(a * extent), int(b * extent)))
        selection.append(slice(lo, hi if hi > lo else lo + 1))
    got, _ = _tiled_reads(arr, tuple(selection))
    np.testing.assert_array_equal(got, data[tuple(selection)])


@pytest.mark.parametrize("where", ["c/2", "c/2/3"])
def test_an_unreadable_chunk_or_directory_is_a_store_error_naming_it(tmp_path, where):
    data = _data((32, 32))
    arr = _array(tmp_path, data, (4, 4), compressors=[ZstdCodec(level=1)])
    target = tmp_path / where
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    target.symlink_to(target)  # a symlink loop: ELOOP, not a missing file
    with pytest.raises(StoreError, match=where):
        arr[:]


def _tiled_read_of(path, data):
    got, used = _tiled_reads(tz.open_array(path, mode="r"), (slice(1, None), slice(None)))
    np.testing.assert_array_equal(got, data[1:])
    assert used >= 1


@pytest.mark.parametrize("zarr_format,separator", [(2, "."), (2, "/"), (3, "/"), (3, ".")])
def test_tiled_reads_of_zarr_python_arrays(tmp_path, zarr_format, separator):
    import zarr

    data = _data((60, 50), dtype=np.int32)
    encoding = {"name": "v2" if zarr_format == 2 else "default", "separator": separator}
    z = zarr.create_array(
        str(tmp_path),
        shape=data.shape,
        chunks=(6, 5),
        dtype=data.dtype,
        zarr_format=zarr_format,
        chunk_key_encoding=encoding,
    )
    z[:] = data
    _tiled_read_of(tmp_path, data)


@pytest.mark.parametrize("codec", ["zstd", "blosc", None])
def test_tiled_reads_of_tensorstore_arrays(tmp_path, codec):
    import tensorstore as ts

    data = _data((60, 50), dtype=np.float64)
    codecs = [{"name": "bytes", "configuration": {"endian": "little"}}]
    if codec == "zstd":
        codecs.append({"name": "zstd", "configuration": {"level": 3}})
    elif codec == "blosc":
        codecs.append({"name": "blosc", "configuration": {"cname": "lz4", "clevel": 5}})
    spec = {
        "driver": "zarr3",
        "kvstore": {"driver": "file", "path": str(tmp_path)},
        "metadata": {
            "shape": list(data.shape),
            "data_type": "float64",
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [4, 7]}},
            "codecs": codecs,
        },
    }
    t = ts.open(spec, create=True).result()
    t[...].write(data).result()
    _tiled_read_of(tmp_path, data)


@pytest.mark.parametrize(
    "dtype",
    [torch.bool, torch.uint64, torch.float16, torch.bfloat16, torch.complex64, torch.float8_e4m3fn],
)
def test_tiled_reads_of_every_kind_of_dtype(tmp_path, dtype):
    values = torch.from_numpy(_data((40, 36), dtype=np.float32))
    if dtype == torch.bool:
        data = values > 0
    elif dtype == torch.uint64:
        data = values.abs().to(torch.int64).to(dtype)
    else:
        data = values.to(dtype)
    arr = tz.create_array(LocalStore(tmp_path), shape=data.shape, chunks=(4, 4), dtype=dtype)
    arr[:] = data
    reader = tz.open_array(tmp_path, mode="r")
    got, used = _tiled_reads(reader, (slice(1, 39), slice(None)), as_tensor=True)
    assert used >= 1
    assert got.dtype == dtype
    bits = {1: torch.uint8, 2: torch.int16, 8: torch.int64}[dtype.itemsize]
    assert torch.equal(got.view(bits), data[1:39].view(bits))  # bit for bit, NaNs too
