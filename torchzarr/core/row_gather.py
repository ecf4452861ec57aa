"""Row gathers along axis 0 of a sharded array, through the engine's shard reader."""

from __future__ import annotations

import numpy as np

from torchzarr import telemetry
from torchzarr.core.array import Array
from torchzarr.core.engine import run_parallel

__all__ = ["gather_rows", "keep_shard_indexes"]


def gather_rows(array: Array, rows: np.ndarray, out: np.ndarray) -> bool:
    """Fill ``out[i]`` with row ``rows[i]`` of ``array`` (int64 rows, any order, repeats).

    Only for arrays whose shards and inner chunks span every axis but the first (the layout
    the feature store writes): the touched inner chunks are fetched with cached shard
    indexes, then laid out in one pass. Returns False, doing nothing, for any other array
    (read it with ``array.read`` then).

    Example:
        >>> import torch, torchzarr as tz
        >>> arr = tz.create_array("memory://", shape=(4, 2), dtype=torch.int32, chunks=(2, 2))
        >>> gather_rows(arr, np.array([3, 0]), np.empty((2, 2), np.int32))  # not sharded
        False
    """
    reader = array._source.shard_reader
    if reader is None or not reader.gather_rows(rows, out, run_parallel):
        return False
    telemetry.add("read", reads=1, bytes_delivered=out.nbytes)
    return True


def keep_shard_indexes(array: Array) -> None:
    """Keep ``array``'s shard indexes cached although its store is writable.

    Writes made in this process drop them; writes by other processes are seen once the
    array is opened afresh. Arrays without shards are left as they are.

    Example:
        >>> import torch, torchzarr as tz
        >>> keep_shard_indexes(tz.create_array("memory://", shape=(2,), dtype=torch.int8))
    """
    reader = array._source.shard_reader
    if reader is not None:
        reader.keep_indexes()
