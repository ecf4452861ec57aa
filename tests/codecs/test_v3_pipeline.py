"""V3Pipeline: chain validation, evolve, direct decoding into out, errors naming key and codec."""

from __future__ import annotations

import re
from typing import Any

import numcodecs
import numpy as np
import pytest
from plugin_codecs import ShortBoundHeader

from torchzarr.codecs.base import ArrayBytesCodec, ChunkSpec, Codec
from torchzarr.codecs.bytes_codec import BytesCodec
from torchzarr.codecs.compressors import BloscCodec, Crc32cCodec, GzipCodec, ZstdCodec
from torchzarr.codecs.numcodecs_adapter import numcodecs_v3_codec
from torchzarr.codecs.pipeline import V3Pipeline, decode_error
from torchzarr.codecs.registry import codec_from_json
from torchzarr.codecs.transpose import TransposeCodec
from torchzarr.errors import (
    ChecksumError,
    ChunkDecodeError,
    CodecError,
    MetadataError,
    ShapeMismatchError,
)


def spec(shape: tuple[int, ...] = (4, 6), dtype: str = "float32") -> ChunkSpec:
    dt = np.dtype(dtype)
    return ChunkSpec(shape, dt, dt.type(0))


def data(shape: tuple[int, ...] = (4, 6), dtype: str = "float32") -> np.ndarray:
    return np.arange(int(np.prod(shape)), dtype=dtype).reshape(shape)


LITTLE = BytesCodec("little")


@pytest.mark.parametrize(
    ("chain", "message"),
    [
        ([], "needs an array -> bytes codec"),
        (
            [TransposeCodec((1, 0))],
            "needs an array -> bytes codec (e.g. 'bytes'), got ['transpose']",
        ),
        ([ZstdCodec(), LITTLE], "codec 'zstd' (bytes -> bytes) comes before"),
        ([LITTLE, TransposeCodec((1, 0))], "'transpose' (array -> array) comes after"),
        ([LITTLE, BytesCodec("big")], "exactly one array -> bytes codec, got 'bytes' and"),
        ([BytesCodec(None)], "endian is required for the 4-byte dtype float32"),
        ([TransposeCodec((0, 1, 2)), LITTLE], "order [0, 1, 2] does not fit 2-d chunks"),
        (["bytes"], "is not a torchzarr codec"),
    ],
)
def test_invalid_chains_name_the_problem(chain: list[Any], message: str) -> None:
    with pytest.raises(MetadataError, match=re.escape(message)):
        V3Pipeline(chain, spec())


def test_codecs_are_evolved_for_the_spec_they_see() -> None:
    chain = [TransposeCodec("F"), LITTLE, BloscCodec("lz4"), Crc32cCodec()]
    pipe = V3Pipeline(chain, spec((2, 3), "int16"))
    assert [c.to_json() for c in pipe.codecs] == [
        {"name": "transpose", "configuration": {"order": [1, 0]}},
        {"name": "bytes", "configuration": {"endian": "little"}},
        {
            "name": "blosc",
            "configuration": {
                "typesize": 2,
                "cname": "lz4",
                "clevel": 5,
                "shuffle": "shuffle",
                "blocksize": 0,
            },
        },
        {"name": "crc32c"},
    ]
    one_byte = V3Pipeline([BytesCodec("big"), BloscCodec()], spec((3,), "uint8"))
    assert one_byte.codecs[0].to_json() == {"name": "bytes"}
    assert one_byte.codecs[1].to_json()["configuration"]["shuffle"] == "bitshuffle"


def test_packbits_changes_the_dtype_the_bytes_codec_sees() -> None:
    chain = [numcodecs_v3_codec("packbits"), LITTLE]
    pipe = V3Pipeline(chain, spec((3, 5), "bool"))
    assert pipe.codecs[1].to_json() == {"name": "bytes"}  # uint8 after packbits
    chunk = data((3, 5), "int8").astype(bool)
    assert len(pipe.encode(chunk)) == 1 + 2
    np.testing.assert_array_equal(pipe.decode(pipe.encode(chunk)), chunk)


