"""Listeners told when a store's keys below a path were replaced by raw key writes.

Zarr's own writes go through ``core``, which keeps its decoded-chunk caches right; a copy of
raw keys (:func:`~torchzarr.storage.copy_keys`) replaces chunks below ``core``'s back, so it
tells the listeners ``core`` registers here (the storage layer knows nothing of caches).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

__all__ = ["keys_replaced", "on_keys_replaced"]

_LISTENERS: list[Callable[[str, str], None]] = []
_LOCK = threading.Lock()


def on_keys_replaced(listener: Callable[[str, str], None]) -> Callable[[], None]:
    """Call ``listener(identity, path)`` after raw writes replaced keys below ``path`` of the
    store named ``identity`` (once per listener, however often it is registered). Returns a
    function that unregisters it.

    Example:
        >>> seen = []
        >>> stop = on_keys_replaced(lambda identity, path: seen.append(path))
        >>> keys_replaced("memory://doc", "g/x")
        >>> stop()
        >>> seen
        ['g/x']
    """
    with _LOCK:
        if listener not in _LISTENERS:
            _LISTENERS.append(listener)

    def stop() -> None:
        with _LOCK:
            if listener in _LISTENERS:
                _LISTENERS.remove(listener)

    return stop


def keys_replaced(identity: str, path: str) -> None:
    """Tell every listener that keys below ``path`` ("" for all) of the store named
    ``identity`` were replaced.

    Example:
        >>> keys_replaced("memory://doc", "")
    """
    with _LOCK:
        listeners = list(_LISTENERS)
    for listener in listeners:
        listener(identity, path)
