"""The feature store's read-ahead: one batch read on a background thread, taken by the
matching read."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from torchzarr.features.index import FeatureBatch
from torchzarr.forksafe import new_lock

__all__ = ["Prefetcher"]


class Prefetcher:
    """Reads one batch ahead on its own thread (started on first use).

    A batch is keyed by ``(ids, *options)`` and tagged with the state it was read from
    (compared by identity): :meth:`take` hands it over only when the key matches and that
    state is still current.

    Example:
        >>> ahead = Prefetcher()
        >>> state = object()
        >>> ahead.start((np.array([1, 2]), "emb"), state, lambda: {"emb": "rows 1, 2"})
        >>> ahead.take((np.array([1, 2]), "emb"), lambda: state)
        {'emb': 'rows 1, 2'}
        >>> ahead.close()
    """

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._lock = new_lock()
        self._pending: tuple[tuple[Any, ...], object, Future[FeatureBatch]] | None = None

    def start(self, key: tuple[Any, ...], state: object, read: Callable[[], FeatureBatch]) -> None:
        """Run ``read`` in the background, replacing any batch not taken yet."""
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1, thread_name_prefix="torchzarr-features")
            future = self._pool.submit(read)
            self._pending = (key, state, future)

    def take(self, key: tuple[Any, ...], current: Callable[[], object]) -> FeatureBatch | None:
        """The batch started with ``key``, or None (another key, nothing started, or a
        state other than ``current()`` published since). A failed read raises here."""
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is None:
            return None
        started_key, state, future = pending
        if not _same_key(started_key, key):
            return None
        batch = future.result()
        return batch if state is current() else None

    def close(self) -> None:
        """Stop the thread once its read is done (it restarts on demand)."""
        with self._lock:
            pool, self._pool, self._pending = self._pool, None, None
        if pool is not None:
            pool.shutdown(wait=True)


def _same_key(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    """Keys equal item by item (numpy arrays by value)."""
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
            if not (isinstance(x, np.ndarray) and isinstance(y, np.ndarray)):
                return False
            if not np.array_equal(x, y):
                return False
        elif x != y:
            return False
    return True
