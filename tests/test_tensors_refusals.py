"""Data torchzarr refuses to write rather than store wrong: numpy floats past an integer
range, tensors of dtypes it cannot hold, zero and negatives for float8_e8m0fnu."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import torchzarr as tz
from torchzarr.dtypes import data_type
from torchzarr.errors import UnsupportedDtypeError, ValueRangeError
from torchzarr.tensors import as_storage_array


def _stored_as_float(value, dtype: str) -> list[float]:
    bits = torch.from_numpy(as_storage_array(value, data_type(dtype)))
    return bits.view(getattr(torch, dtype)).float().tolist()


@pytest.mark.parametrize(
    ("value", "dtype"),
    [
        ([np.float64(1e16), 1], "uint8"),  # np.float64 is a float subclass: numpy wrapped it
        ([np.float64(2.0**70), 1], "uint8"),
        ([np.float64(-5.0), 2**60], "uint64"),
        ([np.float64(1e19), 2**60], "int64"),
        ([np.float32(1e16), 1], "uint8"),
        ([np.float64(-(2.0**63) * 4), 2**60], "int64"),
        ([np.int64(-1), 2**60], "uint64"),
        ([np.float64("nan"), 2**60], "int64"),
        ([np.float64("inf"), 2**70], "uint64"),
    ],
)
def test_numpy_floats_in_lists_past_the_integer_range_are_refused_not_wrapped(value, dtype):
    with pytest.raises(ValueRangeError, match=f"array of {dtype}"):
        as_storage_array(value, data_type(dtype))
    arr = tz.create_array("memory://", shape=(2,), dtype=dtype, chunks=(2,))
    with pytest.raises(ValueRangeError):
        arr[:] = value
    assert arr.nchunks_initialized == 0
    with pytest.raises(ValueRangeError):
        tz.create_array("memory://", data=value, dtype=dtype)


def test_numpy_floats_in_lists_in_range_still_write_exactly():
    assert as_storage_array([np.float64(3.0), 1], data_type("uint8")).tolist() == [3, 1]
    big = [np.float64(2.0**60), 2**60 + 1, np.float32(-2.5)]
    assert as_storage_array(big, data_type("int64")).tolist() == [2**60, 2**60 + 1, -2]
    assert as_storage_array([np.float64(2.0**63), 1], data_type("uint64")).tolist() == [2**63, 1]


def _unholdable_tensors():
    made = [torch.zeros(2, dtype=torch.uint8).view(torch.float4_e2m1fn_x2)]
    made += [torch.zeros(2, dtype=torch.uint8).view(torch.bits8)]
    made += [torch.zeros(2, dtype=torch.int16).view(torch.bits16)]
    made += [torch.empty(2, dtype=getattr(torch, name)) for name in ("int4", "uint1", "uint7")]
    return made


@pytest.mark.parametrize("target", ["float32", "uint8"])
def test_tensors_of_dtypes_torchzarr_cannot_hold_are_refused_naming_both_dtypes(target):
    arr = tz.create_array("memory://", shape=(2,), dtype=target, chunks=(2,))
    for tensor in _unholdable_tensors():
        with pytest.raises(UnsupportedDtypeError, match=rf"{tensor.dtype}.*array of {target}"):
            arr[:] = tensor
        with pytest.raises(UnsupportedDtypeError):  # as create_array refuses the dtype
            tz.create_array("memory://", shape=(2,), dtype=tensor.dtype)
    with warnings.catch_warnings():  # quantized tensors are deprecated in torch
        warnings.simplefilter("ignore")
        quantized = torch.quantize_per_tensor(torch.tensor([1.0, 2.0]), 0.1, 0, torch.quint8)
    with pytest.raises(UnsupportedDtypeError, match=rf"quantized .*quint8.*array of {target}"):
        arr[:] = quantized
    with warnings.catch_warnings():  # the nested tensor API warns that it is a prototype
        warnings.simplefilter("ignore")
        nested = torch.nested.nested_tensor([torch.ones(1), torch.ones(2)])
    jagged = torch.nested.nested_tensor([torch.ones(1), torch.ones(2)], layout=torch.jagged)
    for value in (nested, jagged):
        with pytest.raises(UnsupportedDtypeError, match=rf"nested .*array of {target}"):
            arr[:] = value
    assert arr.nchunks_initialized == 0


def test_tensors_of_dtypes_torch_casts_exactly_are_taken_though_arrays_cannot_hold_them():
    arr = tz.create_array("memory://", shape=(2,), dtype="complex64", chunks=(2,))
    with warnings.catch_warnings():  # complex32 is experimental in torch
        warnings.simplefilter("ignore")
        arr[:] = torch.tensor([1 + 2j, -3j]).to(torch.complex32)
    assert arr[:].tolist() == [1 + 2j, -3j]


E8M0_REFUSED = [
    -1.0,
    0.0,
    -0.0,
    0,
    [-1.0, -3.0],
    [2.0, 0.0],
    np.float64(-2.0),
    np.array([1.0, -0.0]),
    np.array(0.0),
    np.array([0, 4], dtype=np.uint8),
    torch.tensor([2.0, -1.0]),
    torch.tensor([-0.0, 1.0], dtype=torch.bfloat16),
    torch.tensor([0, 2], dtype=torch.uint8),
    torch.tensor([-2.0, 2.0]).to(torch.float8_e4m3fn),
]


@pytest.mark.parametrize("value", E8M0_REFUSED, ids=range(len(E8M0_REFUSED)))
def test_float8_e8m0_refuses_zero_and_negatives_naming_its_real_range(value):
    arr = tz.create_array(
        "memory://", shape=(2,), dtype="float8_e8m0fnu", chunks=(2,), fill_value=1.0
    )
    with pytest.raises(
        ValueRangeError, match=r"float8_e8m0fnu \(range 2\*\*-127 to 2\*\*127, positive only\)"
    ):
        arr[:] = value
    assert arr.nchunks_initialized == 0


def test_float8_e8m0_still_takes_positive_numbers_and_nan():
    for value in ([0.5, 4.0], np.array([0.5, 4.0]), torch.tensor([0.5, 4.0]), [2**100, 1]):
        assert _stored_as_float(value, "float8_e8m0fnu") == [float(v) for v in value]
    assert np.isnan(_stored_as_float([float("nan")], "float8_e8m0fnu")).all()
    with pytest.raises(ValueRangeError, match=r"1e\+39 .*range 2\*\*-127 to 2\*\*127"):
        as_storage_array([1.0, 1e39], data_type("float8_e8m0fnu"))


def test_errors_about_nan_and_non_numbers_name_the_problem_and_the_dtype():
    with pytest.raises(ValueRangeError, match="values holding NaN to an array of uint8") as err:
        as_storage_array([1.5, float("nan")], data_type("uint8"))
    assert "nan to nan" not in str(err.value)
    with pytest.raises(ValueRangeError, match="holding NaN to an array of int64"):
        as_storage_array([2**70, float("nan")], data_type("int64"))
    # a float dtype holds NaN: the number past its range is named
    with pytest.raises(ValueRangeError, match=r"values from 1\.0 to 1e\+300 .*float32"):
        as_storage_array([float("nan"), 1.0, 1e300], data_type("float32"))
    arr = tz.create_array("memory://", shape=(2,), dtype="float32", chunks=(2,))
    with pytest.raises(UnsupportedDtypeError, match=r"None is not a number.*array of float32"):
        arr[:] = None
    with pytest.raises(UnsupportedDtypeError, match="array of float64"):
        as_storage_array([None, 2**64], data_type("float64"))
