"""``tz.open`` with the arguments of ``create_array``: sent on as zarr-python's ``open``
sends them (an array with ``shape=`` or ``data=``, else the array stored there, else a
group, which takes ``attributes=``)."""

from __future__ import annotations

import pytest
import torch

import torchzarr as tz
from torchzarr.errors import (
    ArgumentTypeError,
    AttributeValueError,
    GroupNotFoundError,
    InvalidArgumentError,
)


def _stored(store) -> dict[str, bytes]:
    return {key: store.get(key) for key in sorted(store.list_prefix(""))}


@pytest.mark.parametrize("mode", ["a", "w", "w-"])
def test_open_with_attributes_alone_creates_a_group_holding_them(any_store, mode):
    node = tz.open(any_store, mode=mode, path="g", attributes={"run": 1})
    assert isinstance(node, tz.Group) and dict(node.attrs) == {"run": 1}
    assert dict(tz.open_group(any_store, path="g", mode="r").attrs) == {"run": 1}


@pytest.mark.parametrize("mode", ["r", "r+", "a"])
def test_open_with_attributes_opens_an_existing_group_or_array_as_stored(any_store, mode):
    tz.create_group(any_store, path="g", attributes={"kept": 1})
    tz.create_array(any_store, path="x", data=torch.arange(3), attributes={"kept": 2})
    before = _stored(any_store)
    group = tz.open(any_store, mode=mode, path="g", attributes={"new": 1})
    assert isinstance(group, tz.Group) and dict(group.attrs) == {"kept": 1}
    array = tz.open(any_store, mode=mode, path="x", attributes={"new": 1}, dtype="int8")
    assert isinstance(array, tz.Array) and dict(array.attrs) == {"kept": 2}
    assert array[:].tolist() == [0, 1, 2] and _stored(any_store) == before


def test_open_in_mode_w_with_attributes_replaces_an_array_with_a_group(any_store):
    tz.create_array(any_store, path="x", data=torch.arange(3))
    node = tz.open(any_store, mode="w", path="x", attributes={"a": 1})
    assert isinstance(node, tz.Group) and dict(node.attrs) == {"a": 1}
    assert isinstance(tz.open(any_store, path="x", mode="r"), tz.Group)


@pytest.mark.parametrize(
    ("existing", "mode"),
    [
        *(("group", mode) for mode in ("r", "r+", "a", "w", "w-")),
        *(("nothing", mode) for mode in ("a", "w", "w-")),
    ],
)
def test_open_refuses_array_arguments_for_a_group_naming_them_and_writes_nothing(
    any_store, existing, mode
):
    if existing == "group":
        tz.create_group(any_store, path="g", attributes={"kept": 1})
    before = _stored(any_store)
    with pytest.raises(ArgumentTypeError, match=r"chunks=, dtype= apply to arrays only"):
        tz.open(any_store, mode=mode, path="g", dtype="float32", chunks=(2,), attributes={})
    assert _stored(any_store) == before


def test_open_in_mode_w_keeps_the_array_when_its_arguments_are_refused(any_store):
    tz.create_array(any_store, path="x", data=torch.arange(3))
    before = _stored(any_store)
    with pytest.raises(ArgumentTypeError, match="dtype="):
        tz.open(any_store, mode="w", path="x", dtype="int8")
    with pytest.raises(AttributeValueError, match="'bad'"):
        tz.open(any_store, mode="w", path="x", attributes={"bad": float("nan")})
    assert _stored(any_store) == before
    assert tz.open_array(any_store, path="x", mode="r")[:].tolist() == [0, 1, 2]


def test_open_passes_use_consolidated_on_or_refuses_it_for_an_array_given_a_shape(any_store):
    tz.create_group(any_store, path="g")
    with pytest.raises(GroupNotFoundError, match="consolidated"):
        tz.open(any_store, mode="r", path="g", use_consolidated=True, attributes={"a": 1})
    tz.consolidate_metadata(any_store)
    group = tz.open(any_store, mode="r", use_consolidated=True, attributes={"a": 1})
    assert isinstance(group, tz.Group) and list(group) == ["g"]
    with pytest.raises(InvalidArgumentError, match="use_consolidated=True"):
        tz.open(any_store, mode="a", path="x", shape=(2,), dtype="int8", use_consolidated=True)
    assert "x" not in tz.open_group(any_store, mode="r")
    made = tz.open(any_store, mode="a", path="x", shape=(2,), dtype="int8", use_consolidated=False)
    assert made.shape == (2,)
