"""from_array of a zarr-python array keeps what zarr-python's from_array keeps: within its
format, shards (with their index settings), filters, compressors, serializer, v2 order and
chunk key encoding; a copy into the other format takes the default codecs, as there."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import torchzarr as tz

zarr = pytest.importorskip("zarr")
numcodecs = pytest.importorskip("numcodecs")

VALUES = np.arange(9, dtype="i2")


def _source(path, zarr_format, **kwargs):
    z = zarr.create_array(
        path,
        shape=(9,),
        chunks=(2,),
        dtype=kwargs.pop("dtype", "i2"),
        zarr_format=zarr_format,
        **kwargs,
    )
    z[:] = VALUES
    return z


V3_SOURCES = {
    "sharded": {"shards": (4,), "compressors": "gzip5"},
    "sharded-transposed": {"shards": (4,), "filters": "transpose", "compressors": None},
    "unsharded": {"compressors": "gzip5"},
}


def _v3_kwargs(spec):
    out = dict(spec)
    if out.get("compressors") == "gzip5":
        out["compressors"] = zarr.codecs.GzipCodec(level=5)
    if out.get("filters") == "transpose":
        out["filters"] = [zarr.codecs.TransposeCodec(order=(0,))]
    return out


@pytest.mark.parametrize("case", list(V3_SOURCES))
def test_a_v3_source_keeps_what_zarr_python_keeps(tmp_path, case):
    source = _source(tmp_path / "src", 3, **_v3_kwargs(V3_SOURCES[case]))
    expected = zarr.from_array(tmp_path / "zarr", data=source)
    tz.from_array(tmp_path / "tz", data=source)
    copy = zarr.open_array(tmp_path / "tz")  # the copy as zarr-python reads it
    assert (copy.chunks, copy.shards) == (expected.chunks, expected.shards)
    assert copy.metadata.codecs == expected.metadata.codecs  # sharding, gzip 5, index codecs
    assert np.array_equal(copy[:], VALUES)


def test_a_v2_source_keeps_what_zarr_python_keeps(tmp_path):
    source = zarr.create_array(
        zarr.storage.LocalStore(tmp_path / "src"),
        shape=(9,),
        chunks=(2,),
        dtype=">i2",
        zarr_format=2,
        filters=[numcodecs.Delta(dtype=">i2")],
        compressors=numcodecs.Zlib(level=3),
        order="F",
        chunk_key_encoding={"name": "v2", "separator": "/"},
    )
    source[:] = VALUES
    expected = zarr.from_array(tmp_path / "zarr", data=source).metadata
    tz.from_array(tmp_path / "tz", data=source)
    copy = zarr.open_array(tmp_path / "tz")
    assert (copy.metadata.filters, copy.metadata.compressor) == (
        expected.filters,
        expected.compressor,
    )
    assert (copy.metadata.order, copy.metadata.dimension_separator) == ("F", "/")
    assert copy.metadata.dtype == expected.dtype and np.array_equal(copy[:], VALUES)


def _defaults(zarr_format):
    return tz.create_array("memory://", shape=(1,), dtype="i2", zarr_format=zarr_format)


@pytest.mark.parametrize(
    "filters",
    [[numcodecs.Shuffle(elementsize=2)], [numcodecs.Delta(dtype=">i2")], None],
    ids=["shuffle", "big-endian-delta", "none"],
)
def test_a_v2_source_copied_to_v3_takes_the_default_codecs_as_zarr_python(tmp_path, filters):
    # v2 codecs kept in v3 were numcodecs.* ones tensorstore cannot open, and a big-endian
    # Delta over the v3 bytes codec stored wrong values
    source = _source(
        tmp_path / "src", 2, dtype=">i2", filters=filters, compressors=numcodecs.GZip(level=3)
    )
    copy = tz.from_array(tmp_path / "tz", data=source, zarr_format=3)
    assert copy.filters == () and copy.compressors == _defaults(3).compressors
    assert np.array_equal(zarr.open_array(tmp_path / "tz")[:], VALUES)
    assert np.array_equal(copy[:].numpy(), VALUES)


def test_a_sharded_v3_source_copied_to_v2_warns_of_its_chunks(tmp_path):
    source = _source(tmp_path / "src", 3, **_v3_kwargs(V3_SOURCES["sharded"]))
    with pytest.warns(UserWarning, match=r"no sharding.*chunks \(2,\).*shards \(4,\).*chunks="):
        copy = tz.from_array(tmp_path / "tz", data=source, zarr_format=2)
    assert (copy.chunks, copy.shards) == ((2,), None)
    read = zarr.open_array(tmp_path / "tz")
    assert copy.compressors == _defaults(2).compressors  # as zarr-python's copy: defaults
    assert np.array_equal(read[:], VALUES)
    with warnings.catch_warnings():  # chunks given: the layout is chosen, no warning
        warnings.simplefilter("error", UserWarning)
        rechunked = tz.from_array(tmp_path / "tz4", data=source, zarr_format=2, chunks=(4,))
    assert rechunked.chunks == (4,) and np.array_equal(rechunked[:].numpy(), VALUES)


def test_codecs_the_other_format_cannot_hold_give_way_to_the_defaults_quietly(tmp_path):
    source = _source(tmp_path / "src", 3, compressors=zarr.codecs.Crc32cCodec())
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        copy = tz.from_array(tmp_path / "tz", data=source, zarr_format=2)
    assert copy.compressors == _defaults(2).compressors
    assert np.array_equal(zarr.open_array(tmp_path / "tz")[:], VALUES)


def test_settings_given_replace_those_kept(tmp_path):
    source = _source(tmp_path / "src", 3, **_v3_kwargs(V3_SOURCES["sharded"]))
    copy = tz.from_array(tmp_path / "tz", data=source, shards=None, compressors=None)
    assert copy.shards is None and copy.compressors == ()
    assert np.array_equal(zarr.open_array(tmp_path / "tz")[:], VALUES)
