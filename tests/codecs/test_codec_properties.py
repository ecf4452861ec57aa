"""Hypothesis: random arrays of every dtype through random v3 chains and v2 pipelines round-trip."""

from __future__ import annotations

from typing import Any

import numcodecs
import numcodecs.blosc
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from torchzarr.codecs.base import ChunkSpec, Codec
from torchzarr.codecs.bytes_codec import BytesCodec
from torchzarr.codecs.compressors import BloscCodec, Crc32cCodec, GzipCodec, ZstdCodec
from torchzarr.codecs.numcodecs_adapter import numcodecs_v3_codec
from torchzarr.codecs.pipeline import V3Pipeline
from torchzarr.codecs.registry import codec_from_json
from torchzarr.codecs.transpose import TransposeCodec
from torchzarr.codecs.v2_pipeline import V2Pipeline
from torchzarr.dtypes import all_data_types

STORAGE = sorted({dt.storage.str for dt in all_data_types()})
shapes = st.lists(st.integers(0, 5), min_size=0, max_size=3).map(tuple)


def raw_array(seed: int, shape: tuple[int, ...], dtype: np.dtype[Any]) -> np.ndarray:
    """Any bit pattern (NaNs, infinities, subnormals); bools only 0/1."""
    rng = np.random.default_rng(seed)
    n = int(np.prod(shape, dtype=np.int64))
    if dtype.kind == "b":
        return rng.integers(0, 2, size=shape).astype(bool)
    return np.frombuffer(rng.bytes(n * dtype.itemsize), dtype=dtype).reshape(shape).copy()


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return (
        a.shape == b.shape
        and a.dtype == b.dtype
        and np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes()
    )


compressor_choices = st.sampled_from(
    [
        ZstdCodec(1),
        ZstdCodec(-3, checksum=True),
        GzipCodec(1),
        BloscCodec("lz4"),
        BloscCodec("zstd", 3, "bitshuffle"),
        BloscCodec("blosclz", 1, "noshuffle"),
        Crc32cCodec(),
        numcodecs_v3_codec("lz4", {"acceleration": 1}),
        numcodecs_v3_codec("zlib", {"level": 1}),
        numcodecs_v3_codec("adler32", {}),
    ]
)


@st.composite
def v3_cases(draw: st.DrawFn) -> tuple[list[Codec], ChunkSpec, np.ndarray]:
    dtype = np.dtype(draw(st.sampled_from(STORAGE)))
    shape = draw(shapes)
    chain: list[Codec] = []
    if shape and draw(st.booleans()):
        chain.append(TransposeCodec(tuple(draw(st.permutations(range(len(shape)))))))
    chain.append(BytesCodec(draw(st.sampled_from(["little", "big"]))))
    if draw(st.booleans()):  # a byte shuffle only makes sense on the raw bytes
        chain.append(numcodecs_v3_codec("shuffle", {}))
    chain.extend(draw(st.lists(compressor_choices, max_size=3)))
    data = raw_array(draw(st.integers(0, 2**32 - 1)), shape, dtype)
    return chain, ChunkSpec(shape, dtype, dtype.type(0)), data


@settings(max_examples=150, deadline=None)
@given(v3_cases())
def test_random_v3_chains_round_trip(case: tuple[list[Codec], ChunkSpec, np.ndarray]) -> None:
    chain, spec, data = case
    pipe = V3Pipeline(chain, spec)
    encoded = pipe.encode(data)
    assert same_bits(pipe.decode(encoded), data)
    out = np.empty(spec.shape, dtype=spec.dtype)
    assert pipe.decode(encoded, out=out) is out and same_bits(out, data)
    # the chain zarr.json records rebuilds the same pipeline
    again = V3Pipeline([codec_from_json(c.to_json()) for c in pipe.codecs], spec)
    assert again.codecs == pipe.codecs and again.encode(data) == encoded


V2_COMPRESSORS: list[dict[str, Any] | None] = [
    None,
    {"id": "zlib", "level": 1},
    {"id": "gzip", "level": 1},
    {"id": "zstd", "level": 1},
    {"id": "zstd", "level": 3, "checksum": True},
    {"id": "lz4", "acceleration": 1},
    {"id": "bz2", "level": 1},
    {"id": "lzma"},
    {"id": "crc32c"},
    *(
        {"id": "blosc", "cname": cname, "clevel": 5, "shuffle": shuffle, "blocksize": 0}
        for cname in numcodecs.blosc.list_compressors()  # this build's subset of the spec's
        for shuffle in (0, 1, 2)
    ),
]


