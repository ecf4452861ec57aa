"""What tensorstore writes (zarr and zarr3 drivers) we read; what we write, tensorstore reads."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
import tensorstore as ts
import torch

import torchzarr as tz

pytestmark = pytest.mark.interop

V3_TYPES = [
    "bool",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "float16",
    "bfloat16",
    "float32",
    "float64",
    "complex64",
    "complex128",
]


def _np_dtype(name: str) -> np.dtype:
    return np.dtype(ml_dtypes.bfloat16) if name == "bfloat16" else np.dtype(name)


def _data(shape, name, seed=0):
    rng = np.random.default_rng(seed)
    dt = _np_dtype(name)
    if name == "bool":
        return rng.integers(0, 2, shape).astype(bool)
    if dt.kind == "c":
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dt)
    if name in ("float16", "bfloat16", "float32", "float64"):
        return rng.standard_normal(shape).astype(dt)
    info = np.iinfo(dt)
    return rng.integers(max(info.min, -1000), min(info.max, 1000), shape).astype(dt)


def _ts(path, driver, **kwargs):
    spec = {"driver": driver, "kvstore": {"driver": "file", "path": str(path)}}
    spec.update(kwargs.pop("spec", {}))
    return ts.open(spec, **kwargs).result()


def _as_numpy(t: torch.Tensor, name: str) -> np.ndarray:
    if name == "bfloat16":
        return t.view(torch.uint16).numpy().view(ml_dtypes.bfloat16)
    return t.numpy()


def _v3_meta(shape, chunks, name, codecs=None, fill=0):
    return {
        "shape": list(shape),
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(chunks)}},
        "chunk_key_encoding": {"name": "default"},
        "data_type": name,
        "fill_value": fill,
        "codecs": codecs
        or [
            {"name": "bytes", "configuration": {"endian": "little"}},
            {"name": "zstd", "configuration": {"level": 1}},
        ],
    }


@pytest.mark.parametrize("name", V3_TYPES)
def test_read_tensorstore_zarr3(tmp_path, name):
    data = _data((9, 7), name)
    fill = False if name == "bool" else ([0, 0] if name.startswith("complex") else 0)
    t = _ts(
        tmp_path,
        "zarr3",
        spec={"metadata": _v3_meta(data.shape, (4, 3), name, fill=fill)},
        create=True,
    )
    t[...].write(data).result()
    arr = tz.open_array(tmp_path, mode="r")
    np.testing.assert_array_equal(_as_numpy(arr[:], name), data)


@pytest.mark.parametrize("name", V3_TYPES)
def test_tensorstore_zarr3_reads_ours(tmp_path, name):
    data = _data((9, 7), name, seed=3)
    arr = tz.create_array(tmp_path, shape=data.shape, chunks=(4, 3), dtype=name)
    if name == "bfloat16":
        arr[:] = torch.from_numpy(data.view(np.uint16)).view(torch.bfloat16)
    else:
        arr[:] = data
    got = _ts(tmp_path, "zarr3", open=True).read().result()
    np.testing.assert_array_equal(got, data)


V2_TYPES = [
    "|b1",
    "|i1",
    "<i2",
    ">i4",
    "<i8",
    "|u1",
    ">u2",
    "<u4",
    "<u8",
    "<f2",
    ">f4",
    "<f8",
    "<c8",
    ">c16",
]


@pytest.mark.parametrize("typestr", V2_TYPES)
@pytest.mark.parametrize("order", ["C", "F"])
def test_read_tensorstore_zarr2(tmp_path, typestr, order):
    data = _data((9, 7), np.dtype(typestr).newbyteorder("=").name)
    meta = {
        "shape": [9, 7],
        "chunks": [4, 3],
        "dtype": typestr,
        "order": order,
        "compressor": {"id": "zlib", "level": 1},
        "fill_value": None,
        "filters": None,
    }
    t = _ts(tmp_path, "zarr", spec={"metadata": meta}, create=True)
    t[...].write(data).result()
    np.testing.assert_array_equal(tz.open_array(tmp_path, mode="r")[:].numpy(), data)


@pytest.mark.parametrize("typestr", V2_TYPES)
def test_tensorstore_zarr2_reads_ours(tmp_path, typestr):
    data = _data((9, 7), np.dtype(typestr).newbyteorder("=").name, seed=5)
    arr = tz.create_array(
        tmp_path, shape=data.shape, chunks=(4, 3), dtype=np.dtype(typestr), zarr_format=2
    )
    arr[:] = data
    got = _ts(tmp_path, "zarr", open=True).read().result()
    np.testing.assert_array_equal(got, data)


def test_bfloat16_v2_both_ways(tmp_path):
    data = _data((6, 5), "bfloat16")
    meta = {
        "shape": [6, 5],
        "chunks": [4, 4],
        "dtype": "bfloat16",
        "order": "C",
        "compressor": None,
        "fill_value": 0,
        "filters": None,
    }
    t = _ts(tmp_path / "t", "zarr", spec={"metadata": meta}, create=True)
    t[...].write(data).result()
    np.testing.assert_array_equal(_as_numpy(tz.open_array(tmp_path / "t")[:], "bfloat16"), data)
    arr = tz.create_array(
        tmp_path / "o", shape=(6, 5), chunks=(4, 4), dtype=torch.bfloat16, zarr_format=2
    )
    arr[:] = torch.from_numpy(data.view(np.uint16)).view(torch.bfloat16)
    np.testing.assert_array_equal(_ts(tmp_path / "o", "zarr", open=True).read().result(), data)


@pytest.mark.parametrize("name", ["float8_e4m3fn", "float8_e5m2", "float8_e5m2fnuz"])
def test_tensorstore_v2_float8_arrays_read_and_stay_theirs(tmp_path, name):
    kind = getattr(ml_dtypes, name)
    data = np.random.default_rng(0).standard_normal((6, 5)).astype(kind)
    meta = {"shape": [6, 5], "chunks": [4, 4], "dtype": name, "compressor": None}
    t = _ts(tmp_path, "zarr", spec={"metadata": meta}, create=True)
    t[...].write(data).result()
    arr = tz.open_array(tmp_path, mode="r+")
    assert arr.dtype == getattr(torch, name)
    np.testing.assert_array_equal(arr[:].view(torch.uint8).numpy().view(kind), data)
    arr.resize((7, 5))  # rewrites .zarray: tensorstore's name stays
    arr[6] = 1.0
    got = _ts(tmp_path, "zarr", open=True).read().result()
    np.testing.assert_array_equal(got[:6], data)
    assert got[6].astype(np.float32).tolist() == [1.0] * 5


@pytest.mark.parametrize("fill", ["NaN", "Infinity", "-Infinity", "0x7fc00000"])
def test_tensorstore_nan_fills_both_ways(tmp_path, fill):
    meta = _v3_meta((10,), (4,), "float32", fill=fill)
    t = _ts(tmp_path / "t", "zarr3", spec={"metadata": meta}, create=True)
    t[:2].write(np.ones(2, dtype="float32")).result()
    got = tz.open_array(tmp_path / "t")[:].numpy()
    expected = np.full(
        10,
        {"NaN": np.nan, "Infinity": np.inf, "-Infinity": -np.inf, "0x7fc00000": np.nan}[fill],
        dtype="float32",
    )
    expected[:2] = 1
    np.testing.assert_array_equal(got, expected)
    arr = tz.create_array(
        tmp_path / "o",
        shape=(10,),
        chunks=(4,),
        dtype=torch.float32,
        fill_value=float(expected[-1]),
    )
    arr[:2] = 1.0
    np.testing.assert_array_equal(_ts(tmp_path / "o", "zarr3", open=True).read().result(), expected)


def test_tensorstore_codec_chains(tmp_path):
    codecs = [
        {"name": "transpose", "configuration": {"order": [1, 0]}},
        {"name": "bytes", "configuration": {"endian": "big"}},
        {"name": "gzip", "configuration": {"level": 5}},
        {"name": "crc32c"},
    ]
    data = _data((10, 6), "int32")
    t = _ts(
        tmp_path,
        "zarr3",
        spec={"metadata": _v3_meta((10, 6), (4, 4), "int32", codecs)},
        create=True,
    )
    t[...].write(data).result()
    arr = tz.open_array(tmp_path, mode="r+")
    np.testing.assert_array_equal(arr[:].numpy(), data)
    arr[0:3, 0:2] = -1
    data[0:3, 0:2] = -1
    np.testing.assert_array_equal(_ts(tmp_path, "zarr3", open=True).read().result(), data)


def test_zero_d_and_edges_with_tensorstore(tmp_path):
    t = _ts(tmp_path / "z", "zarr3", spec={"metadata": _v3_meta((), (), "int64")}, create=True)
    t.write(np.int64(42)).result()
    assert tz.open_array(tmp_path / "z")[()].item() == 42
    ours = tz.create_array(
        tmp_path / "o", shape=(13,), chunks=(5,), dtype=torch.int64, fill_value=-1
    )
    ours[2:11] = torch.arange(9)
    expected = np.full(13, -1)
    expected[2:11] = np.arange(9)
    np.testing.assert_array_equal(_ts(tmp_path / "o", "zarr3", open=True).read().result(), expected)
