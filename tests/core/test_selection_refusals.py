"""Selections that ``arr[...]`` must refuse by name, or take as numpy / zarr-python do."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

import torchzarr as tz
from torchzarr.errors import BoundsError, SelectionError

DATA = np.arange(12).reshape(3, 4)
MASK = DATA % 3 == 0


@pytest.fixture
def a() -> Any:
    return tz.create_array("memory://", data=DATA, chunks=(2, 2))


@pytest.fixture
def b() -> Any:
    return tz.create_array("memory://", data=np.arange(10), chunks=(3,))


# -- finding 1: a whole-selection array followed by ':' or '...' ---------------------------------
@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda a, b: (a, (MASK, slice(None), slice(None))), "too many indices"),
        (lambda a, b: (a, (MASK, ..., ...)), "single Ellipsis"),
        (lambda a, b: (b, (np.array([[0, 1]]), slice(None), slice(None))), "too many indices"),
        (lambda a, b: (a, (MASK, slice(None), slice(None), slice(None))), "too many indices"),
    ],
)
def test_a_tail_after_a_mask_or_nd_array_still_counts(
    a: Any, b: Any, make: Callable[[Any, Any], Any], match: str
) -> None:
    arr, selection = make(a, b)
    before = arr[...].clone()
    with pytest.raises(SelectionError, match=match):
        arr[selection]
    with pytest.raises(SelectionError, match=match):
        arr[selection] = -1
    assert torch.equal(arr[...], before)


def test_a_single_whole_tail_after_a_mask_still_reads_as_the_mask(a: Any, b: Any) -> None:
    assert a[MASK, :].tolist() == a[MASK, ...].tolist() == DATA[MASK].tolist()
    assert b[np.array([[0, 1]]), ...].tolist() == [[0, 1]]


# -- finding 2: indices past int64 ----------------------------------------------------------------
def test_uint64_index_tensors_past_int64_are_bounds_errors(b: Any) -> None:
    big = torch.tensor([2**64 - 1], dtype=torch.uint64)
    with pytest.raises(BoundsError, match="18446744073709551615"):
        b[big]
    with pytest.raises(BoundsError, match="18446744073709551615"):
        b[big] = 99
    with pytest.raises(BoundsError, match="18446744073709551614"):
        b[torch.tensor(2**64 - 2, dtype=torch.uint64)]
    assert b[:].tolist() == list(range(10))
    assert b[torch.tensor([9, 1], dtype=torch.uint64)].tolist() == [9, 1]
    assert int(b[torch.tensor(3, dtype=torch.uint64)]) == 3


@pytest.mark.parametrize(("index", "named"), [([2**70], 2**70), ([2**63, -1], 2**63)])
def test_python_ints_past_64_bits_are_bounds_errors(b: Any, index: list[int], named: int) -> None:
    with pytest.raises(BoundsError, match=f"index {named} is out of bounds"):
        b[index]


# -- finding 3: a boolean mask beside an integer array --------------------------------------------
def test_a_mask_beside_an_integer_array_is_orthogonal_as_in_zarr_python() -> None:
    data = np.arange(24).reshape(4, 6)
    arr = tz.create_array("memory://", data=data, chunks=(2, 4))
    rows = np.array([True, False, True, False])
    cols = np.array([True, False, True, False, False, True])
    expected = data[np.ix_(rows, [1, 2])]  # zarr-python's z[rows, [1, 2]]: (2, 2)
    assert arr[rows, [1, 2]].tolist() == expected.tolist()
    assert arr[torch.tensor(rows), torch.tensor([1, 2])].tolist() == expected.tolist()
    assert arr[[0, 2], cols].tolist() == data[np.ix_([0, 2], cols)].tolist()
    assert arr[rows, cols].tolist() == data[np.ix_(rows, cols)].tolist()
    arr[rows, [1, 2]] = -5
    data[np.ix_(rows, [1, 2])] = -5
    assert arr[...].tolist() == data.tolist()


def test_a_2d_array_beside_a_mask_is_refused_by_its_place_not_as_vindex() -> None:
    arr = tz.create_array("memory://", data=np.arange(24).reshape(4, 6), chunks=(2, 4))
    with pytest.raises(SelectionError, match=r"shape \(1, 2\) .* at position 1") as err:
        arr[np.array([True, False, True, False]), np.array([[1, 2]])]
    assert "vindex" not in str(err.value)


# -- finding 4: a 0-d mask on a 0-d array, a ragged list -------------------------------------------
def test_a_0d_mask_on_a_0d_array_follows_numpy() -> None:
    arr = tz.create_array("memory://", shape=(), dtype="int32")
    arr[()] = 5
    assert arr[np.array(True)].tolist() == [5]
    assert arr[torch.tensor(True)].tolist() == [5]
    assert arr[np.array(False)].tolist() == []
    arr[np.array(True)] = 7
    assert int(arr[()]) == 7


def test_a_ragged_list_index_is_a_selection_error_naming_it(b: Any) -> None:
    with pytest.raises(SelectionError, match=r"ragged list \[\[1, 2\], \[3\]\]"):
        b[[[1, 2], [3]]]
    with pytest.raises(SelectionError, match="ragged list"):
        b[[[1, 2], [3]]] = 0


@pytest.mark.parametrize("kind", ["item", "oindex", "vindex", "write"])
def test_a_uint8_tensor_index_is_refused_not_taken_as_positions(a, kind):
    """torch reads a uint8 index as a mask, numpy as positions: neither guess is made, and
    nothing is written."""
    index = torch.tensor([0, 0, 1], dtype=torch.uint8)
    with pytest.raises(SelectionError, match=r"torch\.uint8 tensor \(shape \(3,\)\).*\.bool\(\)"):
        if kind == "item":
            a[index]
        elif kind == "oindex":
            a.oindex[index, [1]]
        elif kind == "vindex":
            a.vindex[index, index]
        else:
            a[index] = -1
    assert np.array_equal(a[...].numpy(), DATA)


@pytest.mark.parametrize("mask", [np.True_, True, np.array(True)])
def test_a_0d_mask_of_any_spelling_selects_a_0d_array_as_numpy_does(mask):
    zero_d = tz.create_array("memory://", shape=(), dtype="int32", fill_value=3)
    assert zero_d[mask].tolist() == np.array(3)[mask].tolist() == [3]
    assert zero_d[np.False_].tolist() == []
    assert zero_d.get_mask_selection(mask).tolist() == [3]


def test_a_range_index_reads_and_writes_the_positions_it_holds(a):
    expected = DATA[[2, 0]][:, [1, 2]]
    assert np.array_equal(a.oindex[range(2, -1, -2), range(1, 3)].numpy(), expected)
    assert np.array_equal(a[range(1, 3)].numpy(), DATA[1:3])
    a[range(0, 3, 2)] = -1
    assert a[:, 0].tolist() == [-1, 4, -1]
