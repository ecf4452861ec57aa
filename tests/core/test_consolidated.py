"""Consolidated metadata: written as zarr-python does, read back in one request."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import zarr

import torchzarr as tz
from torchzarr.errors import GroupNotFoundError
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


def test_writers_ignore_consolidated_by_default(tmp_path):
    root = _hierarchy(tmp_path, 3)
    tz.consolidate_metadata(tmp_path)
    root["run0/metrics/loss"].resize(8)
    # a writer sees the truth; a reader of stale consolidated metadata sees what was consolidated
    assert tz.open_group(tmp_path, mode="a")["run0/metrics/loss"].shape == (8,)
    assert tz.open_group(tmp_path, mode="r")["run0/metrics/loss"].shape == (4,)
    assert tz.open_group(tmp_path, mode="r", use_consolidated=False)["run0/metrics/loss"].shape == (
        8,
    )
    tz.consolidate_metadata(tmp_path)
    assert tz.open_group(tmp_path, mode="r")["run0/metrics/loss"].shape == (8,)


def test_missing_consolidated_metadata_when_required():
    store = tz.MemoryStore()
    tz.open_group(store, mode="w")
    with pytest.raises(GroupNotFoundError, match="consolidated"):
        tz.open_group(store, mode="r", use_consolidated=True)
    assert isinstance(tz.open_group(store, mode="r"), tz.Group)
    with pytest.raises(GroupNotFoundError):
        tz.consolidate_metadata(tz.MemoryStore())
