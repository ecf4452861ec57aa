"""Consolidated metadata: write every node's metadata into the root, and open from it."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from functools import partial
from typing import Any

from torchzarr.core import nodes
from torchzarr.errors import GroupNotFoundError, MetadataError
from torchzarr.metadata.consolidated import (
    V2_CONSOLIDATED_KEY,
    build_v2_consolidated,
    build_v3_consolidated,
    split_v2_consolidated,
)
from torchzarr.metadata.jsonutil import json_dumps, json_loads
from torchzarr.metadata.v2 import ArrayMetadataV2, GroupMetadataV2
from torchzarr.metadata.v3 import GroupMetadataV3, parse_v3_node

__all__ = ["consolidated_children", "load_consolidated", "write_consolidated"]


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
        nodes.write_node(store, path, updated)
        return updated
    entries: dict[str, Any] = {".zgroup": root_metadata.to_json()}
    if root_metadata.attributes:
        entries[".zattrs"] = root_metadata.attributes
    for rel, meta in members:
        name = ".zgroup" if isinstance(meta, GroupMetadataV2) else ".zarray"
        entries[f"{rel}/{name}"] = meta.to_json()
        entries[f"{rel}/.zattrs"] = meta.attributes
    key = f"{path}/{V2_CONSOLIDATED_KEY}" if path else V2_CONSOLIDATED_KEY
    store.set(key, json_dumps(build_v2_consolidated(entries), keep_nonfinite=True))
    return root_metadata


def load_consolidated(
    store: Any, path: str, zarr_format: int | None, *, required: bool
) -> tuple[Any, dict[str, Any] | None]:
    """The group metadata at ``path`` and its consolidated members (one batched fetch).

    Returns ``(metadata or None, {relative path: metadata} or None)``.
    """
    v2_key = f"{path}/{V2_CONSOLIDATED_KEY}" if path else V2_CONSOLIDATED_KEY
    keys = nodes.node_metadata_keys(path)
    if zarr_format != 3:
        keys.append(v2_key)
    docs = store.get_many(keys)
    meta = nodes.parse_node(path, docs, store)
    if meta is None:
        return None, None
    members: dict[str, Any] | None = None
    if isinstance(meta, GroupMetadataV3) and meta.consolidated_metadata is not None:
        inline = meta.consolidated_metadata.get("metadata")
        if not isinstance(inline, dict):
            raise MetadataError(f"{path or '/'}: consolidated_metadata.metadata must be an object")
        members = {
            rel: nodes.tolerant(
                nodes.join_path(path, rel), 3, doc, None, partial(parse_v3_node, doc)
            )
            for rel, doc in inline.items()
        }
    elif isinstance(meta, GroupMetadataV2) and docs.get(v2_key) is not None:
        members = {}
        raw = json_loads(docs[v2_key], key=v2_key)
        for rel, files in split_v2_consolidated(raw).items():
            if not rel:
                continue
            attrs = files.get(".zattrs") or {}
            if ".zarray" in files:
                zarray = files[".zarray"]
                members[rel] = nodes.tolerant(
                    nodes.join_path(path, rel),
                    2,
                    zarray,
                    attrs,
                    partial(ArrayMetadataV2.from_json, zarray, attrs),
                )
            elif ".zgroup" in files:
                members[rel] = GroupMetadataV2(attributes=dict(attrs))
    if required and members is None and not hasattr(meta, "shape"):
        raise GroupNotFoundError(f"no consolidated metadata for the group at {path or '/'!r}")
    return meta, members


def consolidated_children(members: Mapping[str, Any], name: str | None = None) -> dict[str, Any]:
    """Entries below ``name`` re-keyed relative to it (all entries when ``name`` is None)."""
    if name is None:
        return dict(members)
    prefix = name + "/"
    return {rel[len(prefix) :]: meta for rel, meta in members.items() if rel.startswith(prefix)}
