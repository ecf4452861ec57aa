"""Writes that fail (or die) part-way: at a resize, at publication, creating a feature."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import torch

import torchzarr as tz
from torchzarr.errors import NodeExistsError, StoreError
from torchzarr.features import FeatureStore, marks
from torchzarr.features.layout import FEATURE_ATTRIBUTE
from torchzarr.storage.wrappers import ForwardingStore

zarr = pytest.importorskip("zarr")


def _fail_once(
    monkeypatch: pytest.MonkeyPatch, fs: FeatureStore, fails: Callable[[str], bool]
) -> list[str]:
    """Make the store of ``fs`` raise StoreError once, on writing the first key ``fails``
    accepts (each key lands on its own: a local store's set_many calls an instance's set);
    returns the list the failed key goes to."""
    store = fs.group.store
    original = store.set
    failed: list[str] = []

    def set_(key: str, value: object) -> None:
        if not failed and fails(key):
            failed.append(key)
            raise StoreError(f"injected failure writing {key!r}")
        original(key, value)

    monkeypatch.setattr(store, "set", set_)
    return failed


def _stored(path: str) -> dict[str, int]:
    """The arrays of the store at ``path`` as zarr-python sees them: name -> rows."""
    group = zarr.open_group(path, mode="r")
    return {name: group[name].shape[0] for name in sorted(group.array_keys())}


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_a_write_failing_at_publication_shrinks_back_and_removes_new_features(
    tmp_path: Path, zarr_format: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(tmp_path / "fs")
    fs = FeatureStore(path, mode="w", zarr_format=zarr_format)
    fs.write([1, 2], {"a": torch.tensor([1.0, 2.0])})
    group_attrs = "zarr.json" if zarr_format == 3 else ".zattrs"  # the published state
    failed = _fail_once(monkeypatch, fs, lambda key: key == group_attrs)
    with pytest.raises(StoreError, match="injected failure"):
        fs.write([3, 4, 5], {"a": torch.ones(3), "c": torch.ones(3)})
    assert failed == [group_attrs]
    assert _stored(path) == {"a": 2, "ids": 2}  # no longer arrays, no new feature "c"
    assert fs.version == 1 and fs.features == ("a",)
    fs.write([3], {"c": torch.tensor([7.0])})  # a retry succeeds
    assert fs.read([1, 3])["c"].tolist() == [0.0, 7.0]
    assert _stored(path) == {"a": 3, "c": 3, "ids": 3}


def test_a_v2_resize_failing_after_its_zarray_shrinks_back_by_the_stored_shape(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(tmp_path / "fs")
    fs = FeatureStore(path, mode="w", zarr_format=2)
    fs.write([1, 2], {"a": torch.tensor([1.0, 2.0]), "b": torch.tensor([1, 2])})
    # a/.zarray holds the new shape, a/.zattrs fails: the handle never learns the new shape
    failed = _fail_once(monkeypatch, fs, lambda key: key == "a/.zattrs")
    with pytest.raises(StoreError, match="injected failure"):
        fs.write([3, 4], {"a": torch.ones(2)})
    assert failed == ["a/.zattrs"]
    assert _stored(path) == {"a": 2, "b": 2, "ids": 2}
    fs.write([3], {"b": torch.tensor([3])})
    assert fs.read([3])["a"].tolist() == [0.0]  # nothing of the failed write leaks
    assert _stored(path) == {"a": 3, "b": 3, "ids": 3}


def test_a_v2_feature_failing_between_its_zarray_and_zattrs_is_replaced_on_retry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(tmp_path / "fs")
    fs = FeatureStore(path, mode="w", zarr_format=2)
    fs.write([1, 2], {"a": torch.tensor([1.0, 2.0])})
    local = fs.group.store
    written = lambda key: key == "c/.zattrs" and local.get("c/.zarray") is not None  # noqa: E731
    failed = _fail_once(monkeypatch, fs, written)
    with pytest.raises(StoreError, match="injected failure"):
        fs.write([1, 2], {"c": torch.tensor([5.0, 6.0])})
    assert failed == ["c/.zattrs"]
    assert _stored(path) == {"a": 2, "ids": 2}  # the half-made feature was removed
    fs.write([1, 2], {"c": torch.tensor([5.0, 6.0])})
    assert fs.read([1, 2])["c"].tolist() == [5.0, 6.0]


def test_a_v2_feature_killed_between_its_zarray_and_zattrs_is_replaced_on_retry(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "fs")
    FeatureStore(path, mode="w", zarr_format=2).write([1, 2], {"a": torch.tensor([1.0, 2.0])})
    child = f"""
import os, torch
import torchzarr.storage.local as local
from torchzarr.features import FeatureStore
set_ = local.LocalStore.set
def dies(self, key, value):
    if key == "c/.zattrs" and os.path.exists({path!r} + "/c/.zarray"):
        os._exit(9)  # killed right after c/.zarray was written
    return set_(self, key, value)
