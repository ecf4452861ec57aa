"""The SQLite connections of this process: each thread's, and what a fork does to them."""

from __future__ import annotations

import os
import sqlite3
import threading
import weakref
from typing import TYPE_CHECKING

from torchzarr.errors import StoreError

if TYPE_CHECKING:
    from torchzarr.storage.sqlite import SQLiteStore

__all__ = ["FORKS", "Connection", "check_forked", "check_not_forking", "running"]


class Connection:
    """One thread's connection, and the lock that each statement or transaction on it holds.

    Another thread closing it (``SQLiteStore.close``) takes the lock first, so it waits for
    the statement running on it instead of freeing the connection under it (a crash).
    """

    __slots__ = ("blobs", "closed", "connection", "lock", "utf16")

    def __init__(self, connection: sqlite3.Connection, utf16: bool = False) -> None:
        self.connection = connection
        self.lock = threading.Lock()
        self.closed = False
        self.utf16 = utf16  # the database's text encoding (see sqlite_prefix.refuse_in_utf16)
        # blobs opened on it: Python's sqlite3 keeps an entry for each until it closes
        self.blobs = 0

    def close(self) -> None:
        with self.lock:
            self.closed = True
            self.connection.close()


class _Forks:
    """Every live store of this process, and what the fork handlers hold across a fork.

    SQLite keeps per-process state for each open database file (the locks it believes this
    process holds, the mapped ``-shm``). A forked child inherits that state but not the POSIX
    locks behind it: a connection the child opens to a file the parent had open takes no real
    locks, and the parent's last close then checkpoints and deletes the WAL the child still
    writes to (its later writes are lost, its reads go stale). So no connection stays open
    across a fork: :func:`_before_fork` closes them all and keeps new ones from opening until
    the fork is done.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()  # guards registration; held from before a fork to after
        self.stores: weakref.WeakValueDictionary[int, SQLiteStore] = weakref.WeakValueDictionary()
        self.held: list[SQLiteStore] = []  # stores whose lock a fork in progress holds
        self.forking: int | None = None  # the thread running that fork's handlers
        self.pid = os.getpid()
        # after a fork that ran no handlers (a C-level fork()): the parent's connections,
        # never closed nor freed here (that could checkpoint or delete the parent's WAL), and
        # the databases they had open (identities), which this process must not open at all
        self.orphans: list[Connection] = []
        self.unsafe: set[str] = set()


FORKS = _Forks()


def _before_fork() -> None:
    """Close every store's connections; each store's lock stays held until the fork is done.

    Waits, as :meth:`SQLiteStore.close` does, for the statement or transaction running on
    each connection (a ``set_many`` on another thread commits first): those hold only their
    connection's lock, never a store's, so the wait cannot deadlock. That includes a
    statement's wait for another process's lock on the database: up to the store's
    ``timeout``.
    """
    check_forked()  # a child of a fork from C: the parent's locks and connections stay
    FORKS.lock.acquire()
    FORKS.forking = threading.get_ident()
    for store in list(FORKS.stores.values()):
        store._lock.acquire()
        FORKS.held.append(store)
        store._close_connections()


def _after_fork_in_parent() -> None:
    """Let the parent's threads reconnect: each does on its next call."""
    for store in FORKS.held:
        store._lock.release()
    FORKS.held.clear()
    FORKS.forking = None
    FORKS.lock.release()


def _after_fork_in_child() -> None:
    """Start this process's bookkeeping afresh, keeping any connection the parent left open.

    Runs once per process: a fork handler registered before this module's, which uses a
    store in the child, runs it first (see :func:`check_forked`).
    """
    if FORKS.pid == os.getpid():
        return
    stores = list(FORKS.stores.values())
    locked_by_the_fork = {id(store) for store in FORKS.held}
    FORKS.lock, FORKS.held, FORKS.forking = threading.Lock(), [], None
    FORKS.pid = os.getpid()
    for store in stores:
        # only after a fork without the handlers (see _Forks): connections open, or being
        # opened or closed by another thread of the parent
        if store._all or (store._lock.locked() and id(store) not in locked_by_the_fork):
            FORKS.orphans.extend(store._all)
            FORKS.unsafe.add(store.identity)  # under any path that reaches the file
        store._reset()


def check_forked() -> None:
    """Run the child's fork handler now if this process was forked without it (C fork()).

    Example:
        >>> check_forked()  # this process's bookkeeping is its own: nothing to do
        >>> FORKS.pid == os.getpid()
        True
    """
    if FORKS.pid != os.getpid():
        _after_fork_in_child()


def check_not_forking(store: SQLiteStore) -> None:
    """Raise if this thread is inside a fork, which holds every store's lock (a deadlock).

    Example:
        >>> check_not_forking("SQLiteStore('x.db')")  # no fork running on this thread
    """
    if FORKS.forking == threading.get_ident():
        raise StoreError(
            f"cannot use {store} in a fork handler that runs while the process forks (one "
            "registered with os.register_at_fork before torchzarr was imported): every "
            "SQLiteStore is closed until the fork is done; use it before or after the fork"
        )


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_after_fork_in_parent,
        after_in_child=_after_fork_in_child,
    )


def running(owner: weakref.ref[threading.Thread]) -> bool:
    """True while the thread behind ``owner`` may still run code (it has not finished).

    Example:
        >>> running(weakref.ref(threading.current_thread()))
        True
    """
    thread = owner()
    return thread is not None and thread.is_alive()
