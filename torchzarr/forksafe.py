"""Locks that a forked child (a DataLoader worker) gets back unlocked, never held forever.

A lock that some thread of the parent held at the moment of ``fork`` stays locked in the
child, where that thread does not exist: the child's first use would deadlock. Every lock
made here is reset in the child, the way the standard ``logging`` module resets its own
(and fsspec's event-loop lock, which fsspec's own hook leaves as it was).
"""

from __future__ import annotations

import os
import sys
import threading
import weakref
from typing import Any

__all__ = ["LockTable", "new_lock", "new_rlock"]

_locks: weakref.WeakSet[Any] = weakref.WeakSet()
_guard = threading.Lock()


def new_lock() -> threading.Lock:
    """A ``threading.Lock`` that is reset in a forked child.

    Example:
        >>> with new_lock():
        ...     pass
    """
    lock = threading.Lock()
    with _guard:
        _locks.add(lock)
    return lock


def new_rlock() -> threading.RLock:
    """A ``threading.RLock`` that is reset in a forked child.

    Example:
        >>> with new_rlock():
        ...     pass
    """
    lock = threading.RLock()
    with _guard:
        _locks.add(lock)
    return lock


class LockTable:
    """A lock per key (a path, a store's identity), made on first use and forgotten once
    nobody holds it; every lock is reset in a forked child, as :func:`new_lock`'s are.

    Work on one key waits for other work on that key only, never for work on other keys.
    Take a lock with ``with table[key]:``, which keeps it alive while held: a lock nobody
    refers to is forgotten, so ``table[key].acquire()`` and a later ``table[key].release()``
    may reach two different locks.

    Example:
        >>> locks = LockTable()
        >>> with locks["/data/a.zip"]:
        ...     locks["/data/a.zip"] is locks["/data/a.zip"]
        True
    """

    def __init__(self, reentrant: bool = False) -> None:
        self._locks: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()
        self._guard = new_lock()
        self._make = new_rlock if reentrant else new_lock

    def __getitem__(self, key: str) -> Any:
        with self._guard:
            lock = self._locks.get(key)
            if lock is None:
                lock = self._locks[key] = self._make()
            return lock


def _reset_in_child() -> None:
    global _guard
    _guard = threading.Lock()
    for lock in list(_locks):
        lock._at_fork_reinit()
    # fsspec's own at-fork hook clears its loop but not the lock guarding loop creation; a
    # lock held by another thread at fork would deadlock the child's first remote request
    asyn = sys.modules.get("fsspec.asyn")
    if asyn is not None:
        asyn.reset_lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_in_child)
