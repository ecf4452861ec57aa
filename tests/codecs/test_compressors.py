"""Core compressors: size headers, decoding into out, corrupt frames, blosc and crc32c details."""

from __future__ import annotations

import gzip

import numcodecs
import numpy as np
import pytest

from torchzarr.codecs.base import ChunkSpec
from torchzarr.codecs.compressors import (
    BloscCodec,
    Crc32cCodec,
    GzipCodec,
    ZstdCodec,
    decode_into,
    decoded_size,
    is_empty_frame,
)
from torchzarr.errors import ChecksumError, ChunkDecodeError, MetadataError

COMPRESSORS = {"zstd": numcodecs.Zstd(1), "lz4": numcodecs.LZ4(), "blosc": numcodecs.Blosc()}


@pytest.mark.parametrize("codec_id", sorted(COMPRESSORS))
@pytest.mark.parametrize("n", [0, 1, 255, 256, 300, 65791, 65792, 1 << 20])
def test_decoded_size_reads_the_header(codec_id: str, n: int) -> None:
    assert decoded_size(codec_id, COMPRESSORS[codec_id].encode(bytes(n))) == n


def test_decoded_size_is_none_where_no_header_says() -> None:
    assert decoded_size("zlib", numcodecs.Zlib().encode(b"abc")) is None
    assert decoded_size("zstd", b"not zstd at all") is None


def test_short_or_truncated_headers() -> None:
    with pytest.raises(ChunkDecodeError, match="lz4 codec: 2 bytes cannot hold"):
        decoded_size("lz4", b"ab")
    with pytest.raises(ChunkDecodeError, match="blosc codec: 3 bytes cannot hold"):
        decoded_size("blosc", b"abc")
    frame = numcodecs.Blosc("lz4", 5, 1).encode(np.arange(1000, dtype="f4"))
    with pytest.raises(ChunkDecodeError, match=r"header says \d+ compressed bytes.*truncated"):
        BloscCodec("lz4").decode(frame[:-5])  # numcodecs alone would decode this silently


@pytest.mark.parametrize("codec_id", sorted(COMPRESSORS))
def test_empty_frames(codec_id: str) -> None:
    frame = COMPRESSORS[codec_id].encode(b"")
    assert is_empty_frame(codec_id, frame)
    assert not is_empty_frame(codec_id, COMPRESSORS[codec_id].encode(b"x"))
    with pytest.raises(ChunkDecodeError):
        is_empty_frame(codec_id, frame[:-1])
    with pytest.raises(ChunkDecodeError):
        is_empty_frame(codec_id, frame + b"\0")
    out = np.empty(0, dtype=np.uint8)
    decode_into(COMPRESSORS[codec_id], codec_id, frame, out)


def test_zstd_checksummed_empty_frame() -> None:
    frame = numcodecs.Zstd(checksum=True).encode(b"")
    assert ZstdCodec(checksum=True).decode(frame) == b""


@pytest.mark.parametrize("codec_id", sorted(COMPRESSORS))
def test_decode_into_needs_the_exact_size(codec_id: str) -> None:
    impl = COMPRESSORS[codec_id]
    payload = np.arange(250, dtype=np.int32)
    frame = impl.encode(payload)
    out = np.zeros(1000, dtype=np.uint8)
    decode_into(impl, codec_id, frame, out)
    assert out.tobytes() == payload.tobytes()
    for size in (999, 1001, 4000):
        with pytest.raises(ChunkDecodeError, match=f"decompresses to 1000 bytes, expected {size}"):
            decode_into(impl, codec_id, frame, np.zeros(size, dtype=np.uint8))


def test_decode_into_copies_for_codecs_without_out() -> None:
    out = np.zeros(3, dtype=np.uint8)
    GzipCodec().decode_into(GzipCodec().encode(b"abc"), out)
    assert out.tobytes() == b"abc"
    with pytest.raises(ChunkDecodeError, match="decompresses to 3 bytes, expected 4"):
        GzipCodec().decode_into(GzipCodec().encode(b"abc"), np.zeros(4, dtype=np.uint8))


def test_gzip_writes_rfc1952_gzip() -> None:
    encoded = GzipCodec(9).encode(b"hello" * 100)
    assert encoded[:2] == b"\x1f\x8b" and gzip.decompress(encoded) == b"hello" * 100
    assert GzipCodec().decode(gzip.compress(b"from python")) == b"from python"


def test_zstd_checksum_catches_corruption() -> None:
    codec = ZstdCodec(3, checksum=True)
    frame = bytearray(codec.encode(bytes(range(256)) * 8))
    frame[-1] ^= 0xFF
    with pytest.raises(ChunkDecodeError, match="zstd codec"):
        codec.decode(bytes(frame))


@pytest.mark.parametrize(
    ("itemsize", "given", "expected"),
    [
        (1, None, "bitshuffle"),
        (4, None, "shuffle"),
        (8, "noshuffle", "noshuffle"),
        (1, "shuffle", "shuffle"),
    ],
)
def test_blosc_evolve_fills_typesize_and_shuffle(
    itemsize: int, given: str | None, expected: str
) -> None:
    dtype = np.dtype(f"u{itemsize}")
    evolved = BloscCodec("zstd", 5, given).evolve(ChunkSpec((4,), dtype, dtype.type(0)))
    assert evolved.typesize == itemsize and evolved.shuffle == expected
    assert evolved.evolve(ChunkSpec((4,), np.dtype("f8"), 0.0)) is evolved  # set stays set


