"""Node objects kept from before their node was deleted, or replaced by a node of the other
kind: their metadata changes write nothing, rather than bring the node back or write over
the new one."""

from __future__ import annotations

import threading

import pytest
import torch

import torchzarr as tz
from torchzarr.core import nodes, placement
from torchzarr.errors import ArrayNotFoundError, GroupNotFoundError


def _stored(store) -> dict[str, bytes]:
    return {key: store.get(key) for key in sorted(store.list_prefix(""))}


@pytest.mark.parametrize("zarr_format", [2, 3])
@pytest.mark.parametrize("change", ["attrs", "update_attributes", "resize", "append"])
def test_an_array_handle_never_writes_over_the_group_that_replaced_its_array(
    any_store, zarr_format, change
):
    root = tz.open_group(any_store, mode="w", zarr_format=zarr_format)
    stale = root.create_array("a", data=torch.arange(4.0), chunks=(2,))
    del root["a"]
    group = root.create_group("a", attributes={"owner": "me"})
    group.create_array("c", data=torch.ones(3))  # named as a v3 chunk directory
    before = _stored(any_store)
    with pytest.raises(ArrayNotFoundError, match=r"'a'.*replaced by a group.*open the node again"):
        if change == "attrs":
            stale.attrs["k"] = 1
        elif change == "update_attributes":
            stale.update_attributes({"k": 1})
        elif change == "resize":
            stale.resize(1)  # would clear chunks outside
        else:
            stale.append(torch.ones(2))
    assert _stored(any_store) == before  # nothing written, nothing deleted
    again = tz.open_group(any_store, path="a", mode="r")
    assert dict(again.attrs) == {"owner": "me"} and again["c"][:].tolist() == [1.0] * 3


@pytest.mark.parametrize("zarr_format", [2, 3])
@pytest.mark.parametrize("change", ["attrs", "resize", "append"])
def test_a_handle_of_a_deleted_array_does_not_bring_it_back(any_store, zarr_format, change):
    root = tz.open_group(any_store, mode="w", zarr_format=zarr_format)
    stale = root.create_array("gone", data=torch.arange(4.0), chunks=(2,))
    del root["gone"]
    before = _stored(any_store)
    with pytest.raises(ArrayNotFoundError, match=r"'gone'.*deleted"):
        if change == "attrs":
            stale.attrs["k"] = 1
        elif change == "resize":
            stale.resize(2)
        else:
            stale.append(torch.ones(2))
    assert _stored(any_store) == before
    assert "gone" not in tz.open_group(any_store, mode="r")


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_a_group_handle_never_writes_over_the_array_that_replaced_its_group(any_store, zarr_format):
    root = tz.open_group(any_store, mode="w", zarr_format=zarr_format)
    stale = root.create_group("s")
    root["s"] = torch.arange(5.0)  # replaces the group
    before = _stored(any_store)
    with pytest.raises(GroupNotFoundError, match=r"'s'.*replaced by an array"):
        stale.attrs["note"] = "x"
    with pytest.raises(GroupNotFoundError):
        del stale.attrs["anything"]
    assert _stored(any_store) == before
    assert tz.open_array(any_store, path="s", mode="r")[:].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_a_handle_of_a_deleted_group_does_not_bring_it_back(any_store):
    root = tz.open_group(any_store, mode="w")
    stale = root.create_group("g", attributes={"a": 1})
    del root["g"]
    with pytest.raises(GroupNotFoundError, match=r"'g'.*deleted"):
        stale.attrs.put({"b": 2})
    assert "g" not in tz.open_group(any_store, mode="r")
    assert any_store.get("g/zarr.json") is None


def test_handles_of_a_node_replaced_by_one_of_its_kind_still_change_the_stored_one(any_store):
    root = tz.open_group(any_store, mode="w")
    old_group = root.create_group("g", attributes={"old": 1})
    root.create_group("g", attributes={"new": 1}, overwrite=True)
    old_group.attrs["k"] = 2  # applied to the stored group's attributes, as before
    assert dict(tz.open_group(any_store, path="g").attrs) == {"new": 1, "k": 2}
    old_array = root.create_array("a", shape=(4,), dtype="float32", chunks=(2,))
    root.create_array("a", shape=(6,), dtype="float32", chunks=(2,), overwrite=True)
    old_array.attrs["units"] = "m"
    assert old_array.resize(8) is None and old_array.append(torch.ones(2)) == (10,)
    fresh = tz.open_array(any_store, path="a")
    assert fresh.shape == (10,) and dict(fresh.attrs) == {"units": "m"}
    root.attrs["top"] = True  # the root group, its document always there
    assert dict(tz.open_group(any_store, mode="r").attrs) == {"top": True}


class _LocksTellingWhenWanted:
    """The node lock table, setting ``wanted`` when ``thread`` asks for one of its locks."""

    def __init__(self, table, wanted: threading.Event) -> None:
        self._table = table
        self._wanted = wanted
        self.thread: threading.Thread | None = None

    def __getitem__(self, key):
        return _TellingLock(self._table[key], self)


class _TellingLock:
    def __init__(self, lock, table: _LocksTellingWhenWanted) -> None:
        self._lock = lock
        self._table = table

    def __enter__(self):
        if threading.current_thread() is self._table.thread:
            self._table._wanted.set()
        return self._lock.__enter__()

    def __exit__(self, *exc_info):
        return self._lock.__exit__(*exc_info)


@pytest.mark.parametrize("zarr_format", [2, 3])
@pytest.mark.parametrize("change", ["resize", "append"])
def test_a_resize_during_a_replacement_by_an_array_waits_for_the_new_array(
    monkeypatch, zarr_format, change
):
    store = tz.MemoryStore()
    root = tz.open_group(store, mode="w", zarr_format=zarr_format)
    handle = root.create_array("x", shape=(4,), dtype="float32", chunks=(2,))
    old_deleted, resume, progressed = threading.Event(), threading.Event(), threading.Event()
    prepare_path = placement.prepare_path

    def delete_then_pause(*args, **kwargs):  # the old array is gone, the new one not yet written
        changes = prepare_path(*args, **kwargs)
        old_deleted.set()
        resume.wait(timeout=60)
        return changes

    locks = _LocksTellingWhenWanted(nodes._node_locks, progressed)
    monkeypatch.setattr(nodes, "_node_locks", locks)
    monkeypatch.setattr(placement, "prepare_path", delete_then_pause)
    errors: list[BaseException] = []

    def replace():
        root.create_array("x", shape=(6,), dtype="float32", chunks=(2,), overwrite=True)

    def change_shape():
        try:
            if change == "resize":
                handle.resize(8)
            else:
                handle.append(torch.ones(2))
        except BaseException as err:  # reported by the test below
            errors.append(err)
        finally:
            progressed.set()

    replacer = threading.Thread(target=replace)
    replacer.start()
    assert old_deleted.wait(timeout=60)
    changer = locks.thread = threading.Thread(target=change_shape)
    changer.start()
    progressed.wait(timeout=60)  # the change asked for the node's lock, or ended
    resume.set()
    replacer.join()
    changer.join()
    assert errors == []
    assert tz.open_array(store, path="x", mode="r").shape == (8,)
