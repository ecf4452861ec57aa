"""Which chunks count as all fill value (and are then not stored): signed zeros, NaNs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import torchzarr as tz
from torchzarr.codecs.chunks import is_all_fill

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
