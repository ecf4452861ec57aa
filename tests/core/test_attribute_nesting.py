"""How deep attribute values may nest: as deep as :data:`MAX_JSON_NESTING`, lists and
dicts alike, checked without recursing; deeper values are refused naming the limit."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

import torchzarr as tz
from torchzarr.core.attributes import MAX_JSON_NESTING
from torchzarr.errors import AttributeValueError


def _nested(depth: int, kind: str, inner: object = 1) -> object:
    value = inner
    for _ in range(depth):
        value = [value] if kind == "list" else {"k": value}
    return value


@pytest.mark.parametrize("zarr_format", [2, 3])
@pytest.mark.parametrize("kind", ["list", "dict"])
def test_attributes_nested_as_deep_as_the_limit_are_stored_and_read_back(
    any_store, zarr_format, kind
):
    value = _nested(MAX_JSON_NESTING, kind)
    root = tz.open_group(any_store, mode="w", zarr_format=zarr_format)
    root.attrs["deep"] = value
    arr = root.create_array("a", shape=(2,), dtype="int8", attributes={"deep": value})
    arr.attrs["other"] = 1
    assert tz.open_group(any_store, mode="r").attrs["deep"] == value
    assert dict(tz.open_array(any_store, path="a", mode="r").attrs) == {"deep": value, "other": 1}


def test_from_array_copies_a_deep_attribute_another_tool_wrote(any_store):
    source = tz.create_array(any_store, path="src", data=torch.arange(3))
    document = json.loads(any_store.get("src/zarr.json"))
    document["attributes"] = {"deep": _nested(600, "list")}  # as zarr-python writes it
    any_store.set("src/zarr.json", json.dumps(document).encode())
    source = tz.open_array(any_store, path="src", mode="r")
    copy = tz.from_array(tz.MemoryStore(), data=source)
    assert copy.attrs["deep"] == _nested(600, "list") and copy[:].tolist() == [0, 1, 2]
    source_again = tz.open_array(any_store, path="src")
    source_again.attrs["same"] = source_again.attrs["deep"]  # set back as it was read
    assert tz.open_array(any_store, path="src", mode="r").attrs["same"] == _nested(600, "list")


@pytest.mark.parametrize(
    "value",
    [
        _nested(MAX_JSON_NESTING + 1, "list"),
        _nested(MAX_JSON_NESTING + 1, "dict"),
        _nested(100_000, "list"),
        _nested(MAX_JSON_NESTING - 1, "list", np.zeros((1, 1))),  # an array's axes count
        _nested(MAX_JSON_NESTING - 1, "dict", torch.zeros(1, 1)),
    ],
    ids=["list", "dict", "very-deep", "numpy-inside", "tensor-inside"],
)
def test_attributes_nested_past_the_limit_are_refused_naming_it(any_store, value):
    root = tz.open_group(any_store, mode="w", attributes={"kept": 1})
    document = any_store.get("zarr.json")
    message = rf"attribute 'deep': .*nested more than {MAX_JSON_NESTING} levels deep"
    with pytest.raises(AttributeValueError, match=message):
        root.attrs["deep"] = value
    with pytest.raises(AttributeValueError, match=message):
        tz.create_group(any_store, path="g", attributes={"deep": value})
    assert any_store.get("zarr.json") == document and list(root) == []  # nothing written


def test_a_deep_value_set_from_a_deep_call_stack_is_refused_not_a_recursion_error(any_store):
    root = tz.open_group(any_store, mode="w")
    value = _nested(MAX_JSON_NESTING, "list")

    def set_from_below(frames_left: int) -> None:
        if frames_left:
            set_from_below(frames_left - 1)
        else:
            root.attrs["deep"] = value

    with pytest.raises(AttributeValueError, match=r"'deep': .*json module.*from this call stack"):
        set_from_below(sys.getrecursionlimit() - MAX_JSON_NESTING)
    assert "deep" not in tz.open_group(any_store, mode="r").attrs
