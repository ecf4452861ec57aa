"""Fill values: parse (v2/v3 JSON), encode, coerce user values, and the bits-level round trip."""

from __future__ import annotations

import base64
import json
import math
import re

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from torchzarr.dtypes import all_data_types, data_type
from torchzarr.errors import MetadataError
from torchzarr.metadata.fill import (
    coerce_fill_value,
    encode_fill_value,
    fill_key,
    parse_fill_value,
    zero_fill,
)

F16, F32, F64 = data_type("float16"), data_type("float32"), data_type("float64")
BF16, C64, C128 = data_type("bfloat16"), data_type("complex64"), data_type("complex128")
BOOL, I8, U64, I32 = data_type("bool"), data_type("int8"), data_type("uint64"), data_type("int32")
E4M3, E5M2 = data_type("float8_e4m3fn"), data_type("float8_e5m2")


def bits(value: np.generic) -> int:
    return int(np.asarray(value).reshape(1).view(f"u{value.dtype.itemsize}")[0])


def test_zero_fill_is_a_storage_scalar():
    for dt in all_data_types():
        zero = zero_fill(dt)
        assert zero.dtype == dt.storage
        assert not np.asarray(zero).any()


# --- parse -------------------------------------------------------------------------------


@pytest.mark.parametrize("zarr_format", [2, 3])
@pytest.mark.parametrize(
    "dt,value,expected_bits",
    [
        (F32, "NaN", 0x7FC00000),
        (F32, "Infinity", 0x7F800000),
        (F32, "-Infinity", 0xFF800000),
        (F64, "NaN", 0x7FF8000000000000),
        (F16, "-Infinity", 0xFC00),
        (F32, 1.5, 0x3FC00000),
        (F32, 2, 0x40000000),  # an int for a float dtype
        (F32, -0.0, 0x80000000),
        (F32, "0x7fc00001", 0x7FC00001),  # a NaN payload: only hex can say it
        (F32, "0xFF800000", 0xFF800000),
        (F64, "0x3ff0000000000000", 0x3FF0000000000000),
        (F32, "1.5", 0x3FC00000),  # a numeric string, as zarr-python accepts
        (BF16, 1.5, 0x3FC0),
        (BF16, "NaN", 0x7FC0),
        (BF16, "Infinity", 0x7F80),
        (BF16, "0x3fc0", 0x3FC0),
    ],
)
def test_parse_float(dt, value, expected_bits, zarr_format):
    if zarr_format == 2 and isinstance(value, str) and value.startswith("0x"):
        with pytest.raises(MetadataError, match="a Zarr v3 spelling"):  # not one meaning in v2
            parse_fill_value(value, dt, zarr_format)
        return
    parsed = parse_fill_value(value, dt, zarr_format)
    assert parsed.dtype == dt.storage
    assert bits(parsed) == expected_bits


def test_parse_float8():
    parsed = parse_fill_value(0.5, E5M2, 3)
    assert parsed.dtype == np.uint8
    assert float(np.array([parsed]).view(ml_dtypes.float8_e5m2)[0]) == 0.5
    assert parse_fill_value("0x7e", E5M2, 3) == np.uint8(0x7E)


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_e8m0_stored_zero_is_tensorstores_bits_0x00_and_negatives_are_refused(zarr_format):
    e8m0 = data_type("float8_e8m0fnu")  # no zero, no sign: tensorstore writes bits 0 as 0.0
    for zero in (0.0, -0.0, 0, "0.0"):
        assert parse_fill_value(zero, e8m0, zarr_format) == np.uint8(0)  # 2**-127, not NaN
    assert parse_fill_value(2.0**-127, e8m0, zarr_format) == np.uint8(0)
    for tiny in (1e-50, "1e-50", 2.0**-130):  # below the smallest value: rounded up to it
        assert parse_fill_value(tiny, e8m0, zarr_format) == np.uint8(0)
    assert parse_fill_value(2.0, e8m0, zarr_format) == np.uint8(128)
    assert parse_fill_value("NaN", e8m0, zarr_format) == np.uint8(255)
    for negative in (-1.0, -6.8e38, "-Infinity", "-2"):
        match = f"fill_value {re.escape(repr(negative))} is negative, which float8_e8m0fnu"
        with pytest.raises(MetadataError, match=match):
            parse_fill_value(negative, e8m0, zarr_format)
    with pytest.raises(MetadataError, match="does not fit dtype float8_e8m0fnu"):
        coerce_fill_value(0.0, e8m0)  # a user's 0.0 is refused, as writing 0.0 is


