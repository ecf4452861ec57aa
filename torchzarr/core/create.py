"""``create_array`` arguments (torch dtypes, numcodecs objects, short names) to metadata."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, cast

import numcodecs
import numpy as np

from torchzarr.codecs.registry import codec_from_json
from torchzarr.codecs.sharding import ShardingCodec
from torchzarr.codecs.user_chains import default_v3_codecs
from torchzarr.codecs.user_settings import check_v2_filters
from torchzarr.codecs.v2_pipeline import v2_codec_config
from torchzarr.core.attributes import json_attributes
from torchzarr.core.chunking import normalize_chunks, normalize_shape
from torchzarr.dtypes import RAW_DTYPE_ATTRIBUTE, data_type
from torchzarr.errors import ArgumentTypeError, MetadataError
from torchzarr.metadata import build_array_metadata
from torchzarr.metadata.fill import coerce_user_fill_value
from torchzarr.metadata.v2 import ArrayMetadataV2

__all__ = [
    "AUTO",
    "PRESETS",
    "XARRAY_DIMENSIONS",
    "array_metadata_from_args",
    "check_v2_dimension_attribute",
    "compressor_list",
]

#: the default ``compressors``: zstd level 1 (fast to decode, a fair ratio)
AUTO = "auto"


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, str | numcodecs.abc.Codec | dict) or not isinstance(value, Sequence):
        return [value]
    return list(value)


#: ``compressors=`` presets, all chosen for fast decoding first
PRESETS: dict[str, Any] = {
    # blosc lz4 with byte shuffle: the fastest to decode, a modest ratio
    "fast": lambda: [numcodecs.Blosc(cname="lz4", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE)],
    # zstd level 3: a good ratio, still quick to decode
    "balanced": lambda: [numcodecs.Zstd(level=3)],
    # zstd at a high level behind a byte shuffle (in blosc): the smallest stores, slower writes
    "small": lambda: [numcodecs.Blosc(cname="zstd", clevel=9, shuffle=numcodecs.Blosc.SHUFFLE)],
}


def _default_compressors(zarr_format: int) -> list[Any]:
    # The same for v2 and v3: zstd level 1, which zarr-python and tensorstore both read.
    return [numcodecs.Zstd(level=1)]


def compressor_list(compressors: Any, zarr_format: int) -> list[Any]:
    """``create_array``'s ``compressors`` as a list: a preset or ``"auto"`` resolved.

    Example:
        >>> compressor_list("balanced", 3), compressor_list(None, 2)
        ([Zstd(level=3)], [])
    """
    if isinstance(compressors, str) and compressors in PRESETS:
        return list(PRESETS[compressors]())
    if isinstance(compressors, str) and compressors == AUTO:
        return _default_compressors(zarr_format)
    return _as_list(compressors)


def _byteorder(dtype: Any) -> str:
    """The byte order a v2 array keeps for the requested ``dtype``: ``">"`` for a big-endian
    numpy dtype (``np.dtype(">i4")``, ``">i4"``), else ``"<"`` (torch dtypes, names)."""
    if isinstance(dtype, str) and not dtype.startswith((">", "<", "=", "|")):
        return "<"  # a name ("int32", "bfloat16"): native order, written little-endian
    try:
        order = np.dtype(dtype).str[0]
    except TypeError:
        return "<"  # a torch dtype or a DataType
    return ">" if order == ">" else "<"


_SHARD_KEYS = ("shape", "index_location", "index_codecs")


def _shard_layout(shards: Any) -> tuple[Any, dict[str, Any]]:
    """``shards`` as its shape and the sharding codec's index settings: a shape, or a dict
    (as zarr-python's) ``{"shape": ..., "index_location": "start" | "end"}``, which may also
    name ``index_codecs`` (codecs or their JSON)."""
    if not isinstance(shards, dict):
        return shards, {}
    unknown = sorted(set(shards) - set(_SHARD_KEYS))
    if unknown or "shape" not in shards:
        raise MetadataError(
            f"shards as a dict needs 'shape' and may have {list(_SHARD_KEYS[1:])}, got "
            f"{sorted(shards)}"
        )
    index: dict[str, Any] = {"index_location": shards.get("index_location") or "end"}
    if shards.get("index_codecs"):
        index["index_codecs"] = [codec_from_json(c) for c in shards["index_codecs"]]
    return shards["shape"], index


#: the attribute in which xarray (and zarr-python's v2 users) keep a v2 array's axis names
XARRAY_DIMENSIONS = "_ARRAY_DIMENSIONS"


def _per_axis(name: str, sizes: Any, shape: tuple[int, ...]) -> Any:
    """``sizes`` (``chunks`` or ``shards`` of a sharded array) checked to give one size per
    axis of the array's ``shape`` (an int, "auto" or None stands for them all): the inner
    chunks are checked against the shard shape later, which then has the same axes.

    Example:
        >>> _per_axis("chunks", [5], (37, 23))
        Traceback (most recent call last):
        ...
        torchzarr.errors.MetadataError: chunks (5,) have 1 dims but the array's shape (37, 23) has 2
    """
    if sizes is None or isinstance(sizes, str | int | bool | np.integer):
        return sizes
    try:
        sizes = tuple(sizes)
    except TypeError:
        return sizes  # refused as it is by normalize_chunks
    if len(sizes) != len(shape):
        raise MetadataError(
            f"{name} {sizes!r} have {len(sizes)} dims but the array's shape {shape!r} has "
            f"{len(shape)}"
        )
    return sizes


def check_v2_dimension_attribute(attributes: dict[str, Any], ndim: int, where: str = "") -> Any:
    """The value of xarray's ``_ARRAY_DIMENSIONS`` in a v2 array's ``attributes`` (None when
    absent), refused unless it is a list of one str per axis: xarray reads no group holding
    an array whose names it cannot zip with the shape.

    Example:
        >>> check_v2_dimension_attribute({"_ARRAY_DIMENSIONS": ["t", "x"]}, 2)
        ['t', 'x']
    """
    names = attributes.get(XARRAY_DIMENSIONS)
    if names is None and XARRAY_DIMENSIONS not in attributes:
        return None
    if not (
        isinstance(names, list) and len(names) == ndim and all(isinstance(n, str) for n in names)
    ):
        raise MetadataError(
            f"the {XARRAY_DIMENSIONS} attribute {names!r}{where} names a v2 array's axes for "
            f"xarray: it needs a list of one str per axis ({ndim}); nothing was written"
        )
    return names


def _v2_dimension_names(names: Sequence[str | None], ndim: int) -> list[str]:
    """v2 has no ``dimension_names``: they go to xarray's ``_ARRAY_DIMENSIONS`` attribute."""
    given = list(names)
    strings = [n for n in given if isinstance(n, str)]
    if len(given) != ndim or len(strings) != ndim:
        raise MetadataError(
            f"dimension_names {given!r} for a v2 array become xarray's {XARRAY_DIMENSIONS} "
            f"attribute, which needs one str per axis ({ndim})"
        )
    return strings


def array_metadata_from_args(
    *,
    shape: Any,
    dtype: Any,
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
) -> Any:
    """Build validated array metadata from ``create_array``'s arguments.

    A big-endian numpy ``dtype`` (``">i4"``) stays big-endian in v2 (``.zarray`` records
    ``">i4"``); v3 writes ``bytes`` little endian unless ``compressors`` holds another
    array -> bytes codec, as zarr-python does. ``shards`` is a shape or, as in zarr-python,
    ``{"shape": ..., "index_location": "start" | "end"}`` (plus ``"index_codecs"``).

    Raises:
        MetadataError: naming the argument that is invalid or does not fit the format.

    Example:
        >>> import torch
        >>> meta = array_metadata_from_args(shape=(10, 4), dtype=torch.float32, chunks=(5, 4))
        >>> meta.chunk_shape, meta.data_type.name
        ((5, 4), 'float32')
        >>> array_metadata_from_args(shape=(4,), dtype=">i4", zarr_format=2).to_json()["dtype"]
        '>i4'
        >>> meta = array_metadata_from_args(shape=(4,), dtype="int8", chunks=(2,),
        ...     shards={"shape": (4,), "index_location": "start"})
        >>> meta.codecs[0].index_location
        'start'
    """
    if zarr_format not in (2, 3):
        raise MetadataError(f"zarr_format must be 2 or 3, got {zarr_format!r}")
    dt = data_type(dtype)
    shape_t = normalize_shape(shape)
    if dimension_names is not None:
        if not isinstance(dimension_names, Iterable):
            raise ArgumentTypeError(
                "dimension_names must be a sequence of one str (or None) per axis, got "
                f"{type(dimension_names).__name__}: {dimension_names!r}"
            )
        dimension_names = tuple(dimension_names)
    shard_shape = None
    shards, shard_index = _shard_layout(shards)
    if shards is not None:
        if zarr_format != 3:
            raise MetadataError("shards need zarr_format=3 (Zarr v2 has no sharding)")
        shards, chunks = _per_axis("shards", shards, shape_t), _per_axis("chunks", chunks, shape_t)
        shard_shape = normalize_chunks(shards, shape_t, dt.itemsize)
        chunk_shape = normalize_chunks(chunks, shard_shape, dt.itemsize)
        bad = [a for a, (s, c) in enumerate(zip(shard_shape, chunk_shape, strict=True)) if s % c]
        if bad:
            raise MetadataError(
                f"shards {shard_shape} must be a multiple of chunks {chunk_shape} on every axis "
                f"(not on axis {bad[0]})"
            )
    else:
        chunk_shape = normalize_chunks(chunks, shape_t, dt.itemsize)
    comp = compressor_list(compressors, zarr_format)
    filt = _as_list(filters)
    fill = coerce_user_fill_value(fill_value, dt)
    attributes = json_attributes(attributes)
    if zarr_format == 2 and XARRAY_DIMENSIONS in attributes:
        names = check_v2_dimension_attribute(attributes, len(shape_t))
        if dimension_names is not None and list(dimension_names) != names:
            raise MetadataError(
                f"dimension_names {list(dimension_names)!r} and the {XARRAY_DIMENSIONS} "
                f"attribute {names!r} differ: a v2 array keeps its axis names in that attribute"
            )
    if zarr_format == 2 and dimension_names is not None:
        attributes[XARRAY_DIMENSIONS] = _v2_dimension_names(dimension_names, len(shape_t))
        dimension_names = None
    if (dt.v3_name if zarr_format == 3 else dt.v2_typestr) is None:
        # No name in this format: store the raw bits, and the real dtype as an attribute.
        attributes[RAW_DTYPE_ATTRIBUTE] = dt.name
        dt = data_type(dt.storage)
    common: dict[str, Any] = dict(
        zarr_format=zarr_format,
        shape=shape_t,
        chunk_shape=chunk_shape,
        data_type=dt,
        fill_value=fill,
        dimension_names=tuple(dimension_names) if dimension_names is not None else None,
        attributes=attributes,
    )
    if zarr_format == 3:
        if order != "C":
            raise MetadataError(
                "order applies to Zarr v2 only; in v3 add a transpose codec through filters"
            )
        codecs = default_v3_codecs(dt.storage, comp, filt)
        if shard_shape is not None:
            codecs = (ShardingCodec(chunk_shape, codecs, **shard_index),)
            common["chunk_shape"] = shard_shape
        return build_array_metadata(
            **common,
            codecs=codecs,
            chunk_key_encoding=chunk_key_encoding,
            dimension_separator=dimension_separator,  # the default encoding's separator
        )
    if len(comp) > 1:
        raise MetadataError(
            f"Zarr v2 arrays take at most one compressor, got {len(comp)}: {comp!r}"
        )
    meta = build_array_metadata(
        **common,
        compressor=v2_codec_config(comp[0]) if comp else None,
        filters=[v2_codec_config(f) for f in filt] or None,
        order=order,
        byteorder=_byteorder(dtype),
        dimension_separator=dimension_separator,
        chunk_key_encoding=chunk_key_encoding,
    )
    v2 = cast(ArrayMetadataV2, meta)
    if v2.filters:  # as default_v3_codecs does: refused when made, never on open
        dt = v2.data_type
        stored = (
            dt.storage.newbyteorder(">" if v2.byteorder == ">" else "<")
            if dt.itemsize > 1
            else dt.storage
        )
        check_v2_filters(v2.filters, stored)
    if fill_value is None:
        # v2's "no fill value" (null; unwritten chunks read as zeros everywhere): xarray
        # reads a v2 fill value as CF's _FillValue and would show stored zeros as NaN.
        meta = meta.evolve(fill_value=None)
    return meta
