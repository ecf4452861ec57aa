"""Consolidated metadata: write every node's metadata into the root, and open from it."""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from torchzarr.core import nodes
from torchzarr.errors import CodecError, GroupNotFoundError, MetadataError
from torchzarr.metadata.consolidated import (
    V2_CONSOLIDATED_KEY,
    build_v2_consolidated,
    build_v3_consolidated,
    split_v2_consolidated,
)
from torchzarr.metadata.jsonutil import json_loads, node_json_dumps
from torchzarr.metadata.v2 import ArrayMetadataV2, GroupMetadataV2
from torchzarr.metadata.v3 import GroupMetadataV3, parse_v3_node
from torchzarr.storage.key_names import spells_a_key

__all__ = [
    "consolidated_children",
    "direct_entries",
    "load_consolidated",
    "refresh_consolidated",
    "write_consolidated",
]

#: what :func:`refresh_consolidated` applies: a node's new metadata, or None (deleted)
Change = tuple[str, Any]


def _v3_document(metadata: Any) -> dict[str, Any]:
    doc = metadata.to_json()
    doc.pop("consolidated_metadata", None)
    return doc


def write_consolidated(store: Any, path: str, members: Any, root_metadata: Any) -> Any:
    """Write consolidated metadata of ``members`` (``(relative path, metadata)`` pairs, an
    :class:`~torchzarr.core.nodes.UnsupportedArray` kept as stored) at ``path``.

    Returns the root's new metadata (v3: the group with ``consolidated_metadata``).
    """
    if root_metadata.zarr_format == 3:
        docs = {rel: _v3_document(meta) for rel, meta in members}
        updated = dataclasses.replace(
            root_metadata, consolidated_metadata=build_v3_consolidated(docs)
        )
        # compact: the document holds every member's, and indenting it in Python costs more
        # than all the rest of writing it (readers take either form)
        store.set(
            nodes.join_path(path, nodes.ZARR_JSON), node_json_dumps(updated.to_json(), compact=True)
        )
        return updated
    entries: dict[str, Any] = {".zgroup": root_metadata.to_json()}
    if root_metadata.attributes:
        entries[".zattrs"] = root_metadata.attributes
    for rel, meta in members:
        name = ".zgroup" if isinstance(meta, GroupMetadataV2) else ".zarray"
        entries[f"{rel}/{name}"] = meta.to_json()
        entries[f"{rel}/.zattrs"] = meta.attributes
    key = f"{path}/{V2_CONSOLIDATED_KEY}" if path else V2_CONSOLIDATED_KEY
    store.set(key, node_json_dumps(build_v2_consolidated(entries), compact=True))
    return root_metadata


def load_consolidated(
    store: Any, path: str, zarr_format: int | None, *, required: bool, parse_members: bool = True
) -> tuple[Any, dict[str, Any] | None]:
    """The group metadata at ``path`` and its consolidated members (one batched fetch).

    Returns ``(metadata or None, {relative path: metadata} or None)``. A malformed entry
    raises ``MetadataError`` naming the group, its document and the entry. Without
    ``parse_members``, the members are only looked for: ``{}`` when there are some (a writable
    group lists the store instead, so parsing thousands of entries would be wasted).
    """
    v2_key = f"{path}/{V2_CONSOLIDATED_KEY}" if path else V2_CONSOLIDATED_KEY
    keys = nodes.node_keys(path, zarr_format)  # only the format asked for, as read_node
    if zarr_format != 3:
        keys.append(v2_key)
    docs = store.get_many(keys)
    meta = nodes.parse_node(path, docs, store)
    if meta is None:
        return None, None
    members: dict[str, Any] | None = None
    if isinstance(meta, GroupMetadataV3) and meta.consolidated_metadata is not None:
        _check_kind(path, meta.consolidated_metadata)
    if not parse_members:
        inline_v3 = isinstance(meta, GroupMetadataV3) and meta.consolidated_metadata is not None
        found = inline_v3 or (isinstance(meta, GroupMetadataV2) and docs.get(v2_key) is not None)
        members = {} if found else None
    elif isinstance(meta, GroupMetadataV3) and meta.consolidated_metadata is not None:
        inline = meta.consolidated_metadata.get("metadata")
        if not isinstance(inline, dict):
            raise MetadataError(f"{path or '/'}: consolidated_metadata.metadata must be an object")
        where = f"the group at {path or '/'!r} ({nodes.join_path(path, nodes.ZARR_JSON)})"
        members = {}
        for rel, doc in inline.items():
            if not _names_a_member(store, path, rel, 3):
                continue
            node_path = nodes.join_path(path, rel)
            parse = partial(nodes.tolerant, node_path, 3, doc, None, partial(parse_v3_node, doc))
            members[rel] = _entry(where, rel, parse)
    elif isinstance(meta, GroupMetadataV2) and docs.get(v2_key) is not None:
        members = {}
        raw = json_loads(docs[v2_key], key=v2_key)
        where = f"the group at {path or '/'!r} ({v2_key})"
        for rel, files in split_v2_consolidated(raw).items():
            if rel and _names_a_member(store, path, rel, 2):
                members.update(_entry(where, rel, partial(_v2_member, path, rel, files)))
    if required and members is None and not hasattr(meta, "shape"):
        raise GroupNotFoundError(f"no consolidated metadata for the group at {path or '/'!r}")
    return meta, members


