"""Copies that from_array makes of what xarray wrote open in xarray with the same values."""

from __future__ import annotations

import numpy as np
import pytest
import torch
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
        # xarray's `_FillValue` attribute (NaN) becomes the v2 fill value: no need to pass one
        tz.from_array(tmp_path / "dst" / name, data=group[name], zarr_format=2)
    copied = xr.open_zarr(tmp_path / "dst", consolidated=False)
    assert float(copied["scale"]) == 2.5
    np.testing.assert_array_equal(copied["v"].values, source["v"].values)


# xarray's missing-value marker: a v2 array's fill value, a v3 array's `_FillValue` attribute
NAN_BITS = "AAAAAAAA+H8="  # xarray's base64 of a float64 NaN
MISSING = np.array([1.0, np.nan, 3.0, 0.0])
MARKED = {
    "float": {"dtype": "float32", "_FillValue": -999.0},
    "packed": {"dtype": "int16", "scale_factor": 0.5, "_FillValue": -1},
}


def _convert(tmp_path, source_format, kind, reader, **kwargs):
    """xarray writes ``v`` as ``kind`` in ``source_format``; from_array copies it in the other."""
    encoding = dict(MARKED[kind])
    if source_format == 2 and kind == "float":
        del encoding["_FillValue"]  # xarray's default: the fill value NaN marks missing data
    source = xr.Dataset({"v": (("x",), MISSING)})
    source.to_zarr(tmp_path / "src", zarr_format=source_format, encoding={"v": encoding})
    opened = (tz.open_group if reader == "tz" else zarr.open_group)(tmp_path / "src", mode="r")
    dest_format = 5 - source_format
    tz.open_group(tmp_path / "dst", mode="w", zarr_format=dest_format)
    tz.from_array(tmp_path / "dst" / "v", data=opened["v"], zarr_format=dest_format, **kwargs)
    return tz.open_group(tmp_path / "dst", mode="r")["v"]


def _assert_xarray_reads_the_same(tmp_path):
    want = xr.open_zarr(tmp_path / "src", consolidated=False)["v"].values
    got = xr.open_zarr(tmp_path / "dst", consolidated=False)["v"].values
    np.testing.assert_array_equal(np.isnan(got), np.isnan(MISSING))
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("reader", ["tz", "zarr"])
@pytest.mark.parametrize("kind", ["float", "packed"])
def test_a_v3_variables_missing_marker_becomes_the_v2_copys_fill_value(tmp_path, kind, reader):
    copy = _convert(tmp_path, 3, kind, reader)
    assert "_FillValue" not in copy.attrs
    assert copy.fill_value == (-999.0 if kind == "float" else -1)
    _assert_xarray_reads_the_same(tmp_path)


@pytest.mark.parametrize("reader", ["tz", "zarr"])
@pytest.mark.parametrize("kind", ["float", "packed"])
def test_a_v2_variables_fill_value_becomes_the_v3_copys_marker(tmp_path, kind, reader):
    copy = _convert(tmp_path, 2, kind, reader)
    assert copy.attrs["_FillValue"] == (NAN_BITS if kind == "float" else -1)
    assert copy.fill_value == -1 if kind == "packed" else np.isnan(copy.fill_value)
    _assert_xarray_reads_the_same(tmp_path)


def test_a_fill_value_given_for_a_v2_copy_must_be_the_marker(tmp_path):
    with pytest.raises(tz.errors.InvalidArgumentError, match=r"/v.*fill_value 0.*-999\.0"):
        _convert(tmp_path, 3, "float", "tz", fill_value=0)
    with pytest.raises(tz.errors.InvalidArgumentError, match="fill_value None"):
        _convert(tmp_path / "none", 3, "float", "tz", fill_value=None)
    assert _convert(tmp_path / "same", 3, "float", "tz", fill_value="-999").fill_value == -999


def test_a_fill_attribute_xarray_would_not_decode_is_copied_as_stored(tmp_path):
    for name, marker in [("text", "not base64!"), ("short", "AAAA"), ("number", -999.0)]:
        source = tz.create_array(
            tmp_path / "src" / name,
            data=torch.tensor([1.0, 2.0]),
            fill_value=7.0,
            dimension_names=("x",),
            attributes={"_FillValue": marker},
        )
        copy = tz.from_array(tmp_path / "dst" / name, data=source, zarr_format=2)
        assert copy.attrs["_FillValue"] == marker and copy.fill_value == 7.0


@pytest.mark.parametrize("marker", [-9.0, float("nan")])
def test_a_plain_number_marker_is_encoded_for_a_v3_copy(tmp_path, marker):
    """xarray refuses a whole v3 group whose variable holds a raw float ``_FillValue``."""
    in_memory = xr.DataArray(np.array([1.0, -9.0, 3.0]), dims=("t",), attrs={"_FillValue": marker})
    tz.open_group(tmp_path / "v3", mode="w", zarr_format=3)
    tz.from_array(tmp_path / "v3", path="u", data=in_memory)
    tz.open_group(tmp_path / "v2", mode="w", zarr_format=2)
    v2 = tz.from_array(tmp_path / "v2", path="u", data=in_memory, zarr_format=2)
    tz.open_group(tmp_path / "v2to3", mode="w", zarr_format=3)
    tz.from_array(tmp_path / "v2to3", path="u", data=v2, zarr_format=3)
    # -9 marks a missing value; a NaN marker leaves -9 a value
    expected = [1.0, -9.0, 3.0] if np.isnan(marker) else [1.0, np.nan, 3.0]
    for name in ("v3", "v2", "v2to3"):
        got = xr.open_zarr(tmp_path / name, consolidated=False)["u"].values
        np.testing.assert_array_equal(got, expected)
    ints = xr.DataArray(np.array([1, -1], "int16"), dims=("t",), attrs={"_FillValue": -1})
    assert tz.from_array(tmp_path / "ints", data=ints).attrs["_FillValue"] == -1


def test_a_copy_in_the_same_format_keeps_fill_value_and_attributes(tmp_path):
    source = xr.Dataset({"v": (("x",), MISSING), "w": (("x",), MISSING)})
    source.to_zarr(tmp_path / "src3", zarr_format=3, encoding={"v": MARKED["float"]})
    source.to_zarr(tmp_path / "src2", zarr_format=2)
    for fmt in (3, 2):
        for name in ("v", "w"):
            original = tz.open_group(tmp_path / f"src{fmt}", mode="r")[name]
            copy = tz.from_array(tmp_path / f"dst{fmt}" / name, data=original)
            assert dict(copy.attrs) == dict(original.attrs)
            np.testing.assert_equal(copy.fill_value, original.fill_value)


def test_rechunk_to_v2_moves_the_marker_into_the_fill_value(tmp_path, capsys):
    from torchzarr.cli import main

    xr.Dataset({"v": (("x",), MISSING)}).to_zarr(
        tmp_path / "src", zarr_format=3, encoding={"v": MARKED["packed"]}
    )
    tz.open_group(tmp_path / "dst", mode="w", zarr_format=2)
    args = ["rechunk", str(tmp_path / "src"), str(tmp_path / "dst"), "--path", "v"]
    assert main([*args, "--zarr-format", "2"]) == 0
    capsys.readouterr()
    _assert_xarray_reads_the_same(tmp_path)