local.LocalStore.set = dies
FeatureStore({path!r}, mode="r+").write([1, 2], {{"c": torch.tensor([5.0, 6.0])}})
"""
    assert subprocess.run([sys.executable, "-c", child], timeout=120).returncode == 9
    assert "c" in tz.open_group(path, mode="r", use_consolidated=False)  # the leftover
    fs = FeatureStore(path, mode="r+")
    assert fs.features == ("a",)
    fs.write([1, 2], {"c": torch.tensor([7.0, 8.0])})
    assert fs.read([1, 2])["c"].tolist() == [7.0, 8.0]
    fs.create_feature("d", torch.float32)  # creating one explicitly works alike


def test_a_v2_feature_refused_at_creation_leaves_no_stray_zattrs(tmp_path: Path) -> None:
    fs = FeatureStore(str(tmp_path / "fs"), mode="w", zarr_format=2)
    with pytest.raises(tz.errors.MetadataError, match="feature 'small': fill_value 300"):
        fs.create_feature("small", torch.uint8, fill_value=300)
    assert list(fs.group.store.list_prefix("small/")) == []


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_rows_another_handle_left_past_the_published_count_never_leak(
    tmp_path: Path, zarr_format: int
) -> None:
    path = str(tmp_path / "fs")
    fs = FeatureStore(path, mode="w", zarr_format=zarr_format)
    fs.write([1, 2], {"a": torch.tensor([1.0, 2.0]), "b": torch.tensor([1, 2])})
    # a writer killed in another process: "a" grown and filled, nothing published; this
    # instance's handle of "a" still has 2 rows
    killed = tz.open_group(path, mode="r+", use_consolidated=False)["a"]
    killed.resize(4)
    killed[2:4] = torch.tensor([99.0, 99.0])
    assert fs.array("a").shape == (2,)
    fs.write([3], {"b": torch.tensor([3])})
    assert fs.read([3])["a"].tolist() == [0.0]  # the fill value, not the killed write's row
    assert _stored(path) == {"a": 3, "b": 3, "ids": 3}


def _lone_marker(path: str, name: str, store_id: object) -> None:
    """What a v2 write killed right after writing feature ``name``'s marker leaves."""
    marker = {FEATURE_ATTRIBUTE: store_id, "_ARRAY_DIMENSIONS": ["ids"]}
    Path(path, name).mkdir()
    Path(path, name, ".zattrs").write_text(json.dumps(marker))


@pytest.mark.parametrize("call", ["write", "create_feature"])
def test_lone_v2_markers_a_killed_write_left_are_cleared_by_the_next_write(
    tmp_path: Path, call: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(tmp_path / "fs")
    FeatureStore(path, mode="w", zarr_format=2).write([1, 2], {"a": torch.tensor([1.0, 2.0])})
    store_id = tz.open_group(path, mode="r").attrs["feature_store"]["store_id"]
    _lone_marker(path, "c", store_id)
    _lone_marker(path, "other", "another store's id")
    monkeypatch.setattr(marks, "_CLEARED", set())  # the next write comes from a new process
    fs = FeatureStore(path, mode="r+")
    if call == "write":
        fs.write([3], {"a": torch.tensor([3.0])})
    else:
        fs.create_feature("d", torch.int8)
    assert not Path(path, "c").exists()  # zarr-python and xarray no longer warn about it
    assert Path(path, "other", ".zattrs").exists()  # not this store's marker: kept
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert "c" not in zarr.open_group(path, mode="r").group_keys()
    assert not [w for w in caught if "Object at c " in str(w.message)]  # "not recognized"
    created = tz.open_array(path, path="c", mode="w-", shape=(2,), dtype="f4", zarr_format=2)
    assert created.shape == (2,)  # the name is free again


def test_a_lone_v2_marker_is_written_over_by_its_feature_and_other_zattrs_refused(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "fs")
    fs = FeatureStore(path, mode="w", zarr_format=2)
    fs.write([1, 2], {"a": torch.tensor([1.0, 2.0])})
    _lone_marker(path, "c", fs.group.attrs["feature_store"]["store_id"])
    fs.write([1, 2], {"c": torch.tensor([5.0, 6.0])})
    assert fs.read([1, 2])["c"].tolist() == [5.0, 6.0]
    Path(path, "u").mkdir()
    Path(path, "u", ".zattrs").write_text('{"mine": 1}')  # attributes of no node, not ours
    with pytest.raises(NodeExistsError, match=r"'u/\.zattrs' .* holds attributes of no array"):
        fs.write([1, 2], {"u": torch.tensor([5.0, 6.0])})
    assert json.loads(Path(path, "u", ".zattrs").read_text()) == {"mine": 1}
    assert fs.features == ("a", "c")


class _Counting(ForwardingStore):
    """A store recording the keys each read asks for."""

    def __init__(self, inner: tz.MemoryStore) -> None:
        super().__init__(inner)
        self.read: list[str] = []

    def _call(self, method: str, keys: Sequence[str], *args: object) -> object:
        if method.startswith("get") or method == "exists":
            self.read.extend(keys)
        return super()._call(method, keys, *args)


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_an_overwrite_only_write_reads_no_array_metadata(zarr_format: int) -> None:
    """Stored shapes matter where rows are added (the tests above); a write that adds none
    reads no array's metadata again: no resize, no leftover rows to reset."""
    store = _Counting(tz.MemoryStore())
    fs = FeatureStore(store, mode="w", zarr_format=zarr_format)
    fs.write([1, 2, 3], {"a": torch.ones(3, 2), "b": torch.ones(3)})
    metadata = ("zarr.json", ".zarray", ".zattrs")
    store.read.clear()
    fs.write([3, 1], {"a": torch.zeros(2, 2), "b": torch.zeros(2)})
    arrays = [key for key in store.read if "/" in key and key.endswith(metadata)]
    assert arrays == []  # before: each array's metadata, from set_rows' stored shape
    assert fs.read([1, 2])["b"].tolist() == [0.0, 1.0]
    store.read.clear()
    fs.array("a").resize(3, 2)  # what one resize of it reads
    resize = len([key for key in store.read if key.endswith(metadata)])
    store.read.clear()
    fs.write([4], {"a": torch.zeros(1, 2), "b": torch.zeros(1)})  # appends
    read_a = [key for key in store.read if key.startswith("a/") and key.endswith(metadata)]
    assert 0 < len(read_a) <= resize  # a feature the write fills: its resize reads it
