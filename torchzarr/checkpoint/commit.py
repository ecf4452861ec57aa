"""Versioned, atomic checkpoint commits: a save writes a new version, a manifest commits it.

Layout of a checkpoint store (plain Zarr v3; any Zarr tool opens it)::

    zarr.json        root group; attribute "torchzarr_checkpoint" is the manifest, naming
                     the committed version. Written last, as one object: the commit.
    v000007/         the committed state tree (a group)
    v000008/         a save in progress, or one killed midway: no manifest names it

Readers read only what the manifest names, so a process killed at any moment leaves the
previous checkpoint loadable (in a directory or an object store; a zip file killed during a
save loses its directory, see ``close_archive``). Old versions are deleted after the commit,
each its ``zarr.json`` first, so a load that overlapped the deletion can tell
(:func:`torchzarr.checkpoint.prune.version_intact`).

Concurrent saves: each reserves its version (in this process, and with an exclusive
``mkdir`` against other processes on a local disk), and a commit never moves the manifest
back to an older version: the save that loses that race raises
:class:`~torchzarr.errors.CheckpointConflictError` instead. Saves in progress in this
process are never pruned.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

from torchzarr.checkpoint.format import DCP_KEY_ATTRIBUTE, NODE_ATTRIBUTE
from torchzarr.core.api import create_group, open_group
from torchzarr.core.nodes import read_kind
from torchzarr.errors import (
    CheckpointConflictError,
    GroupNotFoundError,
    MetadataError,
    NodeExistsError,
    NodeNotFoundError,
    ReadOnlyError,
    StoreError,
)
from torchzarr.forksafe import LockTable
from torchzarr.storage import LocalStore, Store, resolve_store
from torchzarr.storage.file_locks import lock_exclusive, unlock

__all__ = [
    "MANIFEST_ATTRIBUTE",
    "checkpoint_store",
    "close_archive",
    "commit_lock",
    "commit_version",
    "list_versions",
    "written_by_saves",
    "committed_version",
    "next_version",
    "read_manifest",
    "release_version",
    "reserve_version",
    "reserved_version",
    "store_id",
    "version_number",
    "versions_writing",
    "with_flush_settings",
]

#: Root group attribute holding the manifest.
MANIFEST_ATTRIBUTE = "torchzarr_checkpoint"
FORMAT_VERSION = 1
_VERSION = re.compile(r"^v(\d{6,})$")
_HISTORY = 256  # earlier commits a manifest lists: what keep= may keep
_SAVE_ATTRIBUTES = (NODE_ATTRIBUTE, DCP_KEY_ATTRIBUTE)  # one marks a version's root group


def checkpoint_store(
    store: Any,
    mode: str = "a",
    *,
    storage_options: dict[str, Any] | None = None,
    fsync: bool = True,
    direct_io: bool = False,
) -> Store:
    """The store of a checkpoint; local directories flush each file to disk when ``fsync``.

    ``direct_io`` writes large local files past the page cache (see ``LocalStore``).

    Example:
        >>> checkpoint_store("memory://").read_only
        False
    """
    resolved = resolve_store(store, mode=mode, storage_options=storage_options)
    if not isinstance(resolved, LocalStore):
        return resolved
    # Durability: chunks must be on disk before the manifest that names them.
    return with_flush_settings(resolved, resolved.fsync or fsync, resolved.direct_io or direct_io)


def with_flush_settings(store: LocalStore, fsync: bool, direct_io: bool) -> LocalStore:
    """``store``, or a shallow copy of it (its class, ``read_only``...) with these settings.

    Example:
        >>> with_flush_settings(LocalStore("d", read_only=True), True, False).read_only
        True
    """
    if (store.fsync, store.direct_io) == (fsync, direct_io):
        return store
    changed = object.__new__(type(store))  # a shallow copy: a subclass's attributes too
    changed.__dict__.update(store.__dict__)
    changed.fsync, changed.direct_io = fsync, direct_io
    return changed


def read_manifest(store: Store) -> dict[str, Any] | None:
    """The committed manifest, or None when the store holds no committed checkpoint.

    Example:
        >>> read_manifest(checkpoint_store("memory://")) is None
        True
    """
    try:
        root = open_group(store, mode="r", use_consolidated=False)
    except GroupNotFoundError:
        return None  # nothing there, or an array: not a checkpoint
    except MetadataError as err:
        raise _corrupt_manifest(store, str(err)) from err
    if MANIFEST_ATTRIBUTE not in root.attrs:
        return None
    manifest = root.attrs[MANIFEST_ATTRIBUTE]
    if not isinstance(manifest, dict) or not isinstance(manifest.get("version"), str):
        raise _corrupt_manifest(store, f"attribute {MANIFEST_ATTRIBUTE!r} is {manifest!r}")
    if type(manifest.get("format", 0)) is not int:
        raise _corrupt_manifest(store, f"attribute {MANIFEST_ATTRIBUTE!r} is {manifest!r}")
    if manifest.get("format", 0) > FORMAT_VERSION:
        raise MetadataError(
            f"checkpoint in {store!r} has format {manifest['format']}; this torchzarr reads "
            f"up to {FORMAT_VERSION}: upgrade torchzarr"
        )
    return manifest


def _corrupt_manifest(store: Store, why: str) -> MetadataError:
    """The error for an unreadable root ``zarr.json``, naming the versions left to recover."""
    try:
        versions = ", ".join(list_versions(store)) or "none"
    except Exception:  # listing fails too: the message still names the file
        versions = "unknown"
    return MetadataError(
        f"the manifest of the checkpoint in {store!r} (its root zarr.json) is corrupt: {why}. "
        f"Versions in the store: {versions}; load_checkpoint(..., version=...) reads one. "
        "Loads and saves refuse this checkpoint until the file is repaired or removed "
        "(removing it also makes the next save delete those versions)"
    )


def committed_version(store: Store, manifest: dict[str, Any] | None = None) -> str:
    """The version (group path) the manifest names; raise if nothing was committed.

    Example:
        >>> committed_version(checkpoint_store("memory://"))  # doctest: +SKIP
        Traceback (most recent call last):
        NodeNotFoundError: no committed checkpoint in MemoryStore(...)
    """
    manifest = read_manifest(store) if manifest is None else manifest
    if manifest is None:
        raise NodeNotFoundError(
            f"no committed checkpoint in {store!r} (no {MANIFEST_ATTRIBUTE!r} manifest in the "
            "root zarr.json: empty, not a torchzarr checkpoint, or the first save never finished)"
        )
    version = manifest["version"]
    if not _VERSION.match(version):
        raise MetadataError(f"checkpoint manifest in {store!r} names a bad version {version!r}")
    return str(version)


def list_versions(store: Store) -> list[str]:
    """The version directories in ``store``, oldest first (committed or not).

    Example:
        >>> st = checkpoint_store("memory://")
        >>> _ = create_group(st, path="v000002"), create_group(st, path="v000001")
        >>> list_versions(st)
        ['v000001', 'v000002']
    """
    _, dirs = store.list_dir("")
    return sorted(
        (name for name in dirs if _VERSION.match(name)), key=version_number
    )  # v1000000 last


def next_version(store: Store) -> str:
    """A version name no save has used: above the committed one and any leftover.

    Example:
        >>> next_version(checkpoint_store("memory://"))
        'v000001'
    """
    manifest = read_manifest(store)
    numbers = [0, *(version_number(v) for v in list_versions(store))]
    if manifest is not None:
        numbers.append(version_number(manifest["version"]))  # -1 for a bad name
    return f"v{max(numbers) + 1:06d}"


_RESERVED: dict[str, set[str]] = {}  # versions that saves of this process are writing
_STATE_LOCK = threading.Lock()  # guards _RESERVED; held for no I/O
_SAVE_LOCKS = LockTable()  # one save at a time per checkpoint
_STORE_LOCKS = LockTable()  # a reservation's or commit's check-then-write, per checkpoint


def store_id(store: Store) -> str:
    """What identifies a checkpoint's data: wrappers and other store objects of it share
    its locks, reservations and prunes.

    Example:
        >>> store_id(checkpoint_store("memory://")).startswith("memory://")
        True
    """
    return str(store.identity)


def versions_writing(store: Store) -> set[str]:
    """The versions that saves of this process are writing to ``store`` now.

    Example:
        >>> versions_writing(checkpoint_store("memory://"))
        set()
    """
    with _STATE_LOCK:
        return set(_RESERVED.get(store_id(store), ()))


@contextlib.contextmanager
def commit_lock(store: Store) -> Iterator[None]:
    """Hold the checkpoint's commit lock: against the threads of this process, and on a local
    disk against other processes (an ``flock`` on the checkpoint's directory, where the file
    system has them), so that a commit's check of the manifest and its write are one step.

    Example:
        >>> with commit_lock(checkpoint_store("memory://")):
        ...     pass
    """
    with _STORE_LOCKS[store_id(store)]:
        if not isinstance(store, LocalStore):
            yield
            return
        try:
            store.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(store.root, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        except OSError as err:
            raise StoreError(f"cannot lock the checkpoint in {store.root}: {err}") from err
        try:
            try:
                lock_exclusive(fd, str(store.root), wait=True)
            except OSError as err:
                raise StoreError(f"cannot lock the checkpoint in {store.root}: {err}") from err
            yield
        finally:
            unlock(fd)  # before the close: a forked child's copy of fd must not keep it
            os.close(fd)


def _claim(store: Store, version: str) -> bool:
    """Create the version's directory of a local store exclusively: False if it exists."""
    if not isinstance(store, LocalStore):
        return True
    try:
        store.root.mkdir(parents=True, exist_ok=True)
        (store.root / version).mkdir()
    except FileExistsError:
        if (store.root / version).is_dir():
            return False  # another save took it
        raise StoreError(
            f"cannot save a checkpoint in {store.root}: a file is in the way"
        ) from None
    except OSError as err:
        raise StoreError(f"cannot save a checkpoint in {store.root}: {err}") from err
    return True


