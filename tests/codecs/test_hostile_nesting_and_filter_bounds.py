"""Hostile metadata and chunks: sharding nested deep opens in time linear in the depth (and
past a limit is refused), and v2 filters that grow the data on decode are bounded exactly."""

from __future__ import annotations

import json
import pickle
import tracemalloc
import zlib
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
import pytest
import zarr

import torchzarr as tz
from torchzarr.codecs import pipeline as pipeline_module
from torchzarr.codecs.base import ChunkSpec
from torchzarr.codecs.bytes_codec import BytesCodec
from torchzarr.codecs.sharding import MAX_SHARDING_DEPTH, ShardingCodec
from torchzarr.codecs.v2_pipeline import V2Pipeline, filter_encoded_size
from torchzarr.errors import ChunkDecodeError, MetadataError

BYTES = '{"name": "bytes", "configuration": {"endian": "little"}}'


def _nested_zarr_json(depth: int) -> str:
    """A zarr.json whose codecs nest ``depth`` sharding levels, built as text (json.dumps
    itself recurses)."""
    codecs = f"[{BYTES}]"
    for _ in range(depth):
        codecs = (
            '[{"name": "sharding_indexed", "configuration": {"chunk_shape": [4], '
            f'"codecs": {codecs}, "index_codecs": [{BYTES}]}}}}]'
        )
    return (
        '{"zarr_format": 3, "node_type": "array", "shape": [8], "data_type": "float32", '
        '"chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [4]}}, '
        '"chunk_key_encoding": {"name": "default"}, "fill_value": 0.0, '
        f'"codecs": {codecs}}}'
    )


def _write(tmp_path: Path, depth: int) -> Path:
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "zarr.json").write_text(_nested_zarr_json(depth))
    return tmp_path


