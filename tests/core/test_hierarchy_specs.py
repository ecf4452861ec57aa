"""``Group.create_hierarchy``'s specs: a key neither an array's spec nor a group's takes, a
missing ``shape`` or ``dtype``, and two keys naming one node are refused, naming them."""

from __future__ import annotations

import pytest
import torch

import torchzarr as tz
from torchzarr.errors import InvalidArgumentError


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ({"dtype": "uint8", "chunks": (64,)}, r"'dtype', 'chunks' but no 'shape'"),
        ({"data": torch.arange(5)}, r"'data' but no 'shape'.*needs 'shape' and 'dtype'"),
        ({"fill_value": 0}, r"'fill_value' but no 'shape'"),
        ({"attribtes": {"a": 1}}, r"group spec at 'n' has unknown key\(s\) 'attribtes'"),
        ({"attributes": {}, 7: 1}, r"group spec at 'n' has unknown key\(s\) 7"),
        ({"shape": (3,)}, r"array spec at 'n' has no 'dtype'"),
        ({"shape": (3,), "dtype": "int8", "data": [1, 2, 3]}, r"'n' has 'data'.*metadata only"),
        ({"shape": (3,), "dtype": "int8", "chunk": (1,)}, r"unknown key\(s\) 'chunk'"),
    ],
)
@pytest.mark.parametrize("zarr_format", [2, 3])
def test_a_spec_with_keys_it_does_not_take_is_refused_and_nothing_written(spec, words, zarr_format):
    store = tz.MemoryStore()
    root = tz.open_group(store, mode="w", zarr_format=zarr_format)
    before = sorted(store.list_prefix(""))
    with pytest.raises(InvalidArgumentError, match=words):
        root.create_hierarchy({"ok": {}, "n": spec})
    assert sorted(store.list_prefix("")) == before  # not a group in place of the array


def test_two_keys_naming_one_node_are_refused():
    root = tz.open_group(tz.MemoryStore(), mode="w")
    with pytest.raises(InvalidArgumentError, match=r"'k' and '/k/' both name the node 'k'"):
        root.create_hierarchy({"k": {}, "/k/": {"attributes": {"a": 1}}})
    assert "k" not in root


def test_group_and_array_specs_with_the_keys_they_take():
    root = tz.open_group(tz.MemoryStore(), mode="w")
    made = root.create_hierarchy(
        {
            "g": {"attributes": {"a": 1}},
            "h": None,
            "e": {},
            "g/x": {"shape": (2,), "dtype": "int8", "fill_value": 3, "zarr_format": 3},
        }
    )
    assert sorted(made) == ["e", "g", "g/x", "h"]
    assert dict(root["g"].attrs) == {"a": 1} and root["g/x"][:].tolist() == [3, 3]
