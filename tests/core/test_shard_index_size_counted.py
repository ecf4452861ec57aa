"""A shard index's size is counted from the metadata, never built: arrays whose shards hold
billions of inner chunks answer metadata calls at once, and a stored shard shorter than its
index fails with ChunkDecodeError, whatever the store."""

from __future__ import annotations

import json
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import torchzarr as tz
from torchzarr.codecs.base import ChunkSpec
from torchzarr.codecs.bytes_codec import BytesCodec
from torchzarr.codecs.compressors import Crc32cCodec
from torchzarr.codecs.sharding import ShardingCodec
from torchzarr.codecs.transpose import TransposeCodec
from torchzarr.errors import ChunkDecodeError, MetadataError

BYTES = {"name": "bytes", "configuration": {"endian": "little"}}
#: what counting an index (or refusing a shard) may allocate at its peak
MARGIN = 1 << 20


def _peak(call: Callable[[], Any]) -> tuple[Any, int]:
    tracemalloc.start()
    try:
        result = call()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(
    ("index_codecs", "extra"),
    [
        ([BytesCodec("little"), Crc32cCodec()], 4),
        ([BytesCodec("little")], 0),
        ([TransposeCodec((0, 1)), BytesCodec("little"), Crc32cCodec()], 4),
    ],
)
def test_index_nbytes_of_2_to_the_40_inner_chunks_is_counted(
    index_codecs: list[Any], extra: int
) -> None:
    codec = ShardingCodec([1], index_codecs=index_codecs)
    spec = ChunkSpec((2**40,), np.dtype("uint8"), np.uint8(0))
    nbytes, peak = _peak(lambda: codec.index_nbytes(spec))
    assert nbytes == 16 * 2**40 + extra
    assert peak < MARGIN


def test_index_nbytes_equals_the_encoded_index() -> None:
    codec = ShardingCodec([2, 3])
    spec = ChunkSpec((4, 9), np.dtype("<f4"), np.float32(0))
    encoded = codec.encode(np.ones((4, 9), dtype="<f4"), spec)
    assert len(encoded) == 4 * 9 * 4 + codec.index_nbytes(spec) == 4 * 9 * 4 + 6 * 16 + 4


def test_index_codecs_out_of_order_are_still_refused() -> None:
    codec = ShardingCodec([1], index_codecs=[Crc32cCodec(), BytesCodec("little")])
    with pytest.raises(MetadataError, match="comes before the array -> bytes codec"):
        codec.index_nbytes(ChunkSpec((4,), np.dtype("uint8"), np.uint8(0)))


def _huge_sharded(root: Path, n: int, location: str) -> None:
    config = {
        "chunk_shape": [1],
        "codecs": [BYTES],
        "index_codecs": [BYTES, {"name": "crc32c"}],
        "index_location": location,
    }
    doc = {
        "zarr_format": 3,
        "node_type": "array",
        "shape": [2**n],
        "data_type": "float32",
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [2**n]}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": 0.0,
        "codecs": [{"name": "sharding_indexed", "configuration": config}],
        "attributes": {},
    }
    root.mkdir()
    (root / "zarr.json").write_text(json.dumps(doc))


def test_metadata_calls_on_shards_of_2_to_the_33_inner_chunks(tmp_path: Path) -> None:
    _huge_sharded(tmp_path / "a", 33, "end")
    array = tz.open_array(str(tmp_path / "a"), mode="r")
    count, peak = _peak(lambda: array.nchunks_initialized)
    assert count == 0 and peak < MARGIN
    assert "Name" in str(array.info)
    value, peak = _peak(lambda: array[0])
    assert value.item() == 0.0 and peak < MARGIN


@pytest.mark.parametrize("location", ["start", "end"])
@pytest.mark.parametrize("store", ["local", "memory"])
def test_a_shard_shorter_than_its_huge_index_is_refused(
    tmp_path: Path, location: str, store: str
) -> None:
    root = tmp_path / "a"
    _huge_sharded(root, 33, location)
    (root / "c").mkdir()
    (root / "c" / "0").write_bytes(b"\1" * 1000)
    source: Any = str(root)
    if store == "memory":
        source = tz.MemoryStore()
        for key in ("zarr.json", "c/0"):
            source.set(key, (root / key).read_bytes())
    array = tz.open_array(source, mode="r")
    for read in (lambda: array[0], lambda: array[5:7], lambda: array.nchunks_initialized):
        tracemalloc.start()
        try:
            with pytest.raises(ChunkDecodeError, match=r"shard 'c/0' is 1000 bytes, shorter"):
                read()
            assert tracemalloc.get_traced_memory()[1] < MARGIN
        finally:
            tracemalloc.stop()


def test_sharded_arrays_still_round_trip(tmp_path: Path) -> None:
    array = tz.create_array(
        str(tmp_path / "a"), shape=(8, 6), dtype=torch.int32, chunks=(2, 3), shards=(4, 6)
    )
    data = torch.arange(48, dtype=torch.int32).reshape(8, 6)
    array[...] = data
    assert torch.equal(tz.open_array(str(tmp_path / "a"), mode="r")[...], data)
