"""Strict JSON for metadata documents: no NaN literals out, clear errors in."""

from __future__ import annotations

import json
from typing import Any

from torchzarr.errors import MetadataError

__all__ = ["json_dumps", "json_loads"]


def json_dumps(doc: Any) -> bytes:
    """Encode a metadata document as strict, indented JSON (UTF-8).

    Example:
        >>> json_dumps({"zarr_format": 3})
        b'{\\n  "zarr_format": 3\\n}'
    """
    try:
        return json.dumps(doc, indent=2, allow_nan=False, ensure_ascii=False).encode("utf-8")
    except (TypeError, ValueError) as err:
        raise MetadataError(f"metadata cannot be written as strict JSON: {err}") from None


def json_loads(data: bytes | bytearray | memoryview | str, *, key: str) -> dict[str, Any]:
    """Decode the JSON object stored at ``key``; MetadataError naming the key otherwise.

    Example:
        >>> json_loads(b'{"a": 1}', key="zarr.json")
        {'a': 1}
    """
    try:
        text = data if isinstance(data, str) else bytes(data).decode("utf-8")
        doc = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise MetadataError(f"{key}: not valid JSON ({err})") from None
    if not isinstance(doc, dict):
        raise MetadataError(f"{key}: expected a JSON object, got {type(doc).__name__}")
    return doc
