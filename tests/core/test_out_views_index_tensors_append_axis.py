"""read(out=) into conjugate, negative and expanded views; meta and sparse index tensors;
append's axis argument."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import torchzarr as tz
from torchzarr.errors import ArgumentTypeError, InvalidArgumentError, SelectionError


@pytest.fixture
def complex_array():
    return tz.create_array(
        "memory://", data=torch.tensor([[1 + 2j, 3 - 4j], [5j, -6]], dtype=torch.complex64)
    )


def test_read_fills_a_conjugate_view(complex_array):
    out = torch.zeros(2, 2, dtype=torch.complex64).conj()
    assert complex_array.read(out=out) is out
    assert out.is_conj() and torch.equal(out.resolve_conj(), complex_array[...])


def test_read_fills_a_negative_view(complex_array):
    out = torch.zeros(2, 2, dtype=torch.complex64).conj().imag  # a negative view
    real = tz.create_array("memory://", data=torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    assert out.is_neg()
    real.read(out=out)
    assert out.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    neg = torch.zeros(2, 2)._neg_view()
    real.read(out=neg)
    assert neg.tolist() == [[1.0, 2.0], [3.0, 4.0]]


def test_read_refuses_an_out_whose_elements_share_memory():
    arr = tz.create_array("memory://", data=torch.arange(12, dtype=torch.int32).reshape(2, 6))
    out = torch.zeros(1, 6, dtype=torch.int32).expand(2, 6)
    with pytest.raises(InvalidArgumentError, match=r"overlapping memory.*axis 0 of size 2"):
        arr.read(out=out)
    assert out.tolist() == [[0] * 6, [0] * 6]
    single = torch.zeros(6, dtype=torch.int32).expand(1, 6)  # stride 0 on a size-1 axis is fine
    arr.read(slice(0, 1), out=single)
    assert single.tolist() == [list(range(6))]


@pytest.mark.parametrize(
    ("select", "problem"),
    [
        (lambda a: a[torch.tensor([1, 2], device="meta")], "meta tensor"),
        (lambda a: a.oindex[torch.tensor(1, device="meta"), :], "meta tensor"),
        (lambda a: a.vindex[torch.ones(4, 6, dtype=torch.bool, device="meta")], "meta tensor"),
        (lambda a: a[torch.tensor([1, 2]).to_sparse()], r"sparse_coo tensor.*\.to_dense\(\)"),
    ],
)
def test_index_tensors_without_dense_data_are_selection_errors(select, problem):
    arr = tz.create_array("memory://", shape=(4, 6), dtype="int32", chunks=(3, 4))
    with pytest.raises(SelectionError, match=problem):
        select(arr)


def test_append_refuses_an_axis_that_is_not_an_int():
    arr = tz.create_array("memory://", shape=(2, 3), dtype="float32")
    with pytest.raises(ArgumentTypeError, match=r"axis must be an int, got 1\.0"):
        arr.append(torch.ones(2, 3), axis=1.0)
    with pytest.raises(SelectionError, match="axis -3 is out of range for 2 dimensions"):
        arr.append(torch.ones(2, 3), axis=-3)
    assert arr.shape == (2, 3)
    assert arr.append(torch.ones(2, 3), axis=np.int64(-1)) == (2, 6)
