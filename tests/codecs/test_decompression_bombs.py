"""A chunk that decompresses to far more than the chunk holds is refused without inflating it:
every bytes -> bytes decoder stops at the most its chunk can take."""

from __future__ import annotations

import bz2
import ctypes
import json
import lzma
import tracemalloc
import zlib
from collections.abc import Callable
from typing import Any

import numcodecs
import numcodecs.zstd
import numpy as np
import pytest
from documents import v3_array_document

import torchzarr as tz
from torchzarr.codecs import fast_decode
from torchzarr.codecs.base import ChunkSpec
from torchzarr.codecs.bounded import decompress_at_most, max_encoded_size, nbytes_of
from torchzarr.codecs.compressors import Crc32cCodec, GzipCodec, gzip_compress
from torchzarr.codecs.pipeline import V3Pipeline
from torchzarr.codecs.registry import codec_from_json
from torchzarr.codecs.v2_pipeline import V2Pipeline
from torchzarr.errors import ChunkDecodeError

#: what a bomb inflates to; the chunk holds 16 float32 (64 bytes)
BOMB = 32 << 20
#: what a refused read may allocate at its peak (the compressed input, bounded buffers)
MARGIN = 4 << 20
BYTES = {"name": "bytes", "configuration": {"endian": "little"}}


def _unsized_zstd(data: bytes) -> bytes:
    """One zstd frame of ``data`` whose header does not state its size (as streamed)."""
    lib = ctypes.CDLL(numcodecs.zstd.__file__)  # a handle of our own: its own prototypes
    lib.ZSTD_createCCtx.restype = ctypes.c_void_p
    lib.ZSTD_freeCCtx.argtypes = [ctypes.c_void_p]
    lib.ZSTD_CCtx_setParameter.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
    lib.ZSTD_compress2.restype = ctypes.c_size_t
    lib.ZSTD_compress2.argtypes = [ctypes.c_void_p] + [ctypes.c_void_p, ctypes.c_size_t] * 2
    ctx = lib.ZSTD_createCCtx()
    lib.ZSTD_CCtx_setParameter(ctx, 200, 0)  # ZSTD_c_contentSizeFlag
    out = ctypes.create_string_buffer(len(data) + (1 << 20))
    n = lib.ZSTD_compress2(ctx, out, len(out), data, len(data))
    lib.ZSTD_freeCCtx(ctx)
    assert n < len(out)
    return out.raw[:n]


ZEROS = bytes(BOMB)
BOMBS: dict[str, Callable[[], bytes]] = {
    "gzip": lambda: gzip_compress(ZEROS, 1),
    "zlib": lambda: zlib.compress(ZEROS, 1),
    "bz2": lambda: bz2.compress(ZEROS, 1),
    "lzma": lambda: lzma.compress(ZEROS, preset=0),
    "zstd": lambda: numcodecs.Zstd(1).encode(ZEROS),
    "unsized zstd": lambda: _unsized_zstd(ZEROS),
}


def _peak_while(read: Callable[[], Any]) -> tuple[BaseException | None, int]:
    tracemalloc.start()
    try:
        read()
    except ChunkDecodeError as err:
        return err, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return None, 0


def _v3_store(codecs: list[Any], chunk: bytes) -> Any:
    store = tz.MemoryStore()
    doc = v3_array_document(16, codecs)
    store.set("zarr.json", json.dumps(doc).encode())
    store.set("c/0", chunk)
    return store


def _v2_store(compressor: Any, filters: Any, chunk: bytes) -> Any:
    store = tz.MemoryStore()
    meta = {
        "zarr_format": 2,
        "shape": [16],
        "chunks": [16],
        "dtype": "<f4",
        "compressor": compressor,
        "fill_value": 0,
        "filters": filters,
        "order": "C",
    }
    store.set(".zarray", json.dumps(meta).encode())
    store.set("0", chunk)
    return store


def _assert_refused(store: Any, key: str) -> None:
    array = tz.open_array(store, mode="r")
    for read in (lambda: array[...], lambda: array[2:5]):
        err, peak = _peak_while(read)
        assert err is not None, "the bomb was read"
        assert f"chunk '{key}" in str(err)  # a shard's inner chunk: 'c/0[(0,)]'
        assert peak < MARGIN, f"{peak} bytes allocated to refuse the chunk"


