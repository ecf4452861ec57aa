"""ZipStore on a zip whose bytes changed on disk: whole entries are checked against their
CRC-32 (also when a large batch is read on several threads), and a compressed entry that
cannot be decompressed raises a torchzarr error."""

from __future__ import annotations

import struct
import threading
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch

import torchzarr as tz
from torchzarr.errors import ChecksumError, ChunkDecodeError
from torchzarr.storage import zip_archive
from torchzarr.storage.base import ByteRange
from torchzarr.storage.zip import ZipStore

PAYLOAD = bytes(range(256)) * 40


def write_zip(path: Path, compression: int) -> zipfile.ZipInfo:
    with ZipStore(path, mode="w", compression=compression) as store:
        store.set("k", PAYLOAD)
        store.set("other", b"untouched")
    with zipfile.ZipFile(path) as zf:
        return zf.getinfo("k")


def flip_data_byte(path: Path, info: zipfile.ZipInfo, at: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[info.header_offset + 30 + len(info.filename) + len(info.extra) + at] ^= 0xFF
    path.write_bytes(bytes(raw))


def flip_listed_crc(path: Path, info: zipfile.ZipInfo) -> None:
    """Change the CRC-32 the directory lists for ``info``: its data no longer matches."""
    raw = bytearray(path.read_bytes())
    # the directory record of "k" is the first one (entries are listed in file order)
    record = raw.index(b"PK\x01\x02")
    (crc,) = struct.unpack_from("<I", raw, record + 16)
    struct.pack_into("<I", raw, record + 16, crc ^ 0xFFFFFFFF)
    path.write_bytes(bytes(raw))


def test_a_flipped_byte_in_a_stored_entry_fails_its_crc_check(tmp_path: Path) -> None:
    path = tmp_path / "stored.zip"
    flip_data_byte(path, write_zip(path, zipfile.ZIP_STORED), 100)
    store = ZipStore(path)
    with pytest.raises(ChecksumError, match=r"'k' of zip .*stored\.zip"):
        store.get("k")
    with pytest.raises(ChecksumError, match="'k'"):
        store.get_range("k", ByteRange(0))  # the whole entry, as a range
    with pytest.raises(ChecksumError, match="'k'"):
        store.get_many(["other", "k"])
    assert store.get("other") == b"untouched"
    # a part of an entry cannot be checked: the CRC covers the whole entry
    assert store.get_range("k", ByteRange(0, 100)) == PAYLOAD[:100]
    store.close()


def test_a_stored_chunk_corrupted_on_disk_is_not_read_as_values(tmp_path: Path) -> None:
    path = tmp_path / "array.zip"
    store = ZipStore(path, mode="w")
    arr = tz.create_array(store, shape=(4, 100), dtype=torch.float32, chunks=(1, 100))
    arr[:] = torch.arange(400.0).reshape(4, 100)
    store.close()
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("c/3/0")
    flip_data_byte(path, info, info.compress_size // 2)
    with pytest.raises(ChecksumError, match="c/3/0"):
        tz.open_array(str(path), mode="r")[3]
    assert torch.equal(tz.open_array(str(path), mode="r")[0], torch.arange(100.0))


@pytest.mark.parametrize("compression", [zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2])
def test_a_compressed_entry_that_cannot_be_decompressed_names_the_key(
    tmp_path: Path, compression: int
) -> None:
    path = tmp_path / "packed.zip"
    flip_data_byte(path, write_zip(path, compression), 10)
    with pytest.raises(ChunkDecodeError, match=r"'k' of zip .*packed\.zip' is corrupt"):
        ZipStore(path).get("k")


def test_a_compressed_entry_whose_crc_differs_fails_its_check(tmp_path: Path) -> None:
    path = tmp_path / "crc.zip"
    flip_listed_crc(path, write_zip(path, zipfile.ZIP_DEFLATED))
    with pytest.raises(ChecksumError, match=r"'k' of zip .*crc\.zip"):
        ZipStore(path).get("k")


def test_a_stored_entry_whose_crc_differs_fails_its_check(tmp_path: Path) -> None:
    path = tmp_path / "crc.zip"
    flip_listed_crc(path, write_zip(path, zipfile.ZIP_STORED))
    with pytest.raises(ChecksumError, match="'k'"):
        ZipStore(path).get("k")


def test_a_large_batch_is_read_and_checked_on_several_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "large.zip"
    values = {f"c/{i}": bytes([i]) * (1 << 20) for i in range(8)}  # over 4 MiB in all
    with ZipStore(path, mode="w") as store:
        for key, value in values.items():
            store.set(key, value)
    readers: set[str] = set()
    real_read = zip_archive.Archive.read

    def recorded(self: Any, key: str, rng: ByteRange | None) -> bytes | None:
        readers.add(threading.current_thread().name)
        return real_read(self, key, rng)

    monkeypatch.setattr(zip_archive.Archive, "read", recorded)
    store = ZipStore(path)
    with tz.config.set(threads=4):
        assert store.get_many([*values, "missing", "c/0"]) == {**values, "missing": None}
        assert readers and all(name.startswith("torchzarr-zip") for name in readers)
        with zipfile.ZipFile(path) as zf:
            flip_data_byte(path, zf.getinfo("c/5"), 1000)
        store.close()  # the next read sees the changed bytes
        with pytest.raises(ChecksumError, match="'c/5'"):
            store.get_many(list(values))
    with tz.config.set(threads=1):
        readers.clear()
        with pytest.raises(ChecksumError, match="'c/5'"):
            store.get_many(list(values))
        assert readers == {threading.current_thread().name}
    store.close()
