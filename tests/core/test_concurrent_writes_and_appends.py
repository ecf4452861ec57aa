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
