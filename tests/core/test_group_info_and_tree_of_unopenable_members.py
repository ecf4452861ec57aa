"""``Group.info`` and ``Group.tree()`` list the members torchzarr cannot open alike: a v3
member whose metadata names an unknown codec, and an array of an extension dtype (named
by its name, without its configuration)."""

from __future__ import annotations

import json
import re
import warnings

import pytest
import torch
import zarr

import torchzarr as tz
from torchzarr.core.info import stored_dtype_name
from torchzarr.errors import UnknownCodecError


def _group_with_unknown_codec(path) -> tz.Group:
    root = tz.open_group(path, mode="w")
    root.create_array("a", data=torch.arange(3))
    root.create_array("b", data=torch.arange(3))
    root.require_group("g")
    doc = json.loads((path / "b" / "zarr.json").read_text())
    doc["codecs"].append({"name": "some_future_codec"})
    (path / "b" / "zarr.json").write_text(json.dumps(doc))
    return tz.open_group(path, mode="r")


def test_group_info_lists_a_member_with_an_unknown_codec_as_tree_does(tmp_path):
    root = _group_with_unknown_codec(tmp_path)
    assert "b [?] unsupported" in root.tree()
    info = root.info
    assert (info.arrays, info.groups, info.unsupported) == (("a",), ("g",), ())
    assert info.unsupported_metadata == ("b",)
    assert re.search(r"Unsupported metadata +: b$", str(info), re.MULTILINE)
    with pytest.raises(UnknownCodecError, match="node 'b'"):
        root["b"]  # opening it still says why


def test_group_info_without_unopenable_members_has_no_such_row(tmp_path):
    root = tz.open_group(tmp_path, mode="w")
    root.create_array("a", data=torch.arange(3))
    assert root.info.unsupported_metadata == ()
    assert "Unsupported" not in str(root.info)


def test_tree_names_an_extension_dtype_without_its_configuration(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zarr-python: no spec for this dtype
        group = zarr.open_group(str(tmp_path), mode="w", zarr_format=3)
        group.create_array("s", shape=(2,), dtype="<U4")
    stored = json.loads((tmp_path / "s" / "zarr.json").read_text())["data_type"]
    assert stored["name"] == "fixed_length_utf32" and "configuration" in stored
    tree = tz.open_group(tmp_path, mode="r").tree()
    assert tree.splitlines()[1] == "└── s [A] unsupported dtype fixed_length_utf32"


def test_stored_dtype_name_of_v2_and_v3_documents():
    assert stored_dtype_name({"data_type": "string"}) == "string"
    assert stored_dtype_name({"data_type": {"name": "x", "configuration": {"n": 1}}}) == "x"
    assert stored_dtype_name({"dtype": "<M8[ns]"}) == "<M8[ns]"
    assert stored_dtype_name({"dtype": [["a", "<i4"]]}) == [["a", "<i4"]]


@pytest.mark.parametrize("consolidated", [False, True])
def test_a_member_with_an_unknown_codec_leaves_the_rest_of_the_group_usable(tmp_path, consolidated):
    group = _group_with_unknown_codec(tmp_path)
    if consolidated:
        tz.consolidate_metadata(tmp_path)  # its metadata kept as stored
        entries = json.loads((tmp_path / "zarr.json").read_text())["consolidated_metadata"]
        assert entries["metadata"]["b"]["codecs"][-1] == {"name": "some_future_codec"}
        group = tz.open_group(tmp_path, mode="r")
    assert sorted(group.keys()) == ["a", "b", "g"] and "b" in group  # listed
    assert [name for name, _ in group.arrays()] == ["a"]  # left out where nodes are opened
    assert [name for name, _ in group.members(max_depth=None)] == ["a", "g"]
    assert sorted(group.array_keys()) == ["a"]
    with pytest.raises(UnknownCodecError, match=r"'b'.*install it, or pass the arrays"):
        tz.ZarrDataset(group)  # an item would lack b here and not where the codec is
    assert len(tz.ZarrDataset({"a": group["a"]})) == 3
    with pytest.raises(UnknownCodecError, match=r"'b'.*some_future_codec"):
        group["b"]