def test_e8m0_array_tensorstore_made_with_its_default_fill_reads_its_bits(tmp_path):
    import torch

    import torchzarr as tz

    grid = {"name": "regular", "configuration": {"chunk_shape": [2]}}
    doc = {"zarr_format": 3, "node_type": "array", "shape": [2], "data_type": "float8_e8m0fnu"}
    doc |= {"chunk_grid": grid, "chunk_key_encoding": {"name": "default"}, "fill_value": 0.0}
    (tmp_path / "zarr.json").write_text(json.dumps(doc | {"codecs": [{"name": "bytes"}]}))
    arr = tz.open_array(tmp_path)
    assert arr[:].view(torch.uint8).tolist() == [0, 0]  # as tensorstore reads it
    assert arr.fill_value == 2.0**-127


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_parse_complex(zarr_format):
    assert parse_fill_value([1.0, 2.0], C64, zarr_format) == np.complex64(1 + 2j)
    value = parse_fill_value(["NaN", "-Infinity"], C128, zarr_format)
    assert value.dtype == np.complex128
    assert math.isnan(value.real) and value.imag == -math.inf
    hexed = parse_fill_value(["0x3f800000", 0], C64, 3)
    assert hexed == np.complex64(1 + 0j)
    assert parse_fill_value(2, C64, zarr_format) == np.complex64(2)  # a bare real number
    assert np.isnan(parse_fill_value("NaN", C128, zarr_format).real)


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_parse_bool_and_ints(zarr_format):
    assert parse_fill_value(True, BOOL, zarr_format) is np.True_
    assert parse_fill_value(False, BOOL, zarr_format) is np.False_
    assert parse_fill_value(-128, I8, zarr_format) == np.int8(-128)
    assert parse_fill_value(2**64 - 1, U64, zarr_format) == np.uint64(2**64 - 1)
    assert parse_fill_value(3.0, I32, zarr_format) == np.int32(3)


def test_parse_v2_extras():
    assert parse_fill_value(None, F32, 2) is None  # null = no fill
    assert parse_fill_value(1, BOOL, 2) is np.True_
    raw = np.array([1.5], dtype="<f4").tobytes()
    assert parse_fill_value(base64.b64encode(raw).decode(), F32, 2) == np.float32(1.5)
    big = np.array([258], dtype=">i4").tobytes()
    assert parse_fill_value(base64.b64encode(big).decode(), I32, 2, byteorder=">") == 258
    assert parse_fill_value(base64.b64encode(b"\x01").decode(), BOOL, 2) is np.True_
    c = np.array([1 + 2j], dtype="<c8").tobytes()
    assert parse_fill_value(base64.b64encode(c).decode(), C64, 2) == np.complex64(1 + 2j)


@pytest.mark.parametrize(
    "value,dt,zarr_format,message",
    [
        (None, F32, 3, "zarr.json: fill_value is required in Zarr v3"),
        (True, F32, 3, "zarr.json: fill_value True is not a number for float32"),
        ("nan", F32, 3, "fill_value 'nan' is not valid for float32"),
        ("0x7fc000001", F32, 3, "more than 8 digits"),
        ("0x3fc00000", F32, 2, "'0x' hex, a Zarr v3 spelling"),
        ("0x01", I32, 2, "'0x' hex, a Zarr v3 spelling"),
        ("0xzz", F32, 3, "'0xzz' is not valid for float32"),
        ([1.0], C64, 3, "must be [real, imag]"),
        ([1.0, 2.0, 3.0], C64, 3, "must be [real, imag]"),
        ([True, 1.0], C64, 3, "True is not a number for complex64"),
        (1, BOOL, 3, "fill_value 1 is not a bool"),
        (2, BOOL, 2, "fill_value 2 is not a bool"),
        (1.5, I32, 3, "1.5 is not an integer for int32"),
        (True, I32, 3, "True is not an integer for int32"),
        ("1", I32, 3, "'1' is not an integer for int32"),
        (128, I8, 3, "128 is out of range for int8 [-128, 127]"),
        (-1, U64, 2, "-1 is out of range for uint64"),
        ("AAAA", F32, 2, "base64 fill_value 'AAAA' holds 3 bytes, float32 needs 4"),
        ("not base64!", I32, 2, ".zarray: fill_value 'not base64!' is not valid for int32"),
        (10**400, F64, 3, "out of range for float64"),
        ({}, F32, 3, "not valid for float32"),
    ],
)
def test_parse_errors_name_document_value_and_dtype(value, dt, zarr_format, message):
    with pytest.raises(MetadataError) as info:
        parse_fill_value(value, dt, zarr_format)
    assert message in str(info.value)
    assert str(info.value).startswith(".zarray" if zarr_format == 2 else "zarr.json")


