"""Stores, arrays and groups pickle as specs; forked and spawned DataLoader workers read them."""

from __future__ import annotations

import os
import pickle
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

import torchzarr as tz
from torchzarr.config import config
from torchzarr.core import pool as engine_pool
from torchzarr.storage.base import Store
from torchzarr.storage.faults import FaultyStore, LatencyStore
from torchzarr.storage.fsspec_store import FsspecStore
from torchzarr.storage.lmdb import LMDBStore
from torchzarr.storage.local import LocalStore
from torchzarr.storage.memory import MemoryStore
from torchzarr.storage.retry import RetryingStore, RetryPolicy
from torchzarr.storage.sqlite import SQLiteStore
from torchzarr.storage.wrappers import ReadOnlyStore
from torchzarr.storage.zip import ZipStore

MARKER = b"TZ-CHUNK-PAYLOAD"  # 16 bytes that open every row of the uint8 array below
_HEAD = torch.frombuffer(bytearray(MARKER * 32), dtype=torch.uint8).reshape(32, 16)
DATA = torch.cat([_HEAD, torch.arange(32 * 16, dtype=torch.int64).reshape(32, 16) % 251], 1)
DATA = DATA.to(torch.uint8)  # rows differ; uncompressed chunks show the marker


def write_array(store: Store) -> None:
    arr = tz.create_array(
        store, shape=(32, 32), dtype=torch.uint8, chunks=(8, 32), compressors=None
    )
    arr[:] = DATA


def zip_store(tmp_path: Path) -> ZipStore:
    path = tmp_path / "data.zip"
    with ZipStore(path, mode="w") as store:
        write_array(store)
    return ZipStore(path, mode="r")


STORES: dict[str, Callable[[Path], Store]] = {
    "local": lambda p: LocalStore(p / "data.zarr"),
    "fsspec-file": lambda p: FsspecStore(f"file://{p}/data.zarr"),
    "fsspec-memory": lambda p: FsspecStore(f"memory://tz-fork-{uuid.uuid4().hex}/data"),
    "read-only": lambda p: ReadOnlyStore(LocalStore(p / "data.zarr")),
    "latency": lambda p: LatencyStore(LocalStore(p / "data.zarr"), latency=0),
    "faulty": lambda p: FaultyStore(LocalStore(p / "data.zarr"), fail_on={"delete": 1}, rate=0.1),
    "retrying": lambda p: RetryingStore(LocalStore(p / "data.zarr"), RetryPolicy(retries=1)),
    "sqlite": lambda p: SQLiteStore(p / "data.sqlite"),
    "lmdb": lambda p: (pytest.importorskip("lmdb"), LMDBStore(p / "data.lmdb"))[1],
}


@pytest.mark.parametrize("kind", [*STORES, "zip"])
def test_every_store_pickles_as_its_spec(kind: str, tmp_path: Path) -> None:
    if kind == "zip":
        store: Store = zip_store(tmp_path)
    else:
        store = STORES[kind](tmp_path)
        write_array(store if not store.read_only else LocalStore(tmp_path / "data.zarr"))
    arr = tz.open_array(store, mode="r")
    assert torch.equal(arr[:], DATA)  # opened: handles, filesystems and caches are live
    blob = pickle.dumps(store)
    assert MARKER not in blob  # a spec, not the data
    clone = pickle.loads(blob)
    assert type(clone) is type(store) and clone.read_only == store.read_only
    assert clone.identity == store.identity
    assert torch.equal(tz.open_array(clone, mode="r")[:], DATA)


def test_memory_store_is_the_exception_it_pickles_by_value() -> None:
    store = MemoryStore()
    write_array(store)
    blob = pickle.dumps(store)
    assert MARKER in blob and torch.equal(tz.open_array(pickle.loads(blob))[:], DATA)