def _check_kind(path: str, consolidated: Mapping[str, Any]) -> None:
    """Refuse v3 consolidated metadata of a kind other than "inline", the only one the
    spec defines (zarr-python refuses it too): its entries are not the group's members."""
    kind = consolidated.get("kind")
    if kind != "inline":
        raise MetadataError(
            f"{nodes.join_path(path, nodes.ZARR_JSON)}: consolidated_metadata of kind "
            f"{kind!r} is not supported (only 'inline'), for the group at {path or '/'!r}: "
            "open it with use_consolidated=False to list the store, or rewrite it with "
            "tz.consolidate_metadata"
        )


def _names_a_member(store: Any, path: str, rel: str, zarr_format: int) -> bool:
    """True if the consolidated entry ``rel`` of the group at ``path`` names a node below
    it (:func:`~torchzarr.core.nodes.names_a_node`). An entry spelled as no key can be
    (``..``, ``a/``, ``x\\y``: written by other tools) is skipped with a warning, once per
    store and entry: it would list the group itself, or a node outside it."""
    if not isinstance(rel, str):
        return False
    where = f"the consolidated metadata in {store!r}"
    return spells_a_key(rel, path, where) and nodes.names_a_node(rel, zarr_format)


def _entry(where: str, rel: str, parse: Callable[[], Any]) -> Any:
    """``parse()`` of the consolidated entry of the node ``rel``, its errors naming
    ``where`` and the entry (in v2, the entry of the document at fault)."""
    try:
        return parse()
    except (MetadataError, CodecError) as err:
        message, entry = str(err), rel
        for document in (nodes.ZARR_JSON, nodes.ZARRAY, nodes.ZGROUP, nodes.ZATTRS):
            if message.startswith(f"{document}: "):
                message = message[len(document) + 2 :]
                entry = rel if document == nodes.ZARR_JSON else f"{rel}/{document}"
                break
        raise type(err)(f"consolidated metadata of {where}: entry {entry!r}: {message}") from None


def _v2_member(path: str, rel: str, files: Mapping[str, Any]) -> dict[str, Any]:
    """``{rel: metadata}`` of a v2 node from its consolidated documents, none for none."""
    for name, doc in files.items():
        if not isinstance(doc, dict) and not (name == nodes.ZATTRS and doc is None):
            raise MetadataError(f"{name}: expected a JSON object, got {type(doc).__name__}")
    attrs = files.get(nodes.ZATTRS) or {}
    if nodes.ZARRAY in files:
        zarray = files[nodes.ZARRAY]
        parse = partial(ArrayMetadataV2.from_json, zarray, attrs)
        return {rel: nodes.tolerant(nodes.join_path(path, rel), 2, zarray, attrs, parse)}
    if nodes.ZGROUP in files:
        return {rel: GroupMetadataV2(attributes=dict(attrs))}
    return {}


def consolidated_children(
    members: Mapping[str, Any], name: str | None = None, keys: list[str] | None = None
) -> dict[str, Any]:
    """Entries below ``name`` re-keyed relative to it (all entries when ``name`` is None).

    ``keys``, the members' keys sorted, finds them by bisection instead of a scan of every
    entry (a group opening each of its many subgroups would otherwise be quadratic).

    Example:
        >>> consolidated_children({"a": 1, "a/x": 2, "b/y": 3}, "a")
        {'x': 2}
    """
    if name is None:
        return dict(members)
    prefix = name + "/"
    if keys is None:
        return {rel[len(prefix) :]: m for rel, m in members.items() if rel.startswith(prefix)}
    lo = bisect.bisect_left(keys, prefix)
    hi = bisect.bisect_left(keys, prefix + "\U0010ffff", lo)
    return {rel[len(prefix) :]: members[rel] for rel in keys[lo:hi]}


def direct_entries(members: Mapping[str, Any], zarr_format: int) -> dict[str, Any]:
    """The entries of ``members`` (a group's consolidated entries, relative to it) naming
    its direct children: never ``..``, ``""`` or ``a/``, which would reach outside the
    group or list the group itself (:func:`~torchzarr.core.nodes.names_a_node`).

    Example:
        >>> direct_entries({"a": 1, "a/x": 2, "..": 3, "": 4}, 3)
        {'a': 1}
    """
    return {
        rel: meta
        for rel, meta in members.items()
        if "/" not in rel and nodes.names_a_node(rel, zarr_format)
    }


