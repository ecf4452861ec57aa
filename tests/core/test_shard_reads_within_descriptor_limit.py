"""Reads of more shards than the open-file bound allows: bounded descriptors, right values."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import torchzarr as tz
from torchzarr.core import shard_files
from torchzarr.core import shards as shards_module
from torchzarr.core.cache import ChunkCache
from torchzarr.core.row_gather import gather_rows
from torchzarr.core.shard_files import OpenShards
from torchzarr.core.shard_pieces import PieceFetcher

SHARD_ROWS, COLS = 16, 2


def _sharded(path, shards: int, compressors=None) -> np.ndarray:
    """``shards`` shards of 16 rows in inner chunks of 4 rows, holding 0, 1, 2, ...;
    returns the values."""
    rows = shards * SHARD_ROWS
    values = np.arange(rows * COLS, dtype=np.int32).reshape(rows, COLS)
    arr = tz.create_array(
        str(path),
        shape=values.shape,
        dtype=torch.int32,
        chunks=(4, COLS),
        shards=(SHARD_ROWS, COLS),
        compressors=compressors,
    )
    arr[:] = torch.from_numpy(values)
    return values


def _open_below(path) -> int:
    """How many of this process's descriptors name a file below ``path``."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            count += os.readlink(f"/proc/self/fd/{fd}").startswith(str(path))
    return count


@pytest.fixture
def small_pool(monkeypatch):
    """The process-wide pool bounded at 4 shard files (as a low descriptor limit makes it)."""
    monkeypatch.setattr(shard_files.open_shards, "limit", 4)
    yield 4
    shard_files.open_shards.forget()


@pytest.fixture
def most_held(monkeypatch, tmp_path):
    """The most shard files below ``tmp_path`` held open while pieces were fetched."""
    seen = [0]
    fetch = PieceFetcher.fetch

    def counting_fetch(self, *args, **kwargs):
        seen[0] = max(seen[0], _open_below(tmp_path))
        return fetch(self, *args, **kwargs)

    monkeypatch.setattr(PieceFetcher, "fetch", counting_fetch)
    return seen


def test_a_returned_descriptor_brings_an_overfull_pool_back_within_its_bound(tmp_path):
    paths = []
    for i in range(5):
        (tmp_path / f"s{i}").write_bytes(bytes([i]) * 4)
        paths.append(str(tmp_path / f"s{i}"))
    files = OpenShards(limit=2)
    held = [files.acquire(path, 0) for path in paths]  # all in use: none can be closed
    assert len(files) == 5
    for path, fd in zip(paths, held, strict=True):
        files.release(path, fd)
    assert len(files) == 2 and _open_below(tmp_path) == 2
    assert os.pread(files.acquire(paths[-1], 0), 1, 0) == b"\x04"  # the newest kept
    files.release(paths[-1], held[-1])
    files.forget()


@pytest.mark.parametrize("mode", ["r", "r+"])
def test_a_row_gather_over_many_shards_holds_at_most_the_bound(
    tmp_path, small_pool, most_held, mode
):
    values = _sharded(tmp_path / "a.zarr", shards=20)
    arr = tz.open_array(str(tmp_path / "a.zarr"), mode=mode)
    rows = np.random.default_rng(0).permutation(values.shape[0])[:200]
    out = np.empty((rows.size, COLS), np.int32)
    assert gather_rows(arr, rows, out)
    np.testing.assert_array_equal(out, values[rows])
    assert 0 < most_held[0] <= small_pool
    assert len(shard_files.open_shards) <= small_pool
    assert _open_below(tmp_path) <= small_pool


@pytest.mark.parametrize("mode", ["r", "r+"])
@pytest.mark.parametrize("compressors", [None, "zstd"])
def test_partial_reads_over_many_shards_hold_at_most_the_bound(
    tmp_path, small_pool, most_held, mode, compressors
):
    values = _sharded(tmp_path / "a.zarr", shards=20, compressors=compressors)
    arr = tz.open_array(str(tmp_path / "a.zarr"), mode=mode)
    rows = np.sort(np.random.default_rng(1).permutation(values.shape[0])[:150])
    np.testing.assert_array_equal(arr.oindex[rows, :].numpy(), values[rows])  # rows
    np.testing.assert_array_equal(arr[:, 1:].numpy(), values[:, 1:])  # each shard in part
    np.testing.assert_array_equal(arr.vindex[rows, rows % 2].numpy(), values[rows, rows % 2])
    assert 0 < most_held[0] <= small_pool
    assert _open_below(tmp_path) <= small_pool


def test_cached_reads_over_many_shards_hold_at_most_the_bound(tmp_path, small_pool, most_held):
    values = _sharded(tmp_path / "a.zarr", shards=20)
    arr = tz.open_array(str(tmp_path / "a.zarr"), mode="r").with_cache(ChunkCache(1 << 20))
    np.testing.assert_array_equal(arr[:].numpy(), values)  # every inner chunk fetched
    np.testing.assert_array_equal(arr[3:-3, :1].numpy(), values[3:-3, :1])  # from the cache
    assert 0 < most_held[0] <= small_pool
    assert _open_below(tmp_path) <= small_pool