V3_CHAINS: dict[str, tuple[list[Any], str]] = {
    "gzip": ([BYTES, {"name": "gzip", "configuration": {"level": 1}}], "gzip"),
    "gzip then crc32c": ([BYTES, {"name": "gzip"}, {"name": "crc32c"}], "gzip"),
    "numcodecs.zlib": ([BYTES, {"name": "numcodecs.zlib", "configuration": {}}], "zlib"),
    "numcodecs.bz2": ([BYTES, {"name": "numcodecs.bz2", "configuration": {}}], "bz2"),
    "numcodecs.lzma": ([BYTES, {"name": "numcodecs.lzma", "configuration": {}}], "lzma"),
    "transpose, zstd": (
        [{"name": "transpose", "configuration": {"order": [0]}}, BYTES, {"name": "zstd"}],
        "zstd",
    ),
    "delta, unsized zstd": (
        [{"name": "numcodecs.delta", "configuration": {"dtype": "<f4"}}, BYTES, {"name": "zstd"}],
        "unsized zstd",
    ),
    "zstd inside gzip": ([BYTES, {"name": "zstd"}, {"name": "gzip"}], "gzip"),
}


@pytest.mark.parametrize("chain", sorted(V3_CHAINS))
def test_v3_bombs_are_refused_without_inflating(chain: str) -> None:
    codecs, bomb = V3_CHAINS[chain]
    chunk = BOMBS[bomb]()
    if codecs[-1] == {"name": "crc32c"}:
        chunk = Crc32cCodec().encode(chunk)
    _assert_refused(_v3_store(codecs, chunk), "c/0")


V2_CHAINS: dict[str, tuple[Any, Any, str]] = {
    "zlib": ({"id": "zlib", "level": 1}, None, "zlib"),
    "gzip": ({"id": "gzip", "level": 1}, None, "gzip"),
    "bz2": ({"id": "bz2", "level": 1}, None, "bz2"),
    "lzma": ({"id": "lzma"}, None, "lzma"),
    "delta, zstd": ({"id": "zstd", "level": 1}, [{"id": "delta", "dtype": "<f4"}], "zstd"),
    "delta, unsized zstd": ({"id": "zstd"}, [{"id": "delta", "dtype": "<f4"}], "unsized zstd"),
    "zlib as a filter": (None, [{"id": "zlib", "level": 1}], "zlib"),
}


@pytest.mark.parametrize("chain", sorted(V2_CHAINS))
def test_v2_bombs_are_refused_without_inflating(chain: str) -> None:
    compressor, filters, bomb = V2_CHAINS[chain]
    _assert_refused(_v2_store(compressor, filters, BOMBS[bomb]()), "0")


def test_a_bomb_in_a_shards_inner_chunk_is_refused_without_inflating() -> None:
    inner = [{"name": "transpose", "configuration": {"order": [0]}}, BYTES, {"name": "gzip"}]
    config = {"chunk_shape": [16], "codecs": inner}
    sharded = _v3_store([{"name": "sharding_indexed", "configuration": config}], b"")
    bomb = gzip_compress(ZEROS, 1)
    index = np.array([[0, len(bomb)]], dtype="<u8").tobytes()
    sharded.set("c/0", bomb + Crc32cCodec().encode(index))
    _assert_refused(sharded, "c/0")


# -- the bounded decoders decode what numcodecs decodes ---------------------------------


def _gzip_members(*parts: bytes) -> bytes:
    return b"".join(gzip_compress(p, 5) for p in parts)


@pytest.mark.parametrize(
    "data",
    [
        _gzip_members(b"abc"),
        _gzip_members(b"abc", b"defg"),
        _gzip_members(b"abc") + b"\0\0\0",
        _gzip_members(b"abc") + b"\0\0" + _gzip_members(b"xy"),
        _gzip_members(b""),
        b"",
    ],
)
def test_gzip_decodes_members_and_padding_as_numcodecs_does(data: bytes) -> None:
    expected = bytes(numcodecs.GZip().decode(data))
    assert bytes(decompress_at_most(numcodecs.GZip(), "gzip", data, len(expected))) == expected
    assert GzipCodec().decode_bounded(data, len(expected)) == expected


@pytest.mark.parametrize(
    ("codec_id", "data"),
    [
        ("gzip", _gzip_members(b"abc") + b"junk"),
        ("gzip", _gzip_members(b"abcdef")[:-3]),
        ("zlib", zlib.compress(b"abcdef")[:-3]),
        ("bz2", bz2.compress(b"abcdef")[:-3]),
        ("lzma", lzma.compress(b"abcdef")[:-3]),
    ],
)
def test_corrupt_or_truncated_streams_raise(codec_id: str, data: bytes) -> None:
    impl = numcodecs.get_codec({"id": codec_id})
    with pytest.raises(Exception) as numcodecs_err:
        impl.decode(data)
    assert numcodecs_err.value is not None
    spec = ChunkSpec((6,), np.dtype("uint8"), np.uint8(0))
    pipe = V2Pipeline(spec, compressor={"id": codec_id}, filters=None, order="C", byteorder="|")
    with pytest.raises(ChunkDecodeError, match=r"chunk 'k'"):
        pipe.decode(data, key="k")


