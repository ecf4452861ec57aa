"""Which names and formats members of a group may have, and how a group answers for keys."""

from __future__ import annotations

import pytest
import torch
import zarr

import torchzarr as tz
from torchzarr.errors import (
    InvalidArgumentError,
    InvalidKeyError,
    NodeNotFoundError,
)


def _keys(store) -> list[str]:
    return sorted(store.list_prefix(""))


# -- names of metadata documents ----------------------------------------------------------


def test_members_named_like_the_other_formats_documents_are_listed(tmp_path):
    zg = zarr.open_group(str(tmp_path), mode="w", zarr_format=3)
    for name in ("data", ".zattrs", ".zgroup", ".zarray"):
        zg.create_group(name)  # legal v3 names
    expected = sorted(zarr.open_group(str(tmp_path), mode="r").keys())
    assert expected == [".zarray", ".zattrs", ".zgroup", "data"]
    root = tz.open_group(tmp_path, mode="r", use_consolidated=False)
    assert sorted(root) == expected and len(root) == 4
    assert [name for name, _ in root.members()] == expected
    assert "├── .zattrs [G]" in root.tree()
    assert ".zattrs" in root and root[".zattrs"].path == ".zattrs"
    assert sorted(tz.consolidate_metadata(tmp_path)) == expected
    assert sorted(tz.open_group(tmp_path, mode="r")) == expected  # from the consolidated copy


def test_a_v2_member_may_be_called_zarr_json_and_a_v3_one_dot_zattrs(any_store):
    v2 = tz.open_group(any_store, mode="w", zarr_format=2)
    v2.create_array("zarr.json", shape=(2,), dtype="int8")
    assert list(v2) == ["zarr.json"] and v2["zarr.json"].shape == (2,)
    v3 = tz.open_group(tz.MemoryStore(), mode="w", zarr_format=3)
    v3.create_group(".zattrs/inner")
    assert list(v3) == [".zattrs"] and list(v3[".zattrs"]) == ["inner"]


def test_a_v2_group_lists_no_directory_named_like_its_own_documents():
    store = tz.MemoryStore()
    root = tz.open_group(store, mode="w", zarr_format=2)
    root.create_group("data")
    store.set(".zattrs/x/.zgroup", b'{"zarr_format": 2}')  # written by something else
    assert list(root) == ["data"] and len(root) == 1
    assert [name for name, _ in root.members(max_depth=None)] == ["data"]


@pytest.mark.parametrize(
    ("zarr_format", "name"),
    [(2, ".zattrs/x"), (2, "a/.zgroup/b"), (2, "a/.zmetadata"), (3, "c/zarr.json/d")],
)
def test_a_metadata_name_anywhere_in_a_new_path_is_refused_before_writing(
    any_store, zarr_format, name
):
    root = tz.open_group(any_store, mode="w", zarr_format=zarr_format)
    root.create_group("data")
    before = _keys(any_store)
    reserved = next(part for part in name.split("/") if part.startswith((".z", "zarr.")))
    for create in (
        lambda: root.create_group(name),
        lambda: root.require_group(name),
        lambda: root.create_array(name, shape=(2,), dtype="int8"),
        lambda: root.create_hierarchy({name: {}}),
        lambda: tz.create_group(any_store, path=name, zarr_format=zarr_format),
        lambda: tz.open_array(
            any_store, path=name, shape=(2,), dtype="int8", zarr_format=zarr_format
        ),
    ):
        with pytest.raises(InvalidKeyError, match=f"'{reserved}' names a Zarr v"):
            create()
    assert _keys(any_store) == before  # nothing written, nothing left half-made
    assert list(root) == ["data"]


# -- formats ------------------------------------------------------------------------------


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_a_node_of_the_other_format_below_a_group_is_refused_before_writing(any_store, zarr_format):
    other = 5 - zarr_format
    root = tz.open_group(any_store, mode="w", zarr_format=zarr_format)
    root.create_group("sub")
    before = _keys(any_store)
    mismatch = f"Zarr v{other} .*the group at '/' above it is Zarr v{zarr_format}"
    for create in (
        lambda: root.create_array("y", data=torch.arange(3), zarr_format=other),
        lambda: root.require_array("y", shape=(3,), dtype="int64", zarr_format=other),
        lambda: tz.create_group(any_store, path="new", zarr_format=other),
        lambda: tz.create_group(any_store, path="new/deeper", zarr_format=other),
        lambda: tz.open_group(any_store, path="new", mode="a", zarr_format=other),
        lambda: tz.create_array(any_store, path="y", shape=(1,), dtype="int8", zarr_format=other),
    ):
        with pytest.raises(InvalidArgumentError, match=mismatch):
            create()
    with pytest.raises(InvalidArgumentError, match=f"'sub' above it is Zarr v{zarr_format}"):
        tz.create_array(any_store, path="sub/y", shape=(1,), dtype="int8", zarr_format=other)
    assert _keys(any_store) == before
    assert list(root) == ["sub"] and "y" not in root


