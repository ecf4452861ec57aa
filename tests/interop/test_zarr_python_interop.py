"""What zarr-python 3.x writes we read; what we write, zarr-python reads (v2 and v3)."""

from __future__ import annotations

import json

import numcodecs
import numpy as np
import pytest
import torch
import zarr
import zarr.codecs

import torchzarr as tz

pytestmark = pytest.mark.interop

NUMPY_DTYPES = [
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
    "float32",
    "float64",
    "complex64",
    "complex128",
]


def _data(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    if dt.kind == "b":
        return rng.integers(0, 2, shape).astype(bool)
    if dt.kind == "c":
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dt)
    if dt.kind == "f":
        return rng.standard_normal(shape).astype(dt)
    info = np.iinfo(dt)
    return rng.integers(max(info.min, -1000), min(info.max, 1000), shape).astype(dt)


def _torch_to_numpy(t: torch.Tensor) -> np.ndarray:
    return t.numpy()


@pytest.mark.parametrize("zarr_format", [2, 3])
@pytest.mark.parametrize("dtype", NUMPY_DTYPES)
def test_read_what_zarr_python_wrote(tmp_path, zarr_format, dtype):
    data = _data((13, 7), dtype)
    z = zarr.create_array(
        str(tmp_path), shape=data.shape, chunks=(5, 3), dtype=dtype, zarr_format=zarr_format
    )
    z[:] = data
    arr = tz.open_array(tmp_path, mode="r")
    assert arr.zarr_format == zarr_format
    np.testing.assert_array_equal(_torch_to_numpy(arr[:]), data)
    np.testing.assert_array_equal(_torch_to_numpy(arr[3:11:2, 1:6]), data[3:11:2, 1:6])


@pytest.mark.parametrize("zarr_format", [2, 3])
@pytest.mark.parametrize("dtype", NUMPY_DTYPES)
def test_zarr_python_reads_what_we_wrote(tmp_path, zarr_format, dtype):
    data = _data((13, 7), dtype, seed=1)
    arr = tz.create_array(
        tmp_path, shape=data.shape, chunks=(5, 3), dtype=dtype, zarr_format=zarr_format
    )
    arr[:] = data
    z = zarr.open_array(str(tmp_path), mode="r")
    np.testing.assert_array_equal(z[:], data)


@pytest.mark.parametrize("fill", [float("nan"), float("inf"), float("-inf"), -0.5])
@pytest.mark.parametrize("zarr_format", [2, 3])
def test_special_fill_values_both_ways(tmp_path, fill, zarr_format):
    theirs = tmp_path / "theirs"
    z = zarr.create_array(
        str(theirs),
        shape=(10,),
        chunks=(4,),
        dtype="float32",
        fill_value=fill,
        zarr_format=zarr_format,
    )
    z[:2] = 1.0
    got = tz.open_array(theirs, mode="r")[:].numpy()
    expected = np.full(10, fill, dtype="float32")
    expected[:2] = 1.0
    np.testing.assert_array_equal(got, expected)
    ours = tmp_path / "ours"
    arr = tz.create_array(
        ours,
        shape=(10,),
        chunks=(4,),
        dtype=torch.float32,
        fill_value=fill,
        zarr_format=zarr_format,
    )
    arr[:2] = 1.0
    np.testing.assert_array_equal(zarr.open_array(str(ours), mode="r")[:], expected)


def test_v2_order_f_big_endian_and_slash_separator(tmp_path):
    data = _data((9, 6), ">f8")
    z = zarr.create_array(
        str(tmp_path / "f"),
        shape=data.shape,
        chunks=(4, 4),
        dtype=">f8",
        zarr_format=2,
        order="F",
        chunk_key_encoding={"name": "v2", "separator": "/"},
    )
    z[:] = data
    arr = tz.open_array(tmp_path / "f", mode="r")
    np.testing.assert_array_equal(arr[:].numpy(), data)
    ours = tz.create_array(
        tmp_path / "o",
        shape=data.shape,
        chunks=(4, 4),
        dtype=np.dtype(">i4"),
        zarr_format=2,
        order="F",
        dimension_separator="/",
    )
    ours.metadata  # noqa: B018
    ints = np.arange(54, dtype=">i4").reshape(9, 6)
    ours[:] = ints
    assert (tmp_path / "o" / "1" / "1").exists()
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "o"), mode="r")[:], ints)


@pytest.mark.parametrize(
    "compressor",
    [
        numcodecs.Blosc(cname="lz4", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE),
        numcodecs.Blosc(cname="zstd", clevel=3, shuffle=numcodecs.Blosc.BITSHUFFLE),
        numcodecs.Zlib(level=4),
        numcodecs.GZip(level=2),
        numcodecs.LZ4(),
        numcodecs.BZ2(),
        numcodecs.LZMA(),
        numcodecs.Zstd(level=3),
        None,
    ],
    ids=repr,
)
def test_v2_compressors_both_ways(tmp_path, compressor):
    data = _data((20, 5), "int32")
    z = zarr.create_array(
        str(tmp_path / "t"),
        shape=data.shape,
        chunks=(8, 5),
        dtype="int32",
        zarr_format=2,
        compressors=compressor,
    )
    z[:] = data
    np.testing.assert_array_equal(tz.open_array(tmp_path / "t")[:].numpy(), data)
    arr = tz.create_array(
        tmp_path / "o",
        shape=data.shape,
        chunks=(8, 5),
        dtype="int32",
        zarr_format=2,
        compressors=compressor,
    )
    arr[:] = data
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "o"))[:], data)


