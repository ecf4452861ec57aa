"""Open shard files kept between reads: reuse, versions, eviction, in-use safety."""

from __future__ import annotations

import os

import numpy as np
import torch

import torchzarr as tz
from torchzarr.core import shard_files
from torchzarr.core.row_gather import gather_rows, keep_shard_indexes
from torchzarr.core.shard_files import OpenShards


def _files(tmp_path, n):
    paths = []
    for i in range(n):
        path = tmp_path / f"s{i}"
        path.write_bytes(bytes([i]) * 8)
        paths.append(str(path))
    return paths


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def test_descriptors_are_reused_and_reopened_for_a_new_version(tmp_path):
    (path,) = _files(tmp_path, 1)
    files = OpenShards(limit=4)
    fd = files.acquire(path, version=0)
    files.release(path, fd)
    assert files.acquire(path, version=0) == fd  # no second open
    files.release(path, fd)
    (tmp_path / "new").write_bytes(b"\x07" * 8)
    os.replace(tmp_path / "new", path)  # replaced, as a writer does, then a new version
    assert os.pread(fd, 1, 0) == b"\x00"  # the kept descriptor still shows the old file
    newer = files.acquire(path, version=1)
    assert os.pread(newer, 1, 0) == b"\x07" and len(files) == 1
    files.release(path, newer)


def test_idle_descriptors_are_evicted_oldest_first_busy_ones_never(tmp_path):
    paths = _files(tmp_path, 4)
    files = OpenShards(limit=2)
    busy = files.acquire(paths[0], 0)  # kept in use
    idle = files.acquire(paths[1], 0)
    files.release(paths[1], idle)
    third = files.acquire(paths[2], 0)
    files.release(paths[2], third)
    assert _is_open(busy) and not _is_open(idle) and len(files) == 2
    assert os.pread(busy, 1, 0) == b"\x00"
    files.release(paths[0], busy)


def test_a_descriptor_dropped_in_use_closes_when_returned(tmp_path):
    paths = _files(tmp_path, 2)
    files = OpenShards(limit=8)
    fd = files.acquire(paths[0], 0)
    files.forget(str(tmp_path))
    assert _is_open(fd) and len(files) == 0  # its user still reads through it
    assert os.pread(fd, 1, 0) == b"\x00"
    files.release(paths[0], fd)
    assert not _is_open(fd)


def test_after_fork_no_descriptor_counts_as_in_use(tmp_path):
    paths = _files(tmp_path, 2)
    files = OpenShards(limit=1)
    fd = files.acquire(paths[0], 0)  # in use when the "fork" happens
    files._after_fork()
    other = files.acquire(paths[1], 0)  # the limit now evicts the first one
    assert not _is_open(fd) and len(files) == 1
    files.release(paths[1], other)


def _raw_sharded(path, rows: int, cols: int, dtype: torch.dtype):
    """Shards of 16 rows holding raw inner chunks of 4 rows: the feature store's layout."""
    return tz.create_array(
        str(path),
        shape=(rows, cols),
        dtype=dtype,
        chunks=(4, cols),
        shards=(16, cols),
        compressors=None,
    )


def test_sharded_reads_keep_files_open_and_see_writes_made_here(tmp_path):
    path = tmp_path / "a.zarr"
    arr = _raw_sharded(path, 64, 4, torch.float32)
    arr[:] = torch.arange(256, dtype=torch.float32).reshape(64, 4)
    shard_files.open_shards.forget(str(path))
    reader = tz.open_array(str(path), mode="r")
    rows = np.array([1, 20, 40, 63])
    out = np.empty((4, 4), np.float32)
    assert gather_rows(reader, rows, out)
    kept = [p for p in shard_files.open_shards._open if p.startswith(str(path))]
    assert len(kept) == 4  # one per shard touched, left open
    arr[40] = torch.full((4,), -1.0)  # a write in this process: a new version
    assert gather_rows(reader, rows, out)
    assert out[2].tolist() == [-1.0] * 4 and out[0].tolist() == [4.0, 5.0, 6.0, 7.0]


def test_a_fresh_index_never_reads_through_an_older_kept_file(tmp_path):
    path = tmp_path / "b.zarr"
    arr = _raw_sharded(path, 32, 2, torch.int32)
    arr[:8] = torch.arange(16, dtype=torch.int32).reshape(8, 2)  # rows 8.. are fill (0)
    first = tz.open_array(str(path), mode="r")
    out = np.empty((2, 2), np.int32)
    assert gather_rows(first, np.array([1, 9]), out) and out[1].tolist() == [0, 0]
    # Another process appends rows 8..11: the shard file is replaced. This process's
    # write counter does not move, so only the fresh index tells the file changed.
    other = tmp_path / "other.zarr"
    os.rename(path, other)
    writer = tz.open_array(str(other), mode="r+")
    writer[8:12] = torch.full((4, 2), 7, dtype=torch.int32)
    os.rename(other, path)
    second = tz.open_array(str(path), mode="r")  # a reopen (a refresh): fresh indexes
    keep_shard_indexes(second)
    assert gather_rows(second, np.array([1, 9]), out)
    assert out.tolist() == [[2, 3], [7, 7]]
