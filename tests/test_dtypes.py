"""The dtype table: names, v2 typestrs, numpy and torch, and refusals."""

from __future__ import annotations

import json
import re

import ml_dtypes
import numpy as np
import pytest
import torch

import torchzarr as tz
from torchzarr.dtypes import all_data_types, data_type, parse_v2_dtype, parse_v3_dtype, v2_typestr
from torchzarr.errors import UnsupportedDtypeError
from torchzarr.tensors import torch_dtype


@pytest.mark.parametrize("dt", all_data_types(), ids=lambda d: d.name)
def test_every_row_maps_to_torch_and_back(dt):
    assert data_type(torch_dtype(dt)) is dt
    assert data_type(dt.name) is dt
    if dt.v3_name:
        assert parse_v3_dtype(dt.v3_name) is dt


@pytest.mark.parametrize(
    "typestr,name,order",
    [
        ("|b1", "bool", "|"),
        ("<i8", "int64", "<"),
        (">u2", "uint16", ">"),
        ("<f2", "float16", "<"),
        (">c16", "complex128", ">"),
        ("|u1", "uint8", "|"),
        ("bfloat16", "bfloat16", "<"),
    ],
)
def test_v2_typestrs(typestr, name, order):
    dt, got_order = parse_v2_dtype(typestr)
    assert (dt.name, got_order) == (name, order)


def test_v2_typestr_builds_both_orders():
    assert v2_typestr(data_type("float32"), ">") == ">f4"
    assert v2_typestr(data_type("uint8"), ">") == "|u1"
    # tensorstore's v2 name: what its arrays hold (new torchzarr arrays store raw bits)
    assert v2_typestr(data_type("float8_e4m3fn")) == "float8_e4m3fn"
    assert parse_v2_dtype("float8_e5m2") == (data_type("float8_e5m2"), "|")


@pytest.mark.parametrize("bad", ["<U4", "|S8", "<M8[ns]", "<m8[s]", "|O", [["a", "<i4"]], 5])
def test_strings_datetimes_structured_refused_naming_dtype(bad):
    with pytest.raises(UnsupportedDtypeError) as info:
        parse_v2_dtype(bad)
    assert str(bad)[:3] in str(info.value) or repr(bad)[:5] in str(info.value)
    assert isinstance(info.value, TypeError)


@pytest.mark.parametrize("bad", ["string", "datetime64", "r16", None])
def test_unknown_v3_type_refused(bad):
    with pytest.raises(UnsupportedDtypeError, match=repr(bad)[:6]):
        parse_v3_dtype(bad)


def test_numpy_and_ml_dtypes_inputs():
    assert data_type(np.dtype(">f8")).name == "float64"
    assert data_type(np.float32).name == "float32"
    assert data_type(np.dtype(ml_dtypes.bfloat16)).name == "bfloat16"
    assert data_type(torch.half).name == "float16"
    with pytest.raises(UnsupportedDtypeError):
        data_type(np.dtype("U3"))
    with pytest.raises(UnsupportedDtypeError):
        data_type(object())


@pytest.mark.parametrize("name", ["float", "int", "double", "half", "long", "short", "uint"])
def test_names_as_text_mean_what_numpy_and_zarr_python_take_them_to_mean(name):
    assert data_type(name).storage == np.dtype(name)  # "float" is float64, "int" int64
    made = tz.create_array("memory://", shape=(1,), dtype=name)
    assert made.dtype == torch.from_numpy(np.zeros(1, np.dtype(name))).dtype


def test_torch_short_names_keep_torch_meaning():
    assert data_type(torch.float).name == "float32" and data_type(torch.int).name == "int32"
    assert data_type(torch.cfloat).name == "complex64" and data_type(torch.long).name == "int64"


def test_require_array_matches_a_zarr_python_array_made_with_the_same_text_dtype(tmp_path):
    import zarr

    zarr.open_group(tmp_path, mode="w").create_array("x", shape=(3,), dtype="float")
    found = tz.open_group(tmp_path, mode="a").require_array("x", shape=(3,), dtype="float")
    assert found.dtype == torch.float64


