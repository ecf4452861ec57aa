"""Codec settings refused before anything is written, and codec failures of the right class."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
import pytest
import torch

import torchzarr as tz
from torchzarr.codecs.base import ChunkSpec
from torchzarr.codecs.compressors import BloscCodec, blosc_cnames_available
from torchzarr.codecs.numcodecs_adapter import numcodecs_v3_codec
from torchzarr.codecs.registry import codec_from_json
from torchzarr.errors import ChunkDecodeError, CodecError, MetadataError

LITTLE = {"name": "bytes", "configuration": {"endian": "little"}}
ZSTD = {"name": "zstd", "configuration": {"level": 0, "checksum": False}}
BLOSC = {"name": "blosc", "configuration": {"cname": "zstd", "clevel": 3, "shuffle": "shuffle"}}


def sharded_metadata(index_codecs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "zarr_format": 3,
        "node_type": "array",
        "shape": [8, 8],
        "data_type": "float32",
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [4, 4]}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": 0,
        "codecs": [
            {
                "name": "sharding_indexed",
                "configuration": {
                    "chunk_shape": [2, 2],
                    "codecs": [LITTLE],
                    "index_codecs": index_codecs,
                },
            }
        ],
        "attributes": {},
    }


def test_sharding_refuses_a_compressed_index_on_create(tmp_path: Path) -> None:
    path = tmp_path / "a"
    with pytest.raises(MetadataError, match="index codec 'zstd' has no fixed encoded size"):
        tz.create_array(
            str(path),
            shape=(8, 8),
            chunks=(2, 2),
            dtype="f4",
            shards={"shape": (4, 4), "index_codecs": [LITTLE, ZSTD]},
        )
    assert not path.exists()


def test_sharding_refuses_a_compressed_index_on_open(tmp_path: Path) -> None:
    (tmp_path / "zarr.json").write_text(json.dumps(sharded_metadata([LITTLE, ZSTD])))
    with pytest.raises(MetadataError, match="index codec 'zstd'"):
        tz.open_array(str(tmp_path), mode="r+")


def test_sharding_takes_fixed_size_index_codecs(tmp_path: Path) -> None:
    crc = {"name": "crc32c"}
    transpose = {"name": "transpose", "configuration": {"order": [1, 0, 2]}}
    (tmp_path / "zarr.json").write_text(json.dumps(sharded_metadata([transpose, LITTLE, crc])))
    array = tz.open_array(str(tmp_path), mode="r+")
    array[:] = torch.arange(64, dtype=torch.float32).reshape(8, 8)
    read = tz.open_array(str(tmp_path), mode="r")[:]
    assert torch.equal(read, torch.arange(64, dtype=torch.float32).reshape(8, 8))


def test_blosc_inside_a_sharding_serializer_records_its_typesize(tmp_path: Path) -> None:
    ts = pytest.importorskip("tensorstore")
    shard = {"name": "sharding_indexed", "configuration": {"chunk_shape": [2, 2]}}
    shard["configuration"]["codecs"] = [LITTLE, BLOSC]
    path = str(tmp_path / "a")
    array = tz.create_array(path, shape=(8, 8), chunks=(4, 4), dtype="f4", compressors=[shard])
    array[:] = torch.arange(64, dtype=torch.float32).reshape(8, 8)
    stored = json.loads((tmp_path / "a" / "zarr.json").read_text())
    inner_blosc = stored["codecs"][0]["configuration"]["codecs"][1]
    assert inner_blosc["configuration"]["typesize"] == 4
    opened = ts.open({"driver": "zarr3", "kvstore": {"driver": "file", "path": path}}).result()
    np.testing.assert_array_equal(opened.read().result(), np.arange(64, dtype="f4").reshape(8, 8))


def test_nested_sharding_evolves_the_innermost_chain() -> None:
    inner = {"name": "sharding_indexed", "configuration": {"chunk_shape": [2]}}
    inner["configuration"]["codecs"] = [LITTLE, BLOSC]
    outer = {"name": "sharding_indexed", "configuration": {"chunk_shape": [4], "codecs": [inner]}}
    chain = tz.codecs.default_v3_codecs(np.dtype("int16"), [outer])
    innermost = chain[0].codecs[0].codecs[1]  # type: ignore[attr-defined]
    assert innermost.typesize == 2


def test_v2_zstd_level_that_is_not_an_int_fails_the_write_with_codec_error(
    tmp_path: Path,
) -> None:
    zarray = {
        "zarr_format": 2,
        "shape": [8],
        "chunks": [4],
        "dtype": "<f4",
        "fill_value": 0,
        "order": "C",
        "filters": None,
        "compressor": {"id": "zstd", "level": "x"},
    }
    (tmp_path / ".zarray").write_text(json.dumps(zarray))
    array = tz.open_array(str(tmp_path), mode="r+")
    with pytest.raises(CodecError, match="zstd"):
        array[:] = torch.ones(8)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".zarray"]


def test_filter_output_of_the_wrong_size_is_a_codec_error_on_encode() -> None:
    packbits = numcodecs_v3_codec("packbits")
    spec = ChunkSpec((8,), np.dtype("float32"), np.float32(0))
    with pytest.raises(CodecError, match="packbits codec: produced 5 elements") as caught:
        packbits.encode(np.ones(8, dtype="float32"), spec)
    assert not isinstance(caught.value, ChunkDecodeError)


snappy_missing = pytest.mark.skipif(
    "snappy" in blosc_cnames_available(), reason="this numcodecs build has snappy"
)


@snappy_missing
def test_create_refuses_a_blosc_cname_the_build_lacks(tmp_path: Path) -> None:
    path = tmp_path / "a"
    with pytest.raises(CodecError, match=r"cname 'snappy'.*available: \[.*'zstd'"):
        tz.create_array(
            str(path), shape=(8,), dtype="f4", compressors=numcodecs.Blosc(cname="snappy")
        )
    with pytest.raises(CodecError, match="cname 'snappy'"):
        tz.create_array(
            str(path),
            shape=(8,),
            chunks=(2,),
            shards=(4,),
            dtype="f4",
            compressors=[{"name": "blosc", "configuration": {"cname": "snappy"}}],
        )
    with pytest.raises(CodecError, match="cname 'snappy'"):
        tz.create_array(
            str(path),
            shape=(8,),
            dtype="f4",
            zarr_format=2,
            compressors=numcodecs.Blosc(cname="snappy"),
        )
    assert not path.exists()


@snappy_missing
def test_reading_a_snappy_blosc_chunk_without_snappy_says_so() -> None:
    codec = codec_from_json({"name": "blosc", "configuration": {"cname": "snappy"}})
    assert isinstance(codec, BloscCodec)  # metadata naming snappy still opens
    frame = bytearray(numcodecs.Blosc(cname="lz4").encode(np.arange(4096, dtype="f4")))
    frame[2] = (frame[2] & 0x1F) | (2 << 5)  # the header's compressor: snappy
    with pytest.raises(ChunkDecodeError, match="compressed with 'snappy'"):
        codec.decode(bytes(frame))
    with pytest.raises(ChunkDecodeError, match="compressed with 'snappy'"):
        codec.decode_into(bytes(frame), np.empty(4096 * 4, dtype=np.uint8))