def reserve_version(store: Store) -> str:
    """Reserve a new version name for a save: :func:`next_version` or the first free above.

    No other save of this process gets the same name, nor, on a local disk, a save of
    another process (its directory is created exclusively). Call :func:`release_version`
    when the save is committed or abandoned.

    Example:
        >>> st = checkpoint_store("memory://")
        >>> reserve_version(st), reserve_version(st)
        ('v000001', 'v000002')
    """
    if store.read_only:  # checked first: nothing is written, not even a version directory
        raise ReadOnlyError(f"cannot save a checkpoint to {store!r}: the store is read-only")
    kind = read_kind(store, "", 2)
    if kind is not None:  # a checkpoint is v3: its root group would list none of a v2 root's
        raise NodeExistsError(
            f"{store!r} holds a Zarr v2 {kind} at its root, not a checkpoint: save checkpoints "
            "to an empty location or to an existing checkpoint"
        )
    key = store_id(store)
    with _STORE_LOCKS[key]:  # saves to other checkpoints do not wait
        number = int(next_version(store)[1:])
        while True:
            version = f"v{number:06d}"
            with _STATE_LOCK:
                taken = version in _RESERVED.setdefault(key, set())
            if not taken and _claim(store, version):
                with _STATE_LOCK:
                    _RESERVED[key].add(version)
                return version
            number += 1


