"""User selections (ints, slices, lists, numpy arrays, torch tensors) to indexers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from torchzarr.core import indexing
from torchzarr.core.mixed_points import is_mixed_points_selection, mixed_points_indexer
from torchzarr.errors import BoundsError, SelectionError

__all__ = ["make_indexer", "to_numpy_selection"]


def _convert(item: Any) -> Any:
    if isinstance(item, torch.Tensor):
        if item.is_meta:
            raise SelectionError("cannot index with a meta tensor (it holds no data)")
        if item.layout != torch.strided:
            raise SelectionError(
                f"cannot index with a {item.layout} tensor: pass a dense one (.to_dense())"
            )
        item = item.detach().cpu()
        if item.dtype == torch.bool:
            return item.numpy()
        if item.dtype == torch.uint8:  # torch reads these as masks, numpy as positions
            raise SelectionError(
                f"cannot index with a torch.uint8 tensor (shape {tuple(item.shape)}): torch "
                "takes it as a mask, numpy as positions; pass .bool() for a mask or .long() "
                "for positions"
            )
        if item.is_floating_point() or item.is_complex():
            raise SelectionError(f"cannot index with a tensor of dtype {item.dtype}")
        if item.dtype == torch.uint64:  # past 2**63 it would wrap to a negative int64
            return item.item() if item.ndim == 0 else item.numpy()
        return int(item) if item.ndim == 0 else item.to(torch.int64).numpy()
    if isinstance(item, list):
        return _list_array(item)
    if isinstance(item, (bool, np.bool_)):  # a 0-d mask, as numpy reads it
        return np.asarray(item)
    if isinstance(item, range):  # positions, as numpy and torch read it
        return np.arange(item.start, item.stop, item.step, dtype=np.int64)
    return item


def _list_array(item: list[Any]) -> np.ndarray:
    """A list index as a numpy array; ragged lists and ints past 64 bits refused by name."""
    try:
        arr = np.asarray(item)
    except ValueError:
        raise SelectionError(
            f"cannot index with the ragged list {_short(item)}: its nested lists differ in length"
        ) from None
    if arr.dtype.kind in "fO" and arr.size:  # ints past int64 make object (or float) arrays
        values = list(_flat(item))
        if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            big = next((v for v in values if not -(2**63) <= v < 2**63), values[0])
            raise BoundsError(f"index {big} is out of bounds: indices must fit in 64 bits")
    return arr


def _flat(item: Any) -> Iterator[Any]:
    for value in item:
        if isinstance(value, list | tuple):
            yield from _flat(value)
        else:
            yield value


def _short(item: Any) -> str:
    text = repr(item)
    return text if len(text) <= 80 else f"{text[:77]}..."


def to_numpy_selection(selection: Any) -> Any:
    """Replace torch tensors and lists in a selection by numpy arrays or ints.

    Example:
        >>> to_numpy_selection((torch.tensor([1, 2]), slice(None)))
        (array([1, 2]), slice(None, None, None))
    """
    if isinstance(selection, tuple):
        return tuple(_convert(item) for item in selection)
    return _convert(selection)


def _is_fancy(item: Any) -> bool:
    return isinstance(item, np.ndarray) and item.ndim > 0


def make_indexer(
    selection: Any, shape: tuple[int, ...], chunk_shape: tuple[int, ...], kind: str = "auto"
) -> Any:
    """The indexer for a selection: ``kind`` is "basic", "orthogonal", "vectorized" or "auto".

    "auto" follows zarr-python's ``__getitem__``, and numpy where zarr-python refuses.
    Basic selections are basic; one integer array of any shape on a 1-d array is vectorized
    (the result takes its shape), as is a boolean mask of the array's shape. Two or more
    integer arrays follow numpy's advanced indexing: the arrays and the ints broadcast
    together (shape B) and pair up pointwise; B replaces their axes where they stand
    together and goes first where a slice or an Ellipsis parts them; slices (any non-zero
    step) keep their axes (``a[0, [1, 2], [3, 4]]`` of a (4, 5, 6) array has shape (2,),
    ``a[:, [1, 2], [3, 4]]`` (4, 2), ``a[[1, 2], :, [3, 4]]`` (2, 5)). One array mixed with
    ints or slices is orthogonal, as in zarr-python: the array picks along its own axis,
    which keeps its place (``a[0, :, [1, 2]]`` of a (2, 3, 4) array has shape (3, 2); numpy
    moves the array's axis to the front: (2, 3)). 1-d masks beside integer arrays or other
    masks are orthogonal too, as in zarr-python (``a[mask, [1, 2]]``; numpy pairs them up).

    Example:
        >>> make_indexer(np.array([[0, 5], [1, 2]]), (6,), (2,)).shape
        (2, 2)
        >>> make_indexer((slice(None), [1, 2], [3, 4]), (4, 5, 6), (2, 2, 2)).shape
        (4, 2)
        >>> make_indexer((np.array([True, False, True, False]), [1, 2]), (4, 6), (2, 4)).shape
        (2, 2)
    """
    selection = to_numpy_selection(selection)
    if kind == "basic" or (kind == "auto" and indexing.is_basic_selection(selection)):
        return indexing.basic_indexer(selection, shape, chunk_shape)
    if kind == "orthogonal":
        return indexing.orthogonal_indexer(selection, shape, chunk_shape)
    if kind == "vectorized":
        return indexing.vectorized_indexer(selection, shape, chunk_shape)
    if is_mixed_points_selection(selection):  # several integer arrays: numpy's pointwise rule
        return mixed_points_indexer(selection, shape, chunk_shape)
    items = selection if isinstance(selection, tuple) else (selection,)
    if not shape and len(items) == 1 and _is_bool(items[0]) and not items[0].ndim:
        # numpy: a 0-d mask on a 0-d array takes its one element, or none
        return indexing.vectorized_indexer(items, shape, chunk_shape)
    arrays = _without_whole_tail(items)  # a[mask, :] and a[mask, ...] are a[mask]
    if (
        len(arrays) == 1
        and _is_fancy(arrays[0])
        and (
            (arrays[0].dtype == bool and arrays[0].ndim == len(shape) > 1)
            or (arrays[0].dtype != bool and arrays[0].ndim > 1 and len(shape) == 1)
        )
    ):
        if len(arrays) < len(items):  # the tail still counts: one Ellipsis, not too many
            indexing.normalize_selection(items, len(shape))
        return indexing.vectorized_indexer(arrays, shape, chunk_shape)
    _check_orthogonal_arrays(items, shape)
    return indexing.orthogonal_indexer(selection, shape, chunk_shape)


def _is_bool(item: Any) -> bool:
    return isinstance(item, np.ndarray) and item.dtype == bool


def _check_orthogonal_arrays(items: tuple[Any, ...], shape: tuple[int, ...]) -> None:
    """Refuse, naming them as written, the arrays an orthogonal selection cannot take."""
    for position, item in enumerate(items):
        if not isinstance(item, np.ndarray) or item.ndim == 1 or not (item.ndim or _is_bool(item)):
            continue
        what = f"an array of shape {item.shape} and dtype {item.dtype} at position {position}"
        if not item.ndim:
            raise SelectionError(
                f"a 0-d boolean index adds an axis, as None does, which torchzarr does not "
                f"support; got {what} of the selection on an array of shape {shape}"
            )
        raise SelectionError(
            f"an index array of more than one dimension must be a boolean mask of the array's "
            f"shape {shape} alone, or integers paired up pointwise with the other integer "
            f"indices, beside no boolean mask (a mask beside other indices picks along its "
            f"own axis, and must be 1-d); got {what} of the selection"
        )


def _without_whole_tail(items: tuple[Any, ...]) -> tuple[Any, ...]:
    """``items`` without the ``:`` and ``...`` that end it (all of them if nothing else)."""
    end = len(items)
    while end > 1 and (
        items[end - 1] is Ellipsis
        or (isinstance(items[end - 1], slice) and items[end - 1] == slice(None))
    ):
        end -= 1
    return items[:end]
