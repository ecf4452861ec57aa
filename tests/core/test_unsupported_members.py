"""Groups holding arrays of dtypes torchzarr cannot hold (datetimes, strings), as xarray
writes them: listed, skipped by arrays() and datasets, kept by consolidation, and refused
by name when opened."""

from __future__ import annotations

import json
import pickle
import warnings

import numpy as np
import pytest
import torch
import zarr

import torchzarr as tz
from torchzarr.errors import (
    InvalidArgumentError,
    MetadataError,
    UnknownCodecError,
    UnsupportedDtypeError,
)


def _xarray_like(path, zarr_format: int) -> None:
    """A time coordinate, a string variable in a subgroup and a float variable."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zarr-python on v2 strings and v3 extension dtypes
        root = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
        root.create_array("time", shape=(4,), dtype="M8[ns]")[:] = np.arange(4).astype("M8[s]")
        root.create_array("meta/name", shape=(4,), dtype=str)[:] = ["a", "b", "c", "d"]
        temp = root.create_array("temperature", shape=(4, 2), dtype="f4")
        temp[:] = np.arange(8, dtype="f4").reshape(4, 2)
        zarr.consolidate_metadata(str(path), zarr_format=zarr_format)


@pytest.mark.parametrize("use_consolidated", [True, False])
@pytest.mark.parametrize("zarr_format", [2, 3])
def test_groups_list_unsupported_arrays_and_read_the_rest(tmp_path, zarr_format, use_consolidated):
    _xarray_like(tmp_path, zarr_format)
    root = tz.open_group(tmp_path, mode="r", use_consolidated=use_consolidated)
    assert sorted(root) == ["meta", "temperature", "time"] and len(root) == 3
    assert "time" in root and root.array_keys() == ["temperature"]
    assert [name for name, _ in root.members(max_depth=None)] == ["meta", "temperature"]
    tree = root.tree()
    assert "time [A] unsupported dtype" in tree and "name [A] unsupported dtype" in tree
    assert "temperature [A] (4, 2) torch.float32" in tree
    with pytest.raises(UnsupportedDtypeError, match="array 'time': unsupported dtype"):
        root["time"]
    with pytest.raises(UnsupportedDtypeError, match="array 'meta/name'"):
        root["meta"]["name"]
    item = tz.ZarrDataset(root)[2]  # the arrays a tensor can hold
    assert list(item) == ["temperature"] and item["temperature"].tolist() == [4.0, 5.0]


def test_a_dataset_of_a_group_of_only_unsupported_arrays_names_them(tmp_path):
    _xarray_like(tmp_path, 3)
    with pytest.raises(InvalidArgumentError, match=r"group /meta holds no array .*'name'"):
        tz.ZarrDataset(tz.open_group(tmp_path, path="meta", mode="r"))


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_consolidation_keeps_unsupported_arrays_for_other_readers(tmp_path, zarr_format):
    _xarray_like(tmp_path, zarr_format)
    tz.open_group(tmp_path, mode="r+").attrs["note"] = "changed here"
    consolidated = tz.consolidate_metadata(tmp_path)
    assert sorted(consolidated) == ["meta", "temperature", "time"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = zarr.open_group(str(tmp_path), mode="r", use_consolidated=True)
        assert theirs.attrs["note"] == "changed here"
        assert theirs["time"][:].astype("M8[s]").tolist() == np.arange(4).astype("M8[s]").tolist()
        assert theirs["meta/name"][:].tolist() == ["a", "b", "c", "d"]


def test_opening_an_unsupported_array_names_it_and_its_store(tmp_path):
    _xarray_like(tmp_path, 3)
    for mode in ("r", "r+"):
        with pytest.raises(UnsupportedDtypeError, match=r"array '/' in LocalStore\(.*time"):
            tz.open_array(tmp_path / "time", mode=mode)
    with pytest.raises(UnsupportedDtypeError, match="array 'time' in LocalStore"):
        tz.open_array(tmp_path, path="time", mode="r")
    assert tz.open_array(tmp_path / "temperature")[3].tolist() == [6.0, 7.0]
    assert isinstance(tz.open_group(tmp_path)["temperature"][:], torch.Tensor)


def test_items_and_values_leave_unsupported_arrays_out_as_members_does(tmp_path):
    _xarray_like(tmp_path, 3)
    root = tz.open_group(tmp_path, mode="r")
    assert sorted(root.keys()) == ["meta", "temperature", "time"] and "time" in root
    assert (
        [name for name, _ in root.items()]
        == ["meta", "temperature"]
        == [name for name, _ in root.members()]
    )
    assert [type(node).__name__ for node in root.values()] == ["Group", "Array"]
    assert len(root.items()) == len(root.values()) == 2
    assert root.info.unsupported == ("time",)
    with pytest.raises(UnsupportedDtypeError, match="array 'time'"):
        root.get("time")
    assert root.get("missing") is None


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_group_info_lists_the_group_once(tmp_path, zarr_format, monkeypatch):
    _xarray_like(tmp_path, zarr_format)
    root = tz.open_group(tmp_path, mode="r", use_consolidated=False)
    listings = []
    fetch = tz.Group._fetch_children
    monkeypatch.setattr(tz.Group, "_fetch_children", lambda g: listings.append(g) or fetch(g))
    info = root.info
    assert len(listings) == 1
    assert (info.arrays, info.groups, info.unsupported) == (("temperature",), ("meta",), ("time",))


@pytest.mark.parametrize("view", ["items", "values"])
def test_a_list_of_items_or_values_lists_the_group_once(tmp_path, monkeypatch, view):
    """``list()`` asks a view's length and iterates it: on an object store each listing is
    a request per member."""
    _xarray_like(tmp_path, 3)
    root = tz.open_group(tmp_path, mode="r", use_consolidated=False)
    listings = []
    fetch = tz.Group._fetch_children
    monkeypatch.setattr(tz.Group, "_fetch_children", lambda g: listings.append(g) or fetch(g))
    assert len(list(getattr(root, view)())) == 2 and len(listings) == 1
    listed = getattr(root, view)()
    root_writable = tz.open_group(tmp_path, mode="r+")
    root_writable.create_group("more")
    assert len(listed) == 3  # a len() alone lists anew


@pytest.mark.parametrize("view", ["keys", "items", "values"])
def test_a_len_after_an_iteration_has_begun_lists_anew(tmp_path, view):
    """The listing kept for ``list()`` is not a stale answer once items were taken."""
    _xarray_like(tmp_path, 3)
    root = tz.open_group(tmp_path, mode="r+")
    listed = root if view == "keys" else getattr(root, view)()
    before = len([member for member in listed])  # keys() names "time", which does not open
    started = iter(listed)
    next(started)
    root.create_group("more")
    assert len(listed) == before + 1


@pytest.mark.parametrize("view", ["keys", "items", "values"])
def test_a_len_after_a_write_through_the_group_lists_anew(tmp_path, view):
    """``names = (n for n in group)`` asks for an iterator at once: the listing it kept
    must not answer a ``len()`` after the group changed."""
    _xarray_like(tmp_path, 3)
    root = tz.open_group(tmp_path, mode="r+")
    listed = root if view == "keys" else getattr(root, view)()
    before = len(listed)
    for change, after in [
        (lambda: root.create_group("more"), 1),
        (lambda: root.__delitem__("more"), 0),
    ]:
        started = iter(listed)
        change()
        assert len(listed) == before + after
        assert len(list(started)) == before + 1 - after  # the iteration shows the old listing


def test_a_list_of_a_group_lists_it_once(tmp_path, monkeypatch):
    _xarray_like(tmp_path, 3)
    root = tz.open_group(tmp_path, mode="r", use_consolidated=False)
    listings = []
    fetch = tz.Group._fetch_children
    monkeypatch.setattr(tz.Group, "_fetch_children", lambda g: listings.append(g) or fetch(g))
    assert list(root) == ["meta", "temperature", "time"] and len(listings) == 1
    assert len(pickle.loads(pickle.dumps(root))) == 3 and len(listings) == 2


def _with_bad_codecs(path) -> tz.Group:
    """Arrays a, b; c with an unknown codec; d with a codec chain out of order."""
    root = tz.open_group(path, mode="w")
    for name in "abcd":
        root.create_array(name, shape=(2,), dtype="int8")
    for name, change in (
        ("c", lambda doc: doc["codecs"].append({"name": "some_future_codec"})),
        ("d", lambda doc: doc.__setitem__("codecs", [{"name": "zstd"}])),
    ):
        doc = json.loads((path / name / "zarr.json").read_text())
        change(doc)
        (path / name / "zarr.json").write_text(json.dumps(doc))
    return tz.open_group(path, mode="r")


def test_codec_errors_name_the_node_and_its_key(tmp_path):
    root = _with_bad_codecs(tmp_path)
    with pytest.raises(
        UnknownCodecError, match=r"node 'c' \(c/zarr.json\) in LocalStore.*some_future_codec"
    ):
        root["c"]
    with pytest.raises(
        MetadataError, match=r"node 'd' \(d/zarr.json\) in LocalStore.*comes before"
    ):
        tz.open_array(tmp_path, path="d", mode="r")
    with pytest.raises(UnknownCodecError, match=r"node '/' \(zarr.json\)"):
        tz.open_array(tmp_path / "c", mode="r")


def test_a_child_with_bad_codecs_does_not_hide_the_others(tmp_path):
    root = _with_bad_codecs(tmp_path)
    assert list(root) == ["a", "b", "c", "d"] and len(root) == 4 and "c" in root
    tree = root.tree()
    assert "a [A] (2,) torch.int8" in tree and "b [A] (2,) torch.int8" in tree
    assert "c [?] unsupported: node 'c' (c/zarr.json)" in tree and "d [?] unsupported" in tree
    with pytest.raises(MetadataError, match="node 'd'"):  # malformed: an error
        root.members()
    with pytest.raises(UnknownCodecError, match="node 'c'"):  # a codec torchzarr lacks
        root["c"]
    del tz.open_group(tmp_path, mode="r+")["d"]  # deleting needs no codec
    assert [name for name, _ in tz.open_group(tmp_path).members()] == ["a", "b"]  # c left out
    del tz.open_group(tmp_path, mode="r+")["c"]
    assert list(tz.open_group(tmp_path)) == ["a", "b"]


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_arrays_of_unsupported_dtypes_are_deleted_and_replaced(tmp_path, zarr_format):
    _xarray_like(tmp_path, zarr_format)
    root = tz.open_group(tmp_path, mode="r+", use_consolidated=False)
    del root["time"]
    assert sorted(root) == ["meta", "temperature"] and not (tmp_path / "time").exists()
    root["meta/name"] = torch.zeros(2)
    assert root["meta/name"][:].tolist() == [0.0, 0.0]
    _xarray_like(tmp_path, zarr_format)
    root.create_array("meta/name", shape=(2,), dtype="float32", overwrite=True)
    tz.open_array(
        tmp_path, path="time", mode="w", shape=(2,), dtype="int64", zarr_format=zarr_format
    )
    assert tz.open_group(tmp_path, use_consolidated=False)["time"].dtype == torch.int64


def test_an_unknown_v2_codec_is_found_when_the_array_is_opened_as_in_v3(tmp_path):
    root = tz.open_group(tmp_path, mode="w", zarr_format=2)
    root.create_array("a", shape=(2,), dtype="int8")
    root.create_array("b", shape=(2,), dtype="int8")
    doc = json.loads((tmp_path / "a" / ".zarray").read_text())
    doc["compressor"] = {"id": "some_future_codec"}
    (tmp_path / "a" / ".zarray").write_text(json.dumps(doc))
    group = tz.open_group(tmp_path)
    assert list(group) == ["a", "b"] and [name for name, _ in group.arrays()] == ["b"]
    assert group.info.unsupported_metadata == ("a",) and "a [?] unsupported" in group.tree()
    with pytest.raises(UnknownCodecError, match=r"node 'a' \(a/.zarray\).*some_future_codec"):
        group["a"]
