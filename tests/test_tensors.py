"""numpy <-> torch conversions and allocation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from torchzarr.dtypes import data_type
from torchzarr.errors import ShapeMismatchError, UnsupportedDtypeError
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
    with pytest.raises(ShapeMismatchError, match="complex"):
        as_storage_array(torch.tensor([1j]), data_type("float32"))
    with pytest.raises(ShapeMismatchError, match="complex"):
        as_storage_array(np.array([1j]), data_type("int8"))
    with pytest.raises(UnsupportedDtypeError):
        as_storage_array(np.array(["a"]), data_type("int8"))


def test_allocate_falls_back_to_pageable_without_cuda():
    t = allocate((2, 3), data_type("float32"), pin_memory=True)
    assert t.shape == (2, 3) and t.is_contiguous()
    if not cuda_available():
        assert not t.is_pinned()