@pytest.mark.parametrize(
    "filters",
    [
        [numcodecs.Delta(dtype="<i8")],
        [numcodecs.Shuffle(elementsize=8)],
        [numcodecs.AsType(encode_dtype="<i4", decode_dtype="<i8")],
        [numcodecs.FixedScaleOffset(offset=0, scale=1, dtype="<i8", astype="<i4")],
    ],
    ids=repr,
)
def test_v2_filters_both_ways(tmp_path, filters):
    data = np.arange(-50, 50, dtype="<i8").reshape(10, 10)
    z = zarr.create_array(
        str(tmp_path / "t"),
        shape=data.shape,
        chunks=(4, 10),
        dtype="<i8",
        zarr_format=2,
        filters=filters,
        compressors=numcodecs.Zlib(1),
    )
    z[:] = data
    np.testing.assert_array_equal(tz.open_array(tmp_path / "t")[:].numpy(), data)
    arr = tz.create_array(
        tmp_path / "o",
        shape=data.shape,
        chunks=(4, 10),
        dtype="<i8",
        zarr_format=2,
        filters=filters,
        compressors=numcodecs.Zlib(1),
    )
    arr[:] = data
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "o"))[:], data)


@pytest.mark.parametrize(
    "compressors",
    [
        zarr.codecs.GzipCodec(level=3),
        zarr.codecs.BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle"),
        zarr.codecs.ZstdCodec(level=2, checksum=True),
        [zarr.codecs.ZstdCodec(level=1), zarr.codecs.Crc32cCodec()],
        None,
    ],
    ids=repr,
)
def test_v3_codecs_written_by_zarr_python(tmp_path, compressors):
    data = _data((11, 6), "float64")
    z = zarr.create_array(
        str(tmp_path),
        shape=data.shape,
        chunks=(4, 4),
        dtype="float64",
        compressors=compressors,
        serializer=zarr.codecs.BytesCodec(endian="big"),
        filters=[zarr.codecs.TransposeCodec(order=(1, 0))],
        dimension_names=("row", None),
    )
    z[:] = data
    arr = tz.open_array(tmp_path, mode="r")
    assert arr.metadata.dimension_names == ("row", None)
    np.testing.assert_array_equal(arr[:].numpy(), data)


