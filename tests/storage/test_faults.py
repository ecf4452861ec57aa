"""LatencyStore and FaultyStore, and writes that fail midway without corrupting a chunk."""

from __future__ import annotations

import errno
import os
import pickle
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import torch

import torchzarr as tz
from torchzarr.errors import (
    ArgumentTypeError,
    InvalidArgumentError,
    ReadOnlyError,
    StoreError,
    TorchZarrError,
)
from torchzarr.storage import direct_io, faults
from torchzarr.storage import local as local_module
from torchzarr.storage.base import ByteRange, Store
from torchzarr.storage.faults import FaultInjectedError, FaultyStore, LatencyStore
from torchzarr.storage.fsspec_store import FsspecStore
from torchzarr.storage.local import LocalStore
from torchzarr.storage.memory import MemoryStore


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    waits: list[float] = []
    monkeypatch.setattr(faults, "_sleep", waits.append)
    return waits


# -- LatencyStore -------------------------------------------------------------------------------
def test_latency_counts_one_round_trip_per_call_and_per_batch(sleeps: list[float]) -> None:
    store = LatencyStore(MemoryStore(), latency=0.5, per_byte=0.01)
    store.set_many({"a": b"1234", "b": b"56"})
    assert store.get_many(["a", "b", "zz"]) == {"a": b"1234", "b": b"56", "zz": None}
    assert store.get_range("a", ByteRange(1, 2)) == b"23"
    assert sorted(store.list_prefix("")) == ["a", "b"]
    store.delete_many(["a", "b"])
    assert store.round_trips == 5 and store.bytes_moved == 6 + 6 + 2
    assert dict(store.calls) == {
        "set_many": 1,
        "get_many": 1,
        "get_range": 1,
        "list_prefix": 1,
        "delete_many": 1,
    }
    assert sleeps == pytest.approx([0.56, 0.56, 0.52, 0.5, 0.5])
    assert store.delay_seconds == pytest.approx(sum(sleeps))


def test_latency_really_waits() -> None:
    store = LatencyStore(MemoryStore({"k": b"v"}), latency=0.05)
    start = time.perf_counter()
    for _ in range(3):
        assert store.get("k") == b"v"
    assert time.perf_counter() - start >= 0.15  # a lower bound only: never flaky


def test_latency_store_under_an_array_batches_its_reads(sleeps: list[float]) -> None:
    inner = MemoryStore()
    data = torch.arange(512, dtype=torch.float32).reshape(64, 8)
    tz.create_array(inner, shape=(64, 8), dtype=torch.float32, chunks=(8, 8))[:] = data
    slow = LatencyStore(inner, latency=0.01)
    arr = tz.open_array(slow, mode="r")
    before = slow.round_trips
    assert torch.equal(arr[:], data)
    assert slow.round_trips - before == 1  # eight chunks, one batched get_many
    assert slow.read_only is False and arr.read_only and slow.identity == inner.identity


def test_latency_store_rejects_negative_delays_and_pickles() -> None:
    with pytest.raises(ValueError):
        LatencyStore(MemoryStore(), latency=-1)
    store = LatencyStore(MemoryStore({"k": b"v"}), latency=0.0, per_byte=1e-9)
    store.get("k")
    clone = pickle.loads(pickle.dumps(store))
    assert (clone.latency, clone.per_byte, clone.round_trips) == (0.0, 1e-9, 0)
    assert clone.get("k") == b"v"


# -- FaultyStore --------------------------------------------------------------------------------
def raises(store: Store, method: str, *args: Any) -> bool:
    try:
        getattr(store, method)(*args)
    except FaultInjectedError:
        return True
    return False


def test_fail_the_first_n_calls_of_a_method() -> None:
    store = FaultyStore(MemoryStore({"k": b"v"}), fail_on={"get": 2})
    assert [raises(store, "get", "k") for _ in range(4)] == [True, True, False, False]
    assert store.get("k") == b"v" and store.calls["get"] == 5
    assert store.failures == [("get", "k"), ("get", "k")]


