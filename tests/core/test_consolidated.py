"""Consolidated metadata: written as zarr-python does, read back in one request."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import zarr

import torchzarr as tz
from torchzarr.errors import (
    GroupNotFoundError,
    InvalidArgumentError,
    MetadataError,
    NodeNotFoundError,
)
from torchzarr.storage.base import Store


class CountingStore(Store):
    """Counts the calls that reach the wrapped store."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.calls = 0
        self.read_only = inner.read_only

    def get(self, key):
        self.calls += 1
        return self.inner.get(key)

    def get_many(self, keys):
        self.calls += 1
        return self.inner.get_many(keys)

    def set(self, key, value):
        self.inner.set(key, value)

    def delete(self, key):
        self.inner.delete(key)

    def list_prefix(self, prefix):
        self.calls += 1
        return self.inner.list_prefix(prefix)

    def list_dir(self, prefix):
        self.calls += 1
        return self.inner.list_dir(prefix)

    def with_read_only(self, read_only=True):
        return self


def _hierarchy(store, zarr_format):
    root = tz.open_group(store, mode="w", zarr_format=zarr_format, attributes={"name": "root"})
    for i in range(5):
        g = root.require_group(f"run{i}/metrics")
        g.attrs["i"] = i
        g.create_array("loss", shape=(4,), dtype=torch.float32, chunks=(2,))[:] = float(i)
    return root


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_open_consolidated_uses_one_request(zarr_format):
    inner = tz.MemoryStore()
    _hierarchy(inner, zarr_format)
    tz.consolidate_metadata(inner)
    counting = CountingStore(inner)
    root = tz.open_group(counting, mode="r")
    tree = root.tree()
    _ = root["run3/metrics"].attrs["i"]
    _ = root["run4/metrics/loss"].shape
    assert counting.calls == 1
    assert "loss [A] (4,) torch.float32" in tree and tree.count("[G]") == 10
    assert root["run2/metrics/loss"][:].tolist() == [2.0] * 4


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_zarr_python_reads_our_consolidated_metadata(tmp_path, zarr_format):
    _hierarchy(tmp_path, zarr_format)
    tz.consolidate_metadata(tmp_path)
    theirs = zarr.open_consolidated(str(tmp_path), zarr_format=zarr_format)
    assert theirs.attrs["name"] == "root"
    assert theirs["run1/metrics"].attrs["i"] == 1
    np.testing.assert_array_equal(theirs["run1/metrics/loss"][:], np.ones(4, dtype="float32"))
    if zarr_format == 2:
        doc = json.loads((tmp_path / ".zmetadata").read_text())
        assert doc["zarr_consolidated_format"] == 1
        assert "run1/metrics/loss/.zarray" in doc["metadata"]
    else:
        doc = json.loads((tmp_path / "zarr.json").read_text())
        assert doc["consolidated_metadata"]["kind"] == "inline"
        assert doc["consolidated_metadata"]["must_understand"] is False
        assert "run1/metrics/loss" in doc["consolidated_metadata"]["metadata"]


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_we_read_zarr_python_consolidated_metadata(tmp_path, zarr_format):
    g = zarr.open_group(str(tmp_path), mode="w", zarr_format=zarr_format)
    g.attrs["k"] = "v"
    g.create_group("a").create_array("x", shape=(3,), dtype="int16")[:] = [1, 2, 3]
    zarr.consolidate_metadata(str(tmp_path))
    inner = tz.LocalStore(tmp_path)
    counting = CountingStore(inner)
    root = tz.open_group(counting, mode="r", use_consolidated=True)
    assert root["a/x"].shape == (3,) and dict(root.attrs) == {"k": "v"}
    assert counting.calls == 1
    assert root["a/x"][:].tolist() == [1, 2, 3]