@pytest.mark.parametrize("compressor", V2_COMPRESSORS, ids=repr)
@settings(max_examples=8, deadline=None)
@given(
    dtype=st.sampled_from([s for s in STORAGE if s[1] != "b"] + ["|b1"]),
    shape=shapes,
    order=st.sampled_from("CF"),
    byteorder=st.sampled_from("<>"),
    seed=st.integers(0, 2**32 - 1),
)
def test_v2_compressors_round_trip(
    compressor: dict[str, Any] | None,
    dtype: str,
    shape: tuple[int, ...],
    order: str,
    byteorder: str,
    seed: int,
) -> None:
    dt = np.dtype(dtype).newbyteorder("=")
    bo = byteorder if dt.itemsize > 1 else "|"
    pipe = V2Pipeline(
        ChunkSpec(shape, dt, dt.type(0)),
        compressor=compressor,
        filters=None,
        order=order,
        byteorder=bo,
    )
    data = raw_array(seed, shape, dt)
    encoded = pipe.encode(data)
    assert same_bits(pipe.decode(encoded), data)
    out = np.empty(shape, dtype=dt)
    assert same_bits(pipe.decode(encoded, out=out), data)


def _filter_case(
    name: str, bo: str, seed: int, shape: tuple[int, ...]
) -> tuple[list[dict[str, Any]], str, np.ndarray]:
    """A filter, the array dtype, and data the filter represents exactly."""
    rng = np.random.default_rng(seed)
    ints = rng.integers(-1000, 1000, size=shape)
    if name == "delta":
        return [{"id": "delta", "dtype": bo + "i4"}], "int32", ints.astype("int32")
    if name == "astype":
        config = {"id": "astype", "encode_dtype": bo + "i2", "decode_dtype": bo + "i8"}
        return [config], "int64", ints.astype("int64")
    if name == "quantize":  # digits=3 keeps 10 fractional bits: multiples of 1/1024 are exact
        return [{"id": "quantize", "digits": 3, "dtype": bo + "f8"}], "float64", ints / 1024
    if name == "fixedscaleoffset":
        config = {
            "id": "fixedscaleoffset",
            "offset": 3,
            "scale": 8,
            "dtype": bo + "f8",
            "astype": bo + "i4",
        }
        return [config], "float64", ints / 8 + 3
    if name == "bitround":  # integers below 2**9 need at most 9 mantissa bits
        return [{"id": "bitround", "keepbits": 9}], "float32", (ints % 512).astype("float32")
    if name == "packbits":
        return [{"id": "packbits"}], "bool", ints % 2 == 0
    return [{"id": "shuffle", "elementsize": 8}], "float64", rng.normal(size=shape)


@pytest.mark.parametrize(
    "name", ["delta", "astype", "quantize", "fixedscaleoffset", "bitround", "packbits", "shuffle"]
)
@settings(max_examples=15, deadline=None)
@given(
    shape=shapes.filter(lambda s: 0 not in s),
    order=st.sampled_from("CF"),
    byteorder=st.sampled_from("<>"),
    seed=st.integers(0, 2**32 - 1),
    compressor=st.sampled_from([None, {"id": "zstd", "level": 1}, {"id": "blosc"}]),
)
def test_v2_filters_round_trip(
    name: str,
    shape: tuple[int, ...],
    order: str,
    byteorder: str,
    seed: int,
    compressor: dict[str, Any] | None,
) -> None:
    if name == "bitround" and (
        byteorder == ">" or (order == "F" and sum(n > 1 for n in shape) > 1)
    ):
        # numcodecs' BitRound knows no big-endian dtypes and returns C order for F input,
        # in zarr-python as here (the interop tests pin the identical bytes)
        return
    if name == "quantize" and byteorder == ">" and shape == ():
        return  # numcodecs returns a native scalar for 0-d input, so do zarr-python's bytes
    filters, dtype, data = _filter_case(name, byteorder, seed, shape)
    dt = np.dtype(dtype)
    bo = byteorder if dt.itemsize > 1 else "|"
    pipe = V2Pipeline(
        ChunkSpec(shape, dt, dt.type(0)),
        compressor=compressor,
        filters=filters,
        order=order,
        byteorder=bo,
    )
    data = np.asarray(data, dtype=dt)
    encoded = pipe.encode(data)
    assert same_bits(pipe.decode(encoded), data)
    out = np.empty(shape, dtype=dt)
    assert same_bits(pipe.decode(encoded, out=out), data)
