"""Threads of one process writing one chunk whole and in part, and appends and resizes
through several handles of one array: no write or row is lost."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import torch

import torchzarr as tz


class _PausingStore(tz.MemoryStore):
    """Pauses a read of existing chunks (a read-modify-write) made by the thread named
    "partial", between its read and its store."""

    def __init__(self) -> None:
        super().__init__()
        self.read, self.go = threading.Event(), threading.Event()

    def get_many(self, keys: Any) -> dict[str, bytes | None]:
        found = super().get_many(keys)
        if threading.current_thread().name == "partial" and keys and not self.read.is_set():
            self.read.set()
            assert self.go.wait(30)
        return found


@pytest.mark.parametrize("sharded", [False, True])
def test_a_whole_chunk_write_is_not_lost_to_a_partial_write_in_flight(sharded):
    store = _PausingStore()
    layout: dict[str, Any] = {"chunks": (4, 4), "shards": (8, 8)} if sharded else {"chunks": (8, 8)}
    arr = tz.create_array(store, shape=(8, 8), dtype=torch.int32, fill_value=0, **layout)
    arr[:] = 1
    partial = threading.Thread(target=arr.__setitem__, args=((slice(None), 0), -1), name="partial")
    partial.start()
    assert store.read.wait(30)  # the partial write read the chunk (all 1) and pauses
    whole = threading.Thread(target=arr.__setitem__, args=(slice(None), 2))
    whole.start()
    whole.join(0.5)  # it waits for the partial write's lock: no time is asserted
    store.go.set()
    partial.join()
    whole.join()
    assert (arr[:, 1:] == 2).all()  # the whole write came last for them, and was kept


def test_appends_through_a_handle_opened_before_another_append_keep_both():
    store = tz.MemoryStore()
    first = tz.create_array(store, shape=(0, 2), dtype=torch.int32, chunks=(2, 2))
    second = tz.open_array(store, mode="r+")  # still sees 0 rows
    first.append(torch.ones(3, 2, dtype=torch.int32))
    assert second.append(torch.full((2, 2), 2, dtype=torch.int32)) == (5, 2)
    assert tz.open_array(store)[:, 0].tolist() == [1, 1, 1, 2, 2]


def test_a_shrink_through_an_older_handle_clears_what_another_appended():
    store = tz.MemoryStore()
    first = tz.create_array(store, shape=(4, 2), dtype=torch.int32, chunks=(2, 2))
    second = tz.open_array(store, mode="r+")  # sees 4 rows
    first.append(torch.full((6, 2), 7, dtype=torch.int32))
    second.resize(1, 2)
    tz.open_array(store, mode="r+").resize(10, 2)
    assert tz.open_array(store)[:, 0].tolist() == [0] * 10  # fill, not the old sevens


@pytest.mark.parametrize("shared", [True, False])
def test_threads_appending_lose_no_rows(shared):
    store = tz.MemoryStore()
    arr = tz.create_array(store, shape=(0, 4), dtype=torch.int64, chunks=(5, 4))
    errors: list[BaseException] = []

    def append_from(worker: int) -> None:
        handle = arr if shared else tz.open_array(store, mode="r+")
        try:
            for step in range(15):
                handle.append(torch.full((3, 4), worker * 100 + step))
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=append_from, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    out = tz.open_array(store)[:]
    assert out.shape == (180, 4)
    values = sorted(out[::3, 0].tolist())  # each append wrote 3 equal rows in a row
    assert values == sorted(w * 100 + s for w in range(4) for s in range(15))
    assert all((out[i : i + 3] == out[i, 0]).all() for i in range(0, 180, 3))


def test_writes_of_other_chunks_do_not_wait_for_a_write_in_flight():
    store = _PausingStore()
    slow = tz.create_array(store, shape=(8,), dtype=torch.int32, chunks=(8,), fill_value=0)
    slow[:] = 1
    partial = threading.Thread(target=slow.__setitem__, args=(0, -1), name="partial")
    partial.start()
    assert store.read.wait(30)  # the partial write holds its chunk's lock and pauses
    try:
        other = tz.create_array("memory://", shape=(2048, 4), dtype=torch.int32, chunks=(1, 4))
        done = threading.Event()
        writer = threading.Thread(target=lambda: (other.__setitem__(slice(None), 3), done.set()))
        writer.start()
        finished = done.wait(30)  # a deadline, not a timing: it hangs if the test fails
    finally:
        store.go.set()
        partial.join()
    writer.join()
    assert finished and (other[:] == 3).all() and slow[:].tolist() == [-1] + [1] * 7


class _PausingWrites(tz.MemoryStore):
    """Pauses the chunk writes of the thread named "appender"."""

    def __init__(self) -> None:
        super().__init__()
        self.writing, self.go = threading.Event(), threading.Event()

    def set(self, key: str, value: Any) -> None:
        if threading.current_thread().name == "appender" and "/c/" in key:
            self.writing.set()
            assert self.go.wait(30)
        super().set(key, value)


def test_an_append_in_flight_holds_up_no_metadata_change_of_other_nodes():
    store = _PausingWrites()
    root = tz.open_group(store, mode="w")
    arr = root.create_array("a", shape=(0, 2), dtype=torch.int32, chunks=(2, 2))
    other = root.create_array("b", shape=(0, 2), dtype=torch.int32, chunks=(2, 2))
    appender = threading.Thread(
        target=arr.append, args=(torch.ones(3, 2, dtype=torch.int32),), name="appender"
    )
    appender.start()
    assert store.writing.wait(30)  # the append writes its rows, and pauses
    try:
        done = threading.Event()

        def change_others() -> None:
            root.attrs["note"] = "set during an append"
            other.append(torch.full((1, 2), 5, dtype=torch.int32))
            done.set()

        threading.Thread(target=change_others, daemon=True).start()
        finished = done.wait(30)  # a deadline, not a timing: it hangs if the test fails
    finally:
        store.go.set()
        appender.join()
    assert finished and root.attrs["note"] == "set during an append"
    assert arr.shape == (3, 2) and other[:].tolist() == [[5, 5]]


def test_an_append_to_an_array_replaced_by_another_rank_is_a_clear_error():
    store = tz.MemoryStore()
    arr = tz.create_array(store, shape=(2, 2), dtype=torch.int32, chunks=(2, 2))
    tz.create_array(store, shape=(4,), dtype=torch.int32, chunks=(2,), overwrite=True)
    with pytest.raises(
        tz.errors.ShapeMismatchError, match="replaced by one whose chunks decode otherwise"
    ):
        arr.append(torch.zeros(1, 2, dtype=torch.int32))