def test_writers_ignore_consolidated_and_keep_it_current(tmp_path):
    root = _hierarchy(tmp_path, 3)
    tz.consolidate_metadata(tmp_path)
    root["run0/metrics/loss"].resize(8)
    assert tz.open_group(tmp_path, mode="a")["run0/metrics/loss"].shape == (8,)
    assert tz.open_group(tmp_path, mode="r")["run0/metrics/loss"].shape == (8,)  # refreshed
    # a writer that leaves it stale (zarr-python): readers of it see what was consolidated
    zarr.open_array(str(tmp_path / "run0/metrics/loss"), mode="r+").resize((9,))
    assert tz.open_group(tmp_path, mode="r")["run0/metrics/loss"].shape == (8,)
    assert tz.open_group(tmp_path, mode="r", use_consolidated=False)["run0/metrics/loss"].shape == (
        9,
    )
    tz.consolidate_metadata(tmp_path)
    assert tz.open_group(tmp_path, mode="r")["run0/metrics/loss"].shape == (9,)


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_every_change_we_make_reaches_the_consolidated_metadata(tmp_path, zarr_format):
    root = tz.open_group(tmp_path, mode="w", zarr_format=zarr_format)
    root.create_array("keep", shape=(2,), dtype="int8")
    root.create_array("old/x", shape=(2,), dtype="int8")
    root.require_group("sub").create_array("y", shape=(2,), dtype="int8")
    tz.consolidate_metadata(tmp_path)
    tz.consolidate_metadata(tmp_path, path="sub")  # a consolidated group inside another
    stale = tz.open_group(tmp_path, mode="a")  # holds the consolidated part as read now

    new = tz.create_array(
        tmp_path, path="new/deep/z", shape=(3,), dtype="float32", zarr_format=zarr_format
    )
    other = 5 - zarr_format  # a node of the other format is no member: refused below it,
    with pytest.raises(InvalidArgumentError, match=f"is Zarr v{zarr_format}, which lists no"):
        tz.create_array(tmp_path, path="other", shape=(1,), dtype="int8", zarr_format=other)
    # and left out of both when written there as the root of a store of its own
    tz.create_array(tmp_path / "other", shape=(1,), dtype="int8", zarr_format=other)
    new.append(torch.ones(2))
    new.attrs["units"] = "m"
    root["sub/y"].resize(5)
    del root["old"]
    root.create_array("keep", shape=(4,), dtype="int16", overwrite=True)
    root.create_hierarchy({"h": {}, "h/w": {"shape": (1,), "dtype": "int8"}})
    stale.attrs["note"] = "set through a copy read before the changes above"

    def check(group, names):
        assert sorted(n for n, _ in group.members(max_depth=None)) == names

    every = ["h", "h/w", "keep", "new", "new/deep", "new/deep/z", "sub", "sub/y"]
    for use in (True, False):  # consolidated, and the listing it must agree with
        got = tz.open_group(tmp_path, mode="r", use_consolidated=use)
        check(got, every)
        assert got["new/deep/z"].shape == (5,) and dict(got["new/deep/z"].attrs) == {"units": "m"}
        assert got["keep"].dtype == torch.int16 and got["sub/y"].shape == (5,)
        assert dict(got.attrs) == {"note": "set through a copy read before the changes above"}
        check(tz.open_group(tmp_path, path="sub", mode="r", use_consolidated=use), ["y"])
    theirs = zarr.open_group(str(tmp_path), mode="r", use_consolidated=True)
    assert theirs["new/deep/z"].shape == (5,) and "old" not in theirs


def test_missing_consolidated_metadata_when_required():
    store = tz.MemoryStore()
    tz.open_group(store, mode="w")
    with pytest.raises(GroupNotFoundError, match="consolidated"):
        tz.open_group(store, mode="r", use_consolidated=True)
    assert isinstance(tz.open_group(store, mode="r"), tz.Group)
    with pytest.raises(GroupNotFoundError):
        tz.consolidate_metadata(tz.MemoryStore())


def test_refresh_reads_only_groups_that_existed_before():
    from torchzarr.core.consolidated import refresh_consolidated
    from torchzarr.metadata.v3 import GroupMetadataV3

    store = tz.MemoryStore()
    tz.open_group(store, mode="w")
    asked = []
    original = store.get_many
    store.get_many = lambda keys: asked.extend(keys) or original(keys)  # type: ignore[method-assign]
    new = ["a", "a/b", "a/b/c"]
    refresh_consolidated(store, [(p, GroupMetadataV3()) for p in new], frozenset(new))
    assert sorted(asked) == [".zmetadata", "zarr.json"]  # the root only: the rest is new


