"""Flushing a local store's files and directories to disk, on a few threads at once."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

__all__ = ["flush", "on_threads", "up_to_root"]


def flush(path: str) -> None:
    """``fsync`` the file or directory at ``path``.

    Example:
        >>> import tempfile
        >>> flush(tempfile.gettempdir())
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def on_threads(work: Callable[[Any], object], items: Sequence[Any], threads: int) -> None:
    """``work`` on every item: on up to ``threads`` threads when there are several.

    Example:
        >>> done = []
        >>> on_threads(done.append, [1, 2], 2); sorted(done)
        [1, 2]
    """
    if len(items) <= 1:
        for item in items:
            work(item)
        return
    with ThreadPoolExecutor(min(threads, len(items)), "torchzarr-fsync") as pool:
        list(pool.map(work, items))


def up_to_root(directories: Iterable[Path], root: Path) -> list[Path]:
    """``directories`` and every directory above them up to ``root``, once each: a
    directory a write made is an entry of its parent, flushed only with the parent.

    Example:
        >>> [str(d) for d in up_to_root([Path("/r/c/0"), Path("/r/c/1")], Path("/r"))]
        ['/r/c/0', '/r/c', '/r', '/r/c/1']
    """
    found: dict[Path, None] = {}
    for directory in directories:
        while directory not in found:
            found[directory] = None
            if directory == root or root not in directory.parents:
                break
            directory = directory.parent
    return list(found)