@pytest.mark.parametrize(
    "compressors", ["zstd", "gzip", "blosc", "crc32c", numcodecs.LZ4(), numcodecs.Zlib(3)], ids=repr
)
def test_zarr_python_reads_our_v3_codecs(tmp_path, compressors):
    data = _data((11, 6), "float32")
    arr = tz.create_array(
        tmp_path,
        shape=data.shape,
        chunks=(4, 4),
        dtype=torch.float32,
        compressors=compressors,
        dimension_names=["y", "x"],
        attributes={"units": "K"},
    )
    arr[:] = data
    z = zarr.open_array(str(tmp_path), mode="r")
    np.testing.assert_array_equal(z[:], data)
    assert z.metadata.dimension_names == ("y", "x")
    assert z.attrs["units"] == "K"


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_zero_d_and_zero_length_both_ways(tmp_path, zarr_format):
    z = zarr.create_array(str(tmp_path / "t0"), shape=(), dtype="int16", zarr_format=zarr_format)
    z[()] = 7
    assert tz.open_array(tmp_path / "t0")[()].item() == 7
    e = zarr.create_array(
        str(tmp_path / "te"), shape=(0, 4), chunks=(2, 2), dtype="int16", zarr_format=zarr_format
    )
    assert tz.open_array(tmp_path / "te")[:].shape == (0, 4)
    del e
    ours = tz.create_array(tmp_path / "o0", shape=(), dtype="int16", zarr_format=zarr_format)
    ours[()] = -3
    assert zarr.open_array(str(tmp_path / "o0"))[()] == -3
    tz.create_array(
        tmp_path / "oe", shape=(0, 4), chunks=(2, 2), dtype="int16", zarr_format=zarr_format
    )
    assert zarr.open_array(str(tmp_path / "oe"))[:].shape == (0, 4)


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_zero_chunk_extent_on_an_empty_axis_written_by_zarr_python(tmp_path, zarr_format):
    path = str(tmp_path / "z")
    zarr.create_array(path, shape=(0, 3), chunks=(0, 3), dtype="int16", zarr_format=zarr_format)
    ours = tz.open_array(path)
    assert ours[:].shape == (0, 3)
    assert ours.chunks == (1, 3) and ours.nchunks == 0
    ours.resize((2, 3))  # zarr-python's own resize divides by the 0 here
    ours[:] = 5
    np.testing.assert_array_equal(zarr.open_array(path)[:], np.full((2, 3), 5, "int16"))


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_zero_chunk_extent_on_an_axis_with_elements_is_refused(tmp_path, zarr_format):
    path = str(tmp_path / "z")
    zarr.create_array(path, shape=(0, 3), chunks=(0, 3), dtype="int16", zarr_format=zarr_format)
    doc_key = ".zarray" if zarr_format == 2 else "zarr.json"
    doc = json.loads((tmp_path / "z" / doc_key).read_text())
    doc["shape"] = [2, 3]
    (tmp_path / "z" / doc_key).write_text(json.dumps(doc))
    with pytest.raises(tz.errors.MetadataError, match=r"read only on an axis of extent 0"):
        tz.open_array(path)


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_partial_writes_and_edges_both_ways(tmp_path, zarr_format):
    z = zarr.create_array(
        str(tmp_path / "t"),
        shape=(17, 9),
        chunks=(5, 4),
        dtype="int64",
        fill_value=-7,
        zarr_format=zarr_format,
    )
    z[3:12, 2:8] = np.arange(54).reshape(9, 6)
    expected = np.full((17, 9), -7)
    expected[3:12, 2:8] = np.arange(54).reshape(9, 6)
    arr = tz.open_array(tmp_path / "t", mode="r+")
    np.testing.assert_array_equal(arr[:].numpy(), expected)
    arr[15:, 7:] = 1
    expected[15:, 7:] = 1
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "t"))[:], expected)


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_groups_with_attributes_both_ways(tmp_path, zarr_format):
    g = zarr.open_group(str(tmp_path / "t"), mode="w", zarr_format=zarr_format)
    g.attrs["name"] = "root"
    sub = g.create_group("a/b")
    sub.attrs["depth"] = 2
    sub.create_array("x", shape=(3,), dtype="uint8")[:] = [1, 2, 3]
    root = tz.open_group(tmp_path / "t", mode="r")
    assert root.zarr_format == zarr_format
    assert dict(root.attrs) == {"name": "root"}
    assert dict(root["a/b"].attrs) == {"depth": 2}
    assert root["a/b/x"][:].tolist() == [1, 2, 3]
    assert [n for n, _ in root.members(max_depth=None)] == ["a", "a/b", "a/b/x"]

    ours = tz.open_group(tmp_path / "o", mode="w", zarr_format=zarr_format)
    ours.attrs["name"] = "mine"
    ours.require_group("p/q").attrs["k"] = [1, 2]
    ours.create_array("p/q/y", shape=(2, 2), dtype=torch.float16)[:] = 0.5
    theirs = zarr.open_group(str(tmp_path / "o"), mode="r")
    assert theirs.attrs["name"] == "mine"
    assert theirs["p/q"].attrs["k"] == [1, 2]
    np.testing.assert_array_equal(theirs["p/q/y"][:], np.full((2, 2), 0.5, dtype="float16"))


def test_complex_fill_values_both_ways(tmp_path):
    z = zarr.create_array(str(tmp_path / "t"), shape=(3,), dtype="complex128", fill_value=1 + 2j)
    assert tz.open_array(tmp_path / "t")[:].tolist() == [1 + 2j] * 3
    arr = tz.create_array(
        tmp_path / "o", shape=(3,), dtype=torch.complex64, fill_value=complex(0, float("nan"))
    )
    got = zarr.open_array(str(tmp_path / "o"))[:]
    assert np.isnan(got.imag).all() and (got.real == 0).all()
    del z, arr


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_nan_attributes_written_by_zarr_python_survive_our_updates(tmp_path, zarr_format):
    # zarr-python writes NaN/Infinity literals in attributes; a resize, an append or an
    # attribute update of such a node carries them over, while new ones are still refused.
    g = zarr.open_group(str(tmp_path / "t"), mode="w", zarr_format=zarr_format)
    g.attrs["missing"] = float("nan")
    z = g.create_array("x", shape=(2,), chunks=(2,), dtype="float32")
    z.attrs["scale"] = float("inf")
    root = tz.open_group(tmp_path / "t", mode="r+")
    root.attrs["units"] = "m"
    arr = root["x"]
    arr.append(torch.ones(3))
    arr.attrs["offset"] = 1.0
    tz.consolidate_metadata(tmp_path / "t")
    with pytest.raises(tz.errors.AttributeValueError, match="'bad'"):
        arr.attrs["bad"] = float("nan")
    theirs = zarr.open_group(str(tmp_path / "t"), mode="r")
    assert np.isnan(theirs.attrs["missing"]) and theirs.attrs["units"] == "m"
    assert dict(theirs["x"].attrs) == {"scale": float("inf"), "offset": 1.0}
    assert theirs["x"].shape == (5,)
