"""Partial reads of local shards check index entries against the shard's size as it was
when the index was read (its file's signature): no ``fstat`` of their own per read."""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import pytest

import torchzarr as tz
from torchzarr.codecs import ZstdCodec
from torchzarr.storage.local import LocalStore

COMPRESSORS = {"zstd": [ZstdCodec(level=1)], "raw": None}


def _sharded(path, compression):
    arr = tz.create_array(
        LocalStore(path),
        shape=(4096,),
        chunks=(64,),
        shards=(1024,),
        dtype="i4",
        compressors=COMPRESSORS[compression],
    )
    arr[:] = np.arange(4096, dtype="i4")


def _fstat_calls(monkeypatch: pytest.MonkeyPatch, read: Callable[[], None]) -> int:
    """How many ``os.fstat`` calls ``read()`` makes."""
    calls: list[int] = []
    fstat = os.fstat
    monkeypatch.setattr(os, "fstat", lambda fd: calls.append(fd) or fstat(fd))
    try:
        read()
    finally:
        monkeypatch.setattr(os, "fstat", fstat)
    return len(calls)


def _reads_of_parts(arr, starts):
    def read() -> None:
        for start in starts:
            expected = np.arange(start, start + 70)
            np.testing.assert_array_equal(arr[start : start + 70].numpy(), expected)

    return read


@pytest.mark.parametrize("compression", sorted(COMPRESSORS))
def test_partial_reads_through_kept_indexes_stat_no_shard(tmp_path, monkeypatch, compression):
    _sharded(tmp_path, compression)
    arr = tz.open_array(str(tmp_path), mode="r")  # read only: its shard indexes are kept
    first = _fstat_calls(monkeypatch, _reads_of_parts(arr, [5, 1030, 2100]))
    assert first == 3  # each index read, its shard's size with it
    assert _fstat_calls(monkeypatch, _reads_of_parts(arr, [3, 200, 1500, 2500])) == 0


@pytest.mark.parametrize("compression", sorted(COMPRESSORS))
def test_partial_reads_that_read_the_index_stat_each_shard_once(tmp_path, monkeypatch, compression):
    _sharded(tmp_path, compression)
    arr = tz.open_array(str(tmp_path), mode="r+")  # writable: indexes read at every read
    assert _fstat_calls(monkeypatch, _reads_of_parts(arr, [1000])) == 2  # two shards
