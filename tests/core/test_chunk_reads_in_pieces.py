"""Local chunk and shard files read whole when the system returns each read in pieces.

Linux returns at most 0x7ffff000 bytes per read call (0x7fff0000 with 64 KiB pages), so a
chunk, an inner chunk or a shard index of more than 2 GiB arrives in pieces; here every
call is capped at 1000 bytes (992: 64 KiB pages), the sizes torchzarr reckons with scaled
down alike. A read of a size known (a raw chunk, a shard's index and inner chunks) goes on
until it is met or a call returns nothing, so file systems that return any read in pieces
(FUSE with ``direct_io``) read those too; a read of a compressed chunk file, whose size is
not known, takes a short read of less than 1 GiB for the end of the file. A file cut
short still fails to decode.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from short_reads import cap_reads

import torchzarr as tz
from torchzarr.codecs import ZstdCodec
from torchzarr.errors import ChunkDecodeError
from torchzarr.storage.local import LocalStore

COMPRESSORS = {"zstd": [ZstdCodec(level=1)], "raw": None}
#: the most bytes a call returns, and the most torchzarr asks of one (scaled down)
KERNELS = {"4 KiB pages": (1000, 1000), "64 KiB pages": (992, 1000)}


def _random(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Values that do not compress: every file is larger than one capped read."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 2**32, size=shape, dtype=np.uint32).view(np.float32)


def _stored(path, data, chunks, compressors, shards=None):
    arr = tz.create_array(
        LocalStore(path),
        shape=data.shape,
        chunks=chunks,
        shards=shards,
        dtype=data.dtype,
        compressors=compressors,
    )
    arr[:] = data
    return tz.open_array(path, mode="r")


@pytest.mark.parametrize("kernel", sorted(KERNELS))
@pytest.mark.parametrize("compression", sorted(COMPRESSORS))
@pytest.mark.parametrize("rows", [8, 256])  # chunks of 32 KiB (one read) and 1 MiB (a buffer)
def test_chunks_returned_in_pieces_are_read_whole(tmp_path, monkeypatch, compression, rows, kernel):
    data = _random((512, 1024))
    arr = _stored(tmp_path, data, (rows, 1024), COMPRESSORS[compression])
    limit, most_per_call = KERNELS[kernel]
    cut = cap_reads(monkeypatch, limit, most_per_call=most_per_call)
    np.testing.assert_array_equal(arr[:].numpy(), data)  # whole chunks
    np.testing.assert_array_equal(arr[3:5, 10:20].numpy(), data[3:5, 10:20])  # partial
    np.testing.assert_array_equal(arr[rows + 1].numpy(), data[rows + 1])  # the head of one
    assert cut  # the reads were cut short


@pytest.mark.parametrize("compression", sorted(COMPRESSORS))
def test_many_small_chunks_returned_in_pieces_are_read_whole(tmp_path, monkeypatch, compression):
    data = _random((64, 4096))
    arr = _stored(tmp_path, data, (2, 512), COMPRESSORS[compression])  # tiles of 4 KiB chunks
    cut = cap_reads(monkeypatch)
    np.testing.assert_array_equal(arr[1:63, 100:4000].numpy(), data[1:63, 100:4000])
    assert cut


@pytest.mark.parametrize("kernel", sorted(KERNELS))
@pytest.mark.parametrize("compression", sorted(COMPRESSORS))
def test_shards_returned_in_pieces_read_their_index_and_inner_chunks(
    tmp_path, monkeypatch, compression, kernel
):
    data = _random((2048, 16))
    # 64 inner chunks a shard: its index (1028 bytes) takes more than one capped read
    arr = _stored(tmp_path, data, (16, 16), COMPRESSORS[compression], shards=(1024, 16))
    limit, most_per_call = KERNELS[kernel]
    cut = cap_reads(monkeypatch, limit, most_per_call=most_per_call)
    np.testing.assert_array_equal(arr[5:1500].numpy(), data[5:1500])
    np.testing.assert_array_equal(arr[1000:1100, 3:7].numpy(), data[1000:1100, 3:7])
    np.testing.assert_array_equal(arr.oindex[[3, 700, 2000], :].numpy(), data[[3, 700, 2000]])
    np.testing.assert_array_equal(arr[:].numpy(), data)
    assert cut


def test_raw_chunks_read_whole_from_a_file_system_that_returns_any_read_in_pieces(
    tmp_path, monkeypatch
):
    data = _random((64, 1024))
    arr = _stored(tmp_path, data, (8, 1024), None)  # 32 KiB chunks, read at 700 bytes a call
    cut = cap_reads(monkeypatch, 700, most_per_call=None)
    np.testing.assert_array_equal(arr[:].numpy(), data)
    np.testing.assert_array_equal(arr[3:21, 10:20].numpy(), data[3:21, 10:20])
    assert cut


@pytest.mark.parametrize("compression", sorted(COMPRESSORS))
def test_inner_chunks_read_whole_from_a_file_system_that_returns_any_read_in_pieces(
    tmp_path, monkeypatch, compression
):
    data = _random((2048, 16))
    # 64 inner chunks of 1 KiB a shard: its index (1028 bytes) and each raw one take two calls
    arr = _stored(tmp_path, data, (16, 16), COMPRESSORS[compression], shards=(1024, 16))
    cut = cap_reads(monkeypatch, 700, most_per_call=None)
    np.testing.assert_array_equal(arr[5:900].numpy(), data[5:900])  # part of a shard
    np.testing.assert_array_equal(arr[1000:1100, 3:7].numpy(), data[1000:1100, 3:7])
    assert cut


@pytest.mark.parametrize("compression", sorted(COMPRESSORS))
def test_a_chunk_file_cut_short_still_fails_when_reads_come_in_pieces(
    tmp_path, monkeypatch, compression
):
    data = _random((64, 1024))
    arr = _stored(tmp_path, data, (32, 1024), COMPRESSORS[compression])
    os.truncate(tmp_path / "c" / "1" / "0", 5000)
    cap_reads(monkeypatch)
    np.testing.assert_array_equal(arr[:32].numpy(), data[:32])
    with pytest.raises(ChunkDecodeError, match="c/1/0"):
        arr[:]
    with pytest.raises(ChunkDecodeError, match="c/1/0"):
        arr[40]


def test_a_shard_cut_short_still_fails_when_reads_come_in_pieces(tmp_path, monkeypatch):
    data = _random((2048, 16))
    arr = _stored(tmp_path, data, (16, 16), None, shards=(1024, 16))
    shard = tmp_path / "c" / "0" / "0"
    index = shard.read_bytes()[-1028:]
    shard.write_bytes(b"\0" * 5000 + index)  # the index points past the end of the file
    cap_reads(monkeypatch)
    with pytest.raises(ChunkDecodeError, match="c/0/0"):
        arr[900:1000]
