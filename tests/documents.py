"""Zarr v3 array documents for tests that write stores by hand (crafted or odd metadata)."""

from __future__ import annotations

from typing import Any


def v3_array_document(length: int, codecs: list[Any]) -> dict[str, Any]:
    """The ``zarr.json`` of a 1-d float32 array of ``length`` in one chunk, with ``codecs``."""
    return {
        "zarr_format": 3,
        "node_type": "array",
        "shape": [length],
        "data_type": "float32",
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [length]}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": 0.0,
        "codecs": codecs,
        "attributes": {},
    }
