"""Node objects kept from before their node was deleted, or replaced by a node of the other
kind: their metadata changes write nothing, rather than bring the node back or write over
the new one."""

from __future__ import annotations

import pytest
import torch

import torchzarr as tz
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
