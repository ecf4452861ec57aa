"""Shard files kept open are closed when their node is deleted; the table of writes to
sharded arrays stays bounded and its counts never go back."""

from __future__ import annotations

import os
import shutil
import threading

import pytest
import torch

import torchzarr as tz
from torchzarr.core import shard_files, shard_writes
from torchzarr.core.shard_writes import note_rewrite, quiet, stamp, writes_to


def _kept(folder) -> list[str]:
    """The kept shard files below ``folder`` (as the pool names them)."""
    prefix = str(folder).rstrip("/") + "/"
    return [p for p in shard_files.open_shards._open if p.startswith(prefix)]


def _deleted_descriptors() -> list[str]:
    """Descriptors of this process that name deleted files (Linux only)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.endswith("(deleted)"):
            found.append(target)
    return found


def _sharded(root, name: str = "big", rows: int = 6) -> None:
    group = tz.open_group(root, mode="a")
    arr = group.create_array(name, shape=(rows, 64), chunks=(1, 16), shards=(1, 64), dtype="f4")
    arr[:] = torch.arange(rows * 64, dtype=torch.float32).reshape(rows, 64)


def _read_parts(root, name: str = "big", rows: int = 6) -> None:
    """Partial reads of a read-only array: its shard files are kept open."""
    reader = tz.open_array(root, path=name, mode="r")
    for row in range(rows):
        reader[row, 3:5]
    assert len(_kept(os.path.join(root, name))) == rows


@pytest.fixture
def root(tmp_path):
    root = str(tmp_path / "g.zarr")
    _sharded(root)
    _read_parts(root)
    yield root
    shard_files.open_shards.forget(str(tmp_path))


needs_proc = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")


@needs_proc
def test_deleting_an_array_closes_its_kept_shard_files(root):
    del tz.open_group(root, mode="a")["big"]
    assert _kept(os.path.join(root, "big")) == []
    assert not [t for t in _deleted_descriptors() if root in t]


@pytest.mark.parametrize("how", ["overwrite", "open_group_w", "other_root"])
def test_replacing_a_node_closes_the_kept_shard_files_below_it(root, how):
    if how == "overwrite":
        tz.open_group(root, mode="a").create_array("big", shape=(2,), dtype="i4", overwrite=True)
    elif how == "open_group_w":
        tz.open_group(root, mode="w")
    else:  # deleted through a store rooted at the array itself
        tz.open_array(os.path.join(root, "big"), mode="r+").resize((0, 64))
    assert _kept(os.path.join(root, "big")) == []


def test_other_arrays_keep_their_shard_files(root):
    _sharded(root, "other")
    _read_parts(root, "other")
    del tz.open_group(root, mode="a")["big"]
    assert len(_kept(os.path.join(root, "other"))) == 6


def test_a_shrinking_resize_closes_the_kept_files_of_the_shards_it_deletes(root):
    tz.open_array(root, path="big", mode="r+").resize((2, 64))
    kept = _kept(os.path.join(root, "big"))
    assert sorted(os.path.basename(os.path.dirname(p)) for p in kept) == ["0", "1"]


def test_a_deletion_through_the_real_path_closes_files_kept_through_a_symlink(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    os.symlink(real, tmp_path / "link")
    _sharded(str(real / "g.zarr"))
    via_link = str(tmp_path / "link" / "g.zarr")
    _read_parts(via_link)
    del tz.open_group(str(real / "g.zarr"), mode="a")["big"]
    assert _kept(via_link) == []


@needs_proc
def test_a_file_deleted_by_another_writer_is_closed_at_the_next_read(tmp_path):
    root = str(tmp_path / "g.zarr")
    _sharded(root)
    reader = tz.open_array(root, path="big", mode="r")
    for row in range(6):
        reader[row, 3:5]
    shutil.rmtree(os.path.join(root, "big", "c"))  # not through torchzarr
    assert len(_kept(os.path.join(root, "big"))) == 6  # nothing told the pool yet
    assert torch.equal(reader[:, 3:5], torch.zeros(6, 2))  # the fill value: no shard
    assert _kept(os.path.join(root, "big")) == []
    assert not [t for t in _deleted_descriptors() if root in t]


def test_a_kept_file_in_use_is_closed_when_its_read_gives_it_back(tmp_path):
    path = str(tmp_path / "s")
    with open(path, "wb") as f:
        f.write(b"abc")
    pool = shard_files.OpenShards(limit=4)
    fd = pool.acquire_serial(path, 0, str(tmp_path))[0]
    pool.forget(os.path.realpath(tmp_path) + "/", paths={os.path.realpath(path)})
    assert len(pool) == 0 and os.pread(fd, 3, 0) == b"abc"  # still open for its user
    pool.release(path, fd)
    with pytest.raises(OSError):
        os.fstat(fd)


# -- the table of writes -------------------------------------------------------------------


@pytest.fixture
def small_table(monkeypatch):
    monkeypatch.setattr(shard_writes, "_LIMIT", 64)
    monkeypatch.setattr(shard_writes, "_limit", 64)


def test_the_write_table_stays_bounded():
    for i in range(20000):  # as many written-and-dropped locations
        note_rewrite(f"memory://bounded-{i}/a")
    assert len(shard_writes._shard_writes) <= 2 * shard_writes._LIMIT


def test_written_and_dropped_sharded_arrays_leave_a_bounded_table(small_table):
    for _ in range(300):
        arr = tz.create_array(tz.MemoryStore(), shape=(8,), chunks=(2,), shards=(4,), dtype="i4")
        arr[:] = torch.arange(8, dtype=torch.int32)
    assert len(shard_writes._shard_writes) <= 64


def test_a_count_never_goes_back_and_moves_at_every_write_across_prunes(small_table):
    where = "memory://kept-count/a"
    note_rewrite(where)
    seen = writes_to(where)
    for i in range(200):  # prunes drop it
        note_rewrite(f"memory://filler-{i}/a")
        assert writes_to(where) >= seen
        seen = writes_to(where)
    assert where not in shard_writes._shard_writes
    begun = stamp(where)
    note_rewrite(where)  # a write during a read
    for i in range(200):  # dropped again before the read ends
        note_rewrite(f"memory://filler-again-{i}/a")
    assert where not in shard_writes._shard_writes
    assert writes_to(where) != begun and writes_to(where) > begun


def test_busy_locations_are_kept_through_prunes(small_table):
    where = "memory://held/a"
    with quiet(where):
        for i in range(200):
            note_rewrite(f"memory://filler-busy-{i}/a")
        assert where in shard_writes._shard_writes


def test_a_write_waiting_for_a_quiet_read_is_counted_after_prunes(small_table, tmp_path):
    arr = tz.create_array(tz.MemoryStore(), shape=(8,), chunks=(2,), shards=(4,), dtype="i4")
    where = arr._source.shard_reader._identity
    started = threading.Event()
    before = writes_to(where)
    with quiet(where):
        writer = threading.Thread(target=lambda: (started.set(), arr.__setitem__(0, 5)))
        writer.start()
        started.wait()
    writer.join()
    for i in range(200):
        note_rewrite(f"memory://filler-wait-{i}/a")
    assert writes_to(where) > before and int(arr[0]) == 5
