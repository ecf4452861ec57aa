"""Row reads that decode only the start of a zstd chunk do so only where that is sound.

A checksummed frame, a frame without a stated size, or a chunk of several frames is decoded
whole, so a partial read fails or succeeds exactly as a whole read does.
"""

from __future__ import annotations

import numcodecs
import numpy as np
import pytest

import torchzarr as tz
from torchzarr.codecs import ZstdCodec, fast_decode
from torchzarr.errors import ChunkDecodeError
from torchzarr.storage.local import LocalStore

pytestmark = pytest.mark.skipif(
    not fast_decode.available("zstd"), reason="numcodecs' zstd does not export its C API here"
)


def _fetched(path):
    """The directory's files in a memory store: chunks are fetched whole, never read from
    a file's head."""
    files = {str(f.relative_to(path)): f.read_bytes() for f in path.rglob("*") if f.is_file()}
    return tz.MemoryStore(files)


STORES = {"local": LocalStore, "fetched": _fetched}


def _array(path, data, chunks, codec=None):
    arr = tz.create_array(
        LocalStore(path),
        shape=data.shape,
        chunks=chunks,
        dtype=data.dtype,
        compressors=[codec or ZstdCodec(level=1)],
    )
    arr[:] = data
    return arr


def _frame_without_size(payload: bytes) -> bytes:
    """A zstd frame of raw blocks whose header leaves out the content size."""
    block = 128 << 10
    parts = [(0xFD2FB528).to_bytes(4, "little"), bytes([0x00, 7 << 3])]  # 128 KiB window
    pieces = [payload[i : i + block] for i in range(0, len(payload), block)] or [b""]
    for i, piece in enumerate(pieces):
        last = int(i == len(pieces) - 1)
        parts += [(len(piece) << 3 | last).to_bytes(3, "little"), piece]
    return b"".join(parts)


@pytest.mark.parametrize("store", sorted(STORES))
def test_a_corrupt_checksummed_chunk_fails_a_partial_read(tmp_path, store):
    data = np.random.default_rng(0).integers(0, 256, (256, 1024), dtype=np.uint8)
    _array(tmp_path, data, data.shape, ZstdCodec(level=1, checksum=True))
    chunk = tmp_path / "c" / "0" / "0"
    stored = bytearray(chunk.read_bytes())
    stored[100] ^= 0xFF  # a payload byte of the first row: only the checksum can tell
    chunk.write_bytes(bytes(stored))
    arr = tz.open_array(STORES[store](tmp_path), mode="r")
    for read in (lambda: arr[0:2], lambda: arr[0], lambda: arr[:]):
        with pytest.raises(ChunkDecodeError, match="c/0/0"):
            read()


@pytest.mark.parametrize("store", sorted(STORES))
def test_an_intact_checksummed_chunk_reads_rows(tmp_path, store):
    data = np.random.default_rng(1).integers(0, 256, (256, 1024), dtype=np.uint8)
    _array(tmp_path, data, (64, 1024), ZstdCodec(level=1, checksum=True))
    arr = tz.open_array(STORES[store](tmp_path), mode="r")
    np.testing.assert_array_equal(arr[65:67].numpy(), data[65:67])
    np.testing.assert_array_equal(arr.oindex[[0, 70, 200], :].numpy(), data[[0, 70, 200]])


@pytest.mark.parametrize("store", sorted(STORES))
@pytest.mark.parametrize("rows", [63, 64, 65])
def test_a_frame_without_a_stated_size_reads_rows_as_a_whole_read_does(tmp_path, store, rows):
    data = np.arange(256 * 512, dtype=np.float32).reshape(256, 512)
    _array(tmp_path, data, (64, 512))
    stored = np.arange(rows * 512, dtype=np.float32) + 64 * 512  # rows 64.. of the data
    (tmp_path / "c" / "1" / "0").write_bytes(_frame_without_size(stored.tobytes()))
    arr = tz.open_array(STORES[store](tmp_path), mode="r")
    reads = (lambda: arr[64:66], lambda: arr[70], lambda: arr.oindex[[0, 65, 200], :])
    if rows == 64:
        np.testing.assert_array_equal(arr[64:66].numpy(), data[64:66])
        np.testing.assert_array_equal(arr.oindex[[0, 65, 200], :].numpy(), data[[0, 65, 200]])
        np.testing.assert_array_equal(arr[:].numpy(), data)
        return
    for read in reads:
        with pytest.raises(ChunkDecodeError, match="'c/1/0': zstd codec"):
            read()


