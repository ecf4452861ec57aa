"""The zip archives open in this process, one per file, shared by every ``ZipStore`` of it.

Each store keeps the archive it first used, so what it reads stays one consistent version
of the zip: the archive follows this process's own writes, while a new version that another
writer put at the path is read by the stores that start after it (see :func:`choose_archive`).
The end of the interpreter (or of a multiprocessing child, which leaves through
``os._exit`` and runs no ``atexit`` function) writes the directory of each one still open
for writing; a forked child keeps its parent's as read-only snapshots, never written to or
closed there.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import multiprocessing.util
import os
import weakref
from collections.abc import Callable
from typing import Any

from torchzarr.errors import StoreError
from torchzarr.forksafe import LockTable
from torchzarr.storage.fileio import FileSignature

_log = logging.getLogger("torchzarr")

__all__ = [
    "GONE",
    "ORPHANS",
    "archives",
    "choose_archive",
    "close_at_process_exit",
    "closed_at_exit",
    "last_closed",
    "path_locks",
    "refuse_another_version",
    "warn_writes_lost",
]

#: the open archive of each zip, by store identity (the file's real path)
archives: dict[str, Any] = {}
#: an archive this process closed to reopen its file for writing -> the reopened one
successors: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
#: the archive a ``ZipStore.close`` of this process closed last, by path: the next one
#: opened at the path carries its version on when it finds the file as that close left it
last_closed: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()
#: opening or closing one path's archive; other paths never wait
path_locks = LockTable()
#: the parent's archives, kept alive and never closed in a forked child (the parent writes on)
ORPHANS: list[Any] = []
#: zips whose directory the exit wrote: its last write
closed_at_exit: set[str] = set()
#: the process whose multiprocessing exit closes its zips (see close_at_process_exit)
_exit_hooked = {"pid": 0}


#: ``closed_as`` of an archive whose file another writer had replaced when it was closed
GONE: FileSignature = (-1, -1, -1, -1, -1)


def refuse_another_version(path: str, closed: Any, now: Any) -> None:
    """Raise if the zip a store read, closed since by another store of this process, was
    replaced or rewritten by another writer before ``now`` opened it: the store's arrays
    hold the old version's metadata, and would read the new one's chunks by it. An archive
    this process reopened for writing (its entry in :data:`successors`) carries the
    version on.

    Example:
        >>> class Archive:
        ...     closed_as = opened_as = (1, 2, 3, 4, 5)
        >>> refuse_another_version("x.zip", Archive(), Archive())  # the same file: nothing
    """
    last = closed
    while (successor := successors.get(last)) is not None:
        if successor is now:
            return
        last = successor
    if last.closed_as is not None and now.opened_as != last.closed_as:
        raise StoreError(
            f"zip {path!r} was replaced or rewritten by another writer since this store read "
            "it (another store's close() let that version go): open the array or group again"
        )


def warn_writes_lost(path: str) -> None:
    """Log that the zip at ``path`` went (deleted, or replaced by another writer) with
    writes of this process not yet closed in it."""
    _log.warning(
        "zip %r was deleted or replaced by another writer before this process closed it: "
        "the writes not yet closed went with the old file",
        path,
    )


def choose_archive(path: str, write: bool, open_archive: Callable[[str], Any]) -> Any:
    """The archive a store of ``path`` (a store identity) takes, when it holds none or needs
    one it may write to; call it holding ``path_locks[path]``.

    The shared archive, while the file at the path is as this process last left it (or
    holds writes of this process not yet closed, or is a forked child's snapshot of the
    zip its parent writes), reopened for appending if ``write`` asks. Else another writer
    replaced or rewrote the file: it is opened (``open_archive(mode)``, mode ``"r"`` or
    ``"a"``) before the shared archive is let go, which the stores reading it keep as
    their snapshot. While the new file cannot be opened (another writer has not written
    its directory yet), a read gets the shared archive still, and a write the error.

    Example:
        >>> class Archive:  # what choose_archive needs of an archive
        ...     lock, frozen, writable = path_locks["a"], False, False
        ...     def __init__(self, mode): self.mode = mode
        ...     def unchanged_by_others(self): return True
        ...     def close(self): pass
        >>> first = choose_archive("a", False, Archive)
        >>> choose_archive("a", False, Archive) is first, choose_archive("a", True, Archive).mode
        (True, 'a')
        >>> del archives["a"]
    """
    mode = "a" if write else "r"
    current = archives.get(path)
    if current is None:
        archive = archives[path] = open_archive(mode)
        closed = last_closed.pop(path, None)
        if closed is not None and closed.closed_as == archive.opened_as:
            successors[closed] = archive  # this process's own close and reopen: one version
        return archive
    with current.lock:  # no write of this process lands on it between the check and the let go
        if not (current.frozen or current.unchanged_by_others()):
            if current.writable:  # it cannot write to another's file: its lock goes first
                if current.unclosed_writes:
                    warn_writes_lost(current.path)
                current.let_go()
            try:
                archive = open_archive(mode)
            except StoreError:
                if write:
                    raise
                return current
            current.let_go()
            archives[path] = archive
            return archive
    if write and not current.writable:  # read only until the first write
        archive = archives[path] = open_archive(mode)
        current.close()  # read only: writes nothing; its stores move to the new one
        successors[current] = archive
        return archive
    return current


def _after_fork_in_child() -> None:
    for archive in archives.values():
        archive.freeze()


def close_at_process_exit() -> None:
    """Have the exit of this process close its zips, also where it is a multiprocessing
    child (``fork`` or ``forkserver``), which leaves through ``os._exit``: no ``atexit``
    function runs there, only multiprocessing's finalizers. Call it on opening a zip for
    writing; the first call in each process registers one (a child starts with none: the
    finalizers its parent registered are cleared, or ignored, in it).

    Example:
        >>> close_at_process_exit(); close_at_process_exit()  # one finalizer a process
        >>> _exit_hooked["pid"] == os.getpid()
        True
    """
    pid = os.getpid()
    if _exit_hooked["pid"] == pid:
        return
    _exit_hooked["pid"] = pid
    # run with the finalizers of priority >= 0, before a child's queues and pipes close
    multiprocessing.util.Finalize(None, _close_all, exitpriority=1)


@atexit.register
def _close_all() -> None:
    """Write the directory of every zip still open in this process (never a forked copy)."""
    for path in list(archives):
        with path_locks[path]:
            archive = archives.get(path)
            if archive is None or archive.pid != os.getpid():
                continue  # closed meanwhile, or the parent's
            if archive.writable:  # writes refused from now on (not to a zip first opened later)
                closed_at_exit.add(path)  # first: a write waiting for the close is refused
            del archives[path]  # a later read reopens it, never finds it closed
            with contextlib.suppress(Exception):
                archive.close()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