def test_families_exact_names_and_wildcard() -> None:
    inner = MemoryStore({"k": b"v"})
    family = FaultyStore(inner, fail_on={"get": True})
    assert raises(family, "get", "k") and raises(family, "get_many", ["k"])
    assert not raises(family, "get_range", "k", ByteRange(0))
    exact = FaultyStore(inner, fail_on={"get_many": True})
    assert raises(exact, "get_many", ["k"]) and not raises(exact, "get", "k")
    anything = FaultyStore(inner, fail_on={"*": 1})
    assert raises(anything, "exists", "k") and not raises(anything, "list_dir", "")
    listing = FaultyStore(inner, fail_on={"list": True, "stat": True})
    assert raises(listing, "list_prefix", "") and raises(listing, "list_dir", "")
    assert raises(listing, "getsize", "k") and not raises(listing, "get", "k")
    with pytest.raises(ValueError, match="unknown methods"):
        FaultyStore(inner, fail_on={"gett": True})


@pytest.mark.parametrize("rule", ["x", 2.5, None, -1])
def test_a_rule_that_would_fail_nothing_is_refused_naming_it(rule: Any) -> None:
    with pytest.raises((ArgumentTypeError, InvalidArgumentError), match=r"fail_on\['get'\]"):
        FaultyStore(MemoryStore({"a": b"1"}), fail_on={"get": rule})
    with pytest.raises(ArgumentTypeError, match="fail_on maps methods to rules"):
        FaultyStore(MemoryStore(), fail_on={"get"})  # type: ignore[arg-type]
    assert FaultyStore(MemoryStore({"a": b"1"}), fail_on={"get": False}).get("a") == b"1"


def test_key_predicates_fail_only_matching_keys() -> None:
    store = FaultyStore(
        MemoryStore({"a/0": b"0", "b/0": b"1"}), fail_on={"get": lambda k: "b/" in k}
    )
    assert store.get("a/0") == b"0"
    assert raises(store, "get", "b/0") and raises(store, "get_many", ["a/0", "b/0"])
    assert store.failures == [("get", "b/0"), ("get_many", "b/0")]


def test_batched_write_fails_midway_keeping_the_keys_before() -> None:
    inner = MemoryStore()
    store = FaultyStore(inner, fail_on={"set": lambda k: k == "c"})
    with pytest.raises(FaultInjectedError, match="injected fault: set_many 'c'"):
        store.set_many({"a": b"1", "b": b"2", "c": b"3", "d": b"4"})
    assert sorted(inner.list_prefix("")) == ["a", "b"]
    inner.set_many({"c": b"old", "d": b"old"})
    deleting = FaultyStore(inner, fail_on={"delete": lambda k: k == "c"})
    with pytest.raises(FaultInjectedError):
        deleting.delete_many(["a", "b", "c", "d"])
    assert sorted(inner.list_prefix("")) == ["c", "d"]


def test_random_faults_are_reproducible_from_the_seed() -> None:
    def pattern(seed: int) -> list[bool]:
        store = FaultyStore(MemoryStore({"k": b"v"}), rate=0.3, seed=seed)
        return [raises(store, "get", "k") for _ in range(200)]

    first = pattern(1)
    assert first == pattern(1)
    assert first != pattern(2)
    assert 30 <= sum(first) <= 90  # about 60 of 200
    never = FaultyStore(MemoryStore({"k": b"v"}), rate=0.0)
    assert not any(raises(never, "get", "k") for _ in range(50))
    with pytest.raises(ValueError):
        FaultyStore(MemoryStore(), rate=1.5)


def test_chosen_errors() -> None:
    inner = MemoryStore({"k": b"v"})
    instance = TimeoutError("slow")
    with pytest.raises(TimeoutError) as info:
        FaultyStore(inner, fail_on={"get": True}, error=instance).get("k")
    assert info.value is instance
    with pytest.raises(PermissionError, match="injected fault: set 'k'"):
        FaultyStore(inner, fail_on={"set": True}, error=PermissionError).set("k", b"x")

    def make(method: str, key: str) -> BaseException:
        return ConnectionResetError(f"{method}:{key}")

    with pytest.raises(ConnectionResetError, match="get_many:k"):
        FaultyStore(inner, fail_on={"get": True}, error=make).get_many(["k"])
    assert inner.get("k") == b"v"