@pytest.mark.parametrize("store", sorted(STORES))
def test_a_chunk_of_several_frames_reads_rows_as_a_whole_read_does(tmp_path, store):
    data = np.arange(64 * 64, dtype=np.float32).reshape(64, 64)
    _array(tmp_path, data, data.shape)
    raw, zstd = data.tobytes(), numcodecs.Zstd(1)
    (tmp_path / "c" / "0" / "0").write_bytes(zstd.encode(raw[:4096]) + zstd.encode(raw[4096:]))
    arr = tz.open_array(STORES[store](tmp_path), mode="r")
    np.testing.assert_array_equal(arr[:].numpy(), data)
    np.testing.assert_array_equal(arr[0:2].numpy(), data[0:2])
    np.testing.assert_array_equal(arr[20:22].numpy(), data[20:22])


@pytest.mark.parametrize("store", sorted(STORES))
def test_a_one_dimensional_chunk_of_frames_and_a_skippable_frame_reads_a_slice(tmp_path, store):
    data = np.random.default_rng(2).random(4096, dtype=np.float32)
    _array(tmp_path, data, data.shape)
    raw, zstd = data.tobytes(), numcodecs.Zstd(1)
    skippable = (0x184D2A50).to_bytes(4, "little") + (8192).to_bytes(4, "little") + bytes(8192)
    (tmp_path / "c" / "0").write_bytes(
        zstd.encode(raw[:8192]) + skippable + zstd.encode(raw[8192:])
    )
    arr = tz.open_array(STORES[store](tmp_path), mode="r")
    np.testing.assert_array_equal(arr[:].numpy(), data)
    np.testing.assert_array_equal(arr[0:10].numpy(), data[0:10])


@pytest.mark.parametrize("first", ["a third", "empty"])
def test_small_chunks_of_several_frames_read_in_tiles_and_at_the_edges(tmp_path, first):
    data = np.round(np.random.default_rng(3).standard_normal((256, 64)), 2).astype(np.float32)
    _array(tmp_path, data, (4, 64))
    zstd = numcodecs.Zstd(1)
    for i in range(64):
        raw = data[i * 4 : (i + 1) * 4].tobytes()
        cut = len(raw) // 3 if first == "a third" else 0
        (tmp_path / "c" / str(i) / "0").write_bytes(zstd.encode(raw[:cut]) + zstd.encode(raw[cut:]))
    arr = tz.open_array(LocalStore(tmp_path), mode="r")
    for sel in (np.s_[:], np.s_[:, 3:60], np.s_[2:250], np.s_[8:9]):
        np.testing.assert_array_equal(arr[sel].numpy(), data[sel])


def test_prefix_decoding_applies_only_to_one_unchecked_frame_of_the_stated_size():
    payload = bytes(range(256)) * 64
    frame = numcodecs.Zstd(1).encode(payload)
    assert fast_decode.zstd_prefix_applies(frame, len(payload))
    assert fast_decode.zstd_prefix_applies(frame[:20], len(payload), complete=False)
    assert not fast_decode.zstd_prefix_applies(frame[:20], len(payload))  # cut short
    assert not fast_decode.zstd_prefix_applies(frame + b"\0", len(payload))  # bytes after it
    assert not fast_decode.zstd_prefix_applies(frame, len(payload) + 1)
    checked = numcodecs.Zstd(1, checksum=True).encode(payload)
    assert not fast_decode.zstd_prefix_applies(checked, len(payload))
    assert not fast_decode.zstd_prefix_applies(_frame_without_size(payload), len(payload))
    assert not fast_decode.zstd_prefix_applies(b"not zstd at all", len(payload))
    assert numcodecs.Zstd().decode(_frame_without_size(payload)) == payload
