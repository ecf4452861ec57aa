"""``load_checkpoint`` with ``lazy=True`` (memory-mapped raw local chunks) and fast raw reads.

A tensor saved uncompressed to a local directory is, chunk by chunk, exactly its bytes in
files. Lazy loading maps those files copy-on-write (``MAP_PRIVATE``) instead of reading
them: loading costs no I/O, pages are read when the tensor is first touched, they live in
the page cache only (no second copy in process memory), and writing to the tensor changes
process memory only, never the checkpoint. A tensor of several chunks is mapped as one
contiguous range (chunk after chunk at fixed addresses), which needs Linux and chunks of a
whole number of pages; anything else (compressed, remote, sharded, v2 or big-endian
arrays, missing chunks) is read as usual.

A mapped tensor stays valid when a later save prunes its version: on Linux and macOS a
deleted file's data lives on while a mapping holds it (its disk space returns when the
last tensor on it goes). Pruning *during* the load is caught by ``load_checkpoint``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from torchzarr.checkpoint import commit, prune
from torchzarr.checkpoint.committed import (
    committed_name,
    refuse_not_checkpoint,
    refuse_uncommitted,
)
from torchzarr.checkpoint.decode import KeySpec, read_tree
from torchzarr.checkpoint.rawio import map_array, read_array
from torchzarr.core.api import open_group
from torchzarr.errors import (
    ArgumentTypeError,
    CheckpointConflictError,
    ChunkDecodeError,
    GroupNotFoundError,
    NodeNotFoundError,
)

__all__ = ["LOAD_ATTEMPTS", "load_checkpoint"]

#: Loads of a checkpoint tried before giving up when newer saves keep pruning the version
#: being read.
LOAD_ATTEMPTS = 3


def load_checkpoint(
    store: Any,
    map_location: Any = None,
    keys: Sequence[KeySpec] | str | None = None,
    *,
    lazy: bool = False,
    huge_pages: bool = False,
    allow_pickle: bool = False,
    version: str | None = None,
    storage_options: dict[str, Any] | None = None,
    verify_chunks: bool = True,
) -> Any:
    """Load the committed checkpoint in ``store``: exactly what was saved.

    Args:
        store: a path, URL or Store.
        map_location: as in :func:`torch.load` (None: the device each tensor was saved
            from; a device; a dict of saved -> target device names; a callable).
        keys: load only these keys, a list of ``"model.layer.weight"`` strings or exact
            tuples (a single string is one key): the other tensors are never read, nor
            other values decoded (a class or pickle beside them does not stop the load).
        lazy: memory-map uncompressed tensors of local checkpoints instead of reading them
            (as ``torch.load(mmap=True)``): pages are read when first touched and are not
            copied into process memory; other tensors are read as usual.
        huge_pages: put large tensors read from raw local chunks on transparent huge
            pages (Linux): far fewer page faults, often several times faster to fill,
            but slower in VMs that hand freed memory back to their host (see
            :func:`torchzarr.checkpoint.rawio.empty_huge`); measure before relying on it.
        allow_pickle: allow leaves that were pickled at save time (runs their code), and
            classes off the allowlist (see the checkpoints guide): for checkpoints you trust.
        version: a version to load instead of the committed one (must still exist, and
            be one the manifest lists: the committed one or an earlier commit it keeps).
        storage_options: options for the store (for URLs).
        verify_chunks: raise when a tensor saved with all its chunks lacks one (False:
            read it as zeros, for tensors edited in place since by a tool that leaves out
            all-zero chunks).

    A save that commits while the load runs may prune the version being read; the load
    notices (:func:`~torchzarr.checkpoint.prune.version_intact`) and loads the newer
    version instead, up to :data:`LOAD_ATTEMPTS` times in all. Tensors of a lazy load
    already mapped stay valid when their version is deleted later (see the module docs).

    Raises:
        NodeNotFoundError: no committed checkpoint, a key in ``keys`` names nothing, or
            ``version`` was never committed (a save killed before its commit left it).
        GroupNotFoundError: the path does not exist (also a ``FileNotFoundError``).
        CheckpointConflictError: newer saves pruned the version being read
            :data:`LOAD_ATTEMPTS` times, or pruned the ``version`` asked for.
        MetadataError: the manifest (the root ``zarr.json``) is corrupt, or the path holds
            no checkpoint but a ``torch.save`` file, another file, or ``FileSystemWriter``
            output (the message says which, and how to load it).
        ChunkDecodeError: the checkpoint is damaged: a chunk is corrupt, or missing from a
            tensor saved with all its chunks (the message names the key path and chunk).

    Example:
        >>> import torch
        >>> from torchzarr.checkpoint import save_checkpoint
        >>> _ = save_checkpoint({"w": torch.arange(3)}, "memory://ckpt-lazy-doc")
        >>> load_checkpoint("memory://ckpt-lazy-doc", lazy=True)
        {'w': tensor([0, 1, 2])}
    """
    if version is not None and not (
        isinstance(version, str) and commit.version_number(version) >= 0
    ):
        raise ArgumentTypeError(
            f"version must be a version's name such as 'v000001' (or None for the committed "
            f"one), got {version!r}"
        )
    st = commit.checkpoint_store(store, "r", storage_options=storage_options, fsync=False)
    reader = map_array if lazy else functools.partial(read_array, huge_pages=huge_pages)
    for _ in range(LOAD_ATTEMPTS):
        name = version if version is not None else committed_name(st)
        try:
            root = open_group(st, mode="r", path=name)
        except GroupNotFoundError:
            if version is not None:
                refuse_not_checkpoint(st)  # no such path, a torch.save file: say so
                raise
            if commit.committed_version(st) == name:
                raise
            continue  # pruned between reading the manifest and opening it: load the newer one
        if version is not None:
            refuse_uncommitted(st, version)  # a killed save's leftover: never read
        try:
            tree = read_tree(
                root,
                map_location=map_location,
                keys=keys,
                allow_pickle=allow_pickle,
                read_array=reader,
                verify_chunks=verify_chunks,
            )
        except (NodeNotFoundError, ChunkDecodeError):
            if prune.version_intact(st, name):
                raise  # a key that is not in the checkpoint, or a damaged one
            tree = None  # a member or chunk deleted with its version
        # A missing chunk reads as the fill value; if a newer save pruned the version while
        # it was read, "missing" may mean "deleted meanwhile": then the tree is not trusted.
        if tree is not None and prune.version_intact(st, name):
            return tree
        if version is not None:
            raise CheckpointConflictError(
                f"version {name} of the checkpoint in {st!r} was deleted while it was being "
                "loaded (a newer save pruned it): load the committed version instead"
            )
    raise CheckpointConflictError(
        f"newer saves replaced the checkpoint in {st!r} {LOAD_ATTEMPTS} times while it was "
        "being loaded, each pruning the version being read: load it when saves pause, or "
        "save with keep=2 so that a version outlives the next save"
    )
