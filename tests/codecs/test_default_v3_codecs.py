"""default_v3_codecs: create_array's compressors/filters arguments to an evolved v3 chain."""

from __future__ import annotations

import json
from typing import Any

import numcodecs
import numpy as np
import pytest
import torch

import torchzarr as tz
from torchzarr.codecs.bytes_codec import BytesCodec
from torchzarr.codecs.compressors import BloscCodec, ZstdCodec
from torchzarr.codecs.sharding import ShardingCodec
from torchzarr.codecs.transpose import TransposeCodec
from torchzarr.codecs.user_chains import default_v3_codecs
from torchzarr.errors import CodecError, UnknownCodecError

F4 = np.dtype("float32")
LITTLE = {"name": "bytes", "configuration": {"endian": "little"}}


def chain_json(dtype: Any, compressors: Any, filters: Any = None) -> list[dict[str, Any]]:
    return [c.to_json() for c in default_v3_codecs(np.dtype(dtype), compressors, filters)]


def test_nothing_gives_bytes_only() -> None:
    assert chain_json(F4, None) == [LITTLE]
    assert chain_json(F4, []) == [LITTLE]
    assert chain_json("uint8", None) == [{"name": "bytes"}]
    assert chain_json("bool", None) == [{"name": "bytes"}]


@pytest.mark.parametrize(
    ("compressor", "expected"),
    [
        (
            numcodecs.Zstd(level=3),
            {"name": "zstd", "configuration": {"level": 3, "checksum": False}},
        ),
        (
            numcodecs.Zstd(level=1, checksum=True),
            {"name": "zstd", "configuration": {"level": 1, "checksum": True}},
        ),
        ("zstd", {"name": "zstd", "configuration": {"level": 0, "checksum": False}}),
        (numcodecs.GZip(level=7), {"name": "gzip", "configuration": {"level": 7}}),
        ("gzip", {"name": "gzip", "configuration": {"level": 1}}),
        (numcodecs.CRC32C(), {"name": "crc32c"}),
        ("crc32c", {"name": "crc32c"}),
        (
            numcodecs.Blosc("zstd", 3, numcodecs.Blosc.BITSHUFFLE),
            {
                "name": "blosc",
                "configuration": {
                    "typesize": 4,
                    "cname": "zstd",
                    "clevel": 3,
                    "shuffle": "bitshuffle",
                    "blocksize": 0,
                },
            },
        ),
        (
            numcodecs.Blosc("lz4", 5, numcodecs.Blosc.AUTOSHUFFLE),
            {
                "name": "blosc",
                "configuration": {
                    "typesize": 4,
                    "cname": "lz4",
                    "clevel": 5,
                    "shuffle": "shuffle",
                    "blocksize": 0,
                },
            },
        ),
        (numcodecs.LZ4(), {"name": "numcodecs.lz4", "configuration": {"acceleration": 1}}),
        ("lz4", {"name": "numcodecs.lz4", "configuration": {"acceleration": 1}}),
        ("zlib", {"name": "numcodecs.zlib", "configuration": {"level": 1}}),
        ("bz2", {"name": "numcodecs.bz2", "configuration": {"level": 1}}),
        (
            "lzma",
            {
                "name": "numcodecs.lzma",
                "configuration": {"format": 1, "check": -1, "preset": None, "filters": None},
            },
        ),
        ("numcodecs.zlib", {"name": "numcodecs.zlib", "configuration": {"level": 1}}),
        ({"id": "zlib", "level": 9}, {"name": "numcodecs.zlib", "configuration": {"level": 9}}),
        (
            {"name": "gzip", "configuration": {"level": 2}},
            {"name": "gzip", "configuration": {"level": 2}},
        ),
        (ZstdCodec(5), {"name": "zstd", "configuration": {"level": 5, "checksum": False}}),
    ],
    ids=repr,
)
def test_compressors_map_to_core_or_numcodecs_codecs(
    compressor: Any, expected: dict[str, Any]
) -> None:
    assert chain_json(F4, compressor) == [LITTLE, expected]
    assert chain_json(F4, [compressor]) == [LITTLE, expected]


