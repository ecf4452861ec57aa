"""Undoing a checkpoint save that raised: a zip goes back to a savepoint taken before it.

A zip's directory is written only when it is closed, and a save appends over the old one,
so a save that fails midway would leave a file without a directory (unreadable, earlier
versions included, once the process exits with the disk still full). Savers take
:func:`zip_savepoint` before writing and call :func:`undo_failed_save` when they raise:
the file is cut back to where the save's first entry started and its old directory
written there again. ``save_checkpoint`` and ``ZarrStorageWriter`` share this.
"""

from __future__ import annotations

import contextlib
from typing import Any

from torchzarr.checkpoint import commit, prune
from torchzarr.core.nodes import ZARR_JSON
from torchzarr.errors import CheckpointConflictError, StoreError
from torchzarr.storage import Store, ZipStore
from torchzarr.storage.zip_io import Savepoint

__all__ = ["ZipSavepoint", "undo_failed_save", "zip_savepoint", "zip_under"]

#: A zip and a savepoint of it (see :meth:`ZipStore.savepoint`).
ZipSavepoint = tuple[ZipStore, Savepoint]


def zip_under(store: Store) -> ZipStore | None:
    """The zip holding ``store``'s keys: ``store`` itself, or a zip under wrappers (such
    as ``LoggingStore``) that keep its keys and so its identity; else None.

    Example:
        >>> from torchzarr.storage import MemoryStore
        >>> zip_under(MemoryStore()) is None
        True
    """
    inner: Any = store
    while not isinstance(inner, ZipStore):
        inner = getattr(inner, "inner", None)
        if inner is None:
            return None
    return inner if inner.identity == store.identity else None


def zip_savepoint(store: Store) -> ZipSavepoint | None:
    """A savepoint of the zip under ``store`` to undo a save with (None for other stores).

    Take it before the save writes anything.

    Example:
        >>> from torchzarr.storage import MemoryStore
        >>> zip_savepoint(MemoryStore()) is None
        True
    """
    zip_store = zip_under(store)
    return None if zip_store is None else (zip_store, zip_store.savepoint())


def undo_failed_save(
    store: Store,
    version: str,
    savepoint: ZipSavepoint | None,
    committed: bool,
    err: BaseException,
) -> None:
    """Leave ``store`` holding the checkpoint it held before a save that raised ``err``.

    A zip is rolled back to the ``savepoint`` taken before the save (the zip, and its
    savepoint): its file cut back to where the save's first entry started and its old
    directory written again, so the previous checkpoint stays loadable in this process
    and others, also when the save failed after its commit (a directory that did not
    fit). The roll back undoes the save's own changes only: to its version, to a root
    ``zarr.json`` the zip lacked before (a first save creates it with its version: a new
    zip goes back to an empty one) and, once it has ``committed``, to the root
    ``zarr.json`` (the manifest) and the older versions its prune deletes. If other writers changed the zip meanwhile, it is not cut back.
    Then, and elsewhere, an uncommitted version's files are deleted, to free their space
    now (a full disk is a common cause); what a killed process leaves behind goes with
    the next save. A save that failed after its commit stays committed. A note on
    ``err`` says what happened to a zip.

    Example:
        >>> from torchzarr.storage import MemoryStore
        >>> undo_failed_save(MemoryStore(), "v000001", None, False, OSError("disk full"))
    """
    rolled_back = False
    if savepoint is not None:
        zip_store, mark = savepoint

        def owned(key: str) -> bool:
            if key.startswith(f"{version}/"):
                return True
            if key == ZARR_JSON and key not in mark.entries:
                return True  # the root group the save created in a new zip, with its version
            if not committed:
                return False
            name = key.partition("/")[0]  # a version below this one: the prune's to delete
            below = 0 <= commit.version_number(name) < commit.version_number(version)
            return key == ZARR_JSON or below

        try:
            rolled_back = zip_store.roll_back(mark, owned=owned)
            err.add_note(
                f"the save was undone: {store!r} holds the previous checkpoint"
                if rolled_back
                else f"{store!r} was not cut back (other writers changed it during the "
                "save, or it was closed): it holds the previous checkpoint unless the save "
                "failed after its commit"
            )
        except StoreError as failed:  # rolled back in this process; its directory waits
            rolled_back = True
            err.add_note(f"{store!r} holds the previous checkpoint again, but: {failed}")
    if not rolled_back and (
        isinstance(err, CheckpointConflictError) or not prune.names_committed(store, version)
    ):
        with contextlib.suppress(Exception):
            prune.delete_version(store, version)
    with contextlib.suppress(Exception):
        commit.close_archive(store)  # a zip keeps its earlier versions readable