def test_create_hierarchy_refuses_an_existing_parent_of_the_other_format(tmp_path):
    root = tz.open_group(tmp_path, mode="w", zarr_format=3)
    tz.open_group(tmp_path / "legacy", mode="w", zarr_format=2)  # v2, inside the v3 tree
    before = sorted(p.name for p in tmp_path.rglob("*"))
    with pytest.raises(InvalidArgumentError, match="'legacy' above it is Zarr v2"):
        root.create_hierarchy({"legacy/x": {"shape": (2,), "dtype": "int8"}})
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_a_node_below_the_nearest_group_of_its_own_format_is_created(tmp_path):
    tz.open_group(tmp_path, mode="w", zarr_format=3)
    tz.open_group(tmp_path / "legacy", mode="w", zarr_format=2)
    arr = tz.create_array(tmp_path, path="legacy/x", data=[1, 2], zarr_format=2)
    assert arr[:].tolist() == [1, 2]
    assert list(tz.open_group(tmp_path / "legacy", mode="r")) == ["x"]


# -- keys: membership and lookup ----------------------------------------------------------


@pytest.mark.parametrize("zarr_format", [2, 3])
@pytest.mark.parametrize("mode", ["r", "a"])  # r: from consolidated metadata; a: the store
def test_membership_and_lookup_agree_with_and_without_consolidated_metadata(zarr_format, mode):
    store = tz.MemoryStore()
    tz.open_group(store, mode="w", zarr_format=zarr_format).create_array(
        "x", shape=(2,), dtype="int8"
    )
    tz.consolidate_metadata(store)
    group = tz.open_group(store, mode=mode)
    for itself in ("", "/"):  # the group itself, as zarr-python answers
        assert itself in group and group[itself].path == "" and list(group[itself]) == ["x"]
    assert "x" in group and "/x/" in group
    reserved = {2: [".zattrs", "x/.zarray", ".zmetadata"], 3: ["zarr.json", "x/zarr.json"]}
    for key in ["a//b", "../x", "x/./y", 3, None, *reserved[zarr_format]]:
        assert key not in group  # a key no member can have: no error
        if isinstance(key, str):
            assert group.get(key, "default") == "default"  # as ``in`` answers
    for key in (None, 3):
        with pytest.raises(InvalidKeyError, match="member keys are str"):
            group[key]
        with pytest.raises(InvalidKeyError, match="member keys are str"):
            group.get(key)
    with pytest.raises(NodeNotFoundError):
        group["missing"]


@pytest.mark.parametrize("key", ["", "/"])
def test_a_group_cannot_delete_itself(any_store, key):
    root = tz.open_group(any_store, mode="w")
    root.create_array("x", shape=(2,), dtype="int8")
    before = _keys(any_store)
    with pytest.raises(InvalidArgumentError, match="cannot replace or delete itself"):
        del root[key]
    assert _keys(any_store) == before and list(root) == ["x"]


def test_a_path_through_a_v3_group_named_like_a_v2_document_opens_without_a_format(tmp_path):
    zg = zarr.open_group(str(tmp_path), mode="w", zarr_format=3)
    zg.create_group(".zattrs").create_array("y", shape=(2,), dtype="int32")[:] = [1, 2]
    expected = torch.tensor([1, 2], dtype=torch.int32)
    assert torch.equal(tz.open_array(tmp_path, path=".zattrs/y", mode="r")[:], expected)
    assert torch.equal(tz.open(tmp_path, path=".zattrs/y", mode="r")[:], expected)
    assert torch.equal(tz.open_group(tmp_path, mode="r")[".zattrs/y"][:], expected)


@pytest.mark.parametrize("key", ["", "/"])
def test_a_group_cannot_replace_itself(any_store, key):
    root = tz.open_group(any_store, mode="w")
    exp = root.create_group("exp")
    exp.create_array("weights", shape=(2,), dtype="int8")
    before = _keys(any_store)
    for replace in (
        lambda: exp.__setitem__(key, torch.zeros(3)),
        lambda: exp.create_array(key, shape=(3,), dtype="int8", overwrite=True),
        lambda: exp.create_group(key, overwrite=True),
    ):
        with pytest.raises(InvalidArgumentError, match="cannot replace or delete itself"):
            replace()
    assert _keys(any_store) == before and list(exp) == ["weights"]
