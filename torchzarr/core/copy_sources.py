"""What ``from_array`` keeps of its source: the settings each kind of array gives a copy."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from torchzarr.core.api import open_array
from torchzarr.core.array import Array
from torchzarr.core.attributes import RESERVED_ATTRIBUTES, StoredAttributes
from torchzarr.core.create import AUTO, XARRAY_DIMENSIONS
from torchzarr.dtypes import data_type, raw_bits_dtype
from torchzarr.errors import MetadataError
from torchzarr.metadata.fill import coerce_fill_value
from torchzarr.storage.memory import MemoryStore
from torchzarr.tensors import tensor_from_storage

__all__ = [
    "CODEC_SETTINGS",
    "axis_names",
    "int_tuple",
    "library",
    "raw_bits_of",
    "source_settings",
    "source_zarr_format",
    "zarr_python_layout",
]

#: the settings a Zarr source's codecs and layout give (kept from a zarr-python array too)
CODEC_SETTINGS = ("shards", "filters", "compressors", "serializer", "order", "chunk_key_encoding")


def int_tuple(value: Any) -> tuple[int, ...] | None:
    """``value`` as a tuple of ints (a chunk shape), or None (e.g. dask's tuples of tuples)."""
    try:
        items = tuple(value)
    except TypeError:
        return None
    if all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in items):
        return tuple(int(v) for v in items)
    return None


def source_settings(data: Any, zarr_format: int) -> dict[str, Any]:
    """What ``"keep"`` means for each setting, given the source. As in zarr-python, the
    serializer, memory order, chunk key encoding and byte order are kept within a format.
    ``"codec_source"`` is the torchzarr array whose codecs and layout these are (a
    zarr-python source's read by :func:`zarr_python_layout`), or None. The shards are the
    source's even for a v2 copy, which cannot hold them (``from_array`` drops them).

    Example:
        >>> import torch, torchzarr as tz
        >>> src = tz.create_array("memory://", shape=(8,), dtype="int8", chunks=(2,), shards=(4,))
        >>> source_settings(src, 3)["shards"]["shape"], source_settings(torch.ones(2), 3)["shards"]
        ((4,), None)
    """
    if isinstance(data, Array):
        same_format = data.zarr_format == zarr_format
        return {
            "codec_source": data,
            "chunks": data.chunks,
            "shards": _shard_layout(data),
            "filters": data.filters,
            "compressors": data.compressors,
            "serializer": data.serializer if same_format else AUTO,
            # a v2 null ("no fill value") stays null, not an explicit 0
            "fill_value": None if data.metadata.fill_value is None else data.fill_value,
            "dimension_names": data.dimension_names,
            "order": data.order if same_format else "C",
            "chunk_key_encoding": data.metadata.chunk_key_encoding if same_format else None,
            "attributes": _kept_attributes(data.attrs, zarr_format),
            "dtype": _stored_dtype(data) if same_format else data.dtype,
        }
    # zarr-python and h5py arrays have a chunk shape; tensors and numpy arrays do not
    chunks = int_tuple(getattr(data, "chunks", None))
    if chunks is not None and len(chunks) != len(data.shape):
        chunks = None
    kind = library(data)
    attributes = None
    if kind in ("zarr", "xarray"):
        attributes = _kept_attributes(data.attrs, zarr_format)
        attributes = StoredAttributes(
            {k: v for k, v in attributes.items() if k not in RESERVED_ATTRIBUTES}
        )
    settings = {
        "codec_source": None,
        "chunks": chunks,
        "shards": None,
        "filters": None,
        "compressors": AUTO,
        "serializer": AUTO,
        "fill_value": _zarr_python_fill_value(data) if kind == "zarr" else None,
        "dimension_names": axis_names(data),
        "order": "C",
        "chunk_key_encoding": None,
        "attributes": attributes,
        "dtype": (raw_bits_of(data) if kind == "zarr" else None)
        or getattr(data.dtype, "numpy_dtype", data.dtype),
    }
    layout = zarr_python_layout(data) if kind == "zarr" else None
    if layout is not None:  # its codecs and layout, kept as a torchzarr source's are
        kept = source_settings(layout, zarr_format)
        # into the other format, as zarr-python's from_array: the default codecs (the
        # source's sharding only says what its chunks were: from_array warns of them)
        same = layout.zarr_format == zarr_format
        settings.update(
            {key: kept[key] for key in ("codec_source", *CODEC_SETTINGS) if same}
            | {"shards": kept["shards"]}
        )
    return settings