def test_nested_sharding_opens_in_time_linear_in_the_depth(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built = []
    init = pipeline_module.V3Pipeline.__init__

    def counting(self: Any, *args: Any, **kwargs: Any) -> None:
        built.append(1)
        init(self, *args, **kwargs)

    monkeypatch.setattr(pipeline_module.V3Pipeline, "__init__", counting)
    counts = []
    for depth in (4, 8):
        built.clear()
        array = tz.open_array(_write(tmp_path / str(depth), depth), mode="r+")
        array[...] = np.arange(8, dtype="float32")
        assert array[...].tolist() == list(range(8))
        counts.append(len(built))
    # each level builds its inner pipeline once: twice the depth, about twice the work
    assert counts[1] <= 2.5 * counts[0], counts


def test_sharding_nested_to_the_limit_opens_and_round_trips(tmp_path: Path) -> None:
    array = tz.open_array(_write(tmp_path, MAX_SHARDING_DEPTH), mode="r+")
    array[...] = np.arange(8, dtype="float32")
    assert array[...].tolist() == list(range(8))
    assert zarr.open_array(str(tmp_path), mode="r")[:].tolist() == list(range(8))


@pytest.mark.parametrize("depth", [MAX_SHARDING_DEPTH + 1, 200, 2000])
def test_sharding_nested_past_the_limit_is_a_metadata_error(tmp_path: Path, depth: int) -> None:
    with pytest.raises(MetadataError) as caught:
        tz.open_array(_write(tmp_path, depth), mode="r")
    if depth <= 200:  # deeper than that the JSON parser refuses the document first
        assert f"nest {depth} sharding_indexed levels" in str(caught.value)


def test_sharding_codecs_nested_past_the_limit_in_code_are_refused() -> None:
    codec = ShardingCodec([4])
    for _ in range(MAX_SHARDING_DEPTH - 1):
        codec = ShardingCodec([4], [codec])
    assert codec.depth == MAX_SHARDING_DEPTH
    with pytest.raises(MetadataError, match=f"nest {MAX_SHARDING_DEPTH + 1} sharding_indexed"):
        ShardingCodec([4], [codec])


def test_a_sharding_codec_with_its_inner_pipeline_built_pickles_without_it() -> None:
    spec = ChunkSpec((4,), np.dtype("uint8"), np.uint8(0))
    codec = ShardingCodec([2], [BytesCodec()]).evolve(spec)
    shard = codec.encode(np.arange(4, dtype=np.uint8), spec)
    assert codec._inner is not None  # kept by the encode
    again = pickle.loads(pickle.dumps(codec))
    assert again._inner is None  # left out: rebuilt on first use
    assert again == codec and again.decode(shard, spec).tolist() == [0, 1, 2, 3]


# -- v2 filters that grow the data on decode ----------------------------------------------

FILTERS = [
    ("|b1", numcodecs.PackBits()),
    ("<f8", numcodecs.AsType(encode_dtype="|u1", decode_dtype="<f8")),
    ("<i8", numcodecs.AsType(encode_dtype="<i4", decode_dtype="<i8")),
    ("<i8", numcodecs.Delta(dtype="<i8", astype="<i2")),
    ("<f8", numcodecs.FixedScaleOffset(offset=1, scale=8, dtype="<f8", astype="<i2")),
    ("<f8", numcodecs.Quantize(digits=2, dtype="<f8", astype="<f4")),
    ("<f4", numcodecs.BitRound(keepbits=10)),
]


def _data(dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    if dtype == "|b1":
        return np.arange(np.prod(shape)).reshape(shape) % 3 == 0
    return (np.arange(np.prod(shape)).reshape(shape) % 50).astype(dtype)


@pytest.mark.parametrize(("dtype", "codec"), FILTERS, ids=lambda v: repr(v))
def test_the_v2_filter_bound_is_exactly_what_the_filter_writes(dtype: str, codec: Any) -> None:
    for n in (1, 7, 8, 9, 1001):
        chunk = _data(dtype, (n,))
        assert filter_encoded_size(codec, chunk.nbytes) == np.asarray(codec.encode(chunk)).nbytes


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize(("dtype", "codec"), FILTERS, ids=lambda v: repr(v))
def test_zarr_python_v2_chunks_with_growing_filters_still_read(
    tmp_path: Path, dtype: str, codec: Any, order: str
) -> None:
    data = _data(dtype, (13, 7))  # edge chunks on both axes
    z = zarr.create_array(
        str(tmp_path),
        shape=data.shape,
        chunks=(5, 3),
        dtype=dtype,
        zarr_format=2,
        order=order,  # type: ignore[arg-type]
        filters=[codec],
        compressors=numcodecs.Zlib(1),
    )
    z[:] = data
    np.testing.assert_array_equal(tz.open_array(tmp_path, mode="r")[...].numpy(), z[:])


def _bomb_store(tmp_path: Path, dtype: str, codec: Any, n: int, stored: bytes) -> Path:
    zarray = {
        "zarr_format": 2,
        "shape": [n],
        "chunks": [n],
        "dtype": dtype,
        "fill_value": 0,
        "order": "C",
        "filters": [codec.get_config()],
        "compressor": {"id": "zlib", "level": 1},
    }
    (tmp_path / ".zarray").write_text(json.dumps(zarray))
    (tmp_path / "0").write_bytes(stored)
    return tmp_path


@pytest.mark.parametrize(("dtype", "codec"), FILTERS[:2], ids=["packbits", "astype_u1_f8"])
def test_a_v2_filter_bomb_is_refused_before_the_filter_grows_it(
    tmp_path: Path, dtype: str, codec: Any
) -> None:
    n = 1 << 15
    chunk_nbytes = n * np.dtype(dtype).itemsize
    payload = zlib.compress(b"\x01" * (48 * chunk_nbytes), 9)  # far past the chunk, small
    array = tz.open_array(_bomb_store(tmp_path, dtype, codec, n, payload), mode="r")
    tracemalloc.start()
    try:
        with pytest.raises(ChunkDecodeError, match="chunk '0'"):
            array[:4]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * chunk_nbytes + (1 << 20), peak


def test_a_v2_chunk_of_filters_without_compressor_is_bounded_too() -> None:
    spec = ChunkSpec((64,), np.dtype("bool"), np.False_)
    pipe = V2Pipeline(spec, compressor=None, filters=[{"id": "packbits"}], order="C", byteorder="|")
    good = numcodecs.PackBits().encode(np.ones(64, dtype=bool))
    assert pipe.decode(good).all()
    with pytest.raises(ChunkDecodeError, match=r"chunk '0'.* 1025 bytes, more than the 9"):
        pipe.decode(bytes(1025), key="0")


def test_a_kept_inner_pipeline_is_not_used_for_a_fill_differing_in_bits():
    """One codec seeing fills 0.0 then -0.0 (equal as numbers): the inner level kept the
    first pipeline, dropped +0.0 inner chunks as fill, and they read back as -0.0."""
    from torchzarr.codecs.base import ChunkSpec
    from torchzarr.codecs.sharding import ShardingCodec

    codec = ShardingCodec([4], [ShardingCodec([2])])
    f8 = np.dtype("float64")
    codec.encode(np.zeros(8), ChunkSpec((8,), f8, np.float64(0.0)))
    negative = ChunkSpec((8,), f8, np.float64(-0.0))
    chunk = np.zeros(8)
    chunk[0] = 5.0
    back = ShardingCodec([4], [ShardingCodec([2])]).decode(codec.encode(chunk, negative), negative)
    assert not np.signbit(back).any() and back[0] == 5.0
