"""A shard index entry (with a valid checksum) that points past the end of its shard fails a
partial read as it fails a whole one: ChunkDecodeError naming the shard and inner chunk,
before any memory is taken or any byte read for it, whatever the store."""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

import torchzarr as tz
from torchzarr.codecs import ZstdCodec
from torchzarr.codecs.compressors import Crc32cCodec
from torchzarr.errors import ChunkDecodeError
from torchzarr.storage.fsspec_store import FsspecStore
from torchzarr.storage.local import LocalStore
from torchzarr.storage.wrappers import ReadOnlyStore
from torchzarr.storage.zip import ZipStore

ENTRIES = {
    "offset past any file": (2**63, 8),
    "offset of an empty entry": (2**64 - 1, 8),
    "length of an empty entry": (0, 2**64 - 1),
    "length of 4 EiB": (0, 2**62),
    "end just past the shard": (-4, 8),  # offset from the end of the shard
}
INDEX_BYTES = 4 * 16 + 4  # four inner chunks, and the index's crc32c


def _memory(path: Path) -> tz.MemoryStore:
    store = tz.MemoryStore()
    for file in path.rglob("*"):
        if file.is_file():
            store.set(file.relative_to(path).as_posix(), file.read_bytes())
    return store


def _zip(path: Path) -> ZipStore:
    with zipfile.ZipFile(f"{path}.zip", "w") as zf:
        for file in path.rglob("*"):
            if file.is_file():
                zf.write(file, file.relative_to(path).as_posix())
    return ZipStore(f"{path}.zip")


STORES = {
    "local": lambda path: path,
    "memory": _memory,
    "wrapped local": lambda path: ReadOnlyStore(LocalStore(path)),
    "fsspec": lambda path: FsspecStore(path.as_uri(), read_only=True),
    "zip": _zip,
}


def _sharded(path: Path, compressors, entry: tuple[int, int] | None = None) -> None:
    """Eight int32 in one shard of four inner chunks; inner chunk 0's index entry set."""
    arr = tz.create_array(
        LocalStore(path), shape=(8,), chunks=(2,), shards=(8,), dtype="i4", compressors=compressors
    )
    arr[:] = np.arange(8, dtype="i4")
    if entry is None:
        return
    shard = path / "c" / "0"
    raw = shard.read_bytes()
    offset, nbytes = entry
    if offset < 0:
        offset += len(raw)
    index = struct.pack("<QQ", offset, nbytes) + raw[-INDEX_BYTES + 16 : -4]
    shard.write_bytes(raw[:-INDEX_BYTES] + Crc32cCodec().encode(index))


@pytest.mark.parametrize("store", sorted(STORES))
@pytest.mark.parametrize("entry", sorted(ENTRIES))
@pytest.mark.parametrize("compression", ["raw", "zstd"])
def test_an_index_entry_past_the_end_of_the_shard_fails_every_read_of_that_inner_chunk(
    tmp_path, store, entry, compression
):
    compressors = None if compression == "raw" else [ZstdCodec(level=1)]
    _sharded(tmp_path / "a", compressors, ENTRIES[entry])
    arr = tz.open_array(STORES[store](tmp_path / "a"), mode="r")
    message = r"'c/0'.*inner chunk \(0,\) at bytes \d+\+\d+ lies past the end of"
    for read in (lambda: arr[0:1], lambda: arr[0:2], lambda: arr.oindex[[1, 6]], lambda: arr[:]):
        with pytest.raises(ChunkDecodeError, match=message):
            read()
    np.testing.assert_array_equal(arr[2:8].numpy(), np.arange(2, 8))  # the others read


def test_valid_partial_reads_of_other_stores_ask_no_shard_sizes(tmp_path, monkeypatch):
    _sharded(tmp_path, [ZstdCodec(level=1)])
    store = _memory(tmp_path)

    def refuse(key: str) -> int | None:
        raise AssertionError(f"asked the size of {key!r}")

    monkeypatch.setattr(store, "getsize", refuse)
    np.testing.assert_array_equal(tz.open_array(store, mode="r")[2:7].numpy(), np.arange(2, 7))


@pytest.mark.parametrize("store", ["local", "memory"])
def test_an_index_entry_inside_the_index_is_refused_where_the_shard_size_is_known(tmp_path, store):
    _sharded(tmp_path / "a", None, (-INDEX_BYTES, 8))  # raw inner chunk 0 read from the index
    arr = tz.open_array(STORES[store](tmp_path / "a"), mode="r")
    message = r"'c/0'.*inner chunk \(0,\) at bytes \d+\+8 overlaps the shard's index"
    with pytest.raises(ChunkDecodeError, match=message):
        arr[:]  # a whole shard: its size is known
    if store == "local":  # a partial read of a local shard knows its file's size
        with pytest.raises(ChunkDecodeError, match=message):
            arr[0:2]


@pytest.mark.filterwarnings("ignore:Combining a `sharding_indexed` codec")
def test_an_index_at_the_start_refuses_entries_pointing_into_it(tmp_path):
    import zarr

    written = zarr.create_array(
        str(tmp_path), shape=(8,), chunks=(8,), dtype="i4", compressors=None,
        serializer=zarr.codecs.ShardingCodec(
            chunk_shape=(2,), codecs=[zarr.codecs.BytesCodec()], index_location="start"
        ),
    )  # fmt: skip
    written[:] = np.arange(8, dtype="i4")
    store = _memory(tmp_path)
    raw = store.get("c/0")
    index = struct.pack("<QQ", 16, 8) + raw[16 : INDEX_BYTES - 4]  # chunk 0 inside the index
    store.set("c/0", Crc32cCodec().encode(index) + raw[INDEX_BYTES:])
    arr = tz.open_array(store, mode="r")
    for read in (lambda: arr[0:2], lambda: arr[:]):
        with pytest.raises(ChunkDecodeError, match=r"inner chunk \(0,\).*overlaps the shard's"):
            read()