def test_blosc_on_one_byte_types() -> None:
    auto = chain_json("uint8", numcodecs.Blosc(shuffle=numcodecs.Blosc.AUTOSHUFFLE))[1]
    assert (
        auto["configuration"]["shuffle"] == "bitshuffle" and auto["configuration"]["typesize"] == 1
    )
    v3 = chain_json("uint8", BloscCodec())[1]
    assert v3["configuration"]["shuffle"] == "bitshuffle"
    explicit = chain_json("uint8", numcodecs.Blosc(shuffle=numcodecs.Blosc.SHUFFLE))[1]
    assert explicit["configuration"]["shuffle"] == "shuffle"


def test_several_compressors_keep_their_order() -> None:
    names = [c["name"] for c in chain_json(F4, ["zstd", numcodecs.CRC32C()])]
    assert names == ["bytes", "zstd", "crc32c"]


def test_filters_come_first_and_evolve() -> None:
    chain = chain_json(
        "float64",
        [{"name": "numcodecs.shuffle"}, "zstd"],
        [numcodecs.FixedScaleOffset(offset=1, scale=10, dtype="<f8", astype="<i2")],
    )
    assert [c["name"] for c in chain] == [
        "numcodecs.fixedscaleoffset",
        "bytes",
        "numcodecs.shuffle",
        "zstd",
    ]
    # shuffle sees the int16 the scale-offset filter produces
    assert chain[2]["configuration"] == {"elementsize": 2}
    delta = chain_json("int32", None, numcodecs.Delta(dtype="<i4"))
    assert delta[0] == {
        "name": "numcodecs.delta",
        "configuration": {"dtype": "<i4", "astype": "<i4"},
    }
    quantize = chain_json(
        "float64", None, {"name": "numcodecs.quantize", "configuration": {"digits": 2}}
    )
    assert quantize[0]["configuration"] == {"digits": 2, "dtype": "float64"}


def test_packbits_filter_makes_bytes_endianless() -> None:
    assert chain_json("bool", None, numcodecs.PackBits()) == [
        {"name": "numcodecs.packbits", "configuration": {}},
        {"name": "bytes"},
    ]


def test_transpose_filter_is_kept_for_the_pipeline_to_resolve() -> None:
    codecs = default_v3_codecs(F4, None, [TransposeCodec("F")])
    assert codecs[0] == TransposeCodec("F")


def test_a_serializer_among_compressors_replaces_bytes() -> None:
    sharding = ShardingCodec((2, 2))
    codecs = default_v3_codecs(F4, [sharding, "crc32c"])
    assert codecs[0].to_json() == sharding.to_json() and codecs[1].codec_name == "crc32c"
    with pytest.raises(CodecError, match="at most one array -> bytes codec"):
        default_v3_codecs(F4, [sharding, BytesCodec("big")])


def test_a_serializer_given_as_json_replaces_bytes_like_the_object() -> None:
    big = {"name": "bytes", "configuration": {"endian": "big"}}
    assert chain_json(F4, [big, "zstd"]) == chain_json(F4, [BytesCodec("big"), "zstd"])
    assert chain_json(F4, [big, "zstd"])[0] == big
    sharding = {"name": "sharding_indexed", "configuration": {"chunk_shape": [2], "codecs": [big]}}
    codecs = default_v3_codecs(F4, [sharding, "crc32c"])
    assert isinstance(codecs[0], ShardingCodec) and codecs[0].codecs[0].to_json() == big
    assert [c.codec_name for c in codecs] == ["sharding_indexed", "crc32c"]
    with pytest.raises(CodecError, match=r"at most one array -> bytes codec .*'bytes', 'bytes'"):
        default_v3_codecs(F4, [big, BytesCodec("little")])
    arr = tz.create_array("memory://", shape=(4,), dtype="float32", compressors=[big, "zstd"])
    assert arr.metadata.to_json()["codecs"][0] == big