def test_faulty_store_forwards_identity_read_only_and_pickles() -> None:
    inner = MemoryStore({"k": b"v"}, read_only=True)
    store = FaultyStore(inner, fail_on={"get": 1}, rate=0.25, seed=3)
    assert store.read_only and store.identity == inner.identity
    with pytest.raises(ReadOnlyError):
        store.set("k", b"x")
    assert raises(store, "get", "k")
    clone = pickle.loads(pickle.dumps(store))
    assert clone.fail_on == {"get": 1} and (clone.rate, clone.seed) == (0.25, 3)
    assert raises(clone, "get", "k")  # the receiving process counts afresh
    view = FaultyStore(MemoryStore({"k": b"v"}), fail_on={"get": 1}).with_read_only()
    assert view.read_only and raises(view, "get", "k") and view.get("k") == b"v"


# -- a failed write never leaves a half-written chunk -------------------------------------------
def make_store(kind: str, tmp_path: Path) -> Store:
    if kind == "local":
        return LocalStore(tmp_path / "data.zarr")
    if kind == "file":
        return FsspecStore(f"file://{tmp_path}/data.zarr", retry_backoff=0)
    if kind == "fsspec-memory":
        return FsspecStore(f"memory://tz-faults-{uuid.uuid4().hex}/data", retry_backoff=0)
    return MemoryStore()


OLD = torch.arange(64 * 8, dtype=torch.float32).reshape(64, 8)
NEW = -OLD - 1


def check_chunks(store: Store, written: set[int]) -> None:
    """Each chunk of rows 8i..8i+7 holds wholly the new data (i in written) or the old."""
    got = tz.open_array(store, mode="r")[:]
    for i in range(8):
        rows = slice(8 * i, 8 * i + 8)
        assert torch.equal(got[rows], (NEW if i in written else OLD)[rows]), f"chunk {i}"


@pytest.mark.parametrize("kind", ["local", "file", "fsspec-memory", "memory"])
def test_array_write_failing_midway_keeps_every_chunk_whole(kind: str, tmp_path: Path) -> None:
    store = make_store(kind, tmp_path)
    tz.create_array(store, shape=(64, 8), dtype=torch.float32, chunks=(8, 8))[:] = OLD
    faulty = FaultyStore(store, fail_on={"set": lambda key: key == "c/3/0"})
    arr = tz.open_array(faulty, mode="r+")
    with pytest.raises(TorchZarrError, match="c/3/0"):
        arr[:] = NEW
    assert faulty.failures == [("set_many", "c/3/0")]
    check_chunks(store, written={0, 1, 2})
    tz.open_array(store, mode="r+")[:] = OLD  # no debris blocks a rewrite
    check_chunks(store, written=set())


class HalfWrites:
    """LocalStore's file writes that store half of the bytes, then fail (a full disk)."""

    def __init__(self, fail_key_suffix: str) -> None:
        self.suffix = fail_key_suffix
        self.failed = 0
        self.real = direct_io.write_new

    def __call__(self, fd: int, value: Any, *, direct: bool) -> None:
        name = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))  # the temporary file
        if f".{self.suffix}." not in name:
            return self.real(fd, value, direct=direct)
        view = memoryview(value).cast("B")
        os.write(fd, view[: len(view) // 2])
        self.failed += 1
        raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("kind", ["local", "file"])
def test_disk_full_midway_through_a_chunk_leaves_the_old_chunk(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = make_store(kind, tmp_path)
    tz.create_array(store, shape=(64, 8), dtype=torch.float32, chunks=(8, 8))[:] = OLD
    half = HalfWrites("0")  # chunk files named "0": c/<i>/0, every chunk of the array
    monkeypatch.setattr(direct_io, "write_new", half)
    arr = tz.open_array(store, mode="r+")
    with pytest.raises(StoreError, match="No space left on device"):
        arr[16:24] = NEW[16:24]
    monkeypatch.undo()
    assert half.failed >= 1
    check_chunks(store, written=set())
    leftovers = [p.name for p in (tmp_path / "data.zarr").rglob("*") if p.name.endswith(".partial")]
    assert leftovers == []


def test_failed_rename_leaves_the_old_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalStore(tmp_path / "s")
    store.set("a/k", b"old value")

    def no_rename(src: Any, dst: Any) -> None:
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(local_module.os, "replace", no_rename)
    with pytest.raises(StoreError, match="cannot write 'a/k'"):
        store.set("a/k", b"new value that is longer")
    monkeypatch.undo()
    assert store.get("a/k") == b"old value"
    assert sorted(os.listdir(tmp_path / "s" / "a")) == ["k"]