def test_blosc_header_records_the_typesize() -> None:
    frame = BloscCodec("lz4", 5, "shuffle", typesize=8).encode(np.arange(64, dtype="i8").tobytes())
    assert frame[3] == 8  # typesize byte of the blosc header


def test_blosc_accepts_numcodecs_integer_shuffles_and_keeps_unset_tunables_out() -> None:
    codec = BloscCodec.from_config({"cname": "lz4", "shuffle": 2})
    assert codec.shuffle == "bitshuffle"
    assert BloscCodec().configuration() == {"cname": "zstd", "clevel": 5, "blocksize": 0}
    with pytest.raises(MetadataError, match="clevel must be an int in"):
        BloscCodec("lz4", clevel=10)


@pytest.mark.parametrize("level", [-131073, 23, 1.5, True])
def test_zstd_level_range(level: object) -> None:
    with pytest.raises(MetadataError, match="zstd codec: level"):
        ZstdCodec(level)  # type: ignore[arg-type]


def test_crc32c_known_vector_and_little_endian_suffix() -> None:
    encoded = Crc32cCodec().encode(b"123456789")
    assert encoded[-4:] == (0xE3069283).to_bytes(4, "little")
    payload = Crc32cCodec().payload(memoryview(encoded))
    assert isinstance(payload, memoryview) and bytes(payload) == b"123456789"
    assert Crc32cCodec().decode(np.frombuffer(encoded, dtype=np.uint8)) == b"123456789"


@pytest.mark.parametrize(
    ("zarr_format", "key", "compressors"),
    [
        (2, "0", "crc32c"),
        (2, "0", "adler32"),
        (2, "0", "fletcher32"),
        (2, "0", "jenkins_lookup3"),
        (3, "c/0", ["crc32c"]),
        (3, "c/0", ["numcodecs.crc32"]),
        (2, "0", numcodecs.Zstd(checksum=True)),  # zstd's own frame checksum
        (3, "c/0", [{"name": "zstd", "configuration": {"level": 1, "checksum": True}}]),
    ],
)
def test_a_checksum_mismatch_is_a_checksum_error_in_both_formats(zarr_format, key, compressors):
    import torchzarr as tz

    store = tz.MemoryStore()
    arr = tz.create_array(
        store, shape=(100,), dtype="f4", compressors=compressors, zarr_format=zarr_format
    )
    arr[...] = np.random.default_rng(0).random(100).astype("f4")  # stored as raw blocks
    flipped = bytearray(store.get(key))
    flipped[-6] ^= 1  # in the data (a zstd frame's checksum is its last 4 bytes)
    store.set(key, bytes(flipped))
    with pytest.raises(ChecksumError, match=f"chunk '{key}'"):
        arr[...]
    store.set(key, b"\x00" * 3)  # too short for any checksum: corrupt, not a mismatch
    with pytest.raises(ChunkDecodeError) as info:
        arr[...]
    assert not isinstance(info.value, ChecksumError)


def test_crc32c_failures() -> None:
    encoded = bytearray(Crc32cCodec().encode(b"payload"))
    encoded[0] ^= 1
    with pytest.raises(ChecksumError, match=r"stored 0x[0-9a-f]{8}, computed 0x[0-9a-f]{8}"):
        Crc32cCodec().decode(bytes(encoded))
    with pytest.raises(ChunkDecodeError, match="3 bytes cannot hold a checksum"):
        Crc32cCodec().decode(b"abc")


def test_gzip_encodes_the_same_bytes_at_any_time(monkeypatch):
    import time

    data = bytes(range(256)) * 64
    first = GzipCodec(4).encode(data)
    monkeypatch.setattr(time, "time", lambda: 2_000_000_000.0)  # another second entirely
    assert GzipCodec(4).encode(data) == first  # mtime 0: equal chunks, equal bytes
    assert numcodecs.GZip().decode(first) == data  # still plain gzip for everyone else


@pytest.mark.parametrize("order", ["C", "F"])
def test_v2_gzip_is_deterministic_and_numcodecs_decodes_it(monkeypatch, order):
    import time

    from torchzarr.codecs.v2_pipeline import V2Pipeline

    dt = np.dtype("int32")
    spec = ChunkSpec((4, 5), dt, dt.type(0))
    pipe = V2Pipeline(
        spec, compressor={"id": "gzip", "level": 2}, filters=None, order=order, byteorder="<"
    )
    data = np.arange(20, dtype=dt).reshape(4, 5)
    first = pipe.encode(data)
    monkeypatch.setattr(time, "time", lambda: 2_000_000_000.0)
    assert pipe.encode(data) == first
    stored = np.frombuffer(numcodecs.GZip().decode(first), dtype=dt)
    np.testing.assert_array_equal(stored, data.ravel(order=order))  # v2's memory order
