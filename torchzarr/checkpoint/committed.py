"""Which versions a checkpoint's manifest lists as committed; loads of a named version
refuse others, and loads of a path that holds no checkpoint say what it holds instead."""

from __future__ import annotations

import contextlib
import functools
import os
import zipfile
from collections.abc import Callable
from typing import Any

from torchzarr.checkpoint import commit
from torchzarr.errors import GroupNotFoundError, MetadataError, NodeNotFoundError
from torchzarr.storage import FsspecStore, LocalStore, Store, ZipStore
from torchzarr.storage.fsspec_settings import masked

__all__ = [
    "committed_name",
    "local_path",
    "manifest_lists",
    "refuse_not_checkpoint",
    "refuse_uncommitted",
]

#: torch's magic number, which a file ``torch.save`` wrote in its legacy format
#: (``_use_new_zipfile_serialization=False``, torch < 1.6) pickles first (a LONG1)
_TORCH_LEGACY_MAGIC = b"\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"
_TORCH_SAVE = "written by torch.save; load it with torch.load (TorchCheckpointIO)"

_UNREAD = object()
#: bytes an object's reads fetch at once while it is told (s3fs would fetch 50 MiB)
_HEAD_BLOCK = 1 << 16


def manifest_lists(manifest: dict[str, Any], version: str) -> bool:
    """Whether ``manifest`` names ``version``: as its version, or in its ``previous`` list
    of the earlier commits it keeps.

    Example:
        >>> manifest_lists({"version": "v000002", "previous": ["v000001"]}, "v000001")
        True
    """
    kept = manifest.get("previous")
    return manifest.get("version") == version or (isinstance(kept, list) and version in kept)


def refuse_uncommitted(store: Store, version: str, manifest: Any = _UNREAD) -> None:
    """Raise when the manifest of ``store`` does not list ``version`` as committed.

    A save killed (or still running) before its commit leaves a version directory that
    no manifest names: loading it by name would read a save that never finished. Listed
    are the committed version and the earlier commits the manifest keeps (``previous``);
    a manifest written before that list existed lists every version below its own. A
    corrupt manifest (read here when ``manifest`` is not given) lets any version load by
    name, the way to recover one.

    Raises:
        NodeNotFoundError: ``version`` is not listed (the message names it and the
            versions that are).

    Example:
        >>> st = commit.checkpoint_store("memory://")
        >>> commit.commit_version(st, "v000001")
        >>> refuse_uncommitted(st, "v000001")  # committed: fine
        >>> refuse_uncommitted(st, "v000002")
        Traceback (most recent call last):
        ...
        torchzarr.errors.NodeNotFoundError: version 'v000002' of the checkpoint in ...
    """
    if manifest is _UNREAD:
        try:
            manifest = commit.read_manifest(store)
        except MetadataError:
            return  # corrupt: a version named by the user is the way to recover one
    if not isinstance(manifest, dict):
        raise NodeNotFoundError(
            f"version {version!r} of the checkpoint in {store!r} is not listed as committed: "
            "the store holds no manifest (root zarr.json naming the committed version): a "
            "first save killed before its commit leaves its data so, and loads never read "
            "a save that did not commit (if the manifest was deleted, its versions are no "
            "longer known to be whole: open one with tz.open_group to inspect it)"
        )
    current = str(manifest.get("version"))
    previous = manifest.get("previous")
    if manifest_lists(manifest, version):
        return
    if not isinstance(previous, list) and (
        0 <= commit.version_number(version) < commit.version_number(current)
    ):
        return  # a manifest of older torchzarr lists no history: every older one may be
    kept = [v for v in previous if isinstance(v, str)] if isinstance(previous, list) else []
    listed = ", ".join([current, *kept[:5]]) + (", ..." if len(kept) > 5 else "")
    raise NodeNotFoundError(
        f"version {version!r} of the checkpoint in {store!r} was never committed (its "
        f"manifest lists {listed}): a save killed or still running before its commit "
        "leaves such a version, and loads never read a save that did not commit. Load "
        "the committed version (version=None) or one the manifest lists"
    )


def committed_name(store: Store) -> str:
    """The committed version of the checkpoint in ``store`` (see
    :func:`~torchzarr.checkpoint.commit.committed_version`); a store with no manifest
    whose path holds no checkpoint at all raises what :func:`refuse_not_checkpoint` says.

    Example:
        >>> st = commit.checkpoint_store("memory://")
        >>> commit.commit_version(st, "v000003")
        >>> committed_name(st)
        'v000003'
    """
    manifest = commit.read_manifest(store)
    if manifest is None:
        refuse_not_checkpoint(store)
    return commit.committed_version(store, manifest)


