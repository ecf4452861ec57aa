"""from_array: a new array like another one (settings kept or changed), copied in slabs."""

from __future__ import annotations

import json

import numcodecs
import numpy as np
import pytest
import torch

import torchzarr as tz
from torchzarr.errors import CodecError, InvalidArgumentError

DATA = torch.arange(20 * 6, dtype=torch.float32).reshape(20, 6)


def _source(store="memory://", **kwargs):
    src = tz.create_array(store, shape=(20, 6), dtype=torch.float32, **kwargs)
    src[:] = DATA
    src.attrs["units"] = "m"
    return src


def test_keep_copies_every_setting_and_the_values():
    src = _source(
        chunks=(2, 3),
        shards=(4, 6),
        compressors=numcodecs.Zstd(level=5),
        fill_value=-1.0,
        dimension_names=["t", "c"],
    )
    dst = tz.from_array("memory://", data=src)
    assert (dst.chunks, dst.shards, dst.fill_value) == ((2, 3), (4, 6), -1.0)
    assert dst.dimension_names == ("t", "c") and dict(dst.attrs) == {"units": "m"}
    assert dst.metadata.codecs[0].to_json() == src.metadata.codecs[0].to_json()  # zstd 5 inside
    assert torch.equal(dst[:], DATA)


def test_rechunk_recompress_and_change_format(tmp_path):
    src = _source(chunks=(3, 6))
    dst = tz.from_array(
        tmp_path / "v2",
        data=src,
        chunks=(8, 2),
        shards=None,
        compressors=numcodecs.Blosc(cname="lz4"),
        zarr_format=2,
        attributes={"note": "rechunked"},
    )
    assert dst.zarr_format == 2 and dst.chunks == (8, 2) and dst.shards is None
    assert dict(dst.attrs) == {"note": "rechunked"}
    assert torch.equal(tz.open_array(tmp_path / "v2")[:], DATA)
    back = tz.from_array(tmp_path / "v3", data=dst, zarr_format=3)  # numcodecs codecs carry
    assert back.compressors[0].codec_name == "blosc" and torch.equal(back[:], DATA)
    kept_v2 = tz.from_array("memory://", data=_source(), zarr_format=2)  # zstd has a v2 form
    assert isinstance(kept_v2.compressors[0], numcodecs.Zstd)
    null_fill = tz.create_array("memory://", data=DATA, zarr_format=2)  # v2 default: null
    assert null_fill.metadata.fill_value is None
    assert tz.from_array("memory://", data=null_fill).metadata.fill_value is None  # kept


def test_new_chunks_must_divide_the_shard_shape_kept():
    src = _source(chunks=(2, 3), shards=(4, 6))
    with pytest.raises(
        InvalidArgumentError, match=r"chunks \(3, 3\) .* shard shape \(4, 6\).*shards="
    ):
        tz.from_array("memory://", data=src, chunks=(3, 3))
    assert tz.from_array("memory://", data=src, chunks=(2, 2)).shards == (4, 6)  # divides
    dst = tz.from_array("memory://", data=src, chunks=(3, 3), shards=None)
    assert dst.chunks == (3, 3) and dst.shards is None and torch.equal(dst[:], DATA)


def test_array_likes_without_shape_go_through_numpy():
    dst = tz.from_array("memory://", data=[[1, 2, 3], [4, 5, 6]])
    assert dst.shape == (2, 3) and dst[:].tolist() == [[1, 2, 3], [4, 5, 6]]
    assert tz.from_array("memory://", data=2.5)[()].item() == 2.5


def test_codecs_without_a_v2_form_must_be_named():
    src = _source(compressors="crc32c")
    with pytest.raises(CodecError, match="no Zarr v2 form: pass compressors="):
        tz.from_array("memory://", data=src, zarr_format=2, shards=None)
    dst = tz.from_array("memory://", data=src, zarr_format=2, compressors=None)
    assert torch.equal(dst[:], DATA)


@pytest.mark.parametrize(
    "data",
    [DATA.to(torch.bfloat16), DATA.numpy().astype(">f8"), torch.tensor(3.5), np.zeros((0, 4))],
    ids=["bfloat16", "big-endian", "0-d", "empty"],
)
def test_tensors_and_numpy_arrays(data):
    dst = tz.from_array("memory://", data=data, chunks=(7,) * np.ndim(data))
    expected = (
        torch.from_numpy(data.astype(data.dtype.newbyteorder("=")))
        if isinstance(data, np.ndarray)
        else data
    )
    assert dst.shape == tuple(data.shape)
    assert torch.equal(dst[...].to(expected.dtype), expected)


def test_zarr_python_source_keeps_its_chunks():
    zarr = pytest.importorskip("zarr")
    z = zarr.create_array(zarr.storage.MemoryStore(), shape=(20, 6), chunks=(5, 2), dtype="i2")
    z[:] = np.arange(120).reshape(20, 6)
    dst = tz.from_array("memory://", data=z)
    assert dst.chunks == (5, 2) and dst.dtype == torch.int16
    np.testing.assert_array_equal(dst[:].numpy(), z[:])


