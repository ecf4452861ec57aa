"""xarray and dask open what torchzarr writes, and torchzarr reads what xarray writes."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import torchzarr as tz

xr = pytest.importorskip("xarray")
da = pytest.importorskip("dask.array")

pytestmark = [
    pytest.mark.interop,
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::RuntimeWarning"),
]


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_xarray_and_dask_open_our_groups(tmp_path, zarr_format):
    root = tz.open_group(tmp_path / "g", mode="w", zarr_format=zarr_format)
    values = torch.arange(24.0).reshape(4, 6)
    root.create_array("x", data=values, chunks=(2, 3), dimension_names=["time", "channel"])
    root.create_array("time", data=torch.arange(4) * 10, dimension_names=["time"])
    root.attrs["title"] = "demo"
    tz.consolidate_metadata(tmp_path / "g")
    # v2 arrays get fill_value null unless given one: xarray would read a fill value as CF's
    # _FillValue and show the 0 of "time" as NaN (and the ints as floats)
    ds = xr.open_zarr(tmp_path / "g")
    assert ds["x"].dims == ("time", "channel") and ds.attrs == {"title": "demo"}
    assert ds["time"].values.tolist() == [0, 10, 20, 30]
    np.testing.assert_array_equal(ds["x"].sel(time=20).values, values[2].numpy())
    arr = da.from_zarr(str(tmp_path / "g"), component="x")
    assert arr.chunks == ((2, 2), (3, 3))
    np.testing.assert_array_equal(arr.compute(), values.numpy())


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_dimension_names_round_trip_in_both_formats(tmp_path, zarr_format):
    arr = tz.create_array(
        tmp_path / "a",
        shape=(2, 3),
        dtype="int8",
        zarr_format=zarr_format,
        dimension_names=["y", "x"],
    )
    assert arr.dimension_names == ("y", "x")
    assert tz.open_array(tmp_path / "a").dimension_names == ("y", "x")
    if zarr_format == 2:  # xarray's attribute: a name for every axis
        assert arr.attrs["_ARRAY_DIMENSIONS"] == ["y", "x"]
        with pytest.raises(tz.errors.MetadataError, match="_ARRAY_DIMENSIONS"):
            tz.create_array(
                "memory://", shape=(2,), dtype="int8", zarr_format=2, dimension_names=[None]
            )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"attributes": {"_ARRAY_DIMENSIONS": ["y", "x"]}}, "one str per axis"),
        ({"attributes": {"_ARRAY_DIMENSIONS": "y"}}, "one str per axis"),
        ({"attributes": {"_ARRAY_DIMENSIONS": ["q"]}, "dimension_names": ["y"]}, "differ"),
    ],
)
def test_a_v2_array_is_not_created_with_axis_names_xarray_cannot_read(kwargs, message):
    with pytest.raises(tz.errors.MetadataError, match=message):
        tz.create_array("memory://", shape=(3,), dtype="int8", zarr_format=2, **kwargs)
    same = {"attributes": {"_ARRAY_DIMENSIONS": ["y"]}, "dimension_names": ["y"]}
    assert tz.create_array(
        "memory://", shape=(3,), dtype="int8", zarr_format=2, **same
    ).dimension_names == ("y",)


@pytest.mark.parametrize("bad", [["y"], "y", ["y", 1], None])
@pytest.mark.parametrize("how", ["setitem", "update", "put", "update_attributes"])
def test_attribute_changes_keep_a_v2_arrays_axis_names_readable_by_xarray(bad, how):
    arr = tz.create_array(
        "memory://", shape=(2, 3), dtype="int8", zarr_format=2, dimension_names=["y", "x"]
    )
    change = {
        "setitem": lambda: arr.attrs.__setitem__("_ARRAY_DIMENSIONS", bad),
        "update": lambda: arr.attrs.update(_ARRAY_DIMENSIONS=bad, units="m"),
        "put": lambda: arr.attrs.put({"_ARRAY_DIMENSIONS": bad}),
        "update_attributes": lambda: arr.update_attributes({"_ARRAY_DIMENSIONS": bad}),
    }[how]
    with pytest.raises(tz.errors.MetadataError, match=r"_ARRAY_DIMENSIONS .* of array /"):
        change()
    reopened = tz.open_array(arr.store)
    assert reopened.dimension_names == ("y", "x") and "units" not in reopened.attrs
    arr.attrs["_ARRAY_DIMENSIONS"] = ["row", "col"]  # a rename is fine
    assert tz.open_array(arr.store).dimension_names == ("row", "col")
    del arr.attrs["_ARRAY_DIMENSIONS"]  # as is dropping the names
    assert tz.open_array(arr.store).dimension_names is None


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_we_read_what_xarray_writes(tmp_path, zarr_format):
    data = xr.Dataset(
        {"v": (("a", "b"), np.arange(12.0).reshape(3, 4))}, coords={"a": [10, 20, 30]}
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data.to_zarr(tmp_path / "x", zarr_format=zarr_format, mode="w")
    root = tz.open_group(tmp_path / "x")
    assert sorted(root) == ["a", "v"]
    assert root["v"].dimension_names == ("a", "b")
    np.testing.assert_array_equal(root["v"][:].numpy(), data["v"].values)
    assert root["a"][:].tolist() == [10, 20, 30]


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_xarray_opens_a_feature_store(tmp_path, zarr_format):
    fs = tz.FeatureStore(tmp_path / "fs", mode="w", zarr_format=zarr_format)
    fs.write([5, 9], {"emb": torch.ones(2, 3)})
    ds = xr.open_zarr(tmp_path / "fs", consolidated=False)
    assert ds["emb"].dims == ("ids", "emb_1")
    assert ds["ids"].values.tolist() == [5, 9] and ds["ids"].dtype == np.int64
    np.testing.assert_array_equal(ds["emb"].values, np.ones((2, 3), np.float32))


def test_from_array_takes_dask_and_xarray_arrays_with_their_axis_names():
    lazy = da.arange(100, chunks=30).reshape(10, 10)
    arr = tz.from_array("memory://", data=lazy)
    assert arr.dimension_names is None and int(arr[:].sum()) == int(lazy.sum().compute())
    labelled = xr.DataArray(np.arange(20.0).reshape(4, 5), dims=("time", "x"))
    arr = tz.from_array("memory://", data=labelled, chunks=(2, 5))
    assert arr.dimension_names == ("time", "x") and arr.chunks == (2, 5)
    np.testing.assert_array_equal(arr[:].numpy(), labelled.values)


def test_from_array_of_a_dask_array_of_unknown_shape_says_so():
    values = da.arange(10, chunks=5)
    masked = values[values > 5]  # NaN chunk sizes until computed
    with pytest.raises(tz.errors.InvalidArgumentError, match=r"unknown shape \(nan,\)"):
        tz.from_array("memory://", data=masked)
    copy = tz.from_array("memory://", data=masked.compute_chunk_sizes())
    assert copy[:].tolist() == [6, 7, 8, 9]
