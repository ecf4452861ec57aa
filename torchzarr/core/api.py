"""Opening and creating nodes: ``open``, ``open_array``, ``open_group``, ``create_array``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from torchzarr.core import nodes
from torchzarr.core.array import Array
from torchzarr.core.attributes import json_attributes, logical_data_type
from torchzarr.core.cache import invalidate_tree_everywhere
from torchzarr.core.chunking import normalize_shape
from torchzarr.core.consolidated import (
    Change,
    load_consolidated,
    refresh_consolidated,
    write_consolidated,
)
from torchzarr.core.create import AUTO, array_metadata_from_args
from torchzarr.core.group import Group, node_from_metadata
from torchzarr.errors import (
    ArrayNotFoundError,
    GroupNotFoundError,
    InvalidArgumentError,
    MetadataError,
    NodeExistsError,
    NodeNotFoundError,
    ShapeMismatchError,
)
from torchzarr.metadata.v2 import GroupMetadataV2
from torchzarr.metadata.v3 import GroupMetadataV3
from torchzarr.storage.registry import resolve_store
from torchzarr.tensors import as_storage_array, rectangular

__all__ = [
    "consolidate_metadata",
    "create_array",
    "create_group",
    "open",
    "open_array",
    "open_group",
]

MODES = ("r", "r+", "a", "w", "w-")


def _other_format(store: Any, path: str, zarr_format: int | None) -> str:
    """When ``zarr_format`` hid a node of the other format at ``path``, a note saying so."""
    if zarr_format is None:
        return ""
    other = nodes.read_node(store, path, 5 - zarr_format) if zarr_format in (2, 3) else None
    if other is None:
        return ""
    kind = "an array" if hasattr(other, "shape") else "a group"
    return (
        f": {kind} of Zarr v{other.zarr_format} is there, and zarr_format={zarr_format} was asked"
    )


def _read_existing(
    store: Any, path: str, zarr_format: int | None, mode: str, use_consolidated: bool | None
) -> tuple[Any, dict[str, Any] | None]:
    """The node's metadata, and its consolidated members when they are to be used.

    By default consolidated metadata is used for read-only opens (``mode="r"``), where it
    cannot go stale under the reader's own writes; ``use_consolidated=True`` requires it,
    ``False`` ignores it.
    """
    wanted = mode == "r" if use_consolidated is None else use_consolidated
    if not wanted:
        return nodes.read_node(store, path, zarr_format), None
    return load_consolidated(store, path, zarr_format, required=bool(use_consolidated))


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise InvalidArgumentError(f"mode must be one of {MODES}, got {mode!r}")


def _store(store: Any, mode: str, storage_options: dict[str, Any] | None) -> Any:
    return resolve_store(store, mode=mode, storage_options=storage_options)


def _group_metadata(zarr_format: int, attributes: dict[str, Any] | None) -> Any:
    if zarr_format == 3:
        return GroupMetadataV3(attributes=json_attributes(attributes))
    if zarr_format == 2:
        return GroupMetadataV2(attributes=json_attributes(attributes))
    raise MetadataError(f"zarr_format must be 2 or 3, got {zarr_format!r}")


def _kind_phrase(kind: str | None) -> str:
    return {"array": "an array", "group": "a group"}.get(kind or "", "a node torchzarr cannot read")


def _missing_parents(path: str, docs: Mapping[str, Any], zarr_format: int) -> list[tuple[str, Any]]:
    """The missing parent groups of ``path`` to create, from the fetched metadata
    documents of its ancestors (an array, or a node of no kind we can tell, is an error)."""
    missing = []
    for parent in nodes.ancestors(path)[:-1]:  # the root has no parents
        kind = nodes.stored_kind(parent, docs)
        if kind is None:
            missing.append((parent, _group_metadata(zarr_format, None)))
        elif kind != "group":
            raise NodeExistsError(
                f"cannot create {path!r}: {_kind_phrase(kind)} exists at {parent or '/'!r}"
            )
    return missing


def _prepare_path(store: Any, path: str, docs: Mapping[str, Any], overwrite: bool) -> list[Change]:
    """Make room for a new node at ``path``; the node replaced, as a change, if any.

    Without ``overwrite`` a node there (per its fetched metadata ``docs``) is an error. With
    it, everything under ``path`` goes, as in zarr-python: also keys no metadata owns any
    more (chunks of a half-deleted node), and without parsing what was there (a node of a
    dtype, codec or extension torchzarr lacks, or with broken metadata, is replaced too).
    """
    if not overwrite:
        kind = nodes.stored_kind(path, docs)
        if kind is not None:
            raise NodeExistsError(
                f"{_kind_phrase(kind)} already exists at {path or '/'!r} in {store!r}"
            )
        return []
    store.delete_prefix(path + "/" if path else "")
    store.delete_many(nodes.node_metadata_keys(path))
    invalidate_tree_everywhere(store.identity, path)  # cached chunks of the old node
    return [(path, None)]


def _node_docs(store: Any, paths: Sequence[str]) -> dict[str, Any]:
    """The documents (both formats) telling what is at ``paths``, in one batch."""
    keys = [k for path in paths for k in nodes.node_keys(path, None)]
    return store.get_many([k for k in keys if not k.endswith(nodes.ZATTRS)])


def _write_new_node(store: Any, path: str, metadata: Any, overwrite: bool) -> None:
    """Write a new node's metadata and its missing parents', and update consolidated
    metadata above it (the node it replaces, with its subtree, leaves it)."""
    with nodes.node_lock(store, [path]):  # no change in this process lands in between
        docs = _node_docs(store, nodes.ancestors(path))
        # parents first: nothing is deleted for a node that cannot be created (below an array)
        written = [*_missing_parents(path, docs, metadata.zarr_format), (path, metadata)]
        changes = _prepare_path(store, path, docs, overwrite)
        new_docs: dict[str, bytes] = {}
        for node_path, node_metadata in written:
            new_docs.update(nodes.node_documents(node_path, node_metadata))
        store.set_many(new_docs)
        refresh_consolidated(store, changes + written, frozenset(p for p, _ in written))


def _shape_and_dtype_of(data: Any, shape: Any, dtype: Any) -> tuple[Any, Any]:
    """``create_array(data=...)``: shape and dtype from the data where not given."""
    if data is None:
        if shape is None or dtype is None:
            raise InvalidArgumentError("create_array needs shape= and dtype= (or data=)")
        return shape, dtype
    if not isinstance(data, torch.Tensor | np.ndarray):
        data = rectangular(data, "create_array's data= has no shape")
    data_shape = tuple(data.shape)
    if shape is not None and normalize_shape(shape) != data_shape:
        raise ShapeMismatchError(f"shape {shape!r} does not match the data's shape {data_shape}")
    return data_shape, data.dtype if dtype is None else dtype


def create_array(
    store: Any,
    *,
    shape: Any = None,
    dtype: Any = None,
    data: Any = None,
    chunks: Any = None,
    compressors: Any = AUTO,
    filters: Any = None,
    fill_value: Any = None,
    zarr_format: int = 3,
    order: str = "C",
    dimension_names: Sequence[str | None] | None = None,
    attributes: dict[str, Any] | None = None,
    chunk_key_encoding: Any = None,
    dimension_separator: str | None = None,
    shards: Any = None,
    overwrite: bool = False,
    path: str = "",
    storage_options: dict[str, Any] | None = None,
) -> Array:
    """Create an array and return it open for writing.

    Args:
        store: a path, URL (``memory://``, ``file://``, ...) or Store.
        shape, dtype: the array's shape and dtype (torch, numpy or name).
        data: a tensor, numpy array, list or scalar to write once the array exists;
            ``shape`` and ``dtype`` default to its own (given, ``dtype`` casts it).
        chunks: chunk shape; None picks about 1-4 MiB chunks.
        compressors: numcodecs codecs or short names; a preset ("fast": blosc lz4 +
            shuffle, "balanced": zstd 3, "small": blosc zstd 9 + shuffle); default zstd
            level 1; None for none.
        filters: numcodecs filters (v2) or array-to-array codecs (v3).
        fill_value: value of unwritten elements (default 0; in v2 ``null``, which reads as
            0 too and which xarray does not take for a missing-data marker).
        zarr_format: 3 (default) or 2.
        order: memory order of v2 chunks, "C" or "F".
        shards: shard shape (v3): each stored object holds a block of ``chunks``, with an
            index, so that millions of small chunks do not become millions of objects.
        overwrite: replace an existing node at ``path`` (deleting everything below it).

    Example:
        >>> import torchzarr as tz, torch
        >>> arr = tz.create_array("memory://", shape=(100, 8), dtype=torch.float32)
        >>> arr.chunks
        (100, 8)
        >>> tz.create_array("memory://", data=torch.arange(3))[:]
        tensor([0, 1, 2])
    """
    if isinstance(data, Array):
        data = data[...]  # its own dtype (numpy would widen bfloat16); from_array streams it
    shape, dtype = _shape_and_dtype_of(data, shape, dtype)
    metadata = array_metadata_from_args(
        shape=shape,
        dtype=dtype,
        chunks=chunks,
        compressors=compressors,
        filters=filters,
        fill_value=fill_value,
        zarr_format=zarr_format,
        order=order,
        dimension_names=dimension_names,
        attributes=attributes,
        chunk_key_encoding=chunk_key_encoding,
        dimension_separator=dimension_separator,
        shards=shards,
    )
    if data is not None:  # converted first: a value that does not fit fails before any change
        data = as_storage_array(data, logical_data_type(metadata))
    st = _store(store, "w" if overwrite else "a", storage_options)
    path = nodes.normalize_path(path)
    _write_new_node(st, path, metadata, overwrite)
    array = Array(st, path, metadata)
    if data is not None:
        array[...] = data
    return array


def create_group(
    store: Any,
    *,
    path: str = "",
    zarr_format: int = 3,
    overwrite: bool = False,
    attributes: dict[str, Any] | None = None,
    storage_options: dict[str, Any] | None = None,
) -> Group:
    """Create a group (and its missing parents).

    Example:
        >>> g = create_group("memory://", attributes={"project": "demo"})
        >>> dict(g.attrs)
        {'project': 'demo'}
    """
    st = _store(store, "w" if overwrite else "a", storage_options)
    path = nodes.normalize_path(path)
    metadata = _group_metadata(zarr_format, attributes)
    _write_new_node(st, path, metadata, overwrite)
    return Group(st, path, metadata)


def open(
    store: Any,
    mode: str = "a",
    *,
    path: str = "",
    zarr_format: int | None = None,
    use_consolidated: bool | None = None,
    storage_options: dict[str, Any] | None = None,
) -> Array | Group:
    """Open the array or group at ``path`` (format detected). Mode "a" creates a group if empty.

    Example:
        >>> node = open("memory://", mode="w")
        >>> type(node).__name__
        'Group'
    """
    _check_mode(mode)
    st = _store(store, mode, storage_options)
    path = nodes.normalize_path(path)
    meta, members = (None, None)
    if mode not in ("w", "w-"):
        meta, members = _read_existing(st, path, zarr_format, mode, use_consolidated)
    if meta is not None:
        return node_from_metadata(st, path, meta, mode == "r", members)
    if mode in ("r", "r+"):
        raise NodeNotFoundError(f"no array or group at {path or '/'!r} in {st!r}")
    return open_group(st, mode, path=path, zarr_format=zarr_format)


def open_array(
    store: Any,
    mode: str = "a",
    *,
    path: str = "",
    zarr_format: int | None = None,
    storage_options: dict[str, Any] | None = None,
    **create_kwargs: Any,
) -> Array:
    """Open an array; with mode "a", "w" or "w-" and ``shape``/``dtype`` given, create it.

    Modes are zarr-python's: "r" read-only, "r+" read/write (must exist), "a" read/write
    (created if absent), "w" create (overwrite), "w-" create (fail if present).

    Example:
        >>> arr = open_array("memory://", mode="w", shape=(3,), dtype="int8")
        >>> arr.shape
        (3,)
    """
    _check_mode(mode)
    st = _store(store, mode, storage_options)
    path = nodes.normalize_path(path)
    if mode not in ("w", "w-"):
        meta = nodes.read_node(st, path, zarr_format)
        if meta is not None:
            node = node_from_metadata(st, path, meta, mode == "r")
            if not isinstance(node, Array):
                raise ArrayNotFoundError(f"{path or '/'!r} in {st!r} is a group, not an array")
            return node
        if mode in ("r", "r+") or ("shape" not in create_kwargs and "data" not in create_kwargs):
            hint = (
                "" if mode in ("r", "r+") else " (pass shape= and dtype=, or data=, to create it)"
            )
            raise ArrayNotFoundError(
                f"no array at {path or '/'!r} in {st!r}{_other_format(st, path, zarr_format)}{hint}"
            )
    if zarr_format is not None:
        create_kwargs["zarr_format"] = zarr_format
    return create_array(st, path=path, overwrite=mode == "w", **create_kwargs)


def open_group(
    store: Any,
    mode: str = "a",
    *,
    path: str = "",
    zarr_format: int | None = None,
    attributes: dict[str, Any] | None = None,
    use_consolidated: bool | None = None,
    storage_options: dict[str, Any] | None = None,
) -> Group:
    """Open a group; modes as :func:`open_array` (created when absent with "a", "w", "w-").

    Example:
        >>> root = open_group("memory://", mode="w")
        >>> root.require_group("exp1/run2").name
        '/exp1/run2'
    """
    _check_mode(mode)
    st = _store(store, mode, storage_options)
    path = nodes.normalize_path(path)
    if mode not in ("w", "w-"):
        meta, members = _read_existing(st, path, zarr_format, mode, use_consolidated)
        if meta is not None:
            node = node_from_metadata(st, path, meta, mode == "r", members)
            if not isinstance(node, Group):
                raise GroupNotFoundError(f"{path or '/'!r} in {st!r} is an array, not a group")
            return node
        if mode in ("r", "r+"):
            raise GroupNotFoundError(
                f"no group at {path or '/'!r} in {st!r}{_other_format(st, path, zarr_format)}"
            )
    return create_group(
        st,
        path=path,
        zarr_format=3 if zarr_format is None else zarr_format,
        overwrite=mode == "w",
        attributes=attributes,
    )


def consolidate_metadata(
    store: Any,
    *,
    path: str = "",
    zarr_format: int | None = None,
    storage_options: dict[str, Any] | None = None,
) -> Group:
    """Gather the metadata of every node below a group into that group, as zarr-python does.

    v3 writes it inline in the group's ``zarr.json`` (``consolidated_metadata``); v2 writes
    ``.zmetadata``. Opening read-only then needs one request for the whole hierarchy.
    torchzarr's own changes below the group afterwards (new, deleted, resized nodes,
    attributes) update it as they are made; run it again after other tools changed the
    hierarchy. Returns the group, opened from the result.

    Example:
        >>> root = open_group("memory://demo-consolidate", mode="w")
        >>> _ = root.create_array("a/x", shape=(2,), dtype="int8")
        >>> sorted(consolidate_metadata("memory://demo-consolidate"))
        ['a']
    """
    st = _store(store, "a", storage_options)
    path = nodes.normalize_path(path)
    with nodes.node_lock(st, [path]):  # changes below wait: none is missed by the listing
        meta = nodes.read_node(st, path, zarr_format)
        if meta is None or hasattr(meta, "shape"):
            raise GroupNotFoundError(f"no group at {path or '/'!r} in {st!r} to consolidate")
        root = Group(st, path, meta)
        updated = write_consolidated(st, path, root.member_metadata(), meta)
    _, consolidated = load_consolidated(st, path, updated.zarr_format, required=True)
    return Group(st, path, updated, consolidated=consolidated)


def _hierarchy_metadata(specs: Mapping[str, Any], zarr_format: int) -> dict[str, Any]:
    """The metadata of the nodes ``Group.create_hierarchy`` names, by relative path."""
    metas: dict[str, Any] = {}
    for rel, spec in specs.items():
        rel = nodes.normalize_path(rel)
        if not rel:
            raise InvalidArgumentError("create_hierarchy: the group itself is not one of its nodes")
        if hasattr(spec, "zarr_format") and hasattr(spec, "to_json"):
            meta = spec
        elif isinstance(spec, Mapping) and "shape" in spec:
            meta = array_metadata_from_args(**{"zarr_format": zarr_format, **spec})
        elif isinstance(spec, Mapping) or spec is None:
            meta = _group_metadata(zarr_format, dict(spec or {}).get("attributes"))
        else:
            raise MetadataError(f"create_hierarchy: cannot make a node of {spec!r} at {rel!r}")
        if meta.zarr_format != zarr_format:
            raise MetadataError(
                f"create_hierarchy: {rel!r} is v{meta.zarr_format}, group is v{zarr_format}"
            )
        metas[rel] = meta
    for rel in metas:
        for parent in nodes.ancestors(rel)[1:-1]:
            if hasattr(metas.get(parent), "shape"):
                raise NodeExistsError(
                    f"create_hierarchy: {parent!r} is an array, {rel!r} is below it"
                )
    return metas


def create_hierarchy(
    store: Any, root: str, specs: Mapping[str, Any], zarr_format: int, overwrite: bool
) -> dict[str, Any]:
    """Create the nodes of ``Group.create_hierarchy`` below the group at ``root``.

    One batched fetch tells what is already there (no request per node): an existing
    node named in ``specs`` is an error unless ``overwrite`` (then its subtree is cleared
    first, as zarr-python does); a missing parent group is created, an existing one kept
    as it is; an array where a parent group is needed is an error. All metadata is then
    written in one batch. Returns ``{relative path: metadata}`` of the nodes written.

    Example:
        >>> import torchzarr as tz
        >>> root = tz.open_group("memory://hierarchy-doc", mode="w")
        >>> sorted(create_hierarchy(root.store, "", {"a/x": {"shape": (2,), "dtype": "int8"}}, 3, False))
        ['a', 'a/x']
    """
    metas = _hierarchy_metadata(specs, zarr_format)
    named = set(metas)
    parents = sorted({p for rel in metas for p in nodes.ancestors(rel)[1:-1]} - named)
    where = {rel: nodes.join_path(root, rel) for rel in [*metas, *parents]}
    with nodes.node_lock(store, list(where.values())):
        docs = _node_docs(store, list(where.values()))
        for rel in parents:
            kind = nodes.stored_kind(where[rel], docs)
            if kind is None:
                metas[rel] = _group_metadata(zarr_format, None)
            elif kind != "group":
                raise NodeExistsError(
                    f"create_hierarchy: {_kind_phrase(kind)} exists at {where[rel]!r} in "
                    f"{store!r}, where nodes below it were to be created"
                )
        changes: list[Change] = []
        for rel in sorted(named):
            if overwrite and named.intersection(nodes.ancestors(rel)[1:-1]):
                continue  # cleared with the node above it
            try:
                changes += _prepare_path(store, where[rel], docs, overwrite)
            except NodeExistsError as err:
                raise NodeExistsError(
                    f"create_hierarchy: {err} (overwrite=True replaces it)"
                ) from None
        new_docs: dict[str, bytes] = {}
        for rel, meta in metas.items():
            new_docs.update(nodes.node_documents(where[rel], meta))
        store.set_many(new_docs)
        written = [(where[rel], meta) for rel, meta in metas.items()]
        refresh_consolidated(store, changes + written, frozenset(p for p, _ in written))
    return metas