@pytest.mark.parametrize(
    ("chain", "direct"),
    [
        ([LITTLE], True),
        ([BytesCodec("big")], True),
        ([LITTLE, ZstdCodec()], True),
        ([LITTLE, BloscCodec()], True),
        ([LITTLE, numcodecs_v3_codec("lz4")], True),
        ([LITTLE, ZstdCodec(), Crc32cCodec()], True),
        ([LITTLE, Crc32cCodec()], True),
        ([LITTLE, GzipCodec()], False),
        ([LITTLE, Crc32cCodec(), ZstdCodec()], False),
        ([LITTLE, numcodecs_v3_codec("zlib")], False),
        ([TransposeCodec((1, 0)), LITTLE, ZstdCodec()], False),
    ],
)
def test_supports_direct_decode(chain: list[Codec], direct: bool) -> None:
    pipe = V3Pipeline(chain, spec())
    assert pipe.supports_direct_decode is direct
    out = np.full((4, 6), -1, dtype=np.float32)
    assert pipe.decode(pipe.encode(data()), out=out) is out
    np.testing.assert_array_equal(out, data())


@pytest.mark.parametrize("endian", ["little", "big"])
@pytest.mark.parametrize("compressor", [[], [ZstdCodec(1)], [BloscCodec("lz4")]])
def test_byte_orders_decode_to_native_values(endian: str, compressor: list[Codec]) -> None:
    pipe = V3Pipeline([BytesCodec(endian), *compressor], spec((5,), "int32"))
    values = np.array([1, -2, 3 << 20, -(1 << 30), 7], dtype=np.int32)
    encoded = pipe.encode(values)
    raw = BytesCodec(endian).encode(values, spec((5,), "int32"))
    assert raw == values.astype(">i4" if endian == "big" else "<i4").tobytes()
    decoded = pipe.decode(encoded)
    assert decoded.dtype == np.dtype("int32") and decoded.dtype.isnative
    np.testing.assert_array_equal(decoded, values)
    out = np.empty(5, dtype=np.int32)
    np.testing.assert_array_equal(pipe.decode(encoded, out=out), values)


def test_decode_without_out_may_view_the_input() -> None:
    pipe = V3Pipeline([LITTLE], spec((2, 2)))
    encoded = pipe.encode(data((2, 2)))
    decoded = pipe.decode(encoded)
    assert not decoded.flags.writeable  # a view of the stored bytes, no copy
    np.testing.assert_array_equal(decoded, data((2, 2)))


def test_transpose_decodes_to_logical_order() -> None:
    pipe = V3Pipeline([TransposeCodec((1, 0)), LITTLE], spec((2, 3), "int64"))
    chunk = data((2, 3), "int64")
    encoded = pipe.encode(chunk)
    assert encoded == chunk.T.astype("<i8").tobytes()  # stored transposed, C order
    np.testing.assert_array_equal(pipe.decode(encoded), chunk)


@pytest.mark.parametrize(
    "chain",
    [
        [LITTLE],
        [LITTLE, ZstdCodec()],
        [LITTLE, BloscCodec()],
        [LITTLE, GzipCodec()],
        [LITTLE, Crc32cCodec()],
        [LITTLE, numcodecs_v3_codec("lz4")],
        [TransposeCodec((2, 1, 0)), LITTLE, ZstdCodec(), Crc32cCodec()],
    ],
    ids=repr,
)
def test_empty_chunks(chain: list[Codec]) -> None:
    pipe = V3Pipeline(chain, spec((0, 3, 2)))
    encoded = pipe.encode(np.empty((0, 3, 2), dtype=np.float32))
    assert pipe.decode(encoded).shape == (0, 3, 2)
    out = np.empty((0, 3, 2), dtype=np.float32)
    assert pipe.decode(encoded, out=out) is out


@pytest.mark.parametrize("into", [False, True])
@pytest.mark.parametrize(
    "chain",
    [[LITTLE], [LITTLE, ZstdCodec()], [LITTLE, BloscCodec()], [LITTLE, GzipCodec()]],
    ids=repr,
)
def test_a_chunk_of_another_size_is_an_error_never_a_partial_fill(
    chain: list[Codec], into: bool
) -> None:
    small = V3Pipeline(chain, spec((3, 6)))
    big = V3Pipeline(chain, spec((4, 6)))
    for encoded in (
        small.encode(data((3, 6))),
        V3Pipeline(chain, spec((5, 6))).encode(data((5, 6))),
    ):
        out = np.zeros((4, 6), dtype=np.float32) if into else None
        with pytest.raises(ChunkDecodeError, match=r"chunk 'c/1/0'"):
            big.decode(encoded, out=out, key="c/1/0")