def test_copies_in_bounded_slabs_of_whole_destination_blocks(monkeypatch):
    src = _source(chunks=(3, 6))
    writes = []
    original = tz.Array.__setitem__

    def record(self, selection, value):
        writes.append(selection)
        original(self, selection, value)

    monkeypatch.setattr(tz.Array, "__setitem__", record)
    with tz.config.set(io_batch_bytes=4 * 6 * 4 * 2):  # two 4-row blocks of the destination
        dst = tz.from_array("memory://", data=src, chunks=(4, 6))
    assert [rows for rows, _ in writes] == [slice(0, 8), slice(8, 16), slice(16, 20)]
    assert all(columns == slice(0, 6) for _, columns in writes)  # whole rows
    assert torch.equal(dst[:], DATA)
    writes.clear()
    with tz.config.set(io_batch_bytes=12 * 6 * 4):  # both grids fit: lcm(4, 3) = 12 rows
        tz.from_array("memory://", data=src, chunks=(4, 6))
    assert [rows for rows, _ in writes] == [slice(0, 12), slice(12, 20)]


def test_write_data_false_and_refusing_to_copy_onto_itself(tmp_path, tmp_path_factory):
    src = _source(tmp_path)
    empty = tz.from_array("memory://", data=src, write_data=False)
    assert empty.nchunks_initialized == 0 and empty.shape == (20, 6)
    with pytest.raises(InvalidArgumentError, match="onto itself"):
        tz.from_array(tmp_path, data=src, overwrite=True)
    assert torch.equal(tz.open_array(tmp_path)[:], DATA)  # untouched
    elsewhere = tmp_path_factory.mktemp("elsewhere")  # not inside the source array
    group = tz.open_group(elsewhere / "g.zarr", mode="w")
    inner = tz.from_array(group.store, data=src, path="sub/x")
    for where, path in ((elsewhere / "g.zarr" / "sub" / "x", ""), (elsewhere / "g.zarr", "sub")):
        with pytest.raises(InvalidArgumentError, match="onto itself"):  # however reached
            tz.from_array(where, data=inner, path=path, overwrite=True)
    assert torch.equal(tz.open_array(group.store, path="sub/x")[:], DATA)
    for where, path in ((elsewhere / "g.zarr" / "sub" / "x" / "c", ""), (group.store, "sub/x/b")):
        with pytest.raises(InvalidArgumentError, match="inside it, among its chunks"):
            tz.from_array(where, data=inner, path=path, chunks=(10, 6), overwrite=True)
    assert torch.equal(tz.open_array(group.store, path="sub/x")[:], DATA)  # chunks kept


def test_rechunk_into_the_source_arrays_own_folder_is_refused(tmp_path, capsys):
    from torchzarr.cli import main

    src = tz.from_array(tmp_path / "s.zarr", data=DATA, chunks=(5, 6))
    args = ["rechunk", str(tmp_path / "s.zarr"), str(tmp_path / "s.zarr" / "c")]
    assert main([*args, "--dest-path", "", "--chunks", "10,6", "--overwrite"]) == 1
    assert "inside it, among its chunks" in capsys.readouterr().err
    assert torch.equal(src[:], DATA)


def test_zarr_python_v3_dimension_names_are_kept():
    zarr = pytest.importorskip("zarr")
    z = zarr.create_array(
        zarr.storage.MemoryStore(), shape=(4, 2), dtype="f4", dimension_names=["t", None]
    )
    assert tz.from_array("memory://", data=z).dimension_names == ("t", None)


BIG_BYTES = {"name": "bytes", "configuration": {"endian": "big"}}


def _layout(arr):
    doc = arr.metadata.to_json()
    return {k: v for k, v in doc.items() if k not in ("attributes", "fill_value")}


def test_keep_copies_the_v3_serializer_shard_index_and_key_encoding():
    src = _source(
        chunks=(2, 3),
        shards={"shape": (4, 6), "index_location": "start", "index_codecs": [BIG_BYTES]},
        compressors=[BIG_BYTES, "gzip"],
        chunk_key_encoding={"name": "default", "configuration": {"separator": "."}},
    )
    dst = tz.from_array("memory://", data=src)
    assert _layout(dst) == _layout(src) and torch.equal(dst[:], DATA)
    sharding = tz.from_array("memory://", data=src, chunks=(1, 6)).metadata.codecs[0]
    assert sharding.chunk_shape == (1, 6) and sharding.index_location == "start"
    assert sharding.codecs[0].to_json() == BIG_BYTES  # kept with new chunks
    recompressed = tz.from_array("memory://", data=src, compressors="zstd", shards=None)
    assert [c.to_json()["name"] for c in recompressed.metadata.codecs] == ["bytes", "zstd"]
    assert recompressed.metadata.codecs[0].to_json() == BIG_BYTES
    plain = tz.from_array(
        "memory://", data=src, serializer="auto", shards=(20, 6), chunk_key_encoding=None
    )
    assert plain.metadata.codecs[0].codecs[0].endian == "little"
    assert plain.metadata.codecs[0].index_location == "end"  # new shards: default index
    assert plain.metadata.to_json()["chunk_key_encoding"]["configuration"]["separator"] == "/"


