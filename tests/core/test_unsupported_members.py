"""Groups holding arrays of dtypes torchzarr cannot hold (datetimes, strings), as xarray
writes them: listed, skipped by arrays() and datasets, kept by consolidation, and refused
by name when opened."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import zarr

import torchzarr as tz
from torchzarr.errors import UnsupportedDtypeError


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
