"""Arrays have at most 64 dimensions, numpy's limit (every chunk is decoded into a numpy
array): metadata with more is refused when parsed, naming the key, not at a read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import torchzarr as tz
from torchzarr.errors import MetadataError
from torchzarr.metadata import ArrayMetadataV2, ArrayMetadataV3


def _v3_document(ndim: int) -> dict[str, object]:
    return {
        "zarr_format": 3,
        "node_type": "array",
        "shape": [1] * ndim,
        "data_type": "float32",
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [1] * ndim}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": 0.0,
        "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}],
    }


def _v2_document(ndim: int) -> dict[str, object]:
    return {
        "zarr_format": 2,
        "shape": [1] * ndim,
        "chunks": [1] * ndim,
        "dtype": "<f4",
        "compressor": None,
        "fill_value": 0,
        "filters": None,
        "order": "C",
    }


def test_metadata_of_up_to_64_dimensions_parses() -> None:
    assert ArrayMetadataV3.from_json(_v3_document(64)).ndim == 64
    assert ArrayMetadataV2.from_json(_v2_document(64)).ndim == 64


@pytest.mark.parametrize("ndim", [65, 1000])
def test_metadata_of_more_dimensions_is_refused_naming_the_key(ndim: int) -> None:
    message = f"shape has {ndim} dimensions; at most 64 are supported"
    with pytest.raises(MetadataError, match=f"zarr.json: {message}"):
        ArrayMetadataV3.from_json(_v3_document(ndim))
    with pytest.raises(MetadataError, match=rf"\.zarray: {message}"):
        ArrayMetadataV2.from_json(_v2_document(ndim))


def test_a_stored_array_of_1000_dimensions_does_not_open(tmp_path: Path) -> None:
    (tmp_path / "zarr.json").write_text(json.dumps(_v3_document(1000)))
    with pytest.raises(MetadataError, match=r"\(zarr.json\).*shape has 1000 dimensions"):
        tz.open_array(tmp_path, mode="r")


def test_an_array_of_65_dimensions_is_not_created() -> None:
    with pytest.raises(MetadataError, match="shape has 65 dimensions"):
        tz.create_array("memory://", shape=(1,) * 65, dtype=torch.float32)
