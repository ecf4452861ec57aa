"""``from_array``: a new array holding another array's data, copied in slabs of bounded memory."""

from __future__ import annotations

import warnings
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
from torchzarr.core.attributes import StoredAttributes
from torchzarr.core.cf_fill import carry_marker
from torchzarr.core.copy_sources import (
    int_tuple,
    library,
    raw_bits_of,
    source_settings,
    source_zarr_format,
)
from torchzarr.core.create import AUTO, XARRAY_DIMENSIONS, compressor_list
from torchzarr.core.placement import remove_node
from torchzarr.core.slabs import slab_shape, slabs
from torchzarr.dtypes import data_type
from torchzarr.errors import CodecError, InvalidArgumentError, TorchZarrError
from torchzarr.storage.locations import location
from torchzarr.storage.registry import resolve_store
from torchzarr.tensors import tensor_from_storage

__all__ = ["KEEP", "from_array"]

#: take this setting from the source array
KEEP = "keep"


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

    ``data`` is a :class:`torchzarr.Array` or a zarr-python array (then each ``"keep"``
    takes its setting: chunks, shards with their index location and codecs, filters,
    compressors, fill value, dimension names, attributes; and, when ``zarr_format`` is the
    source's, as in zarr-python: the v3 serializer, the v2 ``order`` and byte order, and
    the chunk key encoding; a zarr-python array's codecs and shards only within its format,
    as its ``from_array`` does), or any array with ``shape``, ``dtype`` and slicing: a
    tensor, a numpy array, an h5py, dask or xarray array (whose ``chunks`` of ints and axis
    names are kept, and an xarray DataArray's attributes; other settings take
    ``create_array``'s defaults); anything else (nested lists) goes through
    ``np.asarray``. A v2 copy of a sharded source has no shards (v2 has none): with the
    chunks kept it warns, each inner chunk being stored on its own. A torchzarr source's
    codecs with no form in the copy's format raise ``CodecError``; a zarr-python source
    whose metadata torchzarr cannot read (a dtype or codec it does not take) gets the
    default codecs. Pass new
    ``chunks``/``shards``/``compressors`` to rechunk or recompress a dataset for training.
    A 0-d array written as v2 with its dimension names kept gets an empty
    ``_ARRAY_DIMENSIONS``, which xarray needs to open its group. Between formats, xarray's
    missing-value marker moves to where the copy's format holds it: a v3 source's
    ``_FillValue`` attribute becomes a v2 copy's fill value, and a v2 xarray variable's
    fill value a v3 copy's ``_FillValue`` attribute (encoded as xarray encodes it).

    The values are copied in boxes of whole destination blocks, at most
    ``tz.config.io_batch_bytes`` each (one block, if a block is larger; each written at most
    65536 blocks at a time, ``engine.BATCH_CHUNKS``), split along axis 0 and, where rows are larger than that, along
    the next axes too (and whole source chunks where that fits), so memory stays bounded
    whatever the shape of the array and of its chunks. A copy that fails midway (or is
    interrupted) deletes the array it began, so that no array reads the values not yet
    copied as fill values.

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
        zarr_format = source_zarr_format(data)
    keep = source_settings(data, zarr_format)
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
    if zarr_format == 2 and _is_keep(shards) and settings["shards"] is not None:
        _warn_of_v2_chunks(data, settings, _is_keep(chunks))
        settings["shards"] = None  # v2 has no sharding
    if _is_keep(shards) and not _is_keep(chunks) and settings["shards"] is not None:
        _check_kept_shards(settings["shards"]["shape"], chunks, len(data.shape))
    for what in ("filters", "compressors"):
        if _is_keep(chosen[what]) and isinstance(settings[what], tuple):
            # a torchzarr source's, into either format (a zarr-python source's codecs are
            # kept only within its format, as by zarr-python's from_array)
            settings[what] = _codecs_for(settings[what], zarr_format, what)
    if zarr_format == 3 and _is_keep(filters) and settings["filters"]:  # a v2 Shuffle filter
        storage = data_type(keep["dtype"]).storage
        settings["filters"], moved = trailing_bytes_filters(settings["filters"], storage)
        if moved:
            settings["compressors"] = [*moved, *compressor_list(settings["compressors"], 3)]
    codec_source = keep["codec_source"] if _is_keep(serializer) else None
    kept_dtype = None if codec_source is None else codec_source.metadata.data_type.storage
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
        inside = dst.startswith(src.rstrip("/") + "/")  # among the source's chunk keys
        if src == dst or src.startswith(dst.rstrip("/") + "/") or inside:
            raise InvalidArgumentError(
                f"from_array would write array {data.name} of {data.store!r} onto itself "
                "(or onto a group holding it, or inside it, among its chunks)"
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
        raw = library(data) == "zarr" and raw_bits_of(data) is not None
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
    kind = "torchzarr" if isinstance(data, Array) else library(data)
    if kind not in ("torchzarr", "zarr", "xarray"):
        return fill_value[1], attributes
    try:
        source_dt = data.data_type if isinstance(data, Array) else data_type(data.dtype)
        dest_dt = data_type(keep["dtype"])
    except (TorchZarrError, TypeError, ValueError):  # a dtype torchzarr has no row for
        return fill_value[1], attributes
    # an xarray variable holds its marker decoded, as a v2 array's attribute would
    source_format = 2 if kind == "xarray" else source_zarr_format(data)
    source = (source_format, source_dt, keep["fill_value"])
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
        if not all(isinstance(n, int | np.integer) for n in tuple(data.shape)):
            raise InvalidArgumentError(  # dask's NaN sizes after a boolean mask, say
                f"from_array cannot copy a {type(data).__name__} of unknown shape "
                f"{tuple(data.shape)}: make its shape known first (dask: "
                ".compute_chunk_sizes())"
            )
        return data  # read in slabs (a tensorstore's ts.dtype names its numpy_dtype)
    try:
        return np.asarray(data)
    except (ValueError, TypeError) as err:
        raise InvalidArgumentError(
            f"from_array cannot copy {type(data).__name__} objects: {err}"
        ) from None


def _warn_of_v2_chunks(data: Any, settings: dict[str, Any], chunks_kept: bool) -> None:
    """Warn that a v2 copy of a sharded source, whose chunks are kept, stores each inner
    chunk as an object of its own (v2 has no sharding)."""
    if chunks_kept:
        name = getattr(data, "name", None)
        what = f"array {name}" if name else "the source"
        warnings.warn(
            f"Zarr v2 has no sharding: the v2 copy of {what} stores each of its chunks "
            f"{tuple(settings['chunks'])} as its own key, not in shards "
            f"{tuple(settings['shards']['shape'])}; pass chunks= (such as the shard shape) "
            "to choose the v2 chunks",
            stacklevel=3,
        )


def _is_keep(value: Any) -> bool:
    return isinstance(value, str) and value == KEEP


def _check_kept_shards(shards: Any, chunks: Any, ndim: int) -> None:
    """New ``chunks`` must divide the source's shard shape that is kept."""
    new = (chunks,) * ndim if isinstance(chunks, int | np.integer) else int_tuple(chunks)
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
    source_chunks = int_tuple(getattr(source, "shards", None) or getattr(source, "chunks", None))
    # io_batch_bytes a slab; the write takes its blocks a batch at a time (engine's cap)
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
