"""Finding chunks and array directories lost from a checkpoint saved with every chunk."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from torchzarr.checkpoint.format import DCP_KEY_ATTRIBUTE, EVERY_CHUNK, TENSOR_ATTRIBUTE
from torchzarr.checkpoint.values import format_key_path
from torchzarr.core.chunking import grid_coords
from torchzarr.errors import ChunkDecodeError, TorchZarrError
from torchzarr.storage import LocalStore

__all__ = ["check_chunks_stored"]


def _saved_every_chunk(array: Any) -> bool:
    """Whether ``array`` holds every chunk of its grid as the save stored them: marked by
    the save with its chunk shape (in its tensor attribute, or in its DCP key attribute
    for a ``torch.distributed.checkpoint`` save), and not rewritten on another grid (nor
    sharded) since."""
    attributes = array.metadata.attributes  # both are user attributes: no copy of them all
    info = attributes.get(TENSOR_ATTRIBUTE)  # checked when read; only a list mark counts
    mark = info.get(EVERY_CHUNK) if isinstance(info, dict) else None
    if mark is None:
        dcp_info = attributes.get(DCP_KEY_ATTRIBUTE)
        mark = dcp_info.get(EVERY_CHUNK) if isinstance(dcp_info, dict) else None
    return (
        isinstance(mark, list) and array.shards is None and [int(n) for n in array.chunks] == mark
    )


def _kind(array: Any) -> str:
    """What ``array`` holds, for messages: a DCP non-tensor "value", else a "tensor"."""
    dcp_info = array.metadata.attributes.get(DCP_KEY_ATTRIBUTE)
    return "value" if isinstance(dcp_info, dict) and dcp_info.get("kind") == "bytes" else "tensor"


def _lost_array(root: Any, array: Any, kind: str, key_path: Any) -> ChunkDecodeError:
    meta = f"{array.path}/zarr.json"
    return ChunkDecodeError(
        f"checkpoint {kind} {format_key_path(key_path)} (array {array.path}) lacks its "
        f"metadata {meta!r}, its whole directory gone: the checkpoint in {root.store!r} is "
        "damaged (a directory lost in a copy or on disk)"
    )


def _refuse_lost_array(
    root: Any, marked: dict[str, Any], key_paths: dict[str, Any], stored: set[str]
) -> None:
    """Raise for a marked array whose ``zarr.json`` is missing (its directory lost; the
    array was found through the version's consolidated metadata) while the version's own
    ``zarr.json`` is there. Keys a listing left out are looked up (a store that lists
    nothing, a server's partial index); a version deleted meanwhile raises nothing (the
    caller checks that)."""
    own = f"{root.path}/zarr.json" if root.path else "zarr.json"
    for path, array in marked.items():
        meta = f"{array.path}/zarr.json"
        if meta in stored or root.store.exists(meta):
            continue
        if not root.store.exists(own):
            return
        raise _lost_array(root, array, _kind(array), key_paths[path])


def _in_array_dirs(store: Any, arrays: Iterable[Any]) -> set[str] | None:
    """The keys of the files in the directories of ``arrays`` in a local store, one
    ``listdir`` each (a walk of the whole version costs more); None for other stores.
    A key in a folder below (a chunk key with ``/``) is not listed: it is looked up."""
    if not isinstance(store, LocalStore):
        return None
    top = str(store.root)
    keys: set[str] = set()
    for array in arrays:
        try:
            names = os.listdir(os.path.join(top, *array.path.split("/")))
        except (FileNotFoundError, NotADirectoryError):
            continue  # its directory is gone: reported, or the version was deleted
        except OSError:
            return None
        keys.update(f"{array.path}/{name}" for name in names)
    return keys


def check_chunks_stored(root: Any, arrays: dict[str, Any], key_paths: dict[str, Any]) -> None:
    """Raise if an array marked :data:`EVERY_CHUNK` lacks a chunk of its grid.

    Such an array was saved with all its chunks, so a missing one was lost (a partial
    copy, a bad disk), not left out for being all zeros: reading it would have returned
    zeros. ``arrays`` maps a name of each array (its path in ``root``, the version group)
    to the array, ``key_paths`` the same names to the key path reported for it. On a local
    disk each array's directory is listed (one ``listdir``); elsewhere one listing of the
    version serves every array (of each array's own keys when at most 16 are loaded, as
    ``keys=`` loads do); a key a listing lacks is looked up before it is reported (a server's directory index may leave keys out). A store that cannot list
    (HTTP), or a version whose own ``zarr.json`` is gone (deleted meanwhile, which the
    caller checks), leaves nothing to compare with: then nothing is checked. An array
    whose ``zarr.json`` is gone from a version still there lost its directory (it was
    found through the version's consolidated metadata). Unmarked arrays are not checked.

    Raises:
        ChunkDecodeError: a marked array lacks a chunk, or its whole directory (the
            message names its key path and the missing key).

    Example:
        >>> check_chunks_stored(group, {"w": group["w"]}, {"w": ("w",)})  # doctest: +SKIP
    """
    marked = {path: a for path, a in arrays.items() if _saved_every_chunk(a)}
    if not marked:
        return
    # each array's directory on a local disk; else one listing of the version, or of each
    # array's own keys when a few are loaded
    stored = _in_array_dirs(root.store, marked.values())
    few = stored is not None or len(marked) <= 16
    paths = [a.path for a in marked.values()] if few else [root.path]
    prefixes = [f"{path}/" if path else "" for path in paths]
    try:
        if stored is None:
            stored = {key for prefix in prefixes for key in root.store.list_prefix(prefix)}
    except (TorchZarrError, OSError, NotImplementedError):
        return
    if any(f"{prefix}zarr.json" not in stored for prefix in prefixes):
        if len(paths) == len(marked):  # each array's own listing: a few to look up
            _refuse_lost_array(root, marked, key_paths, stored)
        return
    _refuse_lost_array(root, marked, key_paths, stored)
    for path, array in marked.items():
        for coords in grid_coords(array.cdata_shape):
            key = f"{array.path}/{array.metadata.chunk_key(coords)}"
            if key not in stored and not root.store.exists(key):
                kind = _kind(array)
                raise ChunkDecodeError(
                    f"checkpoint {kind} {format_key_path(key_paths[path])} (array {array.path}) "
                    f"lacks its chunk {key!r}: the checkpoint in {root.store!r} is damaged (a "
                    "file lost in a copy or on disk; it was saved with every chunk stored), "
                    f"unless the {kind} was edited in place since by a tool that leaves out "
                    "all-zero chunks: then load it with verify_chunks=False"
                )
