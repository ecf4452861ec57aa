"""``from_array``: a new array holding another array's data, copied in slabs of bounded memory."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from torchzarr.codecs.base import Codec
from torchzarr.codecs.bytes_codec import BytesCodec
from torchzarr.codecs.user_chains import default_v3_codecs, trailing_bytes_filters
from torchzarr.codecs.v2_pipeline import numcodecs_equivalent
from torchzarr.config import config
from torchzarr.core.api import create_array
from torchzarr.core.array import Array
from torchzarr.core.attributes import RESERVED_ATTRIBUTES, StoredAttributes
from torchzarr.core.cf_fill import carry_marker
from torchzarr.core.create import AUTO, XARRAY_DIMENSIONS, compressor_list
from torchzarr.core.placement import remove_node
from torchzarr.core.slabs import slab_shape, slabs
from torchzarr.dtypes import data_type, raw_bits_dtype
from torchzarr.errors import CodecError, InvalidArgumentError, MetadataError, TorchZarrError
from torchzarr.metadata.fill import coerce_fill_value
from torchzarr.storage.locations import location
from torchzarr.storage.registry import resolve_store
from torchzarr.tensors import tensor_from_storage

__all__ = ["KEEP", "from_array"]

#: take this setting from the source array
KEEP = "keep"


def _int_tuple(value: Any) -> tuple[int, ...] | None:
    """``value`` as a tuple of ints (a chunk shape), or None (e.g. dask's tuples of tuples)."""
    try:
        items = tuple(value)
    except TypeError:
        return None
    if all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in items):
        return tuple(int(v) for v in items)
    return None


def _codecs_for(codecs: tuple[Any, ...], zarr_format: int, what: str) -> list[Any]:
    """A source's codecs in a form ``create_array`` takes for ``zarr_format``."""
    if zarr_format == 3 or not any(isinstance(c, Codec) for c in codecs):
        return list(codecs)
    converted = [numcodecs_equivalent(c) if isinstance(c, Codec) else c for c in codecs]
    if any(c is None for c in converted):
        names = [c.codec_name for c in codecs if isinstance(c, Codec)]
        raise CodecError(
            f"the source's {what} {names} have no Zarr v2 form: pass {what}= explicitly"
        )
    return converted


