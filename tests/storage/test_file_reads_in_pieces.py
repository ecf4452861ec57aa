"""Stores read files whole when the system returns each read in pieces (Linux: at most
0x7ffff000 bytes a call), and ask for no more memory than a file holds."""

from __future__ import annotations

import os
import random
import zipfile

import pytest
from short_reads import cap_reads

from torchzarr.storage.base import ByteRange
from torchzarr.storage.fileio import read_bytes, read_into
from torchzarr.storage.local import LocalStore
from torchzarr.storage.zip import ZipStore

PAYLOAD = random.Random(0).randbytes(10240)  # ten capped reads, compressed or not


@pytest.fixture
def fd(tmp_path):
    """A read-only descriptor of a file holding PAYLOAD."""
    path = tmp_path / "f"
    path.write_bytes(PAYLOAD)
    opened = os.open(path, os.O_RDONLY)
    yield opened
    os.close(opened)


def test_reads_go_on_until_the_request_is_met_or_the_file_ends(fd, monkeypatch):
    cut = cap_reads(monkeypatch)
    first, second, spare = bytearray(6000), bytearray(5000), bytearray(1)
    assert read_into(fd, [first, second, spare], 100) == len(PAYLOAD) - 100
    assert bytes(first + second[:4140]) == PAYLOAD[100:]
    assert read_bytes(fd, 10000, 1000) == PAYLOAD[1000:]  # to its end
    assert read_bytes(fd, 3000, len(PAYLOAD) + 5) == b""
    whole = bytearray(len(PAYLOAD))
    assert read_into(fd, [whole]) == len(PAYLOAD) and whole == PAYLOAD  # from its position
    assert read_bytes(fd, 10) == b""  # the position is at the end
    assert cut


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_zip_entries_returned_in_pieces_are_read_whole(tmp_path, monkeypatch, compression):
    path = tmp_path / "big.zip"
    with ZipStore(path, mode="w", compression=compression) as store:
        store.set("a/0", PAYLOAD)
        store.set("a/1", PAYLOAD[::-1])
    store = ZipStore(path)
    try:
        cut = cap_reads(monkeypatch)
        assert store.get("a/0") == PAYLOAD  # and its CRC-32 checked
        assert store.get_range("a/0", ByteRange(500, 8000)) == PAYLOAD[500:8500]
        assert store.get_many(["a/0", "a/1"]) == {"a/0": PAYLOAD, "a/1": PAYLOAD[::-1]}
        assert cut
    finally:
        store.close()


def test_a_local_range_longer_than_the_file_reads_to_its_end(tmp_path):
    store = LocalStore(tmp_path)
    store.set("k", b"abc")
    assert store.get_range("k", ByteRange(1, 2**62)) == b"bc"  # not 4 EiB of memory first
    assert store.get_range("k", ByteRange(5, 2**62)) == b""


def test_a_system_cap_below_the_most_asked_of_a_call_is_read_past(fd, monkeypatch):
    # Linux with 64 KiB pages returns 0x7fff0000 bytes of the 0x7ffff000 asked: scaled down
    cut = cap_reads(monkeypatch, 992, most_per_call=1000)
    assert read_bytes(fd, 10000, 100) == PAYLOAD[100:10100]
    whole = bytearray(len(PAYLOAD) + 1)
    assert read_into(fd, [whole], 0) == len(PAYLOAD) and whole[:-1] == PAYLOAD
    assert read_bytes(fd, 400, 0) == PAYLOAD[:400]  # below the cap: one call
    assert cut


def test_buffers_larger_than_one_call_takes_are_split_between_calls(fd, monkeypatch):
    cap_reads(monkeypatch)  # more than the most per call in one readv: EINVAL, as macOS
    buffers = [bytearray(2500), bytearray(700), bytearray(8000)]
    assert read_into(fd, buffers, 0) == len(PAYLOAD)
    assert bytes(b"".join(buffers)[: len(PAYLOAD)]) == PAYLOAD
    os.lseek(fd, 40, os.SEEK_SET)
    assert read_into(fd, [bytearray(1500), bytearray(1500)]) == 3000  # from its position


def test_reads_of_a_size_known_go_on_past_any_short_read(fd, monkeypatch):
    # a file system that returns reads of any size in pieces (FUSE with direct_io)
    cut = cap_reads(monkeypatch, 700, most_per_call=None)
    assert read_bytes(fd, 5000, 10, needed=5000) == PAYLOAD[10:5010]
    head, spare = bytearray(len(PAYLOAD)), bytearray(1)
    assert read_into(fd, [head, spare], 0, needed=len(head)) == len(PAYLOAD)
    assert head == PAYLOAD
    # past what is needed, a short read of less than 1 GiB ends the file: one call
    assert read_bytes(fd, 5000, 0, needed=1000) == PAYLOAD[:1400]
    assert read_bytes(fd, 5000, 0) == PAYLOAD[:700]
    assert cut


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_zip_entries_read_whole_from_a_file_system_that_returns_any_read_in_pieces(
    tmp_path, monkeypatch, compression
):
    path = tmp_path / "fuse.zip"
    with ZipStore(path, mode="w", compression=compression) as store:
        store.set("a/0", PAYLOAD)
        store.set("a/1", PAYLOAD[::-1])
    store = ZipStore(path)
    try:
        cut = cap_reads(monkeypatch, 700, most_per_call=None)
        assert store.get("a/0") == PAYLOAD
        assert store.get_range("a/0", ByteRange(500, 8000)) == PAYLOAD[500:8500]
        assert store.get_many(["a/0", "a/1"]) == {"a/0": PAYLOAD, "a/1": PAYLOAD[::-1]}
        assert cut
    finally:
        store.close()
