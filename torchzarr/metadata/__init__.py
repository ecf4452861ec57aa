"""Zarr metadata, parsed once at the boundary: JSON <-> frozen dataclasses, v2 and v3."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torchzarr.dtypes import DataType
from torchzarr.dtypes import data_type as resolve_dtype
from torchzarr.errors import MetadataError
from torchzarr.metadata.base import ArrayMetadata, GroupMetadata
from torchzarr.metadata.fill import coerce_fill_value, encode_fill_value, parse_fill_value
from torchzarr.metadata.jsonutil import json_dumps, json_loads
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
    "coerce_fill_value",
    "encode_fill_value",
    "json_dumps",
    "json_loads",
    "parse_fill_value",
    "parse_v3_node",
]


def _v2_separator(dimension_separator: str | None, chunk_key_encoding: Any) -> str:
    from torchzarr.codecs.key_encoding import V2ChunkKeyEncoding, chunk_key_encoding_from_json

    if chunk_key_encoding is None:
        return dimension_separator or "."
    encoding = chunk_key_encoding_from_json(chunk_key_encoding)
    if not isinstance(encoding, V2ChunkKeyEncoding):
        raise MetadataError(
            f"Zarr v2 arrays use the 'v2' chunk key encoding, got {encoding.name!r}"
        )
    if dimension_separator is not None and dimension_separator != encoding.separator:
        raise MetadataError(
            f"dimension_separator {dimension_separator!r} contradicts chunk_key_encoding "
            f"separator {encoding.separator!r}"
        )
    return encoding.separator


def _v3_encoding(dimension_separator: str | None, chunk_key_encoding: Any) -> Any:
    from torchzarr.codecs.key_encoding import chunk_key_encoding_from_json

    if chunk_key_encoding is None:
        return chunk_key_encoding_from_json(
            {"name": "default", "configuration": {"separator": dimension_separator or "/"}}
        )
    encoding = chunk_key_encoding_from_json(chunk_key_encoding)
    separator = getattr(encoding, "separator", None)
    if dimension_separator is not None and dimension_separator != separator:
        raise MetadataError(
            f"dimension_separator {dimension_separator!r} contradicts chunk_key_encoding "
            f"{encoding.to_json()!r}"
        )
    return encoding


def build_array_metadata(
    *,
    zarr_format: int,
    shape: Sequence[int],
    chunk_shape: Sequence[int],
    data_type: DataType | str,
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

    Args:
        zarr_format: 2 or 3.
        shape: the array's shape.
        chunk_shape: the chunk grid (the shard shape when ``codecs`` is a sharding codec).
        data_type: a DataType or a dtype name.
        fill_value: a user value (see :func:`coerce_fill_value`); None means zero (new
            arrays always get a real fill value, never a v2 ``null``).
        codecs: v3 only: codecs or their JSON (default: ``bytes``, little endian).
        compressor: v2 only, a numcodecs JSON config or None.
        filters: v2 only, numcodecs JSON configs.
        order: v2 only, ``"C"`` or ``"F"``.
        byteorder: v2 only, ``"<"`` or ``">"`` for multi-byte dtypes.
        dimension_separator: ``.`` or ``/``; for v3, the separator of the ``default``
            encoding. Must agree with ``chunk_key_encoding`` when both are given.
        chunk_key_encoding: v3: an encoding or its JSON; v2: only a ``v2`` encoding.
        dimension_names: v3 only; one str or None per dimension.
        attributes: JSON-able user attributes.

    Raises:
        MetadataError: naming the argument that is invalid or does not fit the format.

    Example:
        >>> meta = build_array_metadata(zarr_format=2, shape=(4,), chunk_shape=(2,),
        ...     data_type="int8", fill_value=None)
        >>> meta.to_json()["dtype"], meta.to_json()["fill_value"]
        ('|i1', 0)
    """
    dt = resolve_dtype(data_type)
    fill = coerce_fill_value(fill_value, dt)
    names = tuple(dimension_names) if dimension_names is not None else None
    if zarr_format == 2:
        if codecs:
            raise MetadataError("codecs= is for Zarr v3; v2 arrays take compressor= and filters=")
        if names is not None:
            raise MetadataError("dimension_names need Zarr v3 (v2 has no place for them)")
        if dt.v2_typestr is None:
            raise MetadataError(f"dtype {dt.name} has no Zarr v2 form; use zarr_format=3")
        meta: ArrayMetadata = ArrayMetadataV2(
            shape=tuple(shape),
            chunk_shape=tuple(chunk_shape),
            data_type=dt,
            byteorder=byteorder,
            compressor=compressor,
            filters=tuple(filters) if filters else None,
            fill_value=fill,
            order=order,
            dimension_separator=_v2_separator(dimension_separator, chunk_key_encoding),
            attributes=dict(attributes or {}),
        )
        meta.codec_pipeline()  # an unknown numcodecs id fails now, not at the first write
        return meta
    if zarr_format != 3:
        raise MetadataError(f"zarr_format must be 2 or 3, got {zarr_format!r}")
    if compressor is not None or filters:
        raise MetadataError(
            "compressor= and filters= are for Zarr v2; v3 arrays take codecs= (the whole chain)"
        )
    if order != "C":
        raise MetadataError(f"order={order!r} is for Zarr v2; in v3 add a transpose codec")
    if dt.v3_name is None:
        raise MetadataError(f"dtype {dt.name} has no Zarr v3 data_type name")
    from torchzarr.codecs.user_chains import default_v3_codecs

    return ArrayMetadataV3(
        shape=tuple(shape),
        chunk_shape=tuple(chunk_shape),
        data_type=dt,
        fill_value=fill,
        codecs=tuple(codecs) if codecs else default_v3_codecs(dt.storage, []),
        chunk_key_encoding=_v3_encoding(dimension_separator, chunk_key_encoding),
        attributes=dict(attributes or {}),
        dimension_names=names,
    )