def test_a_serializer_among_new_compressors_replaces_the_kept_one():
    src = _source(chunks=(4, 6), compressors=[BIG_BYTES, "gzip"])
    little = tz.codecs.BytesCodec("little")
    for given, endian in (([little, "zstd"], "little"), (["zstd", BIG_BYTES], "big")):
        dst = tz.from_array("memory://", data=src, compressors=given)
        codecs = [c.to_json() for c in dst.metadata.codecs]
        assert [c["name"] for c in codecs] == ["bytes", "zstd"]
        assert codecs[0].get("configuration", {}).get("endian", "little") == endian
        assert torch.equal(dst[:], DATA)
    with pytest.raises(CodecError, match="at most one array -> bytes"):  # two named
        tz.from_array("memory://", data=src, serializer=BIG_BYTES, compressors=[little])


def test_keep_copies_the_v2_order_byte_order_and_separator():
    src = tz.create_array(
        "memory://",
        shape=(20, 6),
        chunks=(3, 4),
        dtype=np.dtype(">i4"),
        zarr_format=2,
        order="F",
        dimension_separator="/",
    )
    src[:] = DATA.to(torch.int32)
    dst = tz.from_array("memory://", data=src)
    assert _layout(dst) == _layout(src) and dst.metadata.to_json()["dtype"] == ">i4"
    assert torch.equal(dst[:], DATA.to(torch.int32))
    changed = tz.from_array("memory://", data=src, order="C", chunk_key_encoding=None)
    assert (changed.order, changed.metadata.dimension_separator) == ("C", ".")
    as_v3 = tz.from_array("memory://", data=src, zarr_format=3)  # order F has no v3 form
    assert as_v3.order == "C" and torch.equal(as_v3[:], DATA.to(torch.int32))
    with pytest.raises(InvalidArgumentError, match=r"serializer .* is for Zarr v3"):
        tz.from_array("memory://", data=src, serializer=BIG_BYTES)


def test_keep_matches_zarr_python_sources_written_by_zarr_python(tmp_path):
    zarr = pytest.importorskip("zarr")
    codecs = pytest.importorskip("zarr.codecs")
    z = zarr.create_array(
        tmp_path / "src",
        shape=(8, 8),
        chunks=(2, 2),
        shards={"shape": (4, 4), "index_location": "start"},
        dtype="float32",
        serializer=codecs.BytesCodec(endian="big"),
        compressors=None,
    )
    z[...] = 1.0
    tz.from_array(tmp_path / "dst", data=tz.open_array(tmp_path / "src"))
    src, dst = (json.loads((tmp_path / n / "zarr.json").read_text()) for n in ("src", "dst"))
    assert dst["codecs"] == src["codecs"]
    assert (zarr.open_array(tmp_path / "dst")[...] == 1.0).all()


@pytest.mark.parametrize("new_names", [None, ("p", "q")])
def test_a_v2_source_to_v3_keeps_dimension_names_not_the_xarray_attribute(new_names):
    source = tz.create_array(
        tz.MemoryStore(),
        data=torch.zeros(2, 3),
        zarr_format=2,
        dimension_names=["a", "b"],
        attributes={"units": "m"},
    )
    names = {} if new_names is None else {"dimension_names": new_names}
    copied = tz.from_array(tz.MemoryStore(), data=source, zarr_format=3, **names)
    assert copied.dimension_names == (new_names or ("a", "b"))
    assert dict(copied.attrs) == {"units": "m"}
    back = tz.from_array(tz.MemoryStore(), data=copied, zarr_format=2)
    assert back.dimension_names == (new_names or ("a", "b"))


@pytest.mark.parametrize("compressors", ["keep", "zstd", None])
def test_a_v2_shuffle_filter_goes_first_among_a_v3_copys_compressors(tmp_path, compressors):
    source = tz.create_array(
        tmp_path / "v2",
        data=np.arange(100.0),
        chunks=(10,),
        zarr_format=2,
        filters=[numcodecs.Delta("<f8"), numcodecs.Shuffle(8)],
        compressors=[numcodecs.Zstd()],
    )
    copy = tz.from_array(tmp_path / "v3", data=source, zarr_format=3, compressors=compressors)
    names = [codec.codec_name for codec in copy.metadata.codecs]
    tail = {"keep": ["zstd"], "zstd": ["zstd"], None: []}[compressors]
    assert names == ["numcodecs.delta", "bytes", "numcodecs.shuffle", *tail]
    assert torch.equal(copy[...], source[...])