# --- encode ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value,dt,zarr_format,expected",
    [
        (np.float32("nan"), F32, 3, "NaN"),
        (np.float32("inf"), F32, 2, "Infinity"),
        (np.float64("-inf"), F64, 3, "-Infinity"),
        (np.float64(-0.0), F64, 3, -0.0),
        (np.float16(0.1), F16, 3, 0.0999755859375),
        (np.array([0x7FC00001], "u4").view("f4")[0], F32, 3, "0x7fc00001"),
        (np.array([0xFFC00000], "u4").view("f4")[0], F32, 3, "0xffc00000"),  # -NaN
        (np.array([0x7FC00001], "u4").view("f4")[0], F32, 2, "NaN"),  # v2 cannot say more
        (np.uint16(0x3FC0), BF16, 3, 1.5),
        (np.uint16(0x7FC0), BF16, 3, "NaN"),
        (np.uint16(0x7FC1), BF16, 3, "0x7fc1"),
        (np.uint16(0xFF80), BF16, 2, "-Infinity"),
        (np.complex64(complex(1, -2)), C64, 3, [1.0, -2.0]),
        (np.complex128(complex(math.nan, math.inf)), C128, 2, ["NaN", "Infinity"]),
        (np.bool_(True), BOOL, 3, True),
        (np.uint64(2**64 - 1), U64, 3, 2**64 - 1),
        (None, I32, 2, None),
        (None, I32, 3, 0),
    ],
)
def test_encode(value, dt, zarr_format, expected):
    out = encode_fill_value(value, dt, zarr_format)
    assert out == expected
    assert type(out) is type(expected)
    if isinstance(expected, float):
        assert math.copysign(1, out) == math.copysign(1, expected)
    json.dumps(out, allow_nan=False)  # strict JSON


fill_types = [dt for dt in all_data_types()]


@st.composite
def raw_fill(draw):
    """Any bit pattern of any data type, as its storage scalar."""
    dt = draw(st.sampled_from(fill_types))
    if dt.name == "bool":
        return dt, np.bool_(draw(st.booleans()))
    raw = draw(st.binary(min_size=dt.itemsize, max_size=dt.itemsize))
    return dt, np.frombuffer(raw, dtype=dt.storage)[0]


@settings(max_examples=300, deadline=None)
@given(case=raw_fill(), zarr_format=st.sampled_from([2, 3]))
def test_encode_parse_round_trip_bits(case, zarr_format):
    """v3 keeps every bit pattern (NaN payloads too); v2 keeps every one but NaN payloads."""
    dt, value = case
    encoded = encode_fill_value(value, dt, zarr_format)
    text = json.dumps(encoded, allow_nan=False)
    parsed = parse_fill_value(json.loads(text), dt, zarr_format)
    assert parsed.dtype == dt.storage
    assert fill_key(parsed, dt) == fill_key(value, dt)
    if zarr_format == 3:
        assert parsed.tobytes() == value.tobytes()


# --- coerce ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "user,dt,expected_bits",
    [
        (None, F32, 0),
        (None, BF16, 0),
        (1.5, BF16, 0x3FC0),
        (ml_dtypes.bfloat16(1.5), BF16, 0x3FC0),
        (np.float32(1.5), F64, 0x3FF8000000000000),
        (np.array(2.0), F32, 0x40000000),  # a 0-d array
        (np.array([2.0]), F32, 0x40000000),  # one element
        (3, F16, 0x4200),
        (float("nan"), F32, 0x7FC00000),
        (float("-inf"), F16, 0xFC00),
        (1 + 0j, F32, 0x3F800000),  # a complex with no imaginary part
        (0.5, E4M3, 0x30),
        (np.uint16(0x3FC0), BF16, 0x3FC0),  # a storage scalar is taken as already coerced
    ],
)
def test_coerce_floats(user, dt, expected_bits):
    value = coerce_fill_value(user, dt)
    assert value.dtype == dt.storage
    assert bits(value) == expected_bits