def local_path(store: Store) -> str | None:
    """The directory or zip file behind a local store; None for any other store.

    Example:
        >>> local_path(ZipStore("/runs/ckpt.zip")), local_path(commit.checkpoint_store("memory://"))
        ('/runs/ckpt.zip', None)
    """
    if isinstance(store, LocalStore):
        return str(store.root)
    if isinstance(store, ZipStore):
        return store.path
    return None


def refuse_not_checkpoint(store: Store) -> None:
    """Explain a store without a manifest whose path holds no checkpoint at all (no file
    is unpickled: a file is told by its first bytes, a zip by its member names).

    Raises:
        GroupNotFoundError: the local path does not exist (also a ``FileNotFoundError``).
        MetadataError: the path (local, or an object of an fsspec store's URL) is a file
            ``torch.save`` wrote (load it with ``torch.load``), another file that is no
            directory or zip holding a checkpoint, or a directory holding torch's
            ``FileSystemWriter`` output.

    Example:
        >>> refuse_not_checkpoint(commit.checkpoint_store("memory://"))  # empty: no more to say
        >>> refuse_not_checkpoint(LocalStore("/no/such/ckpt"))
        Traceback (most recent call last):
        ...
        torchzarr.errors.GroupNotFoundError: no checkpoint at '/no/such/ckpt': the path does not exist
    """
    path = local_path(store)
    if path is not None and not os.path.exists(path):
        raise GroupNotFoundError(f"no checkpoint at {path!r}: the path does not exist")
    if path is not None and os.path.isfile(path):
        what = _file_kind(functools.partial(open, path, "rb"), isinstance(store, ZipStore))
        if what is not None:
            raise MetadataError(f"{path!r} holds no torchzarr checkpoint: it is {what}")
    if isinstance(store, FsspecStore):
        _refuse_remote_file(store)
    refuse: Any = None
    with contextlib.suppress(ImportError):  # a torch built without torch.distributed
        from torchzarr.checkpoint.dcp_checks import refuse_filesystem_checkpoint as refuse
    if refuse is not None:
        refuse(store)


def _refuse_remote_file(store: FsspecStore) -> None:
    """Raise when the URL of ``store`` names an object (a file ``torch.save`` wrote, say),
    not a prefix: told by its first bytes and a zip's directory, read through fsspec."""
    try:
        fs, root = store.fs, store.paths.root
        if not root or not fs.isfile(root):
            return
        what = _file_kind(functools.partial(fs.open, root, "rb", block_size=_HEAD_BLOCK), False)
    except Exception:  # no more to say than the caller's error: the lookup is a courtesy
        return
    if what is not None and what.startswith("a file,") and type(fs).__name__ == "HTTPFileSystem":
        return  # a server answers a prefix with a page of its own (a directory index)
    if what is not None:
        shown = masked(store.url)  # no password
        raise MetadataError(f"{shown!r} holds no torchzarr checkpoint: it is {what}")


def _file_kind(opener: Callable[[], Any], zip_store: bool) -> str | None:
    """What the file ``opener()`` opens is, for messages; None for a zip that a zip
    checkpoint may be (``zip_store``: opened as one, holding no manifest yet)."""
    try:
        with opener() as file:
            head = file.read(64)
            members = None
            if zipfile.is_zipfile(file):
                with zipfile.ZipFile(file) as archive:  # its directory only: nothing unpickled
                    members = archive.namelist()
    except (OSError, zipfile.BadZipFile):
        return None
    if members is not None and any(_pickled_archive(name) for name in members):
        return f"a zip archive {_TORCH_SAVE}"
    if head.startswith(b"\x80") and _TORCH_LEGACY_MAGIC in head:
        return f"a pickle {_TORCH_SAVE}"
    if members is None:
        return "a file, not a directory or zip holding a torchzarr checkpoint"
    if zip_store:
        return None
    return "a zip file, and a zip checkpoint opens from a path ending in .zip (or a zip:// URL)"


def _pickled_archive(name: str) -> bool:
    """Whether a zip member named ``name`` is the ``data.pkl`` of a ``torch.save`` archive
    (``<archive name>/data.pkl``)."""
    return name == "data.pkl" or (name.endswith("/data.pkl") and name.count("/") == 1)