def test_reinterpreted_types_store_unsigned_bits():
    bf = data_type("bfloat16")
    assert bf.is_reinterpreted and bf.storage == np.uint16 and bf.itemsize == 2
    assert not data_type("float32").is_reinterpreted


@pytest.mark.parametrize(
    ("dtype", "ints"), [(torch.bfloat16, np.uint16), (torch.float8_e4m3fn, np.uint8)]
)
def test_integers_of_the_storage_type_are_numbers_in_bfloat16_and_float8_arrays(dtype, ints):
    import torchzarr as tz

    values = np.array([1, 2, 3], dtype=ints)  # uint8 images, uint16 tokens: numbers, not bits
    arr = tz.create_array("memory://", shape=(3,), chunks=(3,), dtype=dtype)
    arr[:] = values
    assert arr[:].tolist() == [1.0, 2.0, 3.0]
    arr[0] = ints(5)
    assert arr[:].tolist() == [5.0, 2.0, 3.0]
    made = tz.create_array("memory://", data=values, dtype=dtype, chunks=(2,))
    assert made[:].tolist() == [1.0, 2.0, 3.0]
    made.append(values)
    assert made[:].tolist() == [1.0, 2.0, 3.0] * 2
    filled = tz.create_array("memory://", shape=(2,), dtype=dtype, fill_value=ints(1))
    assert filled.fill_value == 1.0 and filled[:].tolist() == [1.0, 1.0]
    kept = tz.create_array("memory://", data=torch.tensor([1.5, -2.0], dtype=dtype))
    assert kept[:].tolist() == [1.5, -2.0]  # tensors of the dtype: their bits, unchanged


def test_ml_dtypes_arrays_write_into_arrays_of_ordinary_types():
    import torchzarr as tz

    values = np.array([1.5, -2.0], dtype=ml_dtypes.bfloat16)  # as JAX hands them out
    for dtype, expected in (("float32", [1.5, -2.0]), ("float64", [1.5, -2.0]), ("int32", [1, -2])):
        arr = tz.create_array("memory://", shape=(2,), chunks=(2,), dtype=dtype)
        arr[:] = values
        assert arr[:].tolist() == expected
    arr = tz.create_array("memory://", shape=(2,), chunks=(2,), dtype="float16")
    arr[:] = np.array([0.25, 3.0], dtype=ml_dtypes.float8_e4m3fn)
    assert arr[:].tolist() == [0.25, 3.0]


@pytest.mark.parametrize("bad", [",", "a1,,", "i4,(", "<i4,<i4", "not a dtype"])
def test_malformed_v2_typestrs_are_unsupported_naming_the_dtype(bad):
    with pytest.raises(UnsupportedDtypeError, match=f"unsupported dtype {re.escape(repr(bad))}"):
        parse_v2_dtype(bad)  # not numpy's SyntaxError, ValueError or TypeError


@pytest.mark.parametrize("bad", [",", "a1,,", "i4,("])
def test_a_group_with_a_malformed_v2_dtype_member_still_lists_its_other_members(tmp_path, bad):
    import torchzarr as tz

    group = tz.create_group(tmp_path, zarr_format=2)
    group.create_array("good", shape=(2,), dtype="int8")
    (tmp_path / "bad").mkdir()
    zarray = {"zarr_format": 2, "shape": [2], "chunks": [2], "dtype": bad, "fill_value": None}
    zarray |= {"order": "C", "compressor": None, "filters": None}
    (tmp_path / "bad" / ".zarray").write_text(json.dumps(zarray))
    root = tz.open_group(tmp_path)
    assert [name for name, _ in root.members()] == ["good"]
    assert f"bad [A] unsupported dtype {bad}" in root.tree() and "good [A]" in root.tree()
    assert (root.info.arrays, root.info.unsupported) == (("good",), ("bad",))
    with pytest.raises(UnsupportedDtypeError, match=re.escape(repr(bad))):
        tz.open_array(tmp_path / "bad")
    tz.consolidate_metadata(tmp_path)
    assert "good" in tz.open_group(tmp_path, use_consolidated=True)
