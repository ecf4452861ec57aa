"""Copies that from_array makes of what xarray wrote open in xarray with the same values."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

import torchzarr as tz

xr = pytest.importorskip("xarray")

pytestmark = [
    pytest.mark.interop,
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::RuntimeWarning"),
]

PACKED = {"dtype": "int16", "scale_factor": 0.1, "add_offset": 1.0, "_FillValue": -999}


def test_copy_of_a_cf_packed_zarr_python_variable_decodes_as_the_source(tmp_path):
    source = xr.Dataset({"temp": (("t",), np.array([1.5, np.nan, 3.0]))})
    source.to_zarr(tmp_path / "src", mode="w", zarr_format=2, encoding={"temp": PACKED})
    tz.open_group(tmp_path / "dst", mode="w", zarr_format=2)
    variable = zarr.open_group(tmp_path / "src", mode="r")["temp"]
    tz.from_array(tmp_path / "dst" / "temp", data=variable)
    copied = xr.open_zarr(tmp_path / "dst", consolidated=False)
    assert copied["temp"].dims == ("t",)
    np.testing.assert_allclose(copied["temp"].values, source["temp"].values)


def test_a_0d_variable_converted_from_v3_to_v2_opens_in_xarray(tmp_path):
    source = xr.Dataset({"v": (("t",), np.arange(3.0)), "scale": ((), 2.5)})
    source.to_zarr(tmp_path / "src", mode="w", zarr_format=3)
    tz.open_group(tmp_path / "dst", mode="w", zarr_format=2)
    group = tz.open_group(tmp_path / "src", mode="r")
    for name in group:
        tz.from_array(tmp_path / "dst" / name, data=group[name], zarr_format=2, fill_value=None)
    copied = xr.open_zarr(tmp_path / "dst", consolidated=False)
    assert float(copied["scale"]) == 2.5
    np.testing.assert_array_equal(copied["v"].values, source["v"].values)
