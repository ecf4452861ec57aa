"""A feature store is plain Zarr: zarr-python and tensorstore read what it writes."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from torchzarr.errors import MetadataError
from torchzarr.features import FeatureStore

zarr = pytest.importorskip("zarr")


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_zarr_python_reads_ids_and_features(tmp_path: Path, zarr_format: int) -> None:
    path = str(tmp_path / "fs")
    fs = FeatureStore(path, mode="w", zarr_format=zarr_format, chunk_bytes=128)
    emb = torch.randn(50, 4)
    fs.write(torch.arange(100, 150), {"emb": emb})
    fs.write([7, 120], {"emb": torch.zeros(2, 4)})
    root = zarr.open_group(path, mode="r")
    ids = root["ids"][:]
    assert ids.tolist() == [*range(100, 150), 7]
    stored = root["emb"][:]
    want = np.concatenate([emb.numpy(), np.zeros((1, 4), np.float32)])
    want[20] = 0.0  # id 120 was overwritten
    np.testing.assert_array_equal(stored, want)
    assert root.attrs["feature_store"]["num_rows"] == 51
    if zarr_format == 3:
        assert root["emb"].metadata.dimension_names == ("ids", "emb_1")


def test_tensorstore_reads_a_feature(tmp_path: Path) -> None:
    ts = pytest.importorskip("tensorstore")
    path = str(tmp_path / "fs")
    fs = FeatureStore(path, mode="w")
    fs.write([3, 1, 2], {"x": torch.tensor([[3, 3], [1, 1], [2, 2]], dtype=torch.int32)})
    arr = ts.open({"driver": "zarr3", "kvstore": {"driver": "file", "path": path + "/x"}}).result()
    np.testing.assert_array_equal(arr.read().result(), [[3, 3], [1, 1], [2, 2]])


def test_store_written_by_zarr_python_is_read_by_id(tmp_path: Path) -> None:
    path = str(tmp_path / "fs")
    FeatureStore(path, mode="w").write([10, 20], {"v": torch.tensor([1.0, 2.0])})
    root = zarr.open_group(path, mode="r+")
    root["v"][1] = 5.0  # another tool edits a row in place
    assert FeatureStore(path, mode="r").read([20, 10])["v"].tolist() == [5.0, 1.0]


@pytest.mark.parametrize(
    ("ids", "shown"),
    [
        (np.array([10, 20], dtype=np.int32), "dtype torch.int32 and shape (2,)"),
        (np.array([10, 20], dtype=np.uint8), "dtype torch.uint8 and shape (2,)"),
        (np.array([10, 20], dtype=np.uint64), "dtype torch.uint64 and shape (2,)"),
        (np.array([10.0, 20.0]), "dtype torch.float64 and shape (2,)"),
        (np.array([True, False]), "dtype torch.bool and shape (2,)"),
        (np.array([[10, 1], [20, 2]], dtype=np.int64), "dtype torch.int64 and shape (2, 2)"),
    ],
    ids=["int32", "uint8", "uint64", "float64", "bool", "2-d"],
)
def test_a_store_whose_ids_are_not_1d_int64_is_refused(
    tmp_path: Path, ids: np.ndarray, shown: str
) -> None:
    path = str(tmp_path / "fs.zarr")
    root = zarr.open_group(path, mode="w")  # made by another tool
    root.create_array("ids", data=ids)
    root.create_array("v", data=np.array([1.0, 2.0], dtype=np.float32))
    root.attrs["feature_store"] = {"format": 1, "num_rows": 2, "version": 1, "features": ["v"]}
    refused = rf"'ids' must be a 1-d int64 array, got {re.escape(shown)}"
    with pytest.raises(MetadataError, match=refused):  # its ids would wrap
        FeatureStore(path, mode="a").write([2**40 + 5], {"v": torch.tensor([9.0])})
    with pytest.raises(MetadataError, match=refused):
        FeatureStore(path, mode="r").read([10])
    assert zarr.open_group(path, mode="r")["ids"].shape == ids.shape  # nothing written