def test_a_group_attribute_change_writes_its_document_once():
    store = tz.MemoryStore()
    root = tz.open_group(store, mode="w")
    root.require_group("sub").create_array("x", shape=(2,), dtype="int8")
    tz.consolidate_metadata(store)
    written = []
    set_one = store.set  # set_many writes through it
    store.set = lambda key, value: written.append(key) or set_one(key, value)  # type: ignore[method-assign]
    root = tz.open_group(store, mode="a")
    root.attrs["a"] = 1
    assert written == ["zarr.json"]  # its own document: no second write of the same
    written.clear()
    root["sub"].attrs["b"] = 2  # the root's entry for "sub" changes: both are written
    assert sorted(written) == ["sub/zarr.json", "zarr.json"]
    again = tz.open_group(store, mode="r")
    assert again["sub"].attrs["b"] == 2 and again.attrs["a"] == 1


def test_children_by_bisection_equal_children_by_scan():
    from torchzarr.core.consolidated import consolidated_children

    members = {p: i for i, p in enumerate(["a", "a/x", "a/x/y", "a0", "a.b", "ab/c", "b", "a/~"])}
    keys = sorted(members)
    for name in ["a", "a/x", "a0", "b", "zz", "a.b"]:
        assert consolidated_children(members, name, keys) == consolidated_children(members, name)
    assert consolidated_children(members, "a", keys) == {"x": 1, "x/y": 2, "~": 7}


@pytest.mark.parametrize("zarr_format", [2, 3])
@pytest.mark.parametrize("mode", ["r+", "a"])
def test_a_writable_group_opened_consolidated_sees_its_own_changes(tmp_path, zarr_format, mode):
    root = tz.open_group(tmp_path, mode="w", zarr_format=zarr_format)
    root.create_array("x", data=torch.tensor([1, 2, 3]))
    root.create_array("sub/y", data=torch.tensor([4]))
    tz.consolidate_metadata(tmp_path)
    group = tz.open_group(tmp_path, mode=mode, use_consolidated=True)
    del group["x"]
    assert "x" not in group and list(group) == ["sub"]
    with pytest.raises(NodeNotFoundError):
        group["x"]  # no handle to write orphan chunks through
    group.create_group("new")
    sub = group["sub"]
    del sub["y"]
    sub.create_array("z", shape=(2,), dtype="int8")
    group["sub/z"].resize(5)
    assert sorted(group) == ["new", "sub"] and "new" in group and "sub/y" not in group
    assert [name for name, _ in group.members(max_depth=None)] == ["new", "sub", "sub/z"]
    assert group["sub/z"].shape == (5,) and "new [G]" in group.tree()
    for use in (True, False):  # readers see the same, from the stored consolidated copy too
        reader = tz.open_group(tmp_path, mode="r", use_consolidated=use)
        assert [name for name, _ in reader.members(max_depth=None)] == ["new", "sub", "sub/z"]
        assert reader["sub/z"].shape == (5,)


def test_a_writable_group_still_requires_consolidated_metadata_when_asked():
    store = tz.MemoryStore()
    tz.open_group(store, mode="w")
    with pytest.raises(GroupNotFoundError, match="consolidated"):
        tz.open_group(store, mode="r+", use_consolidated=True)
    tz.consolidate_metadata(store)
    assert tz.open_group(store, mode="r+", use_consolidated=True).info.consolidated


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_a_writable_group_does_not_parse_the_consolidated_entries_it_drops(tmp_path, zarr_format):
    root = tz.open_group(tmp_path, mode="w", zarr_format=zarr_format)
    root.create_array("x", shape=(2,), dtype="int8")
    tz.consolidate_metadata(tmp_path)
    name = "zarr.json" if zarr_format == 3 else ".zmetadata"
    stored = json.loads((tmp_path / name).read_text())
    if zarr_format == 3:  # an array entry without a shape
        stored["consolidated_metadata"]["metadata"]["ghost"] = {
            "zarr_format": 3,
            "node_type": "array",
        }
    else:
        stored["metadata"]["ghost/.zarray"] = {"zarr_format": 2}
    (tmp_path / name).write_text(json.dumps(stored))
    with pytest.raises(MetadataError, match="entry 'ghost"):
        tz.open_group(tmp_path, mode="r")  # a reader uses the entries: a broken one is named
    for mode in ("r+", "a"):  # a writer lists the store: the entries are only looked for
        group = tz.open_group(tmp_path, mode=mode, use_consolidated=True)
        assert list(group) == ["x"] and group["x"].shape == (2,)


