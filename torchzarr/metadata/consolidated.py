"""Consolidated metadata: v2 ``.zmetadata`` and v3 inline ``consolidated_metadata``, as JSON."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torchzarr.errors import MetadataError

__all__ = [
    "V2_CONSOLIDATED_KEY",
    "build_v2_consolidated",
    "build_v3_consolidated",
    "split_v2_consolidated",
]

V2_CONSOLIDATED_KEY = ".zmetadata"
_V2_NAMES = (".zarray", ".zgroup", ".zattrs")


def build_v2_consolidated(documents: Mapping[str, Any]) -> dict[str, Any]:
    """The ``.zmetadata`` document for ``{relative key: parsed JSON}`` of every v2 node.

    Example:
        >>> build_v2_consolidated({".zgroup": {"zarr_format": 2}})
        {'metadata': {'.zgroup': {'zarr_format': 2}}, 'zarr_consolidated_format': 1}
    """
    return {"metadata": dict(sorted(documents.items())), "zarr_consolidated_format": 1}


def split_v2_consolidated(doc: Any) -> dict[str, dict[str, Any]]:
    """``.zmetadata`` content grouped by node path: ``{path: {".zarray": {...}, ...}}``.

    Example:
        >>> split_v2_consolidated({"zarr_consolidated_format": 1, "metadata": {
        ...     "a/.zgroup": {"zarr_format": 2}}})
        {'a': {'.zgroup': {'zarr_format': 2}}}
    """
    if not isinstance(doc, dict) or doc.get("zarr_consolidated_format") != 1:
        raise MetadataError(".zmetadata: zarr_consolidated_format must be 1")
    entries = doc.get("metadata")
    if not isinstance(entries, dict):
        raise MetadataError(".zmetadata: 'metadata' must be an object")
    nodes: dict[str, dict[str, Any]] = {}
    for key, value in entries.items():
        path, _, name = key.rpartition("/")
        if name not in _V2_NAMES:
            continue  # other files (e.g. a .zmetadata of a sub-group) are not node metadata
        nodes.setdefault(path, {})[name] = value
    return nodes


def build_v3_consolidated(documents: Mapping[str, Any]) -> dict[str, Any]:
    """The inline ``consolidated_metadata`` object for ``{relative path: zarr.json JSON}``.

    Example:
        >>> build_v3_consolidated({})
        {'kind': 'inline', 'must_understand': False, 'metadata': {}}
    """
    return {"kind": "inline", "must_understand": False, "metadata": dict(sorted(documents.items()))}
