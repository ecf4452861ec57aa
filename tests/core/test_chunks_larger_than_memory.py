"""Metadata may give chunks far larger than the array and than any machine's memory, as
zarr-python allows: missing chunks read as the fill value, without setting a chunk's
buffer aside; a stored one raises ChunkDecodeError naming it, not a raw MemoryError."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import torchzarr as tz
from torchzarr.errors import ChunkDecodeError

# 2**62 bytes of float32 (numpy's MemoryError), and 2**64 (past what numpy can even size)
HUGE_CHUNKS = [2**60, 2**62]
CODECS = {
    "bytes": [{"name": "bytes", "configuration": {"endian": "little"}}],
    "zstd": [
        {"name": "bytes", "configuration": {"endian": "little"}},
        {"name": "zstd", "configuration": {"level": 0, "checksum": False}},
    ],
}


def _document(zarr_format: int, chunk: int, codecs: str) -> tuple[str, dict[str, object]]:
    if zarr_format == 2:
        compressor = None if codecs == "bytes" else {"id": "zstd", "level": 0}
        return ".zarray", {
            "zarr_format": 2,
            "shape": [4],
            "chunks": [chunk],
            "dtype": "<f4",
            "compressor": compressor,
            "fill_value": 1.5,
            "filters": None,
            "order": "C",
        }
    return "zarr.json", {
        "zarr_format": 3,
        "node_type": "array",
        "shape": [4],
        "data_type": "float32",
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [chunk]}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": 1.5,
        "codecs": CODECS[codecs],
    }


def _stores(tmp_path: Path, zarr_format: int, chunk: int, codecs: str) -> list[tz.Store]:
    name, document = _document(zarr_format, chunk, codecs)
    text = json.dumps(document).encode()
    memory = tz.MemoryStore()
    memory.set(name, text)
    (tmp_path / name).write_bytes(text)
    return [tz.LocalStore(str(tmp_path)), memory]


@pytest.mark.parametrize("codecs", list(CODECS))
@pytest.mark.parametrize("chunk", HUGE_CHUNKS)
@pytest.mark.parametrize("zarr_format", [3, 2])
def test_missing_chunks_larger_than_memory_read_as_the_fill_value(
    tmp_path: Path, zarr_format: int, chunk: int, codecs: str
) -> None:
    for store in _stores(tmp_path, zarr_format, chunk, codecs):
        array = tz.open_array(store, mode="r")
        assert array.chunks == (chunk,)
        assert array[0].item() == 1.5
        assert torch.equal(array[...], torch.full((4,), 1.5))
        assert torch.equal(array[1:3], torch.full((2,), 1.5))


@pytest.mark.parametrize("codecs", list(CODECS))
@pytest.mark.parametrize("chunk", HUGE_CHUNKS)
def test_a_stored_chunk_larger_than_memory_is_a_chunk_decode_error_naming_it(
    tmp_path: Path, chunk: int, codecs: str
) -> None:
    for store in _stores(tmp_path, 3, chunk, codecs):
        store.set("c/0", np.arange(4, dtype="<f4").tobytes())
        array = tz.open_array(store, mode="r")
        for selection in (0, Ellipsis):
            with pytest.raises(ChunkDecodeError) as caught:
                array[selection]
            message = str(caught.value)
            assert message.startswith(f"cannot decode chunk 'c/0' in {type(store).__name__}(")
            assert f"decodes to {chunk * 4} bytes, more than this machine's memory" in message


def test_writes_to_chunks_larger_than_memory_are_refused_and_change_nothing():
    arr = tz.create_array("memory://", shape=(4,), dtype=torch.float32, chunks=(2**40,))
    with pytest.raises(tz.errors.InvalidArgumentError, match="more than this machine's memory"):
        arr[0] = 1.0
    with pytest.raises(tz.errors.InvalidArgumentError, match="more than this machine's memory"):
        arr.append(torch.ones(2))
    assert arr.shape == (4,) and tz.open_array(arr.store, mode="r").shape == (4,)
    assert arr[:].tolist() == [0.0] * 4
