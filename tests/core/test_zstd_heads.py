"""Row reads of local zstd chunks read only the head of each file the rows need."""

from __future__ import annotations

import numpy as np
import pytest

import torchzarr as tz
from torchzarr.codecs import ZstdCodec
from torchzarr.core import fastpath
from torchzarr.errors import ChunkDecodeError
from torchzarr.storage.local import LocalStore

ROWS = np.array([0, 3, 70, 71, 130, 200, 255])  # early rows of several 64-row chunks


def _array(path, data, fill_value=None):
    arr = tz.create_array(
        LocalStore(path),
        shape=data.shape,
        chunks=(64, data.shape[1]),
        dtype=data.dtype,
        compressors=[ZstdCodec(level=1)],
        fill_value=fill_value,
    )
    arr[:] = data
    return tz.open_array(path, mode="r")


def _heads(monkeypatch):
    """Record (bytes asked, whole file?) of every head read."""
    calls = []
    original = fastpath.ChunkReader._read_head

    def recording(self, key, nbytes):
        data, whole = original(self, key, nbytes)
        calls.append((nbytes, whole))
        return data, whole

    monkeypatch.setattr(fastpath.ChunkReader, "_read_head", recording)
    return calls


@pytest.mark.parametrize("kind", ["compressible", "incompressible"])
def test_row_reads_decode_from_file_heads(tmp_path, monkeypatch, kind):
    rng = np.random.default_rng(0)
    if kind == "compressible":
        data = np.cumsum(rng.standard_normal((256, 4096)), axis=1).astype(np.float32)
    else:
        data = rng.integers(0, 2**32, size=(256, 4096), dtype=np.uint32).view(np.float32)
    arr = _array(tmp_path, data)
    calls = _heads(monkeypatch)
    np.testing.assert_array_equal(arr.oindex[ROWS, :].numpy(), data[ROWS])
    np.testing.assert_array_equal(arr[70].numpy(), data[70])
    assert calls and not all(whole for _, whole in calls)  # heads, not whole files


def test_a_frame_that_needs_more_than_its_head_is_read_whole(tmp_path, monkeypatch):
    data = np.cumsum(np.random.default_rng(1).standard_normal((256, 4096)), axis=1)
    arr = _array(tmp_path, data.astype(np.float32))
    monkeypatch.setattr(fastpath, "_HEAD_SLACK", 16)  # heads too short for any block
    calls = _heads(monkeypatch)
    np.testing.assert_array_equal(arr.oindex[ROWS, :].numpy(), data[ROWS].astype(np.float32))
    assert calls


def test_missing_and_vanishing_chunks_are_fill(tmp_path, monkeypatch):
    data = np.arange(256 * 512, dtype=np.float32).reshape(256, 512)
    arr = _array(tmp_path, data, fill_value=-1.0)
    (tmp_path / "c" / "1" / "0").unlink()  # rows 64..127
    expected = data[ROWS].copy()
    expected[(ROWS >= 64) & (ROWS < 128)] = -1
    np.testing.assert_array_equal(arr.oindex[ROWS, :].numpy(), expected)
    # a file gone between its head and the whole read is missing too
    monkeypatch.setattr(fastpath, "_HEAD_SLACK", 16)
    monkeypatch.setattr(fastpath.ChunkReader, "read_file", lambda self, key: None)
    np.testing.assert_array_equal(arr[3:4].numpy(), np.full((1, 512), -1, np.float32))


def test_a_corrupt_chunk_is_a_decode_error_naming_it(tmp_path):
    data = np.arange(256 * 512, dtype=np.float32).reshape(256, 512)
    arr = _array(tmp_path, data)
    (tmp_path / "c" / "2" / "0").write_bytes(b"definitely not zstd")
    with pytest.raises(ChunkDecodeError, match="c/2/0"):
        arr.oindex[ROWS, :]


@pytest.mark.parametrize("rows", [63, 65])  # a frame of one row short, or of one row too many
def test_a_frame_of_another_size_fails_a_row_read_as_it_fails_a_whole_read(tmp_path, rows):
    data = np.arange(256 * 512, dtype=np.float32).reshape(256, 512)
    arr = _array(tmp_path, data)
    wrong = np.zeros((rows, 512), dtype=np.float32)
    (tmp_path / "c" / "1" / "0").write_bytes(ZstdCodec(level=1).encode(wrong.tobytes()))
    for read in (lambda: arr[64:128], lambda: arr[70], lambda: arr.oindex[ROWS, :]):
        with pytest.raises(ChunkDecodeError, match="'c/1/0': zstd codec"):
            read()
