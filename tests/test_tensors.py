"""numpy <-> torch conversions and allocation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import torchzarr as tz
from torchzarr import tensors
from torchzarr.dtypes import data_type
from torchzarr.errors import (
    ArgumentTypeError,
    InvalidArgumentError,
    ShapeMismatchError,
    UnsupportedDtypeError,
    ValueRangeError,
)
from torchzarr.tensors import (
    allocate,
    as_storage_array,
    cuda_available,
    storage_view,
    tensor_from_storage,
)


def test_storage_view_shares_memory():
    t = torch.zeros(4, dtype=torch.bfloat16)
    view = storage_view(t, data_type("bfloat16"))
    view[0] = 16320  # 1.5 in bfloat16
    assert t[0].item() == 1.5


def test_tensor_from_storage_copies_only_when_needed():
    native = np.arange(4, dtype=np.int32)
    assert tensor_from_storage(native, data_type("int32")).data_ptr() == native.ctypes.data
    frozen = np.arange(4, dtype=np.int32)
    frozen.flags.writeable = False
    assert tensor_from_storage(frozen, data_type("int32")).tolist() == [0, 1, 2, 3]
    big = np.arange(3, dtype=">i2")
    assert tensor_from_storage(big, data_type("int16")).tolist() == [0, 1, 2]


def test_as_storage_array_conversions():
    assert as_storage_array(torch.tensor([1.5]), data_type("bfloat16")).tolist() == [16320]
    assert as_storage_array(np.array([1.5, 2.0]), data_type("bfloat16")).dtype == np.uint16
    assert as_storage_array(2.9, data_type("int32")).item() == 2
    assert as_storage_array(torch.tensor([1, 2]), data_type("float64")).dtype == np.float64
    conj = torch.tensor([1 + 2j]).conj()
    assert as_storage_array(conj, data_type("complex64")).tolist() == [1 - 2j]
    neg = torch.tensor([1.0, 2.0])._neg_view()
    assert as_storage_array(neg, data_type("float32")).tolist() == [-1.0, -2.0]
    with pytest.raises(UnsupportedDtypeError, match="complex"):
        as_storage_array(torch.tensor([1j]), data_type("float32"))
    with pytest.raises(UnsupportedDtypeError, match="complex"):
        as_storage_array(np.array([1j]), data_type("int8"))
    with pytest.raises(UnsupportedDtypeError):
        as_storage_array(np.array(["a"]), data_type("int8"))
    with pytest.raises(UnsupportedDtypeError):
        as_storage_array(["a", 1], data_type("int8"))


@pytest.mark.parametrize(
    ("value", "dtype", "shown"),
    [
        (2**40, "int32", "1099511627776"),
        (2**70, "int64", "1180591620717411303424"),
        (-1, "uint8", "-1"),
        (300, "uint8", "300"),
        ([1, 2**31], "int32", "values from 1 to 2147483648"),
        ([[0], [-129]], "int8", "values from -129 to 0"),
        (float("nan"), "int32", "nan"),
        (float("-inf"), "int64", "-inf"),
        (1e20, "int64", "1e\\+20"),
        (-1.5, "uint8", "-1.5"),
        ([0.5, 255.5, 256.0], "uint8", "values from 0.5 to 256.0"),
        (2.0**63, "int64", "9.223372036854776e\\+18"),  # iinfo.max as a float is 2**63
        ([1.0, 2.0**63], "int64", "values from 1.0 to 9.223372036854776e\\+18"),
        (2.0**64, "uint64", "1.8446744073709552e\\+19"),
        (-(2.0**63) - 2048, "int64", "-9.223372036854778e\\+18"),
    ],
)
def test_python_integers_out_of_range_are_refused_not_wrapped(value, dtype, shown):
    with pytest.raises(ValueRangeError, match=f"cannot write {shown} to an array of {dtype}"):
        as_storage_array(value, data_type(dtype))
    with pytest.raises(OverflowError):  # the built-in base, as numpy raises it
        as_storage_array(value, data_type(dtype))


@pytest.mark.parametrize(
    ("value", "dtype", "shown"),
    [
        (np.float64(300.0), "int8", r"300\.0"),
        (np.int64(300), "int8", "300"),
        (np.float64("nan"), "int8", "nan"),
        (np.float32("-inf"), "int32", "-inf"),
        (np.int64(-1), "uint8", "-1"),
        (np.uint64(2**64 - 1), "int64", "18446744073709551615"),
        (np.float64(1e300), "float32", r"1e\+300"),
        (np.float32(70000.0), "float16", r"70000\.0"),
    ],
)
def test_numpy_scalars_out_of_range_are_refused_as_python_numbers_are(value, dtype, shown):
    # the number as numpy shows it (numpy 2 names its type: "np.int64(300)")
    with pytest.raises(
        ValueRangeError, match=rf"write (np\.\w+\()?{shown}\)? to an array of {dtype}"
    ):
        as_storage_array(value, data_type(dtype))
    arr = tz.create_array("memory://", shape=(2,), dtype=dtype)
    arr[:] = 1
    with pytest.raises(OverflowError):
        arr[0] = value
    assert arr[:].tolist() == [1, 1]  # nothing written


def test_numpy_scalars_in_range_are_written_as_python_numbers_are():
    arr = tz.create_array("memory://", shape=(5,), dtype="int8")
    for i, value in enumerate((np.float64(-128.9), np.int64(127), np.uint8(5), np.bool_(True))):
        arr[i] = value
    arr[4] = np.float32(-2.7)  # truncates, as torch does
    assert arr[:].tolist() == [-128, 127, 5, 1, -2]
    assert as_storage_array(np.longdouble(2**62), data_type("int64")).item() == 2**62


def test_python_integers_in_range_and_numpy_arrays_cast_as_numpy_does():
    assert as_storage_array([255, 0], data_type("uint8")).tolist() == [255, 0]
    assert as_storage_array(-(2**31), data_type("int32")).item() == -(2**31)
    assert as_storage_array(2**40, data_type("float32")).item() == 2.0**40
    assert as_storage_array(2**40, data_type("bfloat16")).dtype == np.uint16  # bits
    assert as_storage_array(np.array(2**32 + 5), data_type("int32")).item() == 5  # wraps
    assert as_storage_array(np.array([2**32 + 7]), data_type("int32")).tolist() == [7]
    assert as_storage_array([0.9, 255.9, -0.5], data_type("uint8")).tolist() == [0, 255, 0]
    assert as_storage_array(-2.7, data_type("int8")).item() == -2  # truncates, as torch does
    assert as_storage_array(2.0**63 - 1024, data_type("int64")).item() == 2**63 - 1024
    assert as_storage_array(-(2.0**63), data_type("int64")).item() == -(2**63)
    assert as_storage_array(2.0**64 - 2048, data_type("uint64")).item() == 2**64 - 2048
    assert as_storage_array(np.array([np.nan]), data_type("float32")).dtype == np.float32


def test_tensors_without_dense_data_are_refused():
    with pytest.raises(InvalidArgumentError, match="meta tensor"):
        as_storage_array(torch.empty(2, device="meta"), data_type("float32"))
    with pytest.raises(InvalidArgumentError, match=r"sparse_coo tensor.*\.to_dense\(\)"):
        as_storage_array(torch.eye(2).to_sparse(), data_type("float32"))


def test_allocate_falls_back_to_pageable_without_cuda():
    t = allocate((2, 3), data_type("float32"), pin_memory=True)
    assert t.shape == (2, 3) and t.is_contiguous()
    if not cuda_available():
        assert not t.is_pinned()


def test_no_pinned_memory_in_a_process_forked_after_cuda_started(monkeypatch):
    # a DataLoader worker forked from a training process: pinning would raise torch's
    # "Cannot re-initialize CUDA in forked subprocess"
    monkeypatch.setattr(tensors, "_cuda_present", lambda: True)
    monkeypatch.setattr(torch.cuda, "_is_in_bad_fork", lambda: True)
    assert not cuda_available()
    assert not allocate((2, 3), data_type("float32"), pin_memory=True).is_pinned()


def test_ragged_data_is_a_shape_error_naming_the_dtype():
    arr = tz.create_array("memory://", shape=(2, 2), dtype=torch.int32)
    with pytest.raises(ShapeMismatchError, match="not rectangular"):
        arr[:] = [[1, 2], [3]]
    assert arr[:].tolist() == [[0, 0], [0, 0]]


@pytest.mark.parametrize(
    "dtype", [torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2, torch.uint64, torch.int8]
)
def test_lists_of_tensors_are_written_as_the_stacked_tensor(dtype):
    arr = tz.create_array("memory://", shape=(2, 2), dtype=dtype)
    rows = [torch.tensor([1, 2]).to(dtype), torch.tensor([3, 0]).to(dtype)]
    arr[...] = rows  # numpy's asarray takes neither bfloat16 nor float8
    assert torch.equal(arr[...], torch.stack(rows))
    arr[0] = (rows[1][0], rows[0][1])  # a tuple of 0-d tensors
    assert arr[0].tolist() == [3, 2]
    made = tz.create_array("memory://", data=[rows, rows])  # nested lists: stacked twice
    assert made.dtype == dtype and made.shape == (2, 2, 2)


def test_lists_of_tensors_as_single_tensors_are_written():
    arr = tz.create_array("memory://", shape=(2,), dtype=torch.uint64)
    arr[:] = [torch.tensor(2**64 - 1, dtype=torch.uint64), torch.tensor(7, dtype=torch.uint64)]
    assert arr[:].tolist() == [2**64 - 1, 7]  # full range: no overflow through int64
    floats = tz.create_array("memory://", shape=(2, 2), dtype=torch.float32)
    floats[:] = [torch.ones(2, requires_grad=True), torch.full((2,), 2.0, requires_grad=True)]
    assert floats[:].tolist() == [[1.0, 1.0], [2.0, 2.0]]  # detached, as one tensor is
    floats[:] = [torch.tensor([0.5, 1.5], dtype=torch.float64), torch.tensor([2, 3])]
    assert floats[:].tolist() == [[0.5, 1.5], [2.0, 3.0]]  # torch.stack's float64, cast
    with pytest.raises(UnsupportedDtypeError, match=r"torch\.float8_e4m3fn and torch\.float32"):
        floats[:] = [torch.ones(2, dtype=torch.float8_e4m3fn), torch.ones(2)]
    assert floats[:].tolist() == [[0.5, 1.5], [2.0, 3.0]]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_lists_of_tensors_on_a_device_are_copied_to_the_cpu():
    arr = tz.create_array("memory://", shape=(2, 2), dtype=torch.bfloat16)
    arr[:] = [torch.ones(2, dtype=torch.bfloat16, device="cuda"), torch.zeros(2).bfloat16()]
    assert arr[:].tolist() == [[1.0, 1.0], [0.0, 0.0]]


def test_lists_mixing_tensor_shapes_or_tensors_with_other_values_are_refused():
    arr = tz.create_array("memory://", shape=(2, 2), dtype=torch.bfloat16)
    with pytest.raises(
        ShapeMismatchError, match=r"bfloat16 \(shapes \(2,\) \(item \[0\]\), \(3,\)"
    ):
        arr[:] = [torch.ones(2, dtype=torch.bfloat16), torch.ones(3, dtype=torch.bfloat16)]
    with pytest.raises(ShapeMismatchError, match=r"\(2,\) \(item \[1\]\[0\]\), \(\) \(item"):
        arr[:] = [[torch.ones(2), torch.ones(2)], [torch.ones(2), torch.tensor(1.0)]]
    with pytest.raises(ArgumentTypeError, match=r"item \[1\] is a list of shape \(2,\)"):
        arr[:] = [torch.ones(2, dtype=torch.bfloat16), [1.0, 2.0]]
    with pytest.raises(ArgumentTypeError, match=r"item \[1\] is a float"):
        arr[0] = [torch.tensor(1.0, dtype=torch.bfloat16), 2.0]  # numpy takes no bfloat16
    assert arr[:].tolist() == [[0.0, 0.0], [0.0, 0.0]]
    plain = tz.create_array("memory://", shape=(3,), dtype="float64")
    plain[:] = [torch.tensor(1.5), 2, np.float32(3)]  # numbers and tensors numpy reads
    assert plain[:].tolist() == [1.5, 2.0, 3.0]
    assert tz.create_array("memory://", data=[torch.tensor(1.5), 2]).dtype == torch.float64


@pytest.mark.parametrize(
    ("value", "dtype"),
    [
        ([2**64 - 3000, 1], "uint64"),  # numpy infers float64, which rounds 2**64 - 3000
        ([[2**64 - 1], [0]], "uint64"),
        ([2**63 - 1, 0.5], "int64"),  # float64 would round up to 2**63, out of range
        ([2**62 + 1, 0.5], "int64"),
        ([[-(2**63), 1.5], [2**63 - 1, -2.5]], "int64"),
    ],
)
def test_lists_of_python_numbers_convert_each_number_exactly(value, dtype):
    expected = torch.tensor(value, dtype=getattr(torch, dtype)).tolist()  # torch is exact
    assert as_storage_array(value, data_type(dtype)).tolist() == expected
    arr = tz.create_array("memory://", data=value, dtype=dtype)
    assert arr[...].tolist() == expected
    arr[...] = value
    assert arr[...].tolist() == expected
    assert arr.append(value) == (2 * len(value), *arr.shape[1:])
    assert arr[len(value) :].tolist() == expected


@pytest.mark.parametrize(
    ("value", "dtype", "error"),
    [
        ([2**64, 0], "uint64", ValueRangeError),
        ([-1, 2**63], "uint64", ValueRangeError),
        ([2**63, 0.5], "int64", ValueRangeError),
        ([-(2**63) - 1, 1], "int64", ValueRangeError),
        ([2**70, float("nan")], "int32", ValueRangeError),
        ([2**70, "a"], "int64", UnsupportedDtypeError),
        ([None, 2**70], "int8", UnsupportedDtypeError),
        ([2**70, 1j], "int64", UnsupportedDtypeError),
    ],
)
def test_exact_lists_still_refuse_what_the_dtype_cannot_hold(value, dtype, error):
    with pytest.raises(error):
        as_storage_array(value, data_type(dtype))


def test_python_integers_past_64_bits_write_to_floats_as_floats():
    assert as_storage_array(2**64, data_type("float64")).item() == 2.0**64
    assert as_storage_array([2**64, 1], data_type("float32")).tolist() == [2.0**64, 1.0]
    assert as_storage_array([-(2**70), 1j], data_type("complex128")).tolist() == [-(2.0**70), 1j]
    assert as_storage_array(2**64, data_type("bfloat16")).tolist() == 24448  # 2**64 bits
    arr = tz.create_array("memory://", shape=(2,), dtype="float64")
    arr[:] = 2**64
    assert arr[:].tolist() == [2.0**64, 2.0**64]
    with pytest.raises(UnsupportedDtypeError, match="complex"):
        as_storage_array([2**64, 1j], data_type("float64"))
    with pytest.raises(UnsupportedDtypeError):
        as_storage_array([None, 2**64], data_type("float64"))  # never NaN


@pytest.mark.parametrize(
    ("value", "dtype", "shown"),
    [
        (2**64, "float16", "18446744073709551616"),
        (70000, "float16", "70000"),
        ([1.0, 1e300], "float32", "values from 1.0 to 1e\\+300"),
        (1e39, "bfloat16", "1e\\+39"),
        pytest.param(2**1024, "float64", str(2**1024), id="2**1024-float64"),
    ],
)
def test_python_numbers_that_overflow_a_float_dtype_are_refused(value, dtype, shown):
    with pytest.raises(ValueRangeError, match=f"cannot write {shown} to an array of {dtype}"):
        as_storage_array(value, data_type(dtype))


def test_infinities_and_numpy_values_still_cast_to_floats_as_numpy_does():
    assert as_storage_array(float("inf"), data_type("float16")).item() == float("inf")
    with np.errstate(over="ignore"):
        assert as_storage_array(np.array([70000]), data_type("float16")).tolist() == [np.inf]


def _stored_as_float(value, dtype: str) -> list[float]:
    bits = torch.from_numpy(as_storage_array(value, data_type(dtype)))
    return bits.view(getattr(torch, dtype)).float().tolist()


@pytest.mark.parametrize(
    ("dtype", "kept", "refused"),
    [
        # no infinity: torch saturates (e4m3fn) or gives NaN (fnuz); the tie at 464 rounds to
        # 448, whose last bit is even
        ("float8_e4m3fn", [464.0, -460.0], [464.5, -1e6, 1e6]),
        ("float8_e4m3fnuz", [247.0, -247.0], [248.0, 1e6]),
        ("float8_e5m2fnuz", [61439.0], [61440.0, 1e30]),
        ("float8_e5m2", [61439.0], [61440.0]),  # IEEE: ties round up to infinity
        ("float16", [65519.0], [65520.0]),
    ],
)
def test_numbers_past_the_largest_float_once_rounded_are_refused_in_every_float_dtype(
    dtype, kept, refused
):
    largest = torch.finfo(getattr(torch, dtype)).max
    assert _stored_as_float(kept, dtype) == [largest if v > 0 else -largest for v in kept]
    for number in refused:
        with pytest.raises(ValueRangeError, match=f"array of {dtype}"):
            as_storage_array([1.0, number], data_type(dtype))
    assert np.isnan(_stored_as_float([float("nan")], dtype)).all()  # NaN is not a number past


@pytest.mark.parametrize(
    ("value", "dtype"),
    [
        ([1.6e18 + i * 1024.0 for i in range(64)], "int64"),  # whole floats: as numpy read them
        ([[2.0**63 - 1024, -(2.0**63)], [2.0**62, 0.5]], "int64"),
        ([i * 0x9E3779B97F4A7C15 % 2**64 for i in range(64)], "uint64"),  # hashes: float64
        ([2**62 + 1, 0.5, -3.7], "int64"),  # ints past 2**53 among floats
        ([[2**64 - 3000, 1], [2, 3]], "uint64"),
        ([np.float32(2.5), 2.0**60], "int64"),
    ],
)
def test_lists_float64_or_int_conversion_holds_exactly_take_no_per_number_path(
    value, dtype, monkeypatch
):
    import torchzarr.tensors as tensors

    class NumberByNumberPath:  # the per-number path checks each number's numbers.* type
        def __getattr__(self, name):
            raise AssertionError("converted number by number")

    def truncated(numbers):  # exactly, as torch does for Python numbers
        return [truncated(n) for n in numbers] if isinstance(numbers, list) else int(numbers)

    monkeypatch.setattr(tensors, "numbers", NumberByNumberPath())
    assert as_storage_array(value, data_type(dtype)).tolist() == truncated(value)


@pytest.mark.parametrize(
    "value",
    [
        [np.int64(-1), 2],  # numpy would wrap -1
        [np.uint64(2**64 - 1), 0.5],
        [np.float32(1e20), 2**60 + 1],
        [2**60 + 1, float("inf")],
        [2**60 + 1, float("nan")],
    ],
)
def test_numbers_of_any_kind_past_the_integer_range_are_refused(value):
    with pytest.raises(ValueRangeError, match=r"array of u?int64"):
        as_storage_array(value, data_type("uint64" if value[1] == 2 else "int64"))


COMPLEX_VALUES = [
    np.array([1 + 5j, 2 - 3j], dtype=np.complex64),
    [1 + 5j, 2 - 3j],
    1 + 5j,
]
NON_NUMBERS = [
    np.array(["1.5", "2"]),
    ["1.5", "2"],
    np.array(["2020-01-01", "2020-01-02"], dtype="datetime64[D]"),
    np.array([1, 2], dtype="timedelta64[s]"),
]


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float8_e4m3fn", "float8_e5m2"])
def test_complex_and_non_numeric_data_are_refused_by_every_real_float_dtype(dtype):
    arr = tz.create_array("memory://", shape=(2,), dtype=dtype, chunks=(2,), fill_value=0.5)
    for value in COMPLEX_VALUES:
        with pytest.raises(UnsupportedDtypeError, match=f"complex data .* array of {dtype}"):
            arr[:] = value
        with pytest.raises(UnsupportedDtypeError, match="complex"):
            arr.append(value)
    for value in NON_NUMBERS:
        with pytest.raises(UnsupportedDtypeError, match=f"to an array of {dtype}"):
            arr[:] = value
        with pytest.raises(UnsupportedDtypeError):
            arr.append(value)
    assert arr.shape == (2,) and arr[:].tolist() == [0.5, 0.5]
    assert arr.nchunks_initialized == 0


def test_ml_dtypes_floats_still_write_to_bfloat16_and_float8():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    values = np.array([1.5, -2.0], dtype=ml_dtypes.bfloat16)
    assert as_storage_array(values, data_type("bfloat16")).tolist() == [0x3FC0, 0xC000]
    small = np.array([0.5], dtype=ml_dtypes.float8_e4m3fn)
    assert _stored_as_float(small, "float8_e4m3fn") == [0.5]


@pytest.mark.parametrize(
    ("dtype", "bits"),
    [("bfloat16", [0xFFCA, 0x7FC1, 0x7F81, 0x3F80]), ("float8_e5m2", [0x7D, 0x7E, 0xFD, 0xFE])],
)
def test_ml_dtypes_data_of_the_array_dtype_keeps_its_nan_bits(dtype, bits):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    unsigned = np.uint16 if dtype == "bfloat16" else np.uint8
    source = np.array(bits, dtype=unsigned).view(getattr(ml_dtypes, dtype))
    arr = tz.create_array("memory://", shape=(len(bits),), dtype=dtype, chunks=(2,))
    raw = torch.uint16 if dtype == "bfloat16" else torch.uint8
    big_endian = source.astype(source.dtype.newbyteorder(">"))
    for value, expected in ((source, bits), (big_endian, bits), (source[::-1], bits[::-1])):
        arr[:] = value  # as a tensor of the same bits would be: reinterpreted, not cast
        assert arr[:].view(raw).tolist() == expected
    # also new arrays made from it, and copies of it
    assert tz.create_array("memory://", data=source)[:].view(raw).tolist() == bits
    copied = tz.from_array("memory://", data=source, chunks=(3,))
    assert copied[:].view(raw).tolist() == bits


@pytest.mark.parametrize(
    "dtype", ["float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2fnuz", "float8_e8m0fnu"]
)
def test_python_infinities_are_refused_by_float_dtypes_without_infinity(dtype):
    arr = tz.create_array("memory://", shape=(3,), dtype=dtype, chunks=(3,), fill_value=1.0)
    for value in (float("inf"), float("-inf"), [1.0, float("-inf"), 2.0], [float("inf")] * 3):
        with pytest.raises(ValueRangeError, match=f"array of {dtype}"):
            arr[:] = value
        with pytest.raises(ValueRangeError):
            arr.append(value)
    assert arr.shape == (3,) and arr[:].float().tolist() == [1.0, 1.0, 1.0]
    assert np.isnan(_stored_as_float(float("nan"), dtype))  # NaN it holds


@pytest.mark.parametrize("dtype", ["float8_e5m2", "float16", "bfloat16", "float32"])
def test_python_infinities_are_stored_by_float_dtypes_with_infinity(dtype):
    assert _stored_as_float([float("inf"), float("-inf")], dtype) == [np.inf, -np.inf]


def test_tensors_and_numpy_arrays_holding_infinities_cast_as_torch_casts():
    infinities = torch.tensor([float("inf"), float("-inf")])
    for value in (infinities, infinities.numpy()):
        assert _stored_as_float(value, "float8_e4m3fn") == [448.0, -448.0]  # saturated
        assert np.isnan(_stored_as_float(value, "float8_e4m3fnuz")).all()


@pytest.mark.parametrize("shape", [(2**63 - 1,), (4,) * 32, (2**31, 2**31)])
def test_a_read_whose_result_no_machine_holds_is_refused_naming_its_shape(shape):
    arr = tz.create_array(tz.MemoryStore(), shape=shape, dtype="uint8", chunks=(1,) * len(shape))
    with pytest.raises(tz.errors.InvalidArgumentError, match=r"cannot hold a result of shape"):
        arr[...]
    assert arr[(0,) * len(shape)].item() == 0  # one element reads as the fill value


def test_a_read_larger_than_memory_is_an_out_of_memory_error_naming_its_shape():
    arr = tz.create_array("memory://", shape=(2**50,), dtype="int8", chunks=(2**20,))
    with pytest.raises(tz.errors.OutOfMemoryError, match=r"shape \(1125899906842624,\)"):
        arr[...]  # a petabyte: numpy's own MemoryError named a flat uint8 buffer
    with pytest.raises(MemoryError):  # still caught as a MemoryError
        arr[...]


def test_torchs_allocator_failures_are_out_of_memory_errors_and_other_errors_pass(monkeypatch):
    def refuse(*args, **kwargs):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate")

    monkeypatch.setattr(torch, "empty", refuse)
    with pytest.raises(tz.errors.OutOfMemoryError, match=r"shape \(2, 3\) and dtype torch.int8"):
        tensors.allocate((2, 3), data_type("int8"))

    def other(*args, **kwargs):
        raise RuntimeError("something else")

    monkeypatch.setattr(torch, "empty", other)
    with pytest.raises(RuntimeError, match="something else"):
        tensors.allocate((2, 3), data_type("int8"))


@pytest.mark.parametrize(
    ("dtype", "values", "message"),
    [
        ("uint8", [torch.tensor(300), torch.tensor(-1)], r"values from -1 to 300 .* uint8"),
        ("uint8", [torch.tensor(float("nan")), torch.tensor(1.0)], "holding NaN"),
        ("float16", [torch.tensor(1e10), torch.tensor(1.0)], r"to 10000000000.0 .* float16"),
        ("uint8", [torch.tensor(300.0, requires_grad=True), torch.tensor(1.0)], "to 300.0"),
        ("uint8", [torch.tensor(300.0, dtype=torch.bfloat16)] * 2, r"to 300.0 .* uint8"),
        ("float8_e4m3fn", [torch.tensor(1e3, dtype=torch.bfloat16)] * 2, r"range -448.0"),
        ("float16", [torch.tensor(1e10, requires_grad=True)] * 2, r"float16"),
    ],
)
def test_lists_of_tensors_are_checked_as_lists_of_numbers(dtype, values, message):
    # As [300, -1] is: a list is checked, whether numpy reads its tensors or torch stacks
    # them (bfloat16, requires_grad), where one tensor casts as torch casts.
    arr = tz.create_array("memory://", shape=(2,), dtype=dtype)
    with pytest.raises(ValueRangeError, match=message):
        arr[:] = values
    assert arr[:].float().tolist() == [0.0, 0.0]


def test_lists_of_tensors_numpy_reads_keep_numpys_promotion():
    arr = tz.create_array("memory://", shape=(2,), dtype="float64")
    arr[:] = [torch.tensor(16777217, dtype=torch.int32), torch.tensor(0.5)]  # float32 rounds
    assert arr[:].tolist() == [16777217.0, 0.5]
    exact = [torch.tensor(-128.7, requires_grad=True), torch.tensor(127.9)]  # floats truncate
    narrow = tz.create_array("memory://", shape=(2,), dtype="int8")
    narrow[:] = exact
    assert narrow[:].tolist() == [-128, 127]