def release_version(store: Store, version: str) -> None:
    """End the reservation of ``version`` (see :func:`reserve_version`).

    Example:
        >>> st = checkpoint_store("memory://")
        >>> release_version(st, reserve_version(st))
    """
    with _STATE_LOCK:
        _RESERVED.get(store_id(store), set()).discard(version)


@contextlib.contextmanager
def reserved_version(store: Store) -> Iterator[str]:
    """Reserve a version for one save, after the saves of this process to ``store`` before it.

    Saves to one checkpoint from several threads (an ``AsyncCheckpointer`` beside a direct
    save, two callbacks) run one after the other, so each commits and the last to commit
    wins (with more than two waiting, which goes next is not fixed).

    Example:
        >>> with reserved_version(checkpoint_store("memory://")) as version:
        ...     version
        'v000001'
    """
    with _SAVE_LOCKS[store_id(store)]:
        version = reserve_version(store)
        try:
            yield version
        finally:
            release_version(store, version)


def written_by_saves(store: Store, version: str) -> bool:
    """Whether the directory ``version`` holds what a save wrote or began, not a folder or
    Zarr node of someone else's only named like a version: its root group is marked as a
    checkpoint's (``torchzarr_node``, or a DCP save's key; a save writes it first), or it
    is empty (a save claimed it and was killed at once).

    Example:
        >>> st = checkpoint_store("memory://")
        >>> st.set("v000001/notes.txt", b"mine")
        >>> st.set("v000002/zarr.json", b'{"node_type": "group", "attributes": {"torchzarr_node": {}}}')
        >>> written_by_saves(st, "v000001"), written_by_saves(st, "v000002")
        (False, True)
    """
    raw = store.get(f"{version}/zarr.json")
    if raw is None:
        return next(iter(store.list_prefix(version + "/")), None) is None
    try:
        document = json.loads(raw)
    except ValueError:
        return False
    attributes = document.get("attributes") if isinstance(document, dict) else None
    return isinstance(attributes, dict) and any(a in attributes for a in _SAVE_ATTRIBUTES)


