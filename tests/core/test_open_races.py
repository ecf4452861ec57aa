"""Mode "a" opens that race another creator: the node created in between is opened."""

from __future__ import annotations

import threading

import pytest
from node_races import absent_at_first_look

import torchzarr as tz
from torchzarr.errors import NodeExistsError


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_open_group_in_mode_a_opens_a_group_created_after_it_looked(monkeypatch, zarr_format):
    store = tz.MemoryStore()
    tz.create_group(store, path="g", zarr_format=zarr_format, attributes={"by": "other"})
    absent_at_first_look(monkeypatch)
    group = tz.open_group(store, mode="a", path="g", use_consolidated=False)
    assert dict(group.attrs) == {"by": "other"}  # opened as stored, not replaced


def test_open_array_in_mode_a_opens_an_array_created_after_it_looked(monkeypatch):
    store = tz.MemoryStore()
    tz.create_array(store, path="x", shape=(3,), dtype="int8", fill_value=7)
    absent_at_first_look(monkeypatch)
    array = tz.open_array(store, mode="a", path="x", shape=(5,), dtype="float32")
    assert (array.shape, array[:].tolist()) == ((3,), [7, 7, 7])


def test_a_race_with_the_other_kind_of_node_is_still_refused(monkeypatch):
    store = tz.MemoryStore()
    tz.create_array(store, path="x", shape=(3,), dtype="int8")
    absent_at_first_look(monkeypatch)
    with pytest.raises(NodeExistsError, match="'x'"):
        tz.open_group(store, mode="a", path="x", use_consolidated=False)


def test_threads_opening_one_new_group_in_mode_a_all_get_it(tmp_path):
    failures: list[BaseException] = []
    for round_number in range(20):
        url = str(tmp_path / f"s{round_number}.zarr")
        barrier = threading.Barrier(4)

        def opener(url: str = url, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            try:
                tz.open_group(url, mode="a")
            except BaseException as error:  # collected and reported below
                failures.append(error)

        threads = [threading.Thread(target=opener) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert failures == []