def test_misplaced_codecs_are_named_with_their_kind_and_their_argument() -> None:
    with pytest.raises(
        CodecError, match=r"filter .*\(bytes\) .* array -> bytes codec: pass it in compressors="
    ):
        default_v3_codecs(F4, None, BytesCodec("big"))
    with pytest.raises(
        CodecError, match=r"filter .*\(zstd\) .* bytes -> bytes codec: pass it in compressors="
    ):
        default_v3_codecs(F4, None, "zstd")
    transpose = {"name": "transpose", "configuration": {"order": [0]}}
    with pytest.raises(
        CodecError, match=r"compressor .*\(transpose\) .* array -> array codec: pass it in filters="
    ):
        default_v3_codecs(F4, [transpose])


def test_wrong_kinds_and_unknown_names_fail() -> None:
    with pytest.raises(CodecError, match=r"filter .*zstd.* is not an array -> array codec"):
        default_v3_codecs(F4, None, "zstd")
    with pytest.raises(CodecError, match=r"compressor .*numcodecs.delta.* is not a bytes -> bytes"):
        default_v3_codecs(F4, numcodecs.Delta(dtype="<f4"))
    with pytest.raises(UnknownCodecError, match="'snappy-ish'"):
        default_v3_codecs(F4, "snappy-ish")
    with pytest.raises(UnknownCodecError, match=r"numcodecs\.nope"):
        default_v3_codecs(F4, "numcodecs.nope")
    with pytest.raises(CodecError, match="cannot make a numcodecs codec from 3"):
        default_v3_codecs(F4, 3)


def test_numcodecs_shuffle_by_name_takes_its_element_size_from_the_dtype() -> None:
    # numcodecs' default elementsize (4) is not spelled out: evolve() fills the dtype's, as
    # zarr-python does; an elementsize given explicitly stays
    assert chain_json("int16", ["numcodecs.shuffle", "zstd"])[1] == {
        "name": "numcodecs.shuffle",
        "configuration": {"elementsize": 2},
    }
    assert chain_json("float64", "numcodecs.shuffle")[1]["configuration"] == {"elementsize": 8}
    given = {"name": "numcodecs.shuffle", "configuration": {"elementsize": 4}}
    assert chain_json("int16", given)[1]["configuration"] == {"elementsize": 4}
    assert chain_json(F4, "numcodecs.zlib")[1]["configuration"] == {"level": 1}  # defaults kept


def test_numcodecs_shuffle_by_name_writes_chunks_of_any_element_count() -> None:
    arr = tz.create_array(
        tz.MemoryStore(), shape=(9,), dtype=torch.int16, compressors=["numcodecs.shuffle", "zstd"]
    )
    arr[:] = torch.arange(9, dtype=torch.int16)  # 18 bytes: not a multiple of 4
    assert arr[:].tolist() == list(range(9))