def _v2_consolidated(tmp_path, entries):
    (tmp_path / ".zgroup").write_text('{"zarr_format": 2}')
    document = {"zarr_consolidated_format": 1, "metadata": {".zgroup": {"zarr_format": 2}}}
    document["metadata"].update(entries)
    (tmp_path / ".zmetadata").write_text(json.dumps(document))


@pytest.mark.parametrize(
    ("entries", "entry", "message"),
    [
        (
            {"x/.zgroup": {"zarr_format": 2}, "x/.zattrs": ["a", "b"]},
            "x/.zattrs",
            "expected a JSON object, got list",
        ),
        (
            {"x/.zgroup": {"zarr_format": 2}, "x/.zattrs": "text"},
            "x/.zattrs",
            "expected a JSON object, got str",
        ),
        ({"x/.zgroup": [2]}, "x/.zgroup", "expected a JSON object, got list"),
        ({"a/x/.zarray": 7}, "a/x/.zarray", "expected a JSON object, got int"),
        ({"x/.zarray": {"zarr_format": 2}}, "x/.zarray", "missing required key 'shape'"),
    ],
)
def test_a_malformed_v2_consolidated_entry_raises_metadata_error_naming_it(
    tmp_path, entries, entry, message
):
    _v2_consolidated(tmp_path, entries)
    with pytest.raises(MetadataError, match=f"'/' \\(.zmetadata\\): entry '{entry}': {message}"):
        tz.open_group(tmp_path, mode="r")
    assert tz.open_group(tmp_path, mode="r", use_consolidated=False).path == ""


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"zarr_format": 3, "node_type": "array"}, "missing required key 'shape'"),
        (["not", "an", "object"], "expected a JSON object, got list"),
        ({"zarr_format": 3, "node_type": "group", "attributes": [1]}, "attributes must be"),
    ],
)
def test_a_malformed_v3_consolidated_entry_raises_metadata_error_naming_it(
    tmp_path, document, message
):
    root = tz.open_group(tmp_path, mode="w", zarr_format=3)
    root.create_group("deep/name")
    tz.consolidate_metadata(tmp_path)
    stored = json.loads((tmp_path / "zarr.json").read_text())
    stored["consolidated_metadata"]["metadata"]["deep/name/arr"] = document
    (tmp_path / "zarr.json").write_text(json.dumps(stored))
    with pytest.raises(
        MetadataError, match=f"'/' \\(zarr.json\\): entry 'deep/name/arr': {message}"
    ):
        tz.open_group(tmp_path, mode="r")


@pytest.mark.parametrize("kind", ["external", None])
def test_v3_consolidated_metadata_of_a_kind_other_than_inline_is_refused(tmp_path, kind):
    group = tz.open_group(tmp_path, mode="w")
    group.create_group("sub")["x"] = torch.arange(3)
    stored = json.loads((tmp_path / "sub" / "zarr.json").read_text())
    stored["consolidated_metadata"] = {"kind": kind, "must_understand": False, "metadata": {}}
    (tmp_path / "sub" / "zarr.json").write_text(json.dumps(stored))
    with pytest.raises(ValueError, match=f"kind='{kind}' is not supported"):
        zarr.open_group(tmp_path / "sub", mode="r")  # zarr-python refuses it too
    message = f"sub/zarr.json: consolidated_metadata of kind {kind!r} is not supported"
    for opener in (tz.open_group, tz.open):
        with pytest.raises(MetadataError, match=message + r".*the group at 'sub'"):
            opener(tmp_path, path="sub", mode="r")
    with pytest.raises(MetadataError, match=message):
        tz.open_group(tmp_path, path="sub", mode="a", use_consolidated=True)
    writable = tz.open_group(tmp_path, path="sub", mode="a")  # lists the store
    writable.create_array("y", shape=(2,), dtype=torch.int8)  # leaves the entries as they are
    kept = json.loads((tmp_path / "sub" / "zarr.json").read_text())["consolidated_metadata"]
    assert kept == stored["consolidated_metadata"]
    listed = tz.open_group(tmp_path, path="sub", mode="r", use_consolidated=False)
    assert sorted(listed) == ["x", "y"]
    tz.consolidate_metadata(tmp_path, path="sub")  # repairs it
    assert sorted(tz.open_group(tmp_path, path="sub", mode="r")) == ["x", "y"]
