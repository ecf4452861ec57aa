"""User selections (ints, slices, lists, numpy arrays, torch tensors) to indexers."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from torchzarr.core import indexing
from torchzarr.errors import SelectionError

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
        if item.is_floating_point() or item.is_complex():
            raise SelectionError(f"cannot index with a tensor of dtype {item.dtype}")
        return int(item) if item.ndim == 0 else item.to(torch.int64).numpy()
    if isinstance(item, list):
        return np.asarray(item)
    return item


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


def _whole_trailing_axes(
    arrays: tuple[np.ndarray, ...], shape: tuple[int, ...]
) -> tuple[np.ndarray, ...]:
    """Coordinate arrays for numpy's ``a[i, j]`` on an array of more axes than arrays: the
    arrays broadcast together (shape B) and every axis after them taken whole, so the
    result has shape B + the remaining axes, as in numpy."""
    try:
        np.broadcast_shapes(*(item.shape for item in arrays))
    except ValueError:
        raise SelectionError(
            f"index arrays of shapes {[item.shape for item in arrays]} cannot be broadcast together"
        ) from None
    trailing = shape[len(arrays) :]
    points = [item.reshape(item.shape + (1,) * len(trailing)) for item in arrays]
    depth = max(item.ndim for item in arrays)
    points = [p.reshape((1,) * (depth + len(trailing) - p.ndim) + p.shape) for p in points]
    for axis, size in enumerate(trailing):
        where = [1] * (depth + len(trailing))
        where[depth + axis] = size
        points.append(np.arange(size).reshape(where))
    return tuple(points)


def make_indexer(
    selection: Any, shape: tuple[int, ...], chunk_shape: tuple[int, ...], kind: str = "auto"
) -> Any:
    """The indexer for a selection: ``kind`` is "basic", "orthogonal", "vectorized" or "auto".

    "auto" follows zarr-python's ``__getitem__``: basic selections are basic; a selection made
    only of arrays is vectorized (numpy's pointwise semantics), as is one integer array of
    any shape on a 1-d array (the result takes its shape); integer arrays for the first
    axes only pair up pointwise there and take the other axes whole, as in numpy
    (``a[[1, 3], [2, 3]]`` of a (4, 5, 6) array, also with ``, :`` or ``, ...`` after the
    arrays, has shape (2, 6)); arrays mixed with slices or ints
    are orthogonal: each array picks along its own axis, which keeps its place in the
    result, as in zarr-python. With one array that is torch's result too, and numpy's except
    that numpy moves the array's axis to the front when a slice separates the array from an
    int (``a[0, :, [1, 2]]`` of a (2, 3, 4) array has shape (3, 2); in numpy (2, 3)).
    Several arrays select their outer product (``a[[0, 1], :, [1, 2]]`` has shape
    (2, 3, 2); numpy and torch pair them up: (2, 3)).

    Example:
        >>> make_indexer(np.array([[0, 5], [1, 2]]), (6,), (2,)).shape
        (2, 2)
    """
    selection = to_numpy_selection(selection)
    if kind == "basic" or (kind == "auto" and indexing.is_basic_selection(selection)):
        return indexing.basic_indexer(selection, shape, chunk_shape)
    if kind == "orthogonal":
        return indexing.orthogonal_indexer(selection, shape, chunk_shape)
    if kind == "vectorized":
        return indexing.vectorized_indexer(selection, shape, chunk_shape)
    items = selection if isinstance(selection, tuple) else (selection,)
    arrays = _without_whole_tail(items)  # a[i, j, :] and a[i, j, ...] are a[i, j]
    if all(_is_fancy(item) for item in arrays) and (
        1 < len(arrays) < len(shape) and all(item.dtype != bool for item in arrays)
    ):  # arrays for the first axes: the rest taken whole, as numpy does
        return indexing.vectorized_indexer(_whole_trailing_axes(arrays, shape), shape, chunk_shape)
    if all(_is_fancy(item) for item in arrays) and (
        len(arrays) > 1
        or (arrays[0].dtype == bool and arrays[0].ndim == len(shape) > 1)
        or (arrays[0].dtype != bool and arrays[0].ndim > 1 and len(shape) == 1)
    ):
        return indexing.vectorized_indexer(arrays, shape, chunk_shape)
    return indexing.orthogonal_indexer(selection, shape, chunk_shape)


def _without_whole_tail(items: tuple[Any, ...]) -> tuple[Any, ...]:
    """``items`` without the ``:`` and ``...`` that end it (all of them if nothing else)."""
    end = len(items)
    while end > 1 and (
        items[end - 1] is Ellipsis
        or (isinstance(items[end - 1], slice) and items[end - 1] == slice(None))
    ):
        end -= 1
    return items[:end]