def _relative(root: str, path: str) -> str | None:
    """``path`` relative to ``root`` ("" for the root itself), or None when not below it."""
    if not root:
        return path
    if path == root:
        return ""
    return path[len(root) + 1 :] if path.startswith(root + "/") else None


def _apply_v3(entries: dict[str, Any], rel: str, metadata: Any) -> None:
    if metadata is not None and metadata.zarr_format != 3:
        return  # a v2 node is no member of a v3 hierarchy
    if metadata is None:
        for key in [k for k in entries if k == rel or k.startswith(rel + "/")]:
            del entries[key]
    elif rel:  # the root's own document is not among its entries
        entries[rel] = _v3_document(metadata)


def _apply_v2(entries: dict[str, Any], rel: str, metadata: Any) -> None:
    if metadata is not None and metadata.zarr_format != 2:
        return  # a v3 node is no member of a v2 hierarchy
    prefix = f"{rel}/" if rel else ""
    if metadata is None:
        for key in [k for k in entries if k.startswith(prefix)]:
            del entries[key]
        return
    for name in (".zarray", ".zgroup"):
        entries.pop(prefix + name, None)
    name = ".zgroup" if isinstance(metadata, GroupMetadataV2) else ".zarray"
    entries[prefix + name] = metadata.to_json()
    if rel or metadata.attributes:
        entries[prefix + ".zattrs"] = metadata.attributes
    else:
        entries.pop(".zattrs", None)


def refresh_consolidated(
    store: Any, changes: list[Change], created: frozenset[str] = frozenset()
) -> None:
    """Keep the consolidated metadata of the groups above changed nodes current.

    ``changes`` are ``(path, metadata)`` in order, metadata None for a deleted node (its
    subtree goes too). Every group at or above a changed path that holds consolidated
    metadata (v3 inline, v2 ``.zmetadata``) gets its entries updated in place, so that
    readers opening it consolidated see the change (zarr-python leaves them stale until
    the next ``consolidate_metadata``). One batched read of the groups above (``created``
    paths, written fresh by the same call, hold nothing consolidated and are not read); a
    write only where something was consolidated.

    Each group's document is read, changed and written under the node locks
    (:func:`~torchzarr.core.nodes.node_lock`) of the changed nodes and the groups above,
    so concurrent changes in this process never drop each other's entries.

    Example:
        >>> import torchzarr as tz
        >>> from torchzarr.core.consolidated import refresh_consolidated
        >>> root = tz.open_group("memory://refresh-doc", mode="w")
        >>> _ = tz.consolidate_metadata("memory://refresh-doc")
        >>> refresh_consolidated(root.store, [("gone", None)])  # nothing there: no change
    """
    with nodes.node_lock(store, [path for path, _ in changes]):
        _refresh(store, changes, created)


def _refresh(store: Any, changes: list[Change], created: frozenset[str]) -> None:
    above = {a for path, _ in changes for a in nodes.ancestors(path)} - created
    roots = sorted(above, key=len)
    keys = {}
    for root in roots:
        keys[root] = (
            nodes.join_path(root, nodes.ZARR_JSON) if root else nodes.ZARR_JSON,
            f"{root}/{V2_CONSOLIDATED_KEY}" if root else V2_CONSOLIDATED_KEY,
        )
    found = store.get_many([k for pair in keys.values() for k in pair])
    updates: dict[str, bytes] = {}
    for root, (v3_key, v2_key) in keys.items():
        below = [(rel, m) for path, m in changes if (rel := _relative(root, path)) is not None]
        if found.get(v3_key) is not None:
            if all(rel == "" and m is not None for rel, m in below):
                continue  # only the group's own document changed: none of its entries
            doc = json_loads(found[v3_key], key=v3_key)
            inline = doc.get("consolidated_metadata")
            if doc.get("node_type") != "group" or not isinstance(inline, dict):
                continue
            if inline.get("kind") != "inline":
                continue  # not entries of its members: left as they are (reads refuse it)
            entries = inline.get("metadata")
            if not isinstance(entries, dict):
                continue
            for rel, metadata in below:
                _apply_v3(entries, rel, metadata)
            inline["metadata"] = dict(sorted(entries.items()))
            updates[v3_key] = node_json_dumps(doc, key=v3_key, compact=True)
        elif found.get(v2_key) is not None:
            doc = json_loads(found[v2_key], key=v2_key)
            entries = doc.get("metadata")
            if not isinstance(entries, dict):
                continue
            for rel, metadata in below:
                _apply_v2(entries, rel, metadata)
            updates[v2_key] = node_json_dumps(build_v2_consolidated(entries), compact=True)
    if updates:
        store.set_many(updates)
