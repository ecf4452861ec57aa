"""Which chunks count as all fill value (and are then not stored): signed zeros, NaNs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import torchzarr as tz
from torchzarr.codecs.chunks import is_all_fill
from torchzarr.dtypes import all_data_types, data_type
from torchzarr.metadata.fill import coerce_fill_value

NAN = float("nan")


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64", "complex64", "complex128"])
def test_negative_zero_is_not_the_fill_value_zero(dtype):
    assert not is_all_fill(np.full(4, -0.0, dtype=dtype), 0.0)
    assert not is_all_fill(np.full(4, 0.0, dtype=dtype), -0.0)
    assert is_all_fill(np.full(4, -0.0, dtype=dtype), -0.0)
    assert is_all_fill(np.zeros((3, 4), dtype=dtype)[:, ::2], 0.0)  # strided
    assert not is_all_fill(np.array([0.0, -0.0], dtype=dtype), 0.0)


def test_complex_parts_compare_each_on_its_own():
    fill = complex(NAN, 0.0)
    assert not is_all_fill(np.array([complex(1.0, NAN), complex(NAN, 5.0)]), fill)
    assert not is_all_fill(np.array([complex(NAN, NAN)]), fill)
    assert is_all_fill(np.array([complex(NAN, 0.0)] * 3, dtype=np.complex64), fill)
    assert is_all_fill(np.full(2, complex(NAN, NAN)), complex(NAN, NAN))
    assert not is_all_fill(np.array([complex(0.0, -0.0)]), 0j)
    assert is_all_fill(np.ones((2, 3), dtype=complex).T, 1 + 0j)


@pytest.mark.parametrize("shards", [None, (4,)])
def test_a_chunk_of_negative_zeros_is_stored_and_read_back(shards):
    arr = tz.create_array(
        "memory://", shape=(4,), chunks=(2,), shards=shards, dtype=torch.float32, fill_value=0.0
    )
    arr[0:2] = torch.tensor([-0.0, -0.0])
    assert torch.signbit(arr[0:2]).tolist() == [True, True]
    assert arr.nchunks_initialized == 1


def test_complex_values_with_a_nan_part_are_kept_under_a_nan_fill_value():
    fill = complex(NAN, 0.0)
    arr = tz.create_array("memory://", shape=(4,), chunks=(2,), dtype="complex128", fill_value=fill)
    values = torch.tensor([complex(1.0, NAN), complex(NAN, 5.0)], dtype=torch.complex128)
    arr[0:2] = values
    got = arr[0:2]
    assert got.real[0] == 1.0 and got.imag[1] == 5.0
    assert arr.nchunks_initialized == 1


RAW_BIT_FLOATS = [dt for dt in all_data_types() if dt.is_reinterpreted]


@pytest.mark.parametrize("dt", RAW_BIT_FLOATS, ids=lambda dt: dt.name)
def test_a_nan_fill_matches_every_nan_of_the_floats_held_as_raw_bits(dt):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    every_bits = np.arange(2 ** (8 * dt.itemsize), dtype=dt.storage)
    with np.errstate(invalid="ignore"):
        is_nan = np.isnan(every_bits.view(getattr(ml_dtypes, dt.name)))
    fill = coerce_fill_value(NAN, dt)
    for bits, nan in zip(every_bits.tolist(), is_nan.tolist(), strict=True):
        chunk = np.full(3, bits, dtype=dt.storage)
        assert is_all_fill(chunk, fill, dt) is nan, hex(bits)
    nans = every_bits[is_nan]
    assert is_all_fill(np.resize(nans, (4, len(nans))).T, fill, dt)  # strided, mixed NaNs
    mixed = np.resize(nans, 8)
    mixed[-1] = coerce_fill_value(1.0, dt)
    assert not is_all_fill(mixed, fill, dt)


@pytest.mark.parametrize("dt", RAW_BIT_FLOATS, ids=lambda dt: dt.name)
def test_raw_bit_floats_with_a_number_fill_still_compare_bit_for_bit(dt):
    one = coerce_fill_value(1.0, dt)
    assert is_all_fill(np.full(4, one), one, dt)
    assert not is_all_fill(np.full(4, coerce_fill_value(NAN, dt)), one, dt)
    sign_bit = dt.storage.type(1 << (8 * dt.itemsize - 1))  # -0.0 where there is one
    assert not is_all_fill(np.full(4, sign_bit), dt.storage.type(0), dt)


def test_unsigned_integers_with_nan_like_bits_compare_exactly_without_a_float_data_type():
    assert not is_all_fill(np.full(4, 0xFFFF, np.uint16), np.uint16(0x7FC0))
    assert not is_all_fill(np.full(4, 0xFFFF, np.uint16), np.uint16(0x7FC0), data_type("uint16"))


@pytest.mark.parametrize("shards", [None, (4,)])
@pytest.mark.parametrize("dtype", ["bfloat16", "float8_e4m3fn", "float8_e5m2"])
def test_an_all_nan_chunk_of_a_raw_bit_float_array_with_a_nan_fill_is_not_stored(dtype, shards):
    arr = tz.create_array(
        "memory://", shape=(8,), chunks=(2,), shards=shards, dtype=dtype, fill_value=NAN
    )
    arr[:] = torch.full((8,), NAN)
    arr[0:2] = -torch.full((2,), NAN, dtype=torch.float64)
    arr[2:4] = np.full(2, NAN, dtype=np.float32)
    assert arr.nchunks_initialized == 0
    assert [key for key in arr.store.list_prefix("") if key != "zarr.json"] == []
    assert torch.isnan(arr[:].float()).all()