def _source_settings(data: Any, zarr_format: int) -> dict[str, Any]:
    """What ``"keep"`` means for each setting, given the source. As in zarr-python, the
    serializer, memory order, chunk key encoding and byte order are kept within a format."""
    if isinstance(data, Array):
        same_format = data.zarr_format == zarr_format
        return {
            "chunks": data.chunks,
            "shards": _shard_layout(data) if zarr_format == 3 else None,
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
    chunks = _int_tuple(getattr(data, "chunks", None))
    if chunks is not None and len(chunks) != len(data.shape):
        chunks = None
    library = _library(data)
    attributes = None
    if library in ("zarr", "xarray"):
        attributes = _kept_attributes(data.attrs, zarr_format)
        attributes = StoredAttributes(
            {k: v for k, v in attributes.items() if k not in RESERVED_ATTRIBUTES}
        )
    return {
        "chunks": chunks,
        "shards": None,
        "filters": None,
        "compressors": AUTO,
        "serializer": AUTO,
        "fill_value": _zarr_python_fill_value(data) if library == "zarr" else None,
        "dimension_names": _axis_names(data),
        "order": "C",
        "chunk_key_encoding": None,
        "attributes": attributes,
        "dtype": (_raw_bits_of(data) if library == "zarr" else None)
        or getattr(data.dtype, "numpy_dtype", data.dtype),
    }


def _raw_bits_of(data: Any) -> str | None:
    """The dtype a zarr-python array written by torchzarr holds as raw bits (float8 in v2:
    ``uint8`` with the ``_torchzarr_dtype`` attribute), else None."""
    try:
        found = raw_bits_dtype(dict(data.attrs), data_type(data.dtype))
    except Exception:  # a dtype or attributes torchzarr does not take: copied as they are
        return None
    return None if found is None else found.name


def _library(data: Any) -> str:
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
    raw = _raw_bits_of(data)
    if raw is not None:  # the bits of a float8 (or other raw-bits) fill: as its number
        bits = np.asarray(value, dtype=data.dtype).reshape(1)
        return tensor_from_storage(bits.copy(), data_type(raw)).item()
    try:
        coerce_fill_value(value, data_type(data.dtype))
    except MetadataError:
        return None
    return value


def _source_zarr_format(data: Any) -> int:
    """The Zarr format of a torchzarr or zarr-python source; 3 for other sources."""
    if isinstance(data, Array):
        return data.zarr_format
    if _library(data) == "zarr":
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


def _with_serializer(
    serializer: Any, compressors: Any, zarr_format: int, kept_dtype: np.dtype[Any] | None
) -> Any:
    """``compressors`` led by ``serializer`` (v3's array -> bytes codec), where that is not
    the default ``bytes`` little endian that ``create_array`` writes anyway, nor the source's
    serializer (kept for its storage dtype ``kept_dtype``) with one among ``compressors``,
    which replaces it."""
    if serializer is None or (isinstance(serializer, str) and serializer == AUTO):
        return compressors
    if isinstance(serializer, BytesCodec) and serializer.endian in ("little", None):
        return compressors
    if zarr_format != 3:
        raise InvalidArgumentError(
            f"serializer {serializer!r} is for Zarr v3: a v2 array takes none (pass "
            "serializer='auto')"
        )
    given = compressor_list(compressors, zarr_format)
    if kept_dtype is not None and _holds_serializer(given, kept_dtype):
        return given
    return [serializer, *given]


def _holds_serializer(compressors: list[Any], dtype: np.dtype[Any]) -> bool:
    """Whether v3 ``compressors`` hold an array -> bytes codec: it takes the place of
    ``bytes``, so the codecs made of them are no more than the list."""
    return len(default_v3_codecs(dtype, compressors)) == len(compressors)


def _axis_names(data: Any) -> tuple[str | None, ...] | None:
    """An xarray DataArray's ``dims`` or a zarr-python array's dimension names (v3's
    ``dimension_names``, v2's xarray attribute), if any."""
    names = getattr(data, "dims", None)
    if names is None:
        names = getattr(getattr(data, "metadata", None), "dimension_names", None)
    if names is None and _library(data) == "zarr":
        names = data.attrs.get(XARRAY_DIMENSIONS)
    if names is None or isinstance(names, str):
        return None
    try:
        names = tuple(names)
    except TypeError:
        return None
    ok = len(names) == len(data.shape) and all(n is None or isinstance(n, str) for n in names)
    return names if ok else None


def from_array(
    store: Any,
    *,
    data: Any,
    write_data: bool = True,
    path: str = "",
    chunks: Any = KEEP,
    shards: Any = KEEP,
    filters: Any = KEEP,
    compressors: Any = KEEP,
    serializer: Any = KEEP,
    fill_value: Any = KEEP,
    zarr_format: int | None = None,
    attributes: dict[str, Any] | None = None,
    dimension_names: Any = KEEP,
    order: Any = KEEP,
    chunk_key_encoding: Any = KEEP,
    overwrite: bool = False,
    storage_options: dict[str, Any] | None = None,
) -> Array:
    """Create an array like ``data`` and copy its values, as zarr-python's ``from_array``.

    ``data`` is a :class:`torchzarr.Array` (then each ``"keep"`` takes its setting: chunks,
    shards with their index location and codecs, filters, compressors, fill value,
    dimension names, attributes; and, when ``zarr_format`` is the source's, as in
    zarr-python: the v3 serializer, the v2 ``order`` and byte order, and the chunk key
    encoding), or any array with ``shape``, ``dtype`` and slicing: a tensor, a numpy array,
    a zarr-python, h5py, dask or xarray array (whose ``chunks`` of ints and axis names are
    kept, and the attributes of a zarr-python array or xarray DataArray; a zarr-python
    array's fill value and Zarr format too; other settings take ``create_array``'s
    defaults); anything else (nested lists) goes through ``np.asarray``. Pass new
    ``chunks``/``shards``/``compressors`` to rechunk or recompress a dataset for training.
    A 0-d array written as v2 with its dimension names kept gets an empty
    ``_ARRAY_DIMENSIONS``, which xarray needs to open its group. Between formats, xarray's
    missing-value marker moves to where the copy's format holds it: a v3 source's
    ``_FillValue`` attribute becomes a v2 copy's fill value, and a v2 xarray variable's
    fill value a v3 copy's ``_FillValue`` attribute (encoded as xarray encodes it).

    The values are copied in boxes of whole destination blocks, at most
    ``tz.config.io_batch_bytes`` each (one block, if a block is larger), split along axis 0
    and, where rows are larger than that, along the next axes too (and whole source chunks
    where that fits), so memory stays bounded whatever the shape of the array. A copy that
    fails midway (or is interrupted) deletes the array it began, so that no array reads the
    values not yet copied as fill values.

    Args:
        store: where the new array goes (path, URL or Store).
        data: the source.
        write_data: False creates the array with the source's settings and no values.
        serializer: v3's array -> bytes codec of the (inner) chunks; ``"auto"`` for
            ``bytes`` little endian. One given in ``compressors`` replaces the kept one.
        order: v2's memory order of chunks, ``"C"`` or ``"F"``.
        chunk_key_encoding: a chunk key encoding or its JSON (None: the format's default).
        zarr_format: 2 or 3 (default: a torchzarr or zarr-python source's, else 3).
        attributes: the new array's attributes (default: the source's).

    Raises:
        InvalidArgumentError: the destination is the source itself, new ``chunks`` do not
            divide the source's shard shape kept (pass ``shards=`` then), or a
            ``serializer`` for a v2 destination, or a ``fill_value`` for a v2 copy that is
            not the marker the v3 source's ``_FillValue`` attribute holds.

    Example:
        >>> import torchzarr as tz, torch
        >>> src = tz.create_array("memory://", data=torch.arange(12).reshape(6, 2), chunks=(2, 2))
        >>> dst = tz.from_array("memory://", data=src, chunks=(3, 2))
        >>> dst.chunks, torch.equal(dst[:], src[:])
        ((3, 2), True)
    """
    data = _array_like(data)
    if zarr_format is None:
        zarr_format = _source_zarr_format(data)
    keep = _source_settings(data, zarr_format)
    chosen = {
        "chunks": chunks,
        "shards": shards,
        "filters": filters,
        "compressors": compressors,
        "serializer": serializer,
        "fill_value": fill_value,
        "dimension_names": dimension_names,
        "order": order,
        "chunk_key_encoding": chunk_key_encoding,
    }
    settings = {k: keep[k] if _is_keep(v) else v for k, v in chosen.items()}
    if zarr_format == 2 and _is_keep(dimension_names) and len(data.shape) == 0:
        # a 0-d array has no axes to name, named or not (v3 and xarray omit the names):
        # xarray needs the v2 attribute, empty, to open the group holding it
        settings["dimension_names"] = settings["dimension_names"] or ()
    if _is_keep(shards) and not _is_keep(chunks) and settings["shards"] is not None:
        _check_kept_shards(settings["shards"]["shape"], chunks, len(data.shape))
    for what in ("filters", "compressors"):
        if _is_keep(chosen[what]) and isinstance(settings[what], tuple):
            settings[what] = _codecs_for(settings[what], zarr_format, what)
    if zarr_format == 3 and _is_keep(filters) and settings["filters"]:  # a v2 Shuffle filter
        storage = data_type(keep["dtype"]).storage
        settings["filters"], moved = trailing_bytes_filters(settings["filters"], storage)
        if moved:
            settings["compressors"] = [*moved, *compressor_list(settings["compressors"], 3)]
    kept = _is_keep(serializer) and isinstance(data, Array)
    kept_dtype = data.metadata.data_type.storage if kept else None
    settings["compressors"] = _with_serializer(
        settings.pop("serializer"), settings["compressors"], zarr_format, kept_dtype
    )
    dest_store = resolve_store(
        store, mode="w" if overwrite else "a", storage_options=storage_options
    )
    store, storage_options = dest_store, None
    prefix = path.strip("/") + "/" if path.strip("/") else ""
    # what a failed copy must leave: with overwrite, creating the array clears the path first
    there_before = frozenset() if overwrite else frozenset(dest_store.list_prefix(prefix))
    if isinstance(data, Array):
        # by location: the source may be reached through a store rooted elsewhere, and
        # creating the destination clears everything below it first
        src = location(data.store.identity, data.path)
        dst = location(dest_store.identity, path)
        if src == dst or src.startswith(dst.rstrip("/") + "/"):
            raise InvalidArgumentError(
                f"from_array would write array {data.name} of {data.store!r} onto itself "
                "(or onto a group holding it)"
            )
    kept_attributes = keep["attributes"]
    if zarr_format == 2 and not _is_keep(dimension_names) and kept_attributes is not None:
        # v2 keeps axis names in xarray's attribute: new names (or none) replace the source's
        kept_attributes = StoredAttributes(
            {k: v for k, v in kept_attributes.items() if k != XARRAY_DIMENSIONS}
        )
    settings["fill_value"], kept_attributes = _with_marker(
        data, zarr_format, keep, (not _is_keep(fill_value), settings["fill_value"]), kept_attributes
    )
    dest = create_array(
        store,
        shape=tuple(data.shape),
        dtype=keep["dtype"],
        zarr_format=zarr_format,
        attributes=kept_attributes if attributes is None else attributes,
        overwrite=overwrite,
        path=path,
        storage_options=storage_options,
        **settings,
    )
    if write_data:
        raw = _library(data) == "zarr" and _raw_bits_of(data) is not None
        try:
            _copy_values(data, dest, raw)
        except BaseException as err:
            try:  # no array reading the rest as fill values; keys that were there stay
                remove_node(dest.store, dest.path, kept=there_before)
            except Exception as cleanup:  # the copy's own error is the one to see
                err.add_note(
                    f"(the array begun at {dest.name} of {dest.store!r} could not be removed: "
                    f"{cleanup}; it reads the values not copied as fill values)"
                )
            raise
    return dest


def _with_marker(
    data: Any,
    zarr_format: int,
    keep: dict[str, Any],
    fill_value: tuple[bool, Any],
    attributes: StoredAttributes | None,
) -> tuple[Any, StoredAttributes | None]:
    """The fill value and kept attributes of a copy of a torchzarr or zarr-python array,
    with xarray's missing-value marker moved where the copy's format holds it
    (:func:`~torchzarr.core.cf_fill.carry_marker`); other sources' as they are."""
    if not (isinstance(data, Array) or _library(data) == "zarr"):
        return fill_value[1], attributes
    try:
        source_dt = data.data_type if isinstance(data, Array) else data_type(data.dtype)
        dest_dt = data_type(keep["dtype"])
    except (TorchZarrError, TypeError, ValueError):  # a dtype torchzarr has no row for
        return fill_value[1], attributes
    source = (_source_zarr_format(data), source_dt, keep["fill_value"])
    name = str(getattr(data, "name", None) or "the source")
    return carry_marker(name, data.attrs, source, (zarr_format, dest_dt), fill_value, attributes)


def _array_like(data: Any) -> Any:
    """``data`` as something with ``shape``, ``dtype`` and slicing, checked before the
    destination is made: a sparse or meta tensor is refused, objects without ``shape`` and
    ``dtype`` go through ``np.asarray`` (nested lists, scalars)."""
    if isinstance(data, torch.Tensor):
        if data.is_meta or data.layout != torch.strided:
            what = "a meta tensor (it holds no data)" if data.is_meta else f"a {data.layout} tensor"
            raise InvalidArgumentError(
                f"from_array cannot copy {what}: pass a dense tensor (.to_dense()) with data"
            )
        return data
    if hasattr(data, "shape") and hasattr(data, "dtype"):
        return data  # read in slabs (a tensorstore's ts.dtype names its numpy_dtype)
    try:
        return np.asarray(data)
    except (ValueError, TypeError) as err:
        raise InvalidArgumentError(
            f"from_array cannot copy {type(data).__name__} objects: {err}"
        ) from None


def _is_keep(value: Any) -> bool:
    return isinstance(value, str) and value == KEEP


def _check_kept_shards(shards: Any, chunks: Any, ndim: int) -> None:
    """New ``chunks`` must divide the source's shard shape that is kept."""
    new = (chunks,) * ndim if isinstance(chunks, int | np.integer) else _int_tuple(chunks)
    if new is None or len(new) != len(shards):
        return  # create_array judges chunks it cannot compare
    if any(k <= 0 or s % k for s, k in zip(shards, new, strict=True)):
        raise InvalidArgumentError(
            f"chunks {new} do not divide the source's shard shape {tuple(shards)}, which "
            f"from_array keeps: pass shards= too (a multiple of the chunks, or None for no "
            f"sharding)"
        )


def _copy_values(source: Any, dest: Array, raw: bool = False) -> None:
    """Copy the values; ``raw``: the source's values are the bits of ``dest``'s dtype."""

    def read(selection: Any) -> Any:
        values = _read(source, selection)
        return tensor_from_storage(np.asarray(values), dest.data_type) if raw else values

    if dest.ndim == 0:
        dest[...] = read(Ellipsis)
        return
    source_chunks = _int_tuple(getattr(source, "shards", None) or getattr(source, "chunks", None))
    slab = slab_shape(
        dest.shape,
        dest.shards or dest.chunks,
        dest.metadata.data_type.itemsize,
        config.io_batch_bytes,
        source_chunks if source_chunks and len(source_chunks) == dest.ndim else None,
    )
    for box in slabs(dest.shape, slab):
        dest[box] = read(box)


def _read(source: Any, selection: Any) -> Any:
    values = source[selection]
    if isinstance(values, torch.Tensor | np.ndarray):
        return values
    return np.asarray(values)
