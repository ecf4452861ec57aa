"""The LMDB environments open in this process, the transactions in each, and forks of it.

LMDB forbids opening one environment twice in a process (py-lmdb refuses: "already open
in this process"), and a forked child must never use nor close its parent's (closing it
there frees the parent's reader slots): the child drops it, and py-lmdb forgets it once
nothing refers to it. A thread of the parent inside a transaction at the moment of the
fork would refer to it for ever in the child, where that thread's frames stay without the
thread. So a fork waits, as :meth:`SharedEnv.exclusive` does, until no transaction and no
opening of an environment runs in this process, and none starts until the fork is done.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from torchzarr.errors import StoreError

__all__ = ["Closed", "Gate", "SharedEnv", "check_forked", "envs", "opening"]


class Closed(Exception):
    """The shared environment was closed by another thread: open it again."""


class Gate:
    """Work that counts itself in (``with gate:``), and a hold that waits until none runs
    and keeps more from starting until released.

    Example:
        >>> gate = Gate()
        >>> with gate:
        ...     gate.active
        1
        >>> gate.hold(); gate.blocked, gate.release(), gate.blocked
        (True, None, False)
    """

    def __init__(self) -> None:
        self.cond = threading.Condition(threading.Lock())
        self.active = 0
        self.blocked = False
        self.holder: int | None = None  # the thread holding (see hold)

    def __enter__(self) -> Any:
        with self.cond:
            if self.blocked and self.holder == threading.get_ident():
                raise StoreError(
                    "an LMDB store was used by the thread that holds its environment "
                    "still (in a fork handler run while this process forks, or inside a "
                    "resize or close of it): it would wait for itself for ever"
                )
            while self.blocked:
                self.cond.wait()
            self._admit()
            self.active += 1
        return None

    def _admit(self) -> None:
        """Raise to refuse the work about to start (called holding ``cond``)."""

    def __exit__(self, *exc: object) -> None:
        with self.cond:
            self.active -= 1
            if not self.active:
                self.cond.notify_all()

    def hold(self) -> None:
        """Wait for the work running to end, and keep new work waiting until :meth:`release`."""
        with self.cond:
            while self.blocked:
                self.cond.wait()
            self.blocked, self.holder = True, threading.get_ident()
            while self.active:
                self.cond.wait()

    def release(self) -> None:
        with self.cond:
            self.blocked, self.holder = False, None
            self.cond.notify_all()

    def reset(self) -> None:
        """Start afresh in a forked child, where the parent's other threads do not exist."""
        self.cond = threading.Condition(threading.Lock())
        self.active, self.blocked, self.holder = 0, False, None


class SharedEnv(Gate):
    """One open environment of this process, and the transactions running in it.

    Changing the map size remaps the file, and closing unmaps it: both must wait until no
    transaction of this process is open (a reader may hold pointers into the map), so each
    transaction counts itself in (``with shared as env:``) and :meth:`exclusive` waits for
    none to be left.
    """

    def __init__(self, env: Any, readonly: bool, file: tuple[int, int] | None) -> None:
        super().__init__()
        self.env, self.readonly = env, readonly
        self.file = file  # (device, inode) of its data file: another file there is other data
        self.checked = time.monotonic()  # when reads last checked that file
        self.map_size = int(env.info()["map_size"])
        self.closed = False
        _live.add(self)  # registered or not (one being closed): a fork waits for it

    def __enter__(self) -> Any:
        """Count a transaction in; :class:`Closed` if the environment was closed."""
        super().__enter__()
        return self.env

    def run(self, work: Callable[[Any], Any]) -> Any:
        """``work(env)`` in a transaction counted in; no frame holds ``env`` once it ends."""
        with self as env:
            return work(env)

    def _admit(self) -> None:
        if self.closed:
            raise Closed

    def exclusive(self, work: Callable[[], None]) -> None:
        """``work()`` while no transaction of this process is open (none may start)."""
        self.hold()
        try:
            if not self.closed:
                work()
        finally:
            self.release()

    def resize(self, map_size: int) -> None:
        """Grow the map to ``map_size``; 0: to the size another process grew the file to."""

        def grow() -> None:
            if map_size == 0 or map_size > self.map_size:
                self.env.set_mapsize(map_size)
                self.map_size = int(self.env.info()["map_size"])

        self.exclusive(grow)

    def close(self) -> None:
        def close() -> None:
            self.closed = True
            self.env.close()

        self.exclusive(close)

    def forget(self) -> None:
        """Drop the parent's environment in a forked child, never closing it."""
        self.closed = True
        self.env = None  # py-lmdb forgets it once nothing refers to it


# every environment open in this process, by identity (its real path, whatever path or
# link reaches it); opening one and registering it here counts itself in at ``opening``
envs: dict[str, SharedEnv] = {}
opening = Gate()
_live: weakref.WeakSet[SharedEnv] = weakref.WeakSet()
_state = {"pid": os.getpid()}
_held: list[SharedEnv] = []  # what a fork in progress holds


def check_forked() -> None:
    """Drop the parent's environments in a child forked without Python's fork handlers."""
    if _state["pid"] != os.getpid():
        _after_fork_in_child()


def _before_fork() -> None:
    check_forked()
    opening.hold()
    for shared in list(_live):
        shared.hold()
        _held.append(shared)


def _after_fork_in_parent() -> None:
    for shared in _held:
        shared.release()
    _held.clear()
    opening.release()


def _after_fork_in_child() -> None:
    if _state["pid"] == os.getpid():
        return
    _state["pid"] = os.getpid()
    for shared in list(_live):
        shared.forget()
    _live.clear()  # their locks may be held by threads the child does not have
    envs.clear()
    _held.clear()
    opening.reset()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_after_fork_in_parent,
        after_in_child=_after_fork_in_child,
    )
