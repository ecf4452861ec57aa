"""The zip archives open in this process, one per file, shared by every ``ZipStore`` of it.

The end of the interpreter writes the directory of each one still open for writing; a
forked child keeps its parent's as read-only snapshots, never written to or closed there.
"""

from __future__ import annotations

import atexit
import contextlib
import os
from typing import Any

from torchzarr.forksafe import LockTable

__all__ = ["ORPHANS", "archives", "closed_at_exit", "path_locks"]

#: the open archive of each zip, by store identity (the file's real path)
archives: dict[str, Any] = {}
#: opening or closing one path's archive; other paths never wait
path_locks = LockTable()
#: the parent's archives, kept alive and never closed in a forked child (the parent writes on)
ORPHANS: list[Any] = []
#: zips whose directory the exit wrote: its last write
closed_at_exit: set[str] = set()


def _after_fork_in_child() -> None:
    for archive in archives.values():
        archive.freeze()


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
