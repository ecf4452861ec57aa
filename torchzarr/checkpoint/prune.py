"""Deleting checkpoint versions: pruning old ones after a commit (on a thread for local
disks), deleting one or all, and telling a reader whether the version it read survived.

Every deletion removes a version's ``zarr.json`` first, so a reader that finds it after
its reads read every chunk of it (:func:`version_intact`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading

from torchzarr.checkpoint import commit
from torchzarr.checkpoint.committed import manifest_lists
from torchzarr.storage import LocalStore, Store

__all__ = [
    "delete_version",
    "names_committed",
    "prune_later",
    "prune_versions",
    "remove_all",
    "version_intact",
    "wait_pruned",
]

_MARKER = "{version}/zarr.json"  # a version's group metadata: deleted first (version_intact)
_TRASH = ".torchzarr-deleting-"  # a local version being deleted is renamed to this + name


def prune_versions(store: Store, keep: int = 1) -> list[str]:
    """Delete all versions but the committed one and the ``keep - 1`` committed before it.

    Only directories a save wrote are deleted: a folder or Zarr node of someone else's
    named like a version stays. Uncommitted leftovers of killed saves are deleted too (manifests written before the
    list of earlier commits keep the newest versions instead); versions above the
    committed one and those that saves of this process are writing are not. Returns the
    versions deleted.

    Example:
        >>> st = commit.checkpoint_store("memory://")
        >>> from torchzarr.core.api import create_group
        >>> saved = {"torchzarr_node": {"type": "dict", "entries": []}}  # as a save marks it
        >>> _ = [create_group(st, path=v, attributes=saved) for v in ("v000001", "v000002")]
        >>> _ = create_group(st, path="v000000")  # someone else's group, named like a version
        >>> commit.commit_version(st, "v000002")
        >>> prune_versions(st)
        ['v000001']
    """
    manifest = commit.read_manifest(store)
    current = commit.committed_version(store, manifest)  # one read: a commit meanwhile waits
    writing = commit.versions_writing(store)
    older = [
        v
        for v in commit.list_versions(store)
        if commit.version_number(v) < commit.version_number(current) and v not in writing
    ]
    before = (manifest or {}).get("previous")  # committed: a killed save's leftover never is
    candidates = [v for v in before if v in older] if isinstance(before, list) else older[::-1]
    kept = set(candidates[: max(0, keep - 1)])
    doomed = [v for v in older if v not in kept and commit.written_by_saves(store, v)]
    for version in doomed:
        delete_version(store, version)
    _sweep_trash(store)
    return doomed


def delete_version(store: Store, version: str) -> None:
    """Delete one version's files (a local one in one pass, temporary files included).

    Example:
        >>> st = commit.checkpoint_store("memory://")
        >>> from torchzarr.core.api import create_group
        >>> delete_version(st, create_group(st, path="v000001").path)
        >>> st.list_dir("")[1]  # no version group is left
        []
    """
    if isinstance(store, LocalStore):
        # renamed first: the version (its zarr.json too) leaves its name at once, so a
        # deletion killed midway leaves a directory no one takes for data (_sweep_trash)
        doomed, trash = store.root / version, store.root / f"{_TRASH}{version}-{os.getpid()}"
        try:
            os.rename(doomed, trash)
        except OSError:
            _delete_marker(store, version)  # renamed by another process, or gone
            trash = doomed
        shutil.rmtree(trash, ignore_errors=True)
    else:
        _delete_marker(store, version)
        store.delete_prefix(version + "/")


def _sweep_trash(store: Store) -> None:
    """Delete what deletions killed midway left (local checkpoints)."""
    if isinstance(store, LocalStore):
        with contextlib.suppress(OSError), os.scandir(store.root) as entries:
            for entry in entries:
                if entry.name.startswith(_TRASH) and entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)


def _delete_marker(store: Store, version: str) -> None:
    # its group metadata first: a reader finding it after its reads read all (version_intact)
    store.delete(_MARKER.format(version=version))


def version_intact(store: Store, version: str) -> bool:
    """Whether no deletion of ``version`` had started: check it after reading the version.

    Every deletion of a version (:func:`delete_version`, :func:`remove_all`) removes the
    version's ``zarr.json`` before anything else, so a reader that finds it *after* its
    reads read chunks that were all still there; a missing chunk then really was a fill
    value, not a file pruned by a newer save meanwhile.

    Example:
        >>> st = commit.checkpoint_store("memory://")
        >>> from torchzarr.core.api import create_group
        >>> version = create_group(st, path="v000001").path
        >>> version_intact(st, version)
        True
        >>> delete_version(st, version)
        >>> version_intact(st, version)
        False
    """
    return store.exists(_MARKER.format(version=version))


def names_committed(store: Store, version: str) -> bool:
    """Whether the manifest names ``version``, as its version or one it keeps (another
    save may have committed since); True too when it cannot be read (a caller deciding
    whether to delete the version then leaves it for the next save's prune).

    Example:
        >>> names_committed(commit.checkpoint_store("memory://"), "v000001")
        False
    """
    try:
        manifest = commit.read_manifest(store)
    except Exception:
        return True
    if manifest is None:
        return False
    return manifest_lists(manifest, version)


_PRUNING: dict[str, threading.Thread] = {}
_PRUNING_LOCK = threading.Lock()


def wait_pruned(store: Store | None = None) -> None:
    """Wait for the background deletion of old versions (of ``store``, or of all stores).

    Example:
        >>> wait_pruned()
    """
    with _PRUNING_LOCK:
        if store is None:
            threads = list(_PRUNING.values())
        else:
            found = _PRUNING.get(commit.store_id(store))
            threads = [] if found is None else [found]
    for thread in threads:
        thread.join()


def prune_later(store: Store, keep: int = 1) -> None:
    """:func:`prune_versions` after the commit, on a thread for local stores (else now).

    Deleting a version's files takes a while on local disks; the new version is already
    committed, so nothing depends on it, and the next save may start meanwhile (versions
    above the committed one are never deleted). A prune that fails or is killed leaves
    versions no manifest names, which the next save deletes. Other stores prune at once
    (not every store takes deletes from another thread).

    Example:
        >>> st = commit.checkpoint_store("memory://")
        >>> commit.commit_version(st, "v000001")
        >>> prune_later(st)
    """
    if not isinstance(store, LocalStore):
        prune_versions(store, keep)
        return
    key = commit.store_id(store)

    def run() -> None:
        with contextlib.suppress(Exception):  # leftovers are deleted by the next save
            prune_versions(store, keep)
        with _PRUNING_LOCK:
            if _PRUNING.get(key) is threading.current_thread():
                del _PRUNING[key]

    wait_pruned(store)
    thread = threading.Thread(target=run, name="torchzarr-ckpt-prune")  # not a daemon:
    with _PRUNING_LOCK:  # the interpreter finishes the deletion before it exits
        _PRUNING[key] = thread
        thread.start()  # started before anyone can find it to join


def remove_all(store: Store) -> None:
    """Delete a checkpoint: its manifest first (so no reader sees half of it), then the rest.

    Example:
        >>> remove_all(commit.checkpoint_store("memory://"))
    """
    wait_pruned(store)
    store.delete_many(["zarr.json", ".zgroup", ".zattrs"])
    # a reader still reading a version notices (version_intact)
    for version in commit.list_versions(store):
        _delete_marker(store, version)
    store.delete_prefix("")