def test_coerce_other_kinds():
    assert coerce_fill_value(True, BOOL) is np.True_
    assert coerce_fill_value(0, BOOL) is np.False_
    assert coerce_fill_value(np.bool_(True), BOOL) is np.True_
    assert coerce_fill_value(-5, I8) == np.int8(-5)
    assert coerce_fill_value(4.0, I32) == np.int32(4)
    assert coerce_fill_value(np.int64(7), I8) == np.int8(7)
    assert coerce_fill_value(2**64 - 1, U64) == np.uint64(2**64 - 1)
    assert coerce_fill_value(1 + 2j, C64) == np.complex64(1 + 2j)
    assert coerce_fill_value(3, C128) == np.complex128(3)
    assert coerce_fill_value(np.complex128(1j), C64) == np.complex64(1j)


def test_coerce_takes_text_for_floats_as_zarr_python():
    assert (
        np.isnan(coerce_fill_value("NaN", F32))
        and coerce_fill_value("NaN", F32).dtype == F32.storage
    )
    assert coerce_fill_value("Infinity", F64) == np.float64("inf")
    assert coerce_fill_value("-Infinity", F16) == np.float16("-inf")
    assert coerce_fill_value("1.5", F32) == np.float32(1.5)
    assert coerce_fill_value("NaN", BF16) == coerce_fill_value(float("nan"), BF16)
    assert np.isnan(coerce_fill_value("NaN", C64).real)
    assert coerce_fill_value("1+2j", C128) == np.complex128(1 + 2j)


def test_coerce_takes_tensors():
    torch = pytest.importorskip("torch")
    assert coerce_fill_value(torch.tensor(1.5, dtype=torch.bfloat16), BF16) == np.uint16(0x3FC0)
    assert coerce_fill_value(torch.tensor(3), I32) == np.int32(3)


def test_coerce_is_idempotent():
    for dt in all_data_types():
        once = coerce_fill_value(1, dt)
        assert coerce_fill_value(once, dt).tobytes() == once.tobytes()


@pytest.mark.parametrize(
    "user,dt",
    [
        (128, I8),
        (-1, U64),
        (2**64, U64),
        (1.5, I32),
        (float("nan"), I32),
        (2, BOOL),
        (0.0, BOOL),
        ("0", I32),
        ("NaN", I32),
        ("abc", F32),
        ("0x7fc00000", F32),  # raw bits in a document, not a user's value (zarr-python too)
        ("1+2j", F32),
        (1 + 1j, F32),
        (1e39, F32),  # overflows float32
        (70000.0, F16),
        (1e39, BF16),
        (float("inf"), E4M3),  # float8_e4m3fn has no infinity
        (1000.0, E4M3),
        (10**400, F64),
        ([1, 2], F32),
        (b"\x00", I8),
        (complex(1e39, 0), C64),
    ],
)
def test_coerce_refuses_values_that_do_not_fit(user, dt):
    with pytest.raises(MetadataError) as info:
        coerce_fill_value(user, dt)
    assert f"does not fit dtype {dt.name}" in str(info.value)
    assert repr(user)[:6] in str(info.value)


def test_coerce_refuses_arrays():
    with pytest.raises(MetadataError, match=r"single value for dtype float32.*shape \(2,\)"):
        coerce_fill_value(np.zeros(2), F32)


# --- fill_key ----------------------------------------------------------------------------


def test_fill_key_semantics():
    nan_payload = np.array([0x7FC00001], "u4").view("f4")[0]
    assert fill_key(np.float32("nan"), F32) == fill_key(nan_payload, F32)
    assert fill_key(np.float32(0.0), F32) != fill_key(np.float32(-0.0), F32)
    assert fill_key(None, F32) is None
    assert fill_key(np.uint16(0x7FC0), BF16) == fill_key(np.uint16(0x7FC1), BF16)
    assert fill_key(np.uint16(0x3FC0), BF16) != fill_key(np.uint16(0x3FC1), BF16)
    nan_c = np.complex64(complex(math.nan, 1))
    assert fill_key(nan_c, C64) == fill_key(np.complex64(complex(math.nan, 1)), C64)
    assert fill_key(nan_c, C64) != fill_key(np.complex64(complex(math.nan, 2)), C64)
    assert fill_key(np.int32(1), I32) != fill_key(np.int32(2), I32)


