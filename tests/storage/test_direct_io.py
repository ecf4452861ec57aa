"""Writes past the page cache: alignment, tails, fallbacks, and LocalStore's use of them."""

from __future__ import annotations

import errno
import mmap
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from torchzarr.storage import direct_io
from torchzarr.storage.local import LocalStore

MIB = 1 << 20


def _payload(size: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()


def _write(path: Path, value: object, direct: bool = True) -> bool:
    fd, on = direct_io.open_new(str(path), direct=direct)
    try:
        direct_io.write_new(fd, value, direct=on)  # type: ignore[arg-type]
    finally:
        os.close(fd)
    return on


@pytest.mark.parametrize(
    "size",
    [0, 1, 4095, 4096, MIB - 1, MIB, MIB + 1, 8 * MIB, 8 * MIB + 4097, 17 * MIB + 123],
)
def test_every_size_round_trips(tmp_path, size):
    data = _payload(size, size)
    _write(tmp_path / "f", data)
    assert (tmp_path / "f").read_bytes() == data


@pytest.mark.parametrize("offset", [0, 64, 4096 + 8])
def test_aligned_and_unaligned_sources(tmp_path, offset):
    size = 3 * MIB + 100
    backing = mmap.mmap(-1, size + offset)  # page aligned: offset 0 writes without a bounce
    view = memoryview(backing)[offset : offset + size]
    data = _payload(size, offset)
    view[:] = data
    _write(tmp_path / "f", view)
    assert (tmp_path / "f").read_bytes() == data


@settings(max_examples=25, deadline=None)
@given(size=st.integers(0, 3 * MIB), offset=st.integers(0, 4096))
def test_property_any_size_and_offset(tmp_path_factory, size, offset):
    path = tmp_path_factory.mktemp("direct") / "f"
    data = _payload(size + offset, size)
    _write(path, memoryview(data)[offset:])
    assert path.read_bytes() == data[offset:]


def test_direct_path_is_taken_where_the_file_system_allows(tmp_path, monkeypatch):
    calls = []
    real = direct_io._write_direct
    monkeypatch.setattr(direct_io, "_write_direct", lambda fd, v: (calls.append(1), real(fd, v)))
    on = _write(tmp_path / "f", _payload(2 * MIB))
    assert calls == ([1] if on else [])
    assert (tmp_path / "f").stat().st_size == 2 * MIB
    calls.clear()
    _write(tmp_path / "g", _payload(MIB - 1))  # below the threshold: buffered
    assert calls == []


def test_a_refused_direct_write_is_redone_through_the_page_cache(tmp_path, monkeypatch):
    real_write = os.write
    failures = []

    def refuse_aligned(fd, buf):
        if not failures and len(buf) % direct_io.ALIGN == 0 and len(buf) >= direct_io.ALIGN:
            failures.append(len(buf))
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_write(fd, buf)

    monkeypatch.setattr(direct_io, "_DIRECT_FLAG", 0)  # open normally, then claim direct
    monkeypatch.setattr(os, "write", refuse_aligned)
    data = _payload(5 * MIB + 7)
    fd, _ = direct_io.open_new(str(tmp_path / "f"), direct=True)
    try:
        direct_io.write_new(fd, data, direct=True)
    finally:
        os.close(fd)
    assert failures and (tmp_path / "f").read_bytes() == data


def test_other_write_errors_are_raised(tmp_path, monkeypatch):
    def full(fd, buf):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    fd, on = direct_io.open_new(str(tmp_path / "f"), direct=True)
    try:
        with pytest.raises(OSError) as info:
            direct_io.write_new(fd, _payload(2 * MIB), direct=on)
    finally:
        os.close(fd)
    assert info.value.errno == errno.ENOSPC


def test_a_file_system_refusing_o_direct_gets_a_buffered_file(tmp_path, monkeypatch):
    real_open = os.open
    if not direct_io._DIRECT_FLAG:
        pytest.skip("no O_DIRECT on this platform")

    def refuse_direct(path, flags, mode=0o777):
        if flags & direct_io._DIRECT_FLAG:
            os.close(real_open(path, flags & ~direct_io._DIRECT_FLAG, mode))  # created, then
            raise OSError(errno.EINVAL, "Invalid argument")  # refused, as Linux does
        return real_open(path, flags, mode)

    monkeypatch.setattr(os, "open", refuse_direct)
    data = _payload(2 * MIB)
    assert _write(tmp_path / "f", data) is False
    assert (tmp_path / "f").read_bytes() == data


def test_local_store_direct_io_round_trips_and_pickles(tmp_path):
    store = LocalStore(tmp_path / "s", direct_io=True)
    big, small = _payload(3 * MIB + 5), b"abc"
    store.set("a/big", big)
    store.set("a/small", small)
    assert store.get("a/big") == big and store.get("a/small") == small
    synced = LocalStore(tmp_path / "s", fsync=True, direct_io=True)
    synced.set_many({"b/0": big, "b/1": small, "b/2": big[:MIB]})
    assert [store.get(f"b/{i}") for i in range(3)] == [big, small, big[:MIB]]
    assert pickle.loads(pickle.dumps(store)).direct_io is True
    assert store.with_read_only().direct_io is True
    assert not [p for p in (tmp_path / "s").rglob("*") if p.name.endswith(".partial")]