def test_zarr_python_codec_objects_are_taken_as_zarr_python_writes_them(tmp_path) -> None:
    import zarr

    kwargs: dict[str, Any] = {
        "compressors": [zarr.codecs.BloscCodec(cname="zstd", shuffle="bitshuffle")],
        "filters": [zarr.codecs.TransposeCodec(order=(1, 0))],
        "shape": (8, 6),
        "chunks": (4, 3),
        "dtype": "float32",
    }
    ours = tz.create_array(tmp_path / "ours", **kwargs)
    theirs = zarr.create_array(str(tmp_path / "theirs"), **kwargs)
    assert theirs.shape == ours.shape
    documents = [
        json.loads((tmp_path / name / "zarr.json").read_text()) for name in ("ours", "theirs")
    ]
    assert documents[0]["codecs"] == documents[1]["codecs"]  # blosc's typesize 4, as theirs
    data = np.arange(48, dtype="f4").reshape(8, 6)
    ours[:] = data
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "ours"))[:], data)
    inner = [zarr.codecs.BytesCodec(), zarr.codecs.BloscCodec(cname="lz4")]
    sharded = {"shape": (8, 8), "chunks": (8, 8), "dtype": "float32"}
    sharding = zarr.codecs.ShardingCodec(chunk_shape=(4, 4), codecs=inner)
    tz.create_array(tmp_path / "ours_sharded", compressors=[sharding], **sharded)
    zarr.create_array(
        str(tmp_path / "theirs_sharded"), serializer=sharding, compressors=None, **sharded
    )
    documents = [
        json.loads((tmp_path / name / "zarr.json").read_text())
        for name in ("ours_sharded", "theirs_sharded")
    ]
    assert documents[0]["codecs"] == documents[1]["codecs"]  # the inner blosc's typesize 4
    chain = default_v3_codecs(np.dtype("int16"), [zarr.codecs.ZstdCodec(level=3)])
    assert [c.to_json() for c in chain][1] == zarr.codecs.ZstdCodec(level=3).to_dict()


def test_a_given_big_endian_bytes_drops_endian_for_one_byte_types() -> None:
    big = {"name": "bytes", "configuration": {"endian": "big"}}
    assert chain_json("uint8", [big, "zstd"])[0] == {"name": "bytes"}  # as zarr-python writes
    assert chain_json("int16", [big])[0] == big


@pytest.mark.parametrize(
    ("filters", "codec_of", "order"),
    [
        ([{"name": "transpose", "configuration": {"order": "F"}}], lambda c: c[0], [1, 0]),
        ([TransposeCodec("C")], lambda c: c[0], [0, 1]),
        (
            [
                {"name": "transpose", "configuration": {"order": "F"}},
                numcodecs.AsType(encode_dtype="<i8", decode_dtype="<i4"),
                TransposeCodec("C"),
            ],
            lambda c: c[2],
            [0, 1],
        ),
    ],
)
def test_transpose_c_or_f_is_written_as_a_permutation_zarr_python_opens(
    tmp_path, filters: Any, codec_of: Any, order: list[int]
) -> None:
    import zarr

    path = tmp_path / "a.zarr"
    arr = tz.create_array(path, shape=(2, 3), dtype="int32", chunks=(2, 3), filters=filters)
    data = torch.arange(6, dtype=torch.int32).reshape(2, 3)
    arr[...] = data
    codecs = json.loads((path / "zarr.json").read_text())["codecs"]
    assert codec_of(codecs) == {"name": "transpose", "configuration": {"order": order}}
    np.testing.assert_array_equal(zarr.open_array(str(path))[...], data.numpy())
    assert torch.equal(tz.open_array(path)[...], data)


def test_transpose_c_or_f_inside_shards_is_written_as_a_permutation(tmp_path) -> None:
    import zarr

    f_order = {"name": "transpose", "configuration": {"order": "F"}}
    sharding = {
        "name": "sharding_indexed",
        "configuration": {
            "chunk_shape": [2, 2],
            "codecs": [f_order, LITTLE],
            "index_codecs": [f_order, LITTLE, {"name": "crc32c"}],
        },
    }
    data = torch.arange(16, dtype=torch.float32).reshape(4, 4)
    for name, kwargs in [
        ("compressors", {"compressors": [sharding]}),
        ("shards", {"filters": [f_order], "chunks": (2, 2), "shards": (4, 4)}),
    ]:
        path = tmp_path / name
        arr = tz.create_array(path, shape=(4, 4), dtype="float32", **kwargs)
        arr[...] = data
        outer = json.loads((path / "zarr.json").read_text())["codecs"][0]["configuration"]
        assert outer["codecs"][0]["configuration"]["order"] == [1, 0]
        if name == "compressors":  # the index is (2, 2, 2): offsets and sizes per chunk
            assert outer["index_codecs"][0]["configuration"]["order"] == [2, 1, 0]
        np.testing.assert_array_equal(zarr.open_array(str(path))[...], data.numpy())
        assert torch.equal(tz.open_array(path)[...], data)