@pytest.mark.parametrize(
    ("codec_id", "data"),
    [
        ("zlib", zlib.compress(b"abc") + b"ignored"),
        ("bz2", bz2.compress(b"abc") + bz2.compress(b"de")),
        ("bz2", bz2.compress(b"abc") + b"ignored"),
        ("lzma", lzma.compress(b"abc") + lzma.compress(b"de")),
    ],
)
def test_trailing_data_is_treated_as_numcodecs_does(codec_id: str, data: bytes) -> None:
    impl = numcodecs.get_codec({"id": codec_id})
    expected = bytes(impl.decode(data))
    assert bytes(decompress_at_most(impl, codec_id, data, len(expected))) == expected
    with pytest.raises(ChunkDecodeError, match="more than"):
        decompress_at_most(impl, codec_id, data, len(expected) - 1)


def test_lzma_raw_format_with_filters_round_trips() -> None:
    impl = numcodecs.LZMA(format=lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA2}])
    data = impl.encode(b"abcabcabc")
    assert bytes(decompress_at_most(impl, "lzma", data, 9)) == b"abcabcabc"


@pytest.mark.parametrize("direct", [True, False], ids=["zstd called directly", "numcodecs"])
def test_unsized_zstd_decodes_up_to_its_limit(
    monkeypatch: pytest.MonkeyPatch, direct: bool
) -> None:
    if not direct:  # a numcodecs whose zstd library does not export its C API
        monkeypatch.setattr(fast_decode, "available", lambda codec_id: False)
    frame = _unsized_zstd(b"abcd" * 4)
    decoded = decompress_at_most(numcodecs.Zstd(), "zstd", frame, 100)
    assert bytes(decoded) == b"abcd" * 4
    with pytest.raises(ChunkDecodeError, match="more than 15 bytes"):
        decompress_at_most(numcodecs.Zstd(), "zstd", frame, 15)


def test_a_sized_zstd_frame_decodes_into_its_stated_size() -> None:
    frame = numcodecs.Zstd().encode(b"abcd" * 4)
    decoded = decompress_at_most(numcodecs.Zstd(), "zstd", frame, 1 << 30)
    base = getattr(decoded, "base", None)  # not a view of a buffer as large as the limit
    assert nbytes_of(decoded) == 16 and (base is None or nbytes_of(base) == 16)


@pytest.mark.filterwarnings("ignore:Casting complex values to real")  # AsType's decode
def test_v2_filters_that_grow_32_times_still_read(tmp_path: Any) -> None:
    zarr = pytest.importorskip("zarr")
    stored = zarr.create_array(
        tmp_path / "a.zarr",
        shape=(40_000,),
        chunks=(40_000,),
        dtype="u1",
        zarr_format=2,
        filters=[numcodecs.AsType(encode_dtype="complex256", decode_dtype="u1")],
        compressors=numcodecs.Zstd(),
    )
    stored[:] = np.arange(40_000) % 251
    np.testing.assert_array_equal(tz.open_array(tmp_path / "a.zarr")[:].numpy(), stored[:])


def test_bounds_of_a_chain() -> None:
    spec = ChunkSpec((16,), np.dtype("float32"), np.float32(0))
    chain = [codec_from_json(c) for c in (BYTES, "zstd", "crc32c", "numcodecs.zlib")]
    bounds = V3Pipeline(chain, spec).size_bounds()
    assert bounds[0] == 64 and bounds[2] == bounds[1] + 4
    assert bounds[1] == max_encoded_size("zstd", 64) and bounds[3] > bounds[2]
    assert max_encoded_size("some-plugin", 64) >= 16 * 64


def test_normal_chunks_of_every_chain_still_decode() -> None:
    data = np.arange(16, dtype=np.float32)
    spec = ChunkSpec((16,), np.dtype("float32"), np.float32(0))
    for codecs, _ in V3_CHAINS.values():
        pipe = V3Pipeline([codec_from_json(c) for c in codecs], spec)
        assert np.array_equal(pipe.decode(pipe.encode(data)), data)
        assert np.array_equal(pipe.decode(pipe.encode(data), out=np.empty(16, "f4")), data)
    for compressor, filters, _ in V2_CHAINS.values():
        v2 = V2Pipeline(spec, compressor=compressor, filters=filters, order="C", byteorder="<")
        assert np.array_equal(v2.decode(v2.encode(data)), data)