def version_number(name: str) -> int:
    """The number of a version directory's name, or -1 for a name that is not a version.

    Example:
        >>> version_number("v000012"), version_number("tmp")
        (12, -1)
    """
    match = _VERSION.match(name)
    return int(match.group(1)) if match else -1


def commit_version(store: Store, version: str, info: dict[str, Any] | None = None) -> None:
    """Commit ``version``: write the root group's manifest, one object, after everything else.

    Other root attributes are kept. ``info`` adds fields to the manifest (sizes, versions).

    Raises:
        CheckpointConflictError: another save already committed a newer version; the
            manifest is left naming it.

    Example:
        >>> st = checkpoint_store("memory://")
        >>> commit_version(st, "v000001")
        >>> read_manifest(st)["version"]
        'v000001'
    """
    manifest = {"format": FORMAT_VERSION, "version": version, "committed_at": time.time()}
    with commit_lock(store):  # no commit of this process, or another's, between check and write
        current = read_manifest(store)
        manifest["previous"] = []  # the first commit: none before (never folders named so)
        if current is not None:  # the versions committed before, newest first (for keep=)
            found = current.get("previous")  # none yet: the newest versions, as before
            if not isinstance(found, list):  # older manifests: the saves' versions on disk
                found = [v for v in list_versions(store)[::-1] if written_by_saves(store, v)]
            before = found
            manifest["previous"] = _committed_before(version, [current["version"], *before])
        manifest.update(info or {})
        if current is not None and version_number(str(current["version"])) > version_number(
            version
        ):
            raise CheckpointConflictError(
                f"another save committed {current['version']} to {store!r} while this one "
                f"wrote {version}: the checkpoint holds that newer save, this one was not "
                "committed (save to one checkpoint from one process at a time)"
            )
        try:
            root = open_group(store, mode="r+", use_consolidated=False)
        except GroupNotFoundError:
            create_group(store, attributes={MANIFEST_ATTRIBUTE: manifest})
            return
        root.attrs.update({MANIFEST_ATTRIBUTE: manifest})


def _committed_before(version: str, names: list[Any]) -> list[str]:
    """``names`` that are versions below ``version``, once each, at most ``_HISTORY``."""
    below = (
        n
        for n in names
        if isinstance(n, str) and version_number(n) in range(version_number(version))
    )
    return list(dict.fromkeys(below))[:_HISTORY]


def close_archive(store: Store) -> None:
    """Write the directory of a zip checkpoint to its file now (other stores: nothing).

    A zip's directory is written only when the file is closed; until then another
    process, or this one after a crash, cannot read any version in it. Saves call this
    before they return. The store (and every store of the same zip) reopens on next use.

    Example:
        >>> close_archive(checkpoint_store("memory://"))  # nothing to write
    """
    if store.identity.startswith("zip://"):
        store.close()