# --- NaN payloads of bfloat16 and float8 fills, and tensors without a value ---------------


def test_coerce_keeps_the_bits_of_a_nan_of_the_dtype_itself():
    torch = pytest.importorskip("torch")
    payload = torch.tensor(0x7FC1, dtype=torch.int16).view(torch.bfloat16)
    negative = torch.tensor(-0x3D, dtype=torch.int16).view(torch.bfloat16)  # 0xFFC3
    e5m2 = torch.tensor(0x7F, dtype=torch.uint8).view(torch.float8_e5m2)
    assert bits(coerce_fill_value(payload, BF16)) == 0x7FC1
    assert bits(coerce_fill_value(negative, BF16)) == 0xFFC3
    assert bits(coerce_fill_value(e5m2, E5M2)) == 0x7F
    ml_scalar = np.array([0x7FC1], "u2").view(ml_dtypes.bfloat16)[0]
    assert bits(coerce_fill_value(ml_scalar, BF16)) == 0x7FC1
    # a wider float holding it exactly (float32 0x7FC10000 is bfloat16 0x7FC1), as float16
    wide = torch.tensor(0x7FC10000, dtype=torch.int32).view(torch.float32)
    assert bits(coerce_fill_value(wide, BF16)) == 0x7FC1
    assert bits(coerce_fill_value(wide.item(), BF16)) == 0x7FC1
    # v3 spells them as hex; the standard NaN stays "NaN"
    assert encode_fill_value(coerce_fill_value(payload, BF16), BF16, 3) == "0x7fc1"
    assert encode_fill_value(coerce_fill_value(e5m2, E5M2), E5M2, 3) == "0x7f"
    assert encode_fill_value(coerce_fill_value(float("nan"), BF16), BF16, 3) == "NaN"
    assert bits(coerce_fill_value(torch.tensor(1.5, dtype=torch.bfloat16), BF16)) == 0x3FC0


@pytest.mark.parametrize(
    ("name", "raw", "hex_fill"), [("bfloat16", 0x7FC1, "0x7fc1"), ("float8_e5m2", 0x7F, "0x7f")]
)
def test_payload_nan_fills_are_written_as_hex_tensorstore_reads(tmp_path, name, raw, hex_fill):
    torch = pytest.importorskip("torch")
    ts = pytest.importorskip("tensorstore")
    import torchzarr as tz

    dtype = getattr(torch, name)
    carrier = torch.int16 if dtype.itemsize == 2 else torch.uint8
    fill = torch.tensor(raw, dtype=carrier).view(dtype)
    arr = tz.create_array(tmp_path, shape=(4,), chunks=(2,), dtype=dtype, fill_value=fill)
    arr[0] = 1.0  # chunk 0 padded with the fill
    assert json.loads((tmp_path / "zarr.json").read_text())["fill_value"] == hex_fill
    assert arr[:].view(carrier)[1:].tolist() == [torch.tensor(raw, dtype=carrier).item()] * 3
    t = ts.open({"driver": "zarr3", "kvstore": {"driver": "file", "path": str(tmp_path)}})
    read = np.asarray(t.result().read().result())
    assert read.view(f"u{dtype.itemsize}")[1:].tolist() == [raw] * 3


@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors")
@pytest.mark.parametrize("kind", ["meta", "nested", "sparse"])
def test_coerce_refuses_tensors_whose_value_cannot_be_read(kind):
    torch = pytest.importorskip("torch")
    import torchzarr as tz

    value = {
        "meta": lambda: torch.tensor(1.0, device="meta"),
        "nested": lambda: torch.nested.nested_tensor([torch.tensor([1.0])]),
        "sparse": lambda: torch.tensor([1.0]).to_sparse(),
    }[kind]()
    with pytest.raises(MetadataError, match=f"fill_value is a {kind}.* tensor.*float32"):
        coerce_fill_value(value, F32)
    with pytest.raises(MetadataError, match=f"fill_value is a {kind}"):
        tz.create_array("memory://", shape=(2,), dtype=torch.float32, fill_value=value)
