"""Damaged or hand-edited checkpoint nodes raise MetadataError; bad ``keys=`` raise early."""

from __future__ import annotations

import inspect
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from torchzarr.checkpoint import load_checkpoint, save_checkpoint
from torchzarr.errors import ArgumentTypeError, MetadataError


def _tampered(tmp_path: Path, change: Callable[[dict[str, Any]], None]) -> Path:
    """A checkpoint whose version document (attributes and consolidated metadata) was
    changed by ``change``."""
    save_checkpoint({"w": torch.ones(2), "g": {"x": torch.zeros(1)}, "s": 1}, tmp_path)
    document_path = tmp_path / "v000001" / "zarr.json"
    document = json.loads(document_path.read_text())
    change(document)
    document_path.write_text(json.dumps(document))
    return tmp_path


def _set_entries(entries: Any) -> Callable[[dict[str, Any]], None]:
    return lambda doc: doc["attributes"]["torchzarr_node"].__setitem__("entries", entries)


def _set_node_type(kind: Any) -> Callable[[dict[str, Any]], None]:
    return lambda doc: doc["attributes"]["torchzarr_node"].__setitem__("type", kind)


def _set_tensor_info(info: Any) -> Callable[[dict[str, Any]], None]:
    def change(doc: dict[str, Any]) -> None:
        doc["consolidated_metadata"]["metadata"]["w"]["attributes"]["torchzarr_tensor"] = info

    return change


NODE_DAMAGE = {
    "entries not a list": (_set_entries("x"), "entries 'x' are not a list"),
    "entry of two items": (_set_entries([["s", "value"]]), r"entry 0 is \['s', 'value'\]"),
    "entry of one item": (_set_entries([[1]]), r"entry 0 is \[1\]"),
    "tensor entry naming no str": (_set_entries([["w", "tensor", 5]]), "names a member by a str"),
    "unhashable typed key": (_set_entries([[{"list": [1]}, "value", 1]]), "unhashable key"),
    "unknown node type": (_set_node_type("bogus"), "type 'bogus' is not one of"),
    "unhashable node type": (_set_node_type(["dict"]), r"type \['dict'\] is not one of"),
    "list node with str keys": (_set_node_type("list"), "entry 0 of a list has the key 'w'"),
    "tensor attribute a str": (_set_tensor_info("x"), "/v000001/w: attribute 'torchzarr_tensor'"),
    "tensor device not a str": (_set_tensor_info({"device": 5}), "device 5, not a str"),
    "byte order unknown": (_set_tensor_info({"numpy": True, "byteorder": "?"}), "byte order"),
    "alias naming a group": (_set_entries([["w", "alias", "g"]]), r"\['w'\] names 'g'"),
    "group entry naming its own node": (
        _set_entries([["w", "tensor", "w"], ["x", "group", ""]]),
        r"entry 1 is \['x', 'group', ''\]: a group entry names one member",
    ),
    "group entry naming a path": (
        _set_entries([["x", "group", "g/.."]]),
        "a group entry names one member of its group, not '' or a path",
    ),
    "tensor entry naming no member": (
        _set_entries([["w", "tensor", ""]]),
        "a tensor entry names one member of its group",
    ),
}


@pytest.mark.parametrize("damage", list(NODE_DAMAGE))
def test_a_malformed_node_raises_metadata_error_naming_it(tmp_path: Path, damage: str) -> None:
    change, message = NODE_DAMAGE[damage]
    path = _tampered(tmp_path, change)
    for lazy in (False, True):
        with pytest.raises(MetadataError, match=message):
            load_checkpoint(path, lazy=lazy)


def test_a_malformed_nested_node_is_named_by_its_key_path(tmp_path: Path) -> None:
    def change(doc: dict[str, Any]) -> None:
        doc["consolidated_metadata"]["metadata"]["g"]["attributes"]["torchzarr_node"]["entries"] = [
            ["x", "tensor"]
        ]

    path = _tampered(tmp_path, change)
    with pytest.raises(MetadataError, match=r"node \['g'\] \(group /v000001/g\): entry 0"):
        load_checkpoint(path)


@pytest.mark.parametrize("keys", [[0], 0, [None], [b"w"], b"w", [1.5], ["w", 3]], ids=repr)
def test_keys_of_other_types_than_str_and_tuple_are_refused(keys: Any) -> None:
    save_checkpoint([torch.ones(1), {"w": torch.zeros(1)}], "memory://ckpt-keys-types")
    with pytest.raises(ArgumentTypeError, match="keys"):
        load_checkpoint("memory://ckpt-keys-types", keys=keys)


def test_int_keys_are_named_by_a_str_or_a_tuple() -> None:
    save_checkpoint([torch.ones(1), {"w": torch.zeros(1)}], "memory://ckpt-keys-int")
    for keys in (["0"], [(0,)], iter(["0"])):
        out = load_checkpoint("memory://ckpt-keys-int", keys=keys)
        assert list(out) == [0] and torch.equal(out[0], torch.ones(1))


def test_groups_nested_deeper_than_the_stack_raise_metadata_error(tmp_path: Path) -> None:
    # as a store that loops (a directory linked into itself) nests groups without end
    nested: dict[str, Any] = {"w": torch.ones(1)}
    for _ in range(150):
        nested = {"a": nested}
    save_checkpoint(nested, tmp_path)
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(len(inspect.stack()) + 120)
    try:
        with pytest.raises(MetadataError, match="nest deeper than Python's recursion limit"):
            load_checkpoint(tmp_path)
    finally:
        sys.setrecursionlimit(limit)