def test_array_and_group_pickle_as_spec_after_reads(tmp_path: Path) -> None:
    root = tz.open_group(tmp_path / "g.zarr", mode="w")
    arr = root.create_array(
        "x/y", shape=(32, 32), dtype=torch.uint8, chunks=(8, 32), compressors=None
    )
    arr[:] = DATA
    reader = tz.open_array(LocalStore(tmp_path / "g.zarr"), path="x/y", mode="r").with_cache()
    assert torch.equal(reader[:], DATA) and "_source_of" in reader.__dict__
    state = reader.__getstate__()
    assert set(state) == {"_store", "_path", "_metadata", "_read_only", "_cache"}
    assert state["_cache"] is reader.cache  # pickles as its settings, never its chunks
    blob = pickle.dumps(reader)
    assert MARKER not in blob
    clone = pickle.loads(blob)
    assert clone.read_only and clone.path == "x/y" and "_source_of" not in clone.__dict__
    assert clone.cache is not None and torch.equal(clone[4:9], DATA[4:9])

    group = tz.open_group(tmp_path / "g.zarr", mode="r")
    assert torch.equal(group["x/y"][:], DATA)
    gblob = pickle.dumps(group)
    assert MARKER not in gblob
    gclone = pickle.loads(gblob)
    assert gclone.read_only and torch.equal(gclone["x"]["y"][30], DATA[30])
    writable = pickle.loads(pickle.dumps(tz.open_group(tmp_path / "g.zarr", mode="r+")))
    writable.attrs["epoch"] = 3  # the mode travels: r+ stays writable
    assert tz.open_group(tmp_path / "g.zarr").attrs["epoch"] == 3


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_drops_pools_locks_and_sources(tmp_path: Path) -> None:
    store = LatencyStore(LocalStore(tmp_path / "data.zarr"), latency=0)
    write_array(store)
    arr = tz.open_array(store, mode="r")
    with config.set(threads=2, task_bytes=1):
        assert torch.equal(arr[:], DATA)  # the engine's pool has run in the parent
        assert engine_pool._pool is not None
        parent_source, parent_lock = arr._source, store._locked()
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: never return into pytest
            code = 1
            try:
                checks = [
                    engine_pool._pool is None,
                    torch.equal(arr[:], DATA),
                    arr._source is not parent_source,
                    store._locked() is not parent_lock,
                ]
                os.write(write_fd, "".join("1" if c else "0" for c in checks).encode())
                code = 0
            finally:
                os._exit(code)
        os.close(write_fd)
        result = os.read(read_fd, 16)
        os.close(read_fd)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert result == b"1111"
    assert arr._source is parent_source and torch.equal(arr[:8], DATA[:8])


# -- DataLoader workers, fork and spawn ---------------------------------------------------------
class Rows(Dataset[tuple[dict[str, torch.Tensor], int]]):
    """Row ``i`` of each array, and the reading process."""

    def __init__(self, arrays: dict[str, Any]) -> None:
        self.arrays = arrays

    def __len__(self) -> int:
        return 32

    def __getitem__(self, index: int) -> tuple[dict[str, torch.Tensor], int]:
        return {name: arr[index] for name, arr in self.arrays.items()}, os.getpid()


def load_in_workers(arrays: dict[str, Any], context: str) -> None:
    """Read every row in two workers after the parent has read; check values and processes."""
    dataset = Rows(arrays)
    with config.set(threads=2, task_bytes=1):
        first, _ = dataset[5]  # the parent reads first: pools, handles, loops are live
        for name in arrays:
            assert torch.equal(first[name], DATA[5]), name
            assert torch.equal(arrays[name][:], DATA), name
        loader = DataLoader(
            dataset, batch_size=4, num_workers=2, multiprocessing_context=context, timeout=120
        )
        batches = list(loader)
    for name in arrays:
        assert torch.equal(torch.cat([rows[name] for rows, _ in batches]), DATA), name
    workers = set(torch.cat([pids for _, pids in batches]).tolist())
    assert len(workers) == 2 and os.getpid() not in workers
    again, _ = dataset[31]  # the parent's arrays still work
    assert all(torch.equal(again[name], DATA[31]) for name in arrays)


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_dataloader_workers_read_local_and_zip(context: str, tmp_path: Path) -> None:
    write_array(LocalStore(tmp_path / "data.zarr"))
    arrays = {
        "local": tz.open_array(LocalStore(tmp_path / "data.zarr"), mode="r"),
        "zip": tz.open_array(zip_store(tmp_path), mode="r"),
    }
    load_in_workers(arrays, context)


@pytest.mark.services
@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_dataloader_workers_read_s3(context: str, s3_server: Any) -> None:
    store = FsspecStore(s3_server.url("workers"), s3_server.storage_options, retry_backoff=0)
    write_array(store)
    load_in_workers({"s3": tz.open_array(store, mode="r")}, context)