def zarr_python_layout(data: Any) -> Array | None:
    """A torchzarr array made of a zarr-python array's metadata document alone (no
    attributes, no chunks): its codecs and layout as torchzarr reads them, for a copy to
    keep; None where torchzarr cannot read them (a dtype or codec it does not take).

    Example:
        >>> import zarr
        >>> z = zarr.create_array({}, shape=(8,), dtype="i2", chunks=(2,), shards=(4,))
        >>> zarr_python_layout(z).shards
        (4,)
    """
    try:
        from zarr.core.buffer import default_buffer_prototype

        documents = data.metadata.to_buffer_dict(default_buffer_prototype())
        store = MemoryStore()
        for key, buffer in documents.items():
            if key.rpartition("/")[2] in ("zarr.json", ".zarray"):
                document = json.loads(buffer.to_bytes())
                document.pop("attributes", None)  # the copy's attributes are kept apart
                store.set(key, json.dumps(document).encode())
        layout = open_array(store, mode="r")
        _ = layout.filters, layout.compressors, layout.serializer  # codecs resolved here
    except Exception:  # zarr-python's API or metadata torchzarr does not take: defaults
        return None
    return layout


def raw_bits_of(data: Any) -> str | None:
    """The dtype a zarr-python array written by torchzarr holds as raw bits (float8 in v2:
    ``uint8`` with the ``_torchzarr_dtype`` attribute), else None."""
    try:
        found = raw_bits_dtype(dict(data.attrs), data_type(data.dtype))
    except Exception:  # a dtype or attributes torchzarr does not take: copied as they are
        return None
    return None if found is None else found.name


def library(data: Any) -> str:
    """The top-level package of ``data``'s type (``"zarr"``, ``"xarray"``, ``"numpy"``...)."""
    return type(data).__module__.partition(".")[0]


def _kept_attributes(attributes: Any, zarr_format: int) -> StoredAttributes:
    """A source's attributes as the copy keeps them (NaN and infinities too, as stored): a
    v2 source's xarray dimension attribute is v3's ``dimension_names``, so a v3 copy holds
    it there instead."""
    return StoredAttributes(
        {
            key: value
            for key, value in attributes.items()
            if zarr_format == 2 or key != XARRAY_DIMENSIONS
        }
    )


def _zarr_python_fill_value(data: Any) -> Any:
    """A zarr-python array's fill value (None for a v2 null, kept null), or None (the
    default) where the copy's dtype cannot hold it."""
    value = getattr(data, "fill_value", None)
    if value is None:
        return None
    raw = raw_bits_of(data)
    if raw is not None:  # the bits of a float8 (or other raw-bits) fill: as its number
        bits = np.asarray(value, dtype=data.dtype).reshape(1)
        return tensor_from_storage(bits.copy(), data_type(raw)).item()
    try:
        coerce_fill_value(value, data_type(data.dtype))
    except MetadataError:
        return None
    return value


def source_zarr_format(data: Any) -> int:
    """The Zarr format of a torchzarr or zarr-python source; 3 for other sources."""
    if isinstance(data, Array):
        return data.zarr_format
    if library(data) == "zarr":
        found = getattr(getattr(data, "metadata", None), "zarr_format", None)
        if found in (2, 3):
            return int(found)
    return 3


def _shard_layout(data: Array) -> dict[str, Any] | None:
    """The source's shard shape with its index settings (location, codecs), or None."""
    if data.shards is None:
        return None
    sharding = data.metadata.codecs[0]
    return {
        "shape": data.shards,
        "index_location": sharding.index_location,
        "index_codecs": sharding.index_codecs,
    }


def _stored_dtype(data: Array) -> Any:
    """The source's dtype, as a big-endian numpy dtype where a v2 source stores it so."""
    stored = data.metadata.data_type
    if getattr(data.metadata, "byteorder", "<") == ">" and data.data_type == stored:
        return stored.storage.newbyteorder(">")
    return data.dtype


def axis_names(data: Any) -> tuple[str | None, ...] | None:
    """An xarray DataArray's ``dims`` or a zarr-python array's dimension names (v3's
    ``dimension_names``, v2's xarray attribute), if any."""
    names = getattr(data, "dims", None)
    if names is None:
        names = getattr(getattr(data, "metadata", None), "dimension_names", None)
    if names is None and library(data) == "zarr":
        names = data.attrs.get(XARRAY_DIMENSIONS)
    if names is None or isinstance(names, str):
        return None
    try:
        names = tuple(names)
    except TypeError:
        return None
    ok = len(names) == len(data.shape) and all(n is None or isinstance(n, str) for n in names)
    return names if ok else None
