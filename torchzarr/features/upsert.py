"""One upsert of the feature store: rows stored first, the new state published last."""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import torch

from torchzarr.core.array import Array
from torchzarr.core.cache import ChunkCache
from torchzarr.core.group import Group
from torchzarr.features.layout import (
    Published,
    create_feature_array,
    is_own_feature,
    publish,
    published_stamp,
    reopened,
)
from torchzarr.features.rows import IDS, check_row, plan_upsert, set_rows, write_rows
from torchzarr.tensors import select_rows

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
    positions = torch.from_numpy(keep)

    arrays = dict(published.arrays)
    for name, value in values.items():
        if name in arrays:
            check_row(name, arrays[name], value)
    ids_arr = group[IDS]
    assert isinstance(ids_arr, Array)
    created: list[str] = []  # only what this write made may be removed if it fails
    try:
        for arr in arrays.values():
            set_rows(arr, old_rows, total)
        for name, value in values.items():
            if name not in arrays:
                shape = tuple(value.shape[1:])
                arrays[name] = create_feature_array(
                    group, name, value.dtype, shape, total, store_id=published.store_id, **layout
                )
                created.append(name)
        for name, value in values.items():
            data = select_rows(value, positions.to(value.device))
            write_rows(arrays[name], rows, data)
        set_rows(ids_arr, old_rows, total)
        if new_ids.size:
            ids_arr[old_rows:total] = new_ids
    except BaseException:
        _shrink_back(group, published, [*published.arrays.values(), ids_arr], created)
        raise
    # publish last: readers elsewhere trust rows below num_rows and the listed features
    return publish(group, published, arrays, new_ids, cache)


def _shrink_back(
    group: Group, published: Published, grown: list[Array], created: list[str]
) -> None:
    """After a failed write: ``grown`` arrays back to the published row count and the
    features the write ``created`` removed (if they still are this store's feature arrays:
    a node the write did not make is never deleted), so that other readers (xarray,
    zarr-python) see the store as published. Overwritten rows keep their new values.
    Nothing happens when another writer has published since (its rows must stay); what
    fails here is mended by the next write (:func:`set_rows`)."""
    rows = published.index.num_rows
    try:
        current = published_stamp(reopened(group))
    except Exception:
        return  # the store cannot even be read now
    if current != (published.store_id, published.version):
        return
    for arr in grown:
        with contextlib.suppress(Exception):
            if arr.shape[0] != rows:
                arr.resize(rows, *arr.shape[1:])
    for name in created:
        with contextlib.suppress(Exception):
            if is_own_feature(group, name, published.store_id):
                del group[name]