@pytest.mark.parametrize("mode", ["r", "r+"])
def test_each_shard_of_a_grouped_read_is_read_from_one_version(
    tmp_path, small_pool, monkeypatch, mode
):
    """Shards replaced by another writer while a read is under way (between a group's
    indexes and its pieces, and before later groups open theirs) are each read whole,
    old or new."""
    path, other = tmp_path / "a.zarr", tmp_path / "b.zarr"
    old = _sharded(path, shards=12, compressors="zstd")
    new = np.random.default_rng(2).integers(-99, 0, old.shape, dtype=np.int32)
    new[::3] = 0  # inner chunks of the fill value are not stored: the others move
    _sharded(other, shards=12, compressors="zstd")
    tz.open_array(str(other), mode="r+")[:] = torch.from_numpy(new)
    reader = tz.open_array(str(path), mode=mode)
    fetch = PieceFetcher.fetch

    def replacing_fetch(self, *args, **kwargs):
        monkeypatch.setattr(PieceFetcher, "fetch", fetch)  # once: at the first group
        for shard in range(12):
            target = path / "c" / str(shard) / "0"
            copy = target.with_name("incoming")
            copy.write_bytes((other / "c" / str(shard) / "0").read_bytes())
            os.replace(copy, target)
        return fetch(self, *args, **kwargs)

    monkeypatch.setattr(PieceFetcher, "fetch", replacing_fetch)
    rows = np.arange(old.shape[0])[::5]
    out = np.empty((rows.size, COLS), np.int32)
    assert gather_rows(reader, rows, out)
    for shard in range(12):
        mine = rows // SHARD_ROWS == shard
        assert np.array_equal(out[mine], old[rows[mine]]) or np.array_equal(
            out[mine], new[rows[mine]]
        ), f"shard {shard} mixes versions"
    first = rows < small_pool * SHARD_ROWS  # indexed before the shards were replaced
    np.testing.assert_array_equal(out[first], old[rows[first]])


def test_an_index_kept_for_a_closed_file_is_read_again_even_if_its_signature_matches(
    tmp_path, small_pool, monkeypatch
):
    """Once the pool closed a shard's file, its inode may name a replacing file, with
    timestamps too coarse to tell them apart: the index is read again, never reused."""
    path, other = tmp_path / "a.zarr", tmp_path / "b.zarr"
    _sharded(path, shards=12, compressors="zstd")
    new = np.random.default_rng(3).integers(-99, 0, (12 * SHARD_ROWS, COLS), dtype=np.int32)
    new[::3] = 0  # inner chunks of the fill value are not stored: the others move
    _sharded(other, shards=12, compressors="zstd")
    tz.open_array(str(other), mode="r+")[:] = torch.from_numpy(new)
    monkeypatch.setattr(shards_module, "file_signature", lambda stat: (0, 0, 0, 0, 0))
    monkeypatch.setattr(shard_files, "file_signature", lambda stat: (0, 0, 0, 0, 0))
    reader = tz.open_array(str(path), mode="r")
    rows = np.arange(new.shape[0])[::5]
    out = np.empty((rows.size, COLS), np.int32)
    assert gather_rows(reader, rows, out)  # 12 indexes read; at most 4 files kept open
    for shard in range(12):  # replaced by another writer, as zarr-python does
        target = path / "c" / str(shard) / "0"
        copy = target.with_name("incoming")
        copy.write_bytes((other / "c" / str(shard) / "0").read_bytes())
        os.replace(copy, target)
    shard_files.open_shards.forget(str(tmp_path))
    assert gather_rows(reader, rows, out)
    np.testing.assert_array_equal(out, new[rows])


_LOW_LIMIT_READ = """
import os, resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (128, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
import numpy as np, torch
import torchzarr as tz
from torchzarr.codecs.sharding import ShardingCodec
from torchzarr.core.row_gather import gather_rows, keep_shard_indexes
from torchzarr.core.shard_files import open_shards
from torchzarr.features import FeatureStore

root, shards = sys.argv[1], int(sys.argv[2])
values = np.arange(shards * 16 * 2, dtype=np.int32).reshape(-1, 2)
rows = np.random.default_rng(0).permutation(values.shape[0])[: shards * 2]
arr = tz.open_array(f"{root}/a.zarr", mode="r")
out = np.empty((rows.size, 2), np.int32)
assert gather_rows(arr, rows, out)
assert (out == values[rows]).all()
assert (arr.oindex[np.sort(rows), :].numpy() == values[np.sort(rows)]).all()
assert (tz.open_array(f"{root}/a.zarr", mode="r+")[:, 1:].numpy() == values[:, 1:]).all()
features = FeatureStore(f"{root}/f.zarr", mode="r")
got = features.read(rows)["e"]
assert torch.equal(got[:, 0], torch.from_numpy(rows * 4).float()), "feature rows"
assert len(open_shards) <= open_shards.limit, (len(open_shards), open_shards.limit)
print(open_shards.limit, len(os.listdir("/proc/self/fd")))
"""


def test_reads_of_more_shards_than_the_descriptor_limit_succeed_within_the_bound(tmp_path):
    shards = 300  # each read below touches every one: more than the limit of 128 descriptors
    _sharded(tmp_path / "a.zarr", shards=shards)
    features = tz.FeatureStore(str(tmp_path / "f.zarr"), mode="w", shard_bytes=256, chunk_bytes=64)
    n = shards * 16
    features.write(np.arange(n), {"e": torch.arange(n * 4, dtype=torch.float32).reshape(n, 4)})
    assert n // features.array("e").shards[0] >= shards
    script = textwrap.dedent(_LOW_LIMIT_READ)
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path), str(shards)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    limit, descriptors = map(int, done.stdout.split())
    assert limit == 32  # a quarter of the descriptor limit
    assert descriptors <= limit + 16  # the kept shard files and the interpreter's own