def test_truncated_data_names_the_key_and_the_codec() -> None:
    pipe = V3Pipeline([LITTLE, GzipCodec()], spec())
    encoded = pipe.encode(data())
    with pytest.raises(ChunkDecodeError, match=r"chunk 'c/0/0'.*gzip") as info:
        pipe.decode(encoded[:-3], key="c/0/0")
    assert type(info.value) is ChunkDecodeError
    with pytest.raises(ChunkDecodeError, match="zstd"):
        V3Pipeline([LITTLE, ZstdCodec()], spec()).decode(b"\x28\xb5\x2f\xfd garbage")


def test_checksum_mismatch_is_a_checksum_error_naming_the_key() -> None:
    pipe = V3Pipeline([LITTLE, ZstdCodec(), Crc32cCodec()], spec())
    encoded = bytearray(pipe.encode(data()))
    encoded[5] ^= 0xFF
    for out in (None, np.empty((4, 6), dtype=np.float32)):
        with pytest.raises(ChecksumError, match=r"chunk 'k/0'.*crc32c.*mismatch"):
            pipe.decode(bytes(encoded), out=out, key="k/0")


def test_zstd_frames_without_a_content_size_still_decode() -> None:
    payload = data((2, 3)).tobytes()  # one raw block, no Frame_Content_Size in the header
    frame = (
        (0xFD2FB528).to_bytes(4, "little")
        + bytes([0x00, 0x00])
        + ((len(payload) << 3) | 1).to_bytes(3, "little")
        + payload
    )
    pipe = V3Pipeline([LITTLE, ZstdCodec()], spec((2, 3)))
    np.testing.assert_array_equal(pipe.decode(frame), data((2, 3)))
    out = np.empty((2, 3), dtype=np.float32)
    np.testing.assert_array_equal(pipe.decode(frame, out=out), data((2, 3)))
    with pytest.raises(ChunkDecodeError, match="decompresses to 24 bytes, expected 32"):
        V3Pipeline([LITTLE, ZstdCodec()], spec((2, 4))).decode(frame, out=np.empty((2, 4), "f4"))


@pytest.mark.parametrize(
    "out",
    [
        np.empty((4, 6), dtype=np.float64),
        np.empty((6, 4), dtype=np.float32),
        np.empty((6, 4), dtype=np.float32).T,
        np.empty((4, 6), dtype=np.float32)[:, ::-1],
        [[0.0] * 6] * 4,
    ],
    ids=["dtype", "shape", "fortran", "strided", "list"],
)
def test_out_must_fit_the_spec(out: Any) -> None:
    pipe = V3Pipeline([LITTLE], spec())
    with pytest.raises(CodecError, match=r"needs a writable C-contiguous array of shape \(4, 6\)"):
        pipe.decode(pipe.encode(data()), out=out)


def test_encode_checks_the_shape_and_takes_any_layout() -> None:
    pipe = V3Pipeline([LITTLE, ZstdCodec()], spec())
    with pytest.raises(ShapeMismatchError, match=r"shape \(6, 4\) as a chunk of shape \(4, 6\)"):
        pipe.encode(data((6, 4)))
    chunk = data()
    assert pipe.encode(np.asfortranarray(chunk)) == pipe.encode(chunk)
    assert pipe.encode(chunk.astype(np.float64)) == pipe.encode(chunk)  # cast to the spec


def test_encode_failures_name_the_codec() -> None:
    class Broken(ZstdCodec):
        def encode(self, data: bytes) -> bytes:
            raise RuntimeError("disk on fire")

    with pytest.raises(CodecError, match="codec 'zstd': RuntimeError: disk on fire"):
        V3Pipeline([LITTLE, Broken()], spec()).encode(data())


def test_decode_error_keeps_checksum_type_and_does_not_repeat_the_key() -> None:
    err = decode_error(ChecksumError("crc32c codec: mismatch"), Crc32cCodec(), "a/0")
    assert type(err) is ChecksumError and str(err) == "chunk 'a/0': crc32c codec: mismatch"
    assert decode_error(err, Crc32cCodec(), "a/0") is err
    plain = decode_error(ValueError("x"), numcodecs.Zlib(), None)
    assert str(plain) == "cannot decode chunk with codec 'zlib': ValueError: x"