def test_a_legacy_transpose_order_still_opens(tmp_path) -> None:
    path = tmp_path / "a.zarr"
    arr = tz.create_array(
        path, shape=(2, 3), dtype="int32", chunks=(2, 3), filters=[TransposeCodec((1, 0))]
    )
    arr[...] = torch.arange(6, dtype=torch.int32).reshape(2, 3)
    doc = json.loads((path / "zarr.json").read_text())
    doc["codecs"][0]["configuration"]["order"] = "F"  # as early writers recorded it
    (path / "zarr.json").write_text(json.dumps(doc))
    assert tz.open_array(path)[...].tolist() == [[0, 1, 2], [3, 4, 5]]


def test_shards_with_a_filter_to_a_one_byte_dtype(tmp_path) -> None:
    import zarr

    to_u1 = numcodecs.FixedScaleOffset(offset=0, scale=10, dtype="<f8", astype="u1")
    path = tmp_path / "a.zarr"
    arr = tz.create_array(
        path,
        shape=(4, 4),
        dtype="float64",
        chunks=(2, 2),
        shards=(4, 4),
        filters=[to_u1],
        compressors=[numcodecs.Blosc("lz4", 5, numcodecs.Blosc.SHUFFLE)],
    )
    data = torch.arange(16, dtype=torch.float64).reshape(4, 4) / 10
    arr[...] = data
    inner = json.loads((path / "zarr.json").read_text())["codecs"][0]["configuration"]["codecs"]
    assert inner[1] == {"name": "bytes"}  # it sees the uint8 the filter gives
    assert inner[2]["configuration"]["typesize"] == 1
    np.testing.assert_allclose(tz.open_array(path)[...].numpy(), data.numpy())
    np.testing.assert_allclose(zarr.open_array(str(path))[...], data.numpy())


def test_sharding_json_without_codecs_defaults_to_bytes_little_endian(tmp_path) -> None:
    import zarr

    sharding = {"name": "sharding_indexed", "configuration": {"chunk_shape": [2, 2]}}
    path = tmp_path / "a.zarr"
    arr = tz.create_array(
        path, shape=(4, 4), dtype="float32", chunks=(4, 4), compressors=[sharding]
    )
    data = torch.arange(16, dtype=torch.float32).reshape(4, 4)
    arr[...] = data
    outer = json.loads((path / "zarr.json").read_text())["codecs"][0]["configuration"]
    assert outer["codecs"] == [LITTLE]  # as zarr-python writes it
    np.testing.assert_array_equal(zarr.open_array(str(path))[...], data.numpy())
    one_byte = default_v3_codecs(np.dtype("uint8"), [sharding])[0]
    assert [c.to_json() for c in one_byte.codecs] == [{"name": "bytes"}]


def test_numpy_scalars_in_settings_are_recorded_as_numbers() -> None:
    chain = chain_json(
        "float64",
        [numcodecs.Zlib(level=np.int8(3)), numcodecs.Zstd(level=np.int64(2))],
        [numcodecs.FixedScaleOffset(offset=np.float64(1.5), scale=np.float32(10), dtype="<f8")],
    )
    fso = chain[0]["configuration"]
    assert fso["scale"] == 10.0 and type(fso["scale"]) is float
    assert fso["offset"] == 1.5 and type(fso["offset"]) is float
    assert chain[2] == {"name": "numcodecs.zlib", "configuration": {"level": 3}}
    assert type(chain[2]["configuration"]["level"]) is int
    assert chain[3] == {"name": "zstd", "configuration": {"level": 2, "checksum": False}}
    arr = tz.create_array(
        "memory://", shape=(4,), dtype="float64", compressors=[numcodecs.Zlib(level=np.int8(3))]
    )
    arr[...] = torch.arange(4, dtype=torch.float64)
    assert arr[...].tolist() == [0.0, 1.0, 2.0, 3.0]
