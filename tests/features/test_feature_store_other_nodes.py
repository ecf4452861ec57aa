"""Nodes sharing a feature store's group that are not its features are never deleted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import torchzarr as tz
from torchzarr.core.array import Array
from torchzarr.errors import NodeExistsError
from torchzarr.features import FeatureStore, upsert
from torchzarr.features.layout import FEATURE_ATTRIBUTE

zarr = pytest.importorskip("zarr")


def _root_with_neighbours(path: str, zarr_format: int) -> FeatureStore:
    """A store holding a nested feature store ``items`` and a user's arrays ``vocab``
    (2-d) and ``score`` (1-d along ``ids``, as xarray would add one)."""
    root = FeatureStore(path, mode="w", zarr_format=zarr_format)
    root.write([1], {"x": [1.0]})
    items = FeatureStore(path, mode="a", path="items", zarr_format=zarr_format)
    items.write(torch.arange(10), {"e": torch.ones(10, 2)})
    group = tz.open_group(path, mode="r+", use_consolidated=False)
    group.create_array("vocab", data=torch.arange(6).reshape(3, 2))
    group.create_array("score", data=torch.ones(1), dimension_names=["ids"])
    return root


def _neighbours_intact(path: str) -> None:
    assert len(FeatureStore(path, mode="r", path="items")) == 10
    group = zarr.open_group(path, mode="r")
    assert group["vocab"][:].tolist() == [[0, 1], [2, 3], [4, 5]]
    assert group["score"][:].tolist() == [1.0]


@pytest.mark.parametrize("zarr_format", [2, 3])
@pytest.mark.parametrize("name", ["items", "vocab", "score"])
def test_a_new_feature_named_like_another_node_is_refused_deleting_nothing(
    tmp_path: Path, zarr_format: int, name: str
) -> None:
    path = str(tmp_path / "fs")
    root = _root_with_neighbours(path, zarr_format)
    with pytest.raises(NodeExistsError, match=f"node '{name}' .*not a feature of this"):
        root.write([2], {name: [5.0]})
    with pytest.raises(NodeExistsError, match=f"node '{name}' .*not a feature of this"):
        root.create_feature(name, "float32")
    _neighbours_intact(path)
    assert len(root) == 1 and root.features == ("x",)
    assert root.array("x").shape[0] == 1  # the failed write shrank back


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_a_failed_write_deletes_only_the_features_it_created(
    tmp_path: Path, zarr_format: int
) -> None:
    path = str(tmp_path / "fs")
    root = _root_with_neighbours(path, zarr_format)
    with pytest.raises(NodeExistsError, match="'vocab'"):
        root.write([2], {"new": [1.0], "vocab": [5.0]})  # "new" is made, then "vocab" refused
    _neighbours_intact(path)
    assert "new" not in tz.open_group(path, mode="r", use_consolidated=False)


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_the_leftover_of_a_write_that_never_published_is_replaced(
    tmp_path: Path, zarr_format: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(tmp_path / "fs")
    fs = FeatureStore(path, mode="w", zarr_format=zarr_format)
    fs.write([1], {"x": [1.0]})

    def dies(arr: Array, rows: np.ndarray, data: torch.Tensor) -> None:
        raise OSError("killed")

    monkeypatch.setattr(upsert, "write_rows", dies)
    monkeypatch.setattr(upsert, "_shrink_back", lambda *args: None)  # as if killed
    with pytest.raises(OSError, match="killed"):
        fs.write([2, 3], {"left": torch.ones(2, 3)})
    monkeypatch.undo()
    left = tz.open_group(path, mode="r", use_consolidated=False)["left"]
    assert left.shape == (3, 3) and left.attrs[FEATURE_ATTRIBUTE] is not None
    fs.write([4], {"left": [7.0]})  # a new feature of that name: the leftover goes
    assert fs.read([1, 4])["left"].tolist() == [0.0, 7.0]
    assert FeatureStore(path, mode="r").array("left").shape == (2,)


@pytest.mark.parametrize("when", ["as its marker lands", "right after its marker"])
def test_a_v2_feature_made_meanwhile_by_another_writer_is_never_deleted(
    tmp_path: Path, when: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(tmp_path / "fs")
    fs = FeatureStore(path, mode="w", zarr_format=2)
    fs.write([1, 2, 3], {"a": torch.ones(3)})
    store = fs.group.store
    set_, exists = store.set, store.exists
    made: list[bool] = []

    def another_writer_makes_c() -> None:  # zarr-python, in another process, say
        if not made:
            made.append(True)
            user = zarr.open_group(path, mode="a", zarr_format=2)
            array = user.create_array("c", shape=(3,), dtype="f4", attributes={"units": "m"})
            array[:] = [1, 2, 3]

    def set_first(key: str, value: object) -> None:
        if key == "c/.zattrs" and when == "as its marker lands":
            another_writer_makes_c()  # lands first: the marker overwrites its .zattrs
        set_(key, value)

    def exists_after(key: str) -> bool:
        marked = store.get("c/.zattrs") is not None
        if key == "c/.zgroup" and when == "right after its marker" and marked:
            another_writer_makes_c()  # after the marker's checks: create_array finds it
        return exists(key)

    monkeypatch.setattr(store, "set", set_first)
    monkeypatch.setattr(store, "exists", exists_after)
    with pytest.raises(NodeExistsError, match=r"another writer created node 'c'.*was kept"):
        fs.write([1, 2, 3], {"c": torch.zeros(3)})
    monkeypatch.undo()
    assert made
    user = zarr.open_array(path, path="c", mode="r")
    assert user[:].tolist() == [1.0, 2.0, 3.0]
    assert FEATURE_ATTRIBUTE not in user.attrs  # not marked as a feature: never deleted
    if when == "right after its marker":
        assert dict(user.attrs) == {"units": "m"}  # its own .zattrs, landed after ours
    assert fs.features == ("a",) and fs.version == 1
    with pytest.raises(NodeExistsError, match=r"node 'c' .*not a feature of this"):
        fs.write([1, 2, 3], {"c": torch.zeros(3)})  # a retry does not take it over
    assert zarr.open_array(path, path="c", mode="r")[:].tolist() == [1.0, 2.0, 3.0]
