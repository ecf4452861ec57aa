"""Zarr metadata, parsed once at the boundary: JSON <-> frozen dataclasses, v2 and v3."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torchzarr.dtypes import DataType
from torchzarr.errors import MetadataError
from torchzarr.metadata.base import ArrayMetadata, GroupMetadata
from torchzarr.metadata.v2 import ArrayMetadataV2, GroupMetadataV2
from torchzarr.metadata.v3 import ArrayMetadataV3, GroupMetadataV3, parse_v3_node

__all__ = [
    "ArrayMetadata",
    "ArrayMetadataV2",
    "ArrayMetadataV3",
    "GroupMetadata",
    "GroupMetadataV2",
    "GroupMetadataV3",
    "build_array_metadata",
    "parse_v3_node",
]


def build_array_metadata(
    *,
    zarr_format: int,
    shape: tuple[int, ...],
    chunk_shape: tuple[int, ...],
    data_type: DataType,
    fill_value: Any,
    codecs: Sequence[Any] | None = None,
    compressor: dict[str, Any] | None = None,
    filters: Sequence[dict[str, Any]] | None = None,
    order: str = "C",
    byteorder: str = "<",
    dimension_separator: str | None = None,
    chunk_key_encoding: Any = None,
    dimension_names: Sequence[str | None] | None = None,
    attributes: dict[str, Any] | None = None,
) -> ArrayMetadata:
    """Validated metadata for a new array (used by ``create_array``).

    Example:
        >>> from torchzarr.dtypes import data_type
        >>> meta = build_array_metadata(zarr_format=2, shape=(4,), chunk_shape=(2,),
        ...     data_type=data_type("int8"), fill_value=None)
        >>> meta.to_json()["dtype"]
        '|i1'
    """
    from torchzarr.codecs.key_encoding import chunk_key_encoding_from_json

    names = tuple(dimension_names) if dimension_names is not None else None
    if zarr_format == 2:
        separator = dimension_separator
        if chunk_key_encoding is not None:
            encoding = chunk_key_encoding_from_json(chunk_key_encoding)
            if encoding.name != "v2":
                raise MetadataError("Zarr v2 arrays use the 'v2' chunk key encoding")
            separator = separator or encoding.separator
        if names is not None:
            raise MetadataError("dimension_names need Zarr v3 (v2 has no place for them)")
        if data_type.v2_typestr is None:
            raise MetadataError(f"dtype {data_type.name} has no Zarr v2 form; use zarr_format=3")
        return ArrayMetadataV2(
            shape=tuple(shape),
            chunk_shape=tuple(chunk_shape),
            data_type=data_type,
            byteorder=byteorder if data_type.itemsize > 1 else "|",
            compressor=compressor,
            filters=tuple(filters) if filters else None,
            fill_value=fill_value,
            order=order,
            dimension_separator=separator or ".",
            attributes=dict(attributes or {}),
        )
    if zarr_format != 3:
        raise MetadataError(f"zarr_format must be 2 or 3, got {zarr_format!r}")
    if data_type.v3_name is None:
        raise MetadataError(f"dtype {data_type.name} has no Zarr v3 name")
    if dimension_separator is not None and chunk_key_encoding is None:
        chunk_key_encoding = {"name": "default", "configuration": {"separator": dimension_separator}}
    encoding = chunk_key_encoding_from_json(chunk_key_encoding or {"name": "default"})
    meta = ArrayMetadataV3(
        shape=tuple(shape),
        chunk_shape=tuple(chunk_shape),
        data_type=data_type,
        fill_value=fill_value,
        codecs=tuple(codecs or ()),
        chunk_key_encoding=encoding,
        attributes=dict(attributes or {}),
        dimension_names=names,
    )
    meta.codec_pipeline()  # validate the codec chain now, not at the first write
    return meta
