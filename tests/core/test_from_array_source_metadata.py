"""from_array keeps a foreign source's metadata: zarr-python attributes, fill value, dimension
names and format; xarray attributes; and a 0-d array's empty v2 dimension attribute."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import torchzarr as tz
from torchzarr.cli import main

zarr = pytest.importorskip("zarr")

CF = {"scale_factor": 0.1, "add_offset": 1.0, "units": "K"}


def _zarr_python_array(zarr_format, **kwargs):
    z = zarr.create_array(
        zarr.storage.MemoryStore(),
        shape=(4, 3),
        chunks=(2, 3),
        dtype="i2",
        zarr_format=zarr_format,
        **kwargs,
    )
    z[:] = np.arange(12).reshape(4, 3)
    return z


def test_zarr_python_v3_source_keeps_attributes_fill_value_and_dimension_names():
    z = _zarr_python_array(3, fill_value=-999, dimension_names=["time", "x"], attributes=CF)
    copied = tz.from_array("memory://", data=z)
    assert copied.zarr_format == 3 and copied.fill_value == -999
    assert copied.dimension_names == ("time", "x") and dict(copied.attrs) == CF
    np.testing.assert_array_equal(copied[:].numpy(), z[:])


def test_zarr_python_v2_source_keeps_its_format_attributes_fill_and_xarray_dimensions():
    attributes = {**CF, "_ARRAY_DIMENSIONS": ["time", "x"]}
    z = _zarr_python_array(2, fill_value=-999, attributes=attributes)
    copied = tz.from_array("memory://", data=z)
    assert copied.zarr_format == 2 and copied.metadata.fill_value == -999
    assert copied.dimension_names == ("time", "x") and dict(copied.attrs) == attributes
    as_v3 = tz.from_array("memory://", data=z, zarr_format=3)
    assert as_v3.fill_value == -999 and as_v3.dimension_names == ("time", "x")
    # the v2 dimension attribute became dimension_names; the fill value, xarray's marker in
    # v2, became the _FillValue attribute xarray reads in v3
    assert dict(as_v3.attrs) == {**CF, "_FillValue": -999}


def test_zarr_python_v2_null_fill_stays_null_and_new_settings_win():
    z = _zarr_python_array(2, fill_value=None, attributes=CF)
    assert tz.from_array("memory://", data=z).metadata.fill_value is None
    chosen = tz.from_array("memory://", data=z, fill_value=7, attributes={"a": 1})
    assert chosen.metadata.fill_value == 7 and dict(chosen.attrs) == {"a": 1}


def test_xarray_dataarray_attributes_are_kept():
    xr = pytest.importorskip("xarray")
    labelled = xr.DataArray(np.arange(3.0), dims=("x",), attrs={"units": "K", "n": 2})
    copied = tz.from_array("memory://", data=labelled)
    assert dict(copied.attrs) == {"units": "K", "n": 2} and copied.dimension_names == ("x",)
    v2 = tz.from_array("memory://", data=labelled, zarr_format=2)
    assert dict(v2.attrs) == {"units": "K", "n": 2, "_ARRAY_DIMENSIONS": ["x"]}


def _stored_attributes(path):
    return json.loads((path / ".zattrs").read_text()) if (path / ".zattrs").exists() else {}


@pytest.mark.parametrize(
    "source",
    [
        lambda: tz.create_array("memory://", data=torch.tensor(2.5)),  # v3, no names
        lambda: torch.tensor(2.5),
        lambda: zarr.create_array(zarr.storage.MemoryStore(), shape=(), dtype="f8"),
    ],
)
def test_a_0d_array_written_as_v2_gets_empty_xarray_dimensions(tmp_path, source):
    tz.from_array(tmp_path / "kept", data=source(), zarr_format=2)
    assert _stored_attributes(tmp_path / "kept")["_ARRAY_DIMENSIONS"] == []
    tz.from_array(tmp_path / "none", data=source(), zarr_format=2, dimension_names=None)
    assert "_ARRAY_DIMENSIONS" not in _stored_attributes(tmp_path / "none")


def test_rechunk_to_v2_gives_a_0d_array_empty_xarray_dimensions(tmp_path, capsys):
    tz.create_array(tmp_path / "src.zarr", data=torch.tensor(2.5))
    args = ["rechunk", tmp_path / "src.zarr", tmp_path / "v2.zarr", "--zarr-format", "2"]
    assert main([str(a) for a in args]) == 0
    capsys.readouterr()
    assert _stored_attributes(tmp_path / "v2.zarr")["_ARRAY_DIMENSIONS"] == []
    assert tz.open_array(tmp_path / "v2.zarr")[...].item() == 2.5


class _ZarrLikeArray:
    """An array as zarr-python presents one, with a fill value its dtype cannot hold."""

    def __init__(self, fill_value):
        self.shape, self.dtype, self.chunks = (3,), np.dtype("int8"), (3,)
        self.fill_value, self.attrs = fill_value, {"units": "m"}
        self.metadata = type("Metadata", (), {"zarr_format": 3, "dimension_names": None})()

    def __getitem__(self, selection):
        return np.arange(3, dtype="int8")[selection]


_ZarrLikeArray.__module__ = "zarr.core.array"


def test_a_zarr_python_fill_value_the_dtype_cannot_hold_gives_the_default():
    assert tz.from_array("memory://", data=_ZarrLikeArray(-5)).fill_value == -5
    copied = tz.from_array("memory://", data=_ZarrLikeArray(300))
    assert copied.fill_value == 0 and dict(copied.attrs) == {"units": "m"}


def test_non_finite_attributes_of_a_stored_source_are_carried_over(tmp_path):
    # zarr-python writes NaN and infinities into attributes (a CF missing_value, say);
    # a copy keeps them as stored, while new attributes stay strict JSON
    non_finite = {"missing_value": float("nan"), "valid_max": float("inf"), "units": "K"}
    z = _zarr_python_array(3, attributes=non_finite)
    copied = tz.from_array(tmp_path / "copy", data=z)
    again = tz.open_array(tmp_path / "copy")
    for kept in (copied, again, tz.from_array("memory://", data=again)):
        attrs = dict(kept.attrs)
        assert np.isnan(attrs.pop("missing_value")) and attrs == {"valid_max": np.inf, "units": "K"}
    assert zarr.open_array(tmp_path / "copy").attrs["valid_max"] == np.inf
    with pytest.raises(tz.errors.AttributeValueError, match="missing_value"):
        tz.from_array("memory://", data=z, attributes={"missing_value": float("nan")})


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_a_zarr_python_handle_of_a_float8_array_copies_as_float8(tmp_path, zarr_format):
    source = tz.create_array(
        tmp_path / "src.zarr",
        shape=(3,),
        chunks=(2,),
        dtype=torch.float8_e4m3fn,
        zarr_format=zarr_format,
        fill_value=1.5,
    )
    source[:] = torch.tensor([1.5, -2.0, 0.25])
    handle = zarr.open_array(tmp_path / "src.zarr", mode="r")  # uint8 bits and an attribute
    copy = tz.from_array(tmp_path / "dst.zarr", data=handle)
    assert copy.dtype == torch.float8_e4m3fn
    assert copy[:].float().tolist() == [1.5, -2.0, 0.25]
    assert dict(copy.attrs) == {} and copy.fill_value == 1.5  # the fill's bits as its number


def test_an_xarray_view_of_a_raw_bits_array_copies_its_stored_values(tmp_path):
    xr = pytest.importorskip("xarray")
    group = tz.open_group(tmp_path / "g.zarr", mode="w", zarr_format=2)
    raw = group.create_array("x", shape=(3,), dtype=torch.float8_e4m3fn, dimension_names=["i"])
    raw[:] = torch.tensor([1.5, -2.0, 0.25])
    tz.consolidate_metadata(tmp_path / "g.zarr")
    view = xr.open_zarr(tmp_path / "g.zarr", zarr_format=2)["x"]  # uint8 bits, the attribute
    copy = tz.from_array("memory://", data=view)
    assert copy.dtype == torch.uint8  # copied as xarray shows it: the bits, unchanged
    assert copy[:].tolist() == raw[:].view(torch.uint8).tolist()
