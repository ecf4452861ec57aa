"""Open shard files kept between reads: reuse, versions, eviction, in-use safety."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import torchzarr as tz
from torchzarr.core import shard_files
from torchzarr.core.row_gather import gather_rows, keep_shard_indexes
from torchzarr.core.shard_files import OpenShards, ShardFiles
from torchzarr.core.shard_pieces import PieceFetcher


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


def _two_versions(tmp_path):
    """A sharded zstd array at ``tmp_path/a.zarr`` and a second version of its only shard
    whose inner chunks lie at other offsets: ``(path, old data, new data, new shard file)``."""
    path = tmp_path / "a.zarr"
    old = np.zeros((16, 16), np.float32)
    old[8:] = np.arange(128, dtype=np.float32).reshape(8, 16)
    new = np.random.default_rng(1).standard_normal((16, 16)).astype(np.float32)
    for name, data in (("new.zarr", new), ("a.zarr", old)):
        arr = tz.create_array(
            str(tmp_path / name),
            shape=(16, 16),
            dtype=torch.float32,
            chunks=(4, 16),
            shards=(16, 16),
            compressors=[tz.codecs.ZstdCodec(level=1)],
        )
        arr[:] = torch.from_numpy(data)
    shard = tmp_path / "a.zarr" / "c" / "0" / "0"
    newer = tmp_path / "new.zarr" / "c" / "0" / "0"
    assert shard.read_bytes()[-80:] != newer.read_bytes()[-80:]  # the indexes differ
    return path, old, new, newer


def _replaced_between_index_and_pieces(monkeypatch, shard, newer):
    """Replace ``shard`` with a copy of ``newer`` (as another process's writer does) after
    the next read fetched the shard's index and before it fetches the inner chunks."""
    fetch = PieceFetcher.fetch

    def late_fetch(self, *args, **kwargs):
        copy = shard.with_name("incoming")
        copy.write_bytes(newer.read_bytes())
        os.replace(copy, shard)
        monkeypatch.setattr(PieceFetcher, "fetch", fetch)
        return fetch(self, *args, **kwargs)

    monkeypatch.setattr(PieceFetcher, "fetch", late_fetch)


@pytest.mark.parametrize("mode", ["r", "r+"])
def test_a_partial_read_takes_index_and_chunks_from_one_version(tmp_path, monkeypatch, mode):
    path, old, new, newer = _two_versions(tmp_path)
    reader = tz.open_array(str(path), mode=mode)
    shard = path / "c" / "0" / "0"
    _replaced_between_index_and_pieces(monkeypatch, shard, newer)
    got = reader[2:14, 1:15].numpy()  # part of the shard: its index, then its pieces
    np.testing.assert_array_equal(got, old[2:14, 1:15])  # all of the version indexed
    np.testing.assert_array_equal(tz.open_array(str(path))[2:14].numpy(), new[2:14])


def test_a_row_gather_takes_index_and_chunks_from_one_version(tmp_path, monkeypatch):
    path, old, _, newer = _two_versions(tmp_path)
    reader = tz.open_array(str(path), mode="r+")
    _replaced_between_index_and_pieces(monkeypatch, path / "c" / "0" / "0", newer)
    out = np.empty((3, 16), np.float32)
    assert gather_rows(reader, np.array([13, 1, 9]), out)
    np.testing.assert_array_equal(out, old[[13, 1, 9]])


def test_an_unchecked_cached_index_is_read_again_when_its_file_was_closed(tmp_path):
    path, old, new, newer = _two_versions(tmp_path)
    reader = tz.open_array(str(path), mode="r")
    keep_shard_indexes(reader)  # indexes kept unchecked (as the feature store's), files open
    np.testing.assert_array_equal(reader[1:3].numpy(), old[1:3])
    shard = path / "c" / "0" / "0"
    copy = shard.with_name("incoming")
    copy.write_bytes(newer.read_bytes())
    os.replace(copy, shard)  # another process's writer replaces the shard
    np.testing.assert_array_equal(reader[9:11].numpy(), old[9:11])  # the kept version
    shard_files.open_shards.forget(str(path))  # its file closed (evicted)
    np.testing.assert_array_equal(reader[9:11].numpy(), new[9:11])  # index read again


def test_shard_files_of_a_read_open_each_shard_once_and_close_them(tmp_path):
    root = str(tmp_path)
    (tmp_path / "s").write_bytes(b"xy")
    files = ShardFiles(root, keep=False)
    fd, serial = files.open("s")
    assert files.open("s") == (fd, serial) and files.fd("s") == fd
    assert files.open("missing") is None and files.open("s/below") is None
    files.close()
    assert not _is_open(fd)
    with ShardFiles(root, keep=True, version=3) as kept:
        fd, serial = kept.open("s")
        other = ShardFiles(root, keep=True, version=3)
        assert other.open("s") == (fd, serial)  # the same kept file
        other.close()
        fresh = ShardFiles(root, keep=True, version=3)
        opened = fresh.open("s", reopen=True)
        assert opened is not None and opened[1] != serial  # opened afresh
        fresh.close()
    assert _is_open(opened[0]) and not _is_open(fd)  # kept; the old one closed when returned
    shard_files.open_shards.forget(root)
    assert not _is_open(opened[0])


@pytest.mark.parametrize("mode", ["r", "r+"])
def test_a_directory_at_a_shard_path_reads_as_fill_in_every_read(tmp_path, mode):
    # As the store's own reads (and zarr-python's LocalStore) do: a whole-shard read saw
    # the fill value while a partial read of the same shard raised "Is a directory".
    arr = tz.create_array(tmp_path, shape=(8, 8), dtype="int32", chunks=(2, 8), shards=(4, 8))
    arr[...] = torch.arange(64, dtype=torch.int32).reshape(8, 8)
    os.remove(tmp_path / "c" / "0" / "0")
    (tmp_path / "c" / "0" / "0").mkdir()
    expected = np.arange(64, dtype=np.int32).reshape(8, 8)
    expected[:4] = 0
    reader = tz.open_array(tmp_path, mode=mode)
    for sel in [(slice(None),), (slice(0, 2), slice(0, 2)), (1, 3), (slice(1, 6), 2)]:
        np.testing.assert_array_equal(reader[sel].numpy(), expected[sel], err_msg=str(sel))
    rows = np.empty((3, 8), dtype=np.int32)
    assert gather_rows(reader, np.array([5, 0, 3]), rows)  # the feature store's row reads
    np.testing.assert_array_equal(rows, expected[[5, 0, 3]])
