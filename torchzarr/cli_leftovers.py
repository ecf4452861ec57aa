"""What a failed ``torchzarr copy``, ``rechunk`` or ``demo`` leaves at its destination: the
zip file, database or directory the command created and left empty goes, and the message
says what stays."""

from __future__ import annotations

import contextlib
import os
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from torchzarr.core import nodes
from torchzarr.errors import TorchZarrError
from torchzarr.storage.base import Store
from torchzarr.storage.lmdb import LMDBStore
from torchzarr.storage.local import LocalStore
from torchzarr.storage.registry import resolve_store
from torchzarr.storage.sqlite import SQLiteStore
from torchzarr.storage.wrappers import ForwardingStore
from torchzarr.storage.zip import ZipStore

__all__ = ["WriteWatch", "copy_leftovers", "destination"]


@contextlib.contextmanager
def destination(url: str) -> Iterator[Store]:
    """The store at ``url`` opened to write, closed at the end (a zip writes its directory
    then). A local directory, zip file, SQLite or LMDB database that did not exist before
    and that a failure leaves holding nothing is removed, with the directories made for it.

    Example:
        >>> with destination("memory://leftovers-doc") as store:
        ...     store.set("a", b"1")
    """
    store = resolve_store(url, mode="a")
    where = _local_path(store)
    made = None if where is None else _first_missing(where)
    database, emptied = _database_files(store), False
    try:
        with store:
            try:
                yield store
            except BaseException:  # a database's keys are read while it is open
                emptied = made is not None and bool(database) and not _holds_keys(store)
                raise
    except BaseException:
        if where is not None and made is not None:
            with contextlib.suppress(OSError, zipfile.BadZipFile):
                for file in database if emptied else []:  # closed now: its files can go
                    file.unlink(missing_ok=True)
                _remove_if_empty(where, made)
        raise


def _local_path(store: Store) -> Path | None:
    if isinstance(store, LocalStore):
        return Path(store.root)
    if isinstance(store, ZipStore | SQLiteStore | LMDBStore):
        return Path(store.path)
    return None


def _database_files(store: Store) -> list[Path]:
    """The files a SQLite or LMDB database at a new path is made of (none for other stores)."""
    if isinstance(store, SQLiteStore):
        return [Path(store.path + suffix) for suffix in ("", "-wal", "-shm", "-journal")]
    if isinstance(store, LMDBStore):
        if store.lmdb_options.get("subdir", True):  # a directory of the two files
            return [Path(store.path, "data.mdb"), Path(store.path, "lock.mdb")]
        return [Path(store.path), Path(store.path + "-lock")]
    return []


def _holds_keys(store: Store) -> bool:
    """Whether ``store``, still open, holds a key (or cannot tell)."""
    try:
        return next(iter(store.list_prefix("")), None) is not None
    except (TorchZarrError, OSError):
        return True


def _first_missing(path: Path) -> Path | None:
    """The topmost of ``path`` and its parents that does not exist, or None."""
    missing = None
    while not os.path.lexists(path):
        missing, path = path, path.parent
    return missing


def _remove_if_empty(path: Path, made: Path) -> None:
    """Remove ``path``, a zip file of no entry or a directory of no file, and the empty
    directories above it up to ``made``, which the command created (also where ``path``
    itself was never created: a zip that failed to open)."""
    if not os.path.lexists(path):
        pass
    elif path.is_file():
        with zipfile.ZipFile(path) as archive:
            if archive.namelist():
                return
        path.unlink()
    elif path.is_dir():
        walked = list(os.walk(path, topdown=False))
        if any(files for _, _, files in walked):
            return
        for directory, _, _ in walked:  # the deepest first
            os.rmdir(directory)
    else:
        return
    above = path.parent
    while above == made or made in above.parents:
        try:
            above.rmdir()
        except OSError:
            return
        above = above.parent


class WriteWatch(ForwardingStore):
    """``inner``, noting whether anything was written to or deleted from it through this:
    a write or delete that failed counts if a key it wrote is there after all, or a key it
    deleted is gone (it may have done part of its work before failing).

    Example:
        >>> from torchzarr.storage.memory import MemoryStore
        >>> watched = WriteWatch(MemoryStore())
        >>> watched.wrote, watched.set("a", b"1"), watched.wrote
        (False, None, True)
    """

    wrote = False

    def __repr__(self) -> str:
        return repr(self.inner)  # messages name the store the command was given

    def _call(self, method: str, keys: Sequence[str], *args: Any) -> Any:
        if not method.startswith(("set", "delete")):
            return getattr(self.inner, method)(*args)
        try:
            result = getattr(self.inner, method)(*args)
        except BaseException:
            self.wrote = self.wrote or self._changed_in_part(method, keys)
            raise
        self.wrote = self.wrote or bool(keys)
        return result

    def _changed_in_part(self, method: str, keys: Sequence[str]) -> bool:
        """Whether a failed ``method`` of ``keys`` changed any: else the store is as it was."""
        if method == "delete_prefix":
            return True  # its keys are not known: it may have deleted some
        try:
            if method.startswith("delete"):
                return not all(self.inner.exists(key) for key in keys)
            return any(self.inner.exists(key) for key in keys)
        except (TorchZarrError, OSError):
            return True  # cannot tell: it may have


def copy_leftovers(store: Store, where: str, dest: str, overwrite: bool) -> str:
    """What a copy stopped after its first write left at ``where`` in ``store`` (``dest``
    on the command line), for the error message. The copy writes the metadata documents
    last, having deleted those there first with ``overwrite``: a node opens there only if
    it stopped among its last documents.

    Example:
        >>> from torchzarr.storage.memory import MemoryStore
        >>> copy_leftovers(MemoryStore({"x/c/0": b"1"}), "x", "out.zarr", False)[:45]
        '(the destination out.zarr path /x holds the k'
    """
    place = f"the destination {dest} path /{where}"
    try:
        kind = nodes.read_kind(store, where)
    except (TorchZarrError, OSError):
        return f"({place} holds what was copied before the copy stopped: run it again, with --overwrite)"
    prefix = f"{where}/" if where else ""
    below = any(key.rpartition("/")[2] in nodes.METADATA_NAMES for key in store.list_prefix(prefix))
    if kind is not None or below:  # it stopped among the documents, the deepest first
        return f"({place} may hold an incomplete copy: run the copy again, with --overwrite)"
    held = "the keys copied before the copy stopped"
    held += ", and those it held before not yet replaced or deleted," if overwrite else ""
    return (
        f"({place} holds {held} but no metadata: no node opens there; run the copy "
        "again, with --overwrite)"
    )