def test_repr_lists_the_chain() -> None:
    pipe = V3Pipeline(
        [codec_from_json({"name": "bytes", "configuration": {"endian": "big"}})], spec()
    )
    assert "'endian': 'big'" in repr(pipe) and "(4, 6)" in repr(pipe)


@pytest.mark.parametrize(
    "chain",
    [
        [LITTLE, BloscCodec("lz4")],
        [LITTLE, ZstdCodec(1), Crc32cCodec()],
        [BytesCodec("big"), GzipCodec(1)],
    ],
    ids=repr,
)
def test_one_pipeline_decodes_from_many_threads(chain: list[Codec]) -> None:
    from concurrent.futures import ThreadPoolExecutor

    pipe = V3Pipeline(chain, spec((64, 64)))
    chunks = [np.random.default_rng(i).normal(size=(64, 64)).astype(np.float32) for i in range(48)]
    encoded = [pipe.encode(c) for c in chunks]
    outs = [np.empty((64, 64), dtype=np.float32) for _ in chunks]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: pipe.decode(encoded[i], out=outs[i], key=str(i)), range(48)))
        plain = list(pool.map(pipe.decode, encoded))
    for chunk, out, again in zip(chunks, outs, plain, strict=True):
        np.testing.assert_array_equal(out, chunk)
        np.testing.assert_array_equal(again, chunk)


class _PluginRaw(ArrayBytesCodec):
    """A plugin array -> bytes codec; ``mode`` picks how its decode misbehaves."""

    codec_name = "test.plugin_raw"

    def __init__(self, mode: str = "new") -> None:
        self.mode = mode

    @classmethod
    def from_config(cls, configuration: dict[str, Any]) -> _PluginRaw:
        return cls(**configuration)

    def configuration(self) -> dict[str, Any]:
        return {"mode": self.mode}

    def encode(self, chunk: np.ndarray, spec: ChunkSpec) -> bytes:
        return np.ascontiguousarray(chunk).tobytes()

    def decode(self, data: bytes, spec: ChunkSpec, out: np.ndarray | None = None) -> np.ndarray:
        arr = np.frombuffer(bytes(data), spec.dtype).reshape(spec.shape)
        if self.mode == "int32":
            return arr.view("<i4")
        if self.mode == "doubled":
            return np.concatenate([arr, arr])
        if self.mode == "flat":
            return arr.reshape(-1)
        return arr.copy()  # "new": ignores out=


def test_a_codec_ignoring_out_is_copied_into_out() -> None:
    pipe = V3Pipeline([_PluginRaw("new")], spec())
    out = np.zeros((4, 6), "float32")
    assert pipe.decode(pipe.encode(data()), out=out, key="c/0") is out
    assert np.array_equal(out, data())


@pytest.mark.parametrize(
    ("mode", "got"),
    [
        ("int32", r"shape \(4, 6\) of int32"),
        ("doubled", r"shape \(8, 6\)"),
        ("flat", r"shape \(24,\)"),
    ],
)
@pytest.mark.parametrize("with_out", [False, True])
def test_a_decoded_chunk_of_another_shape_or_dtype_names_the_codec_and_key(
    mode: str, got: str, with_out: bool
) -> None:
    pipe = V3Pipeline([_PluginRaw(mode)], spec())
    out = np.zeros((4, 6), "float32") if with_out else None
    match = rf"chunk 'c/0': codec 'test.plugin_raw' decoded to {got}"
    with pytest.raises(ChunkDecodeError, match=match):
        pipe.decode(pipe.encode(data()), out=out, key="c/0")


def test_a_plugin_codec_decoding_to_another_shape_fails_the_read_not_with_index_error() -> None:
    import torch

    import torchzarr as tz

    arr = tz.create_array(
        tz.MemoryStore(),
        shape=(4, 4),
        dtype=torch.float32,
        chunks=(2, 2),
        compressors=[_PluginRaw("flat")],
    )
    arr[:] = torch.ones(4, 4)
    with pytest.raises(ChunkDecodeError, match=r"test\.plugin_raw"):
        arr[:]


def test_encode_refuses_a_chunk_past_the_codecs_declared_bound() -> None:
    pipe = V3Pipeline([LITTLE, ShortBoundHeader(), ZstdCodec()], spec())
    with pytest.raises(CodecError, match=r"codec 'test\.short_bound' encoded a chunk to 104 bytes"):
        pipe.encode(data())
