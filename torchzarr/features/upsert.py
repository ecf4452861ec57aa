"""One upsert of the feature store: rows stored first, the new state published last."""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import torch

from torchzarr.core.array import Array
from torchzarr.core.cache import ChunkCache
from torchzarr.core.group import Group
from torchzarr.dtypes import data_type
from torchzarr.features.fits import as_stored, check_row, check_stored
from torchzarr.features.layout import (
    Published,
    create_feature_array,
    is_own_feature,
    publish,
    published_stamp,
    reopened,
)
from torchzarr.features.marks import clear_lone_markers
from torchzarr.features.rows import IDS, plan_upsert, set_rows, write_rows
from torchzarr.tensors import tensor_from_storage

__all__ = ["apply_write"]


def apply_write(
    group: Group,
    published: Published,
    query: np.ndarray,
    values: dict[str, torch.Tensor],
    cache: ChunkCache,
    layout: dict[str, Any],
) -> Published:
    """Store one write's rows and new ids, then publish; return the state to swap in.

    ``layout`` holds :func:`create_feature_array`'s options for features seen first here.
    Readers elsewhere trust only rows below the published ``num_rows`` and the listed
    features, so the group attribute is written last.

    Example:
        >>> state = apply_write(group, published, ids, {"x": x}, cache, {})  # doctest: +SKIP
    """
    old_rows = published.index.num_rows
    rows, keep, new_ids = plan_upsert(published.index, query)
    total = old_rows + new_ids.size

    arrays = dict(published.arrays)
    for name, value in values.items():
        if name in arrays:
            check_row(name, arrays[name], value)
    types = {
        name: arrays[name].data_type if name in arrays else data_type(value.dtype)
        for name, value in values.items()
    }
    # whatever the conversion to the stored form refuses (float8_e8m0fnu values <= 0, say)
    # is refused now, before anything is written; most values are converted one at a time
    # as they are written (a host copy of one feature of CUDA tensors at a time)
    early = {name: check_stored(name, value, types[name]) for name, value in values.items()}
    clear_lone_markers(group, published.store_id, arrays)
    created: list[str] = []  # only what this write made may be removed if it fails
    try:
        if total != old_rows:  # from the shapes as stored: see set_rows
            for name, arr in arrays.items():
                if name in values:  # every new row is written below
                    arr.resize(total, *arr.shape[1:])
                else:
                    set_rows(arr, old_rows, total)
        for name, value in values.items():
            if name not in arrays:
                shape = tuple(value.shape[1:])
                arrays[name] = create_feature_array(
                    group, name, value.dtype, shape, total, store_id=published.store_id, **layout
                )
                created.append(name)  # made whole: create_feature_array cleans up its own
        for name, value in values.items():
            stored = early.pop(name)
            if stored is None:
                stored = as_stored(name, value, types[name])
            write_rows(arrays[name], rows, _selected(stored, keep, arrays[name]))
            del stored
        # the ids, then the attribute, last: readers elsewhere trust rows below num_rows
        # and the listed features; xarray sees new ids only once their rows are stored
        return publish(group, published, arrays, new_ids, cache)
    except BaseException:
        _shrink_back(group, published, [*published.arrays, IDS], created)
        raise


def _selected(stored: np.ndarray, keep: np.ndarray, arr: Array) -> torch.Tensor:
    """The rows ``keep`` of a stored-form value, as a tensor of ``arr``'s dtype (its bits
    for bfloat16 and float8: the write converts nothing more)."""
    if keep.size != stored.shape[0] or np.any(keep != np.arange(keep.size)):
        stored = np.take(stored, keep, axis=0)
    return tensor_from_storage(stored, arr.data_type)


def _shrink_back(group: Group, published: Published, grown: list[str], created: list[str]) -> None:
    """After a failed write: the ``grown`` arrays back to the published row count and the
    features the write ``created`` removed (if they still are this store's feature arrays:
    a node the write did not make is never deleted), so that other readers (xarray,
    zarr-python) see the store as published. Shapes are compared as stored, not as the
    handles hold them (a resize that failed half-way, a v2 ``.zattrs`` not written, has
    a longer array stored than its handle knows). Overwritten rows keep their new values.
    Nothing happens when another writer has published since (its rows must stay), or when
    this write did publish (the failure came after); what fails here is mended by the next
    write (:func:`set_rows`)."""
    rows = published.index.num_rows
    try:
        fresh = reopened(group)
        current = published_stamp(fresh)
    except Exception:
        return  # the store cannot even be read now
    if current != (published.store_id, published.version):
        return
    for name in grown:
        with contextlib.suppress(Exception):
            arr = fresh[name]
            if isinstance(arr, Array) and arr.shape[0] != rows:
                handle = published.arrays.get(name, arr)
                handle.resize(rows, *arr.shape[1:])  # from the stored shape
    for name in created:
        with contextlib.suppress(Exception):
            if is_own_feature(group, name, published.store_id):
                del group[name]
