"""The feature store's layout in its group: the published-state attribute, feature arrays."""

from __future__ import annotations

import functools
import math
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from torchzarr.arguments import whole_number
from torchzarr.core.api import open_group
from torchzarr.core.array import Array
from torchzarr.core.cache import ChunkCache
from torchzarr.core.group import Group
from torchzarr.core.row_gather import keep_shard_indexes
from torchzarr.dtypes import data_type
from torchzarr.errors import (
    ArgumentTypeError,
    GroupNotFoundError,
    InvalidArgumentError,
    MetadataError,
    NodeExistsError,
    StoreError,
    UnsupportedDtypeError,
)
from torchzarr.features.index import IdIndex
from torchzarr.features.marks import (
    FEATURE_ATTRIBUTE,
    clear_lone_markers,
    create_marked,
    is_own_feature,
)
from torchzarr.features.rows import IDS, append_ids
from torchzarr.forksafe import LockTable
from torchzarr.storage.locations import location
from torchzarr.tensors import torch_dtype

__all__ = [
    "DEFAULT_SHARD_BYTES",
    "FEATURE_ATTRIBUTE",
    "LAYOUT_FORMAT",
    "MAX_LAYOUT_BYTES",
    "STATE_ATTRIBUTE",
    "Published",
    "check_layout_bytes",
    "create_feature_array",
    "feature_spec",
    "forget_cached",
    "init_layout",
    "is_own_feature",
    "keep_indexes",
    "load_published",
    "publish",
    "published_stamp",
    "reopened",
]

#: group attribute holding what readers trust: row count, version, published feature names
STATE_ATTRIBUTE = "feature_store"
#: the layout this code reads and writes (its "format" in that attribute); any other is refused
LAYOUT_FORMAT = 1
_CHUNKS_LOOKED_UP = 8  # of the ids array, when an id stored twice is its fill value
_ID_CHUNK_ROWS = 1 << 16  # 512 KiB of int64 ids per chunk: the index loads in a few reads
#: decoded bytes per inner chunk (v3, sharded) and per chunk (v2) of a new feature
DEFAULT_INNER_BYTES = 4 << 10
DEFAULT_CHUNK_BYTES = 64 << 10
#: decoded bytes per shard of a new v3 feature (its index: 16 bytes per inner chunk)
DEFAULT_SHARD_BYTES = 1 << 20
#: the most decoded bytes a chunk or shard of more than one row may hold: a write of a few
#: rows decodes the whole chunk or shard it falls in, so larger ones cost memory, not speed
MAX_LAYOUT_BYTES = 64 << 20

_WRITERS = LockTable()  # per store and path: one write at a time in the process


@dataclass(frozen=True)
class Published:
    """One published state: readers use it whole, a write replaces it whole."""

    version: int
    store_id: str | None  # unique per creation: a store rebuilt with mode="w" gets a new one
    index: IdIndex
    arrays: dict[str, Array]  # writable handles, shape[0] >= index.num_rows
    cached: dict[str, Array]  # the same arrays reading through the decoded-chunk cache


def init_layout(group: Group) -> None:
    """Make an empty writable group a feature store with no rows; refuse any other group.

    Example:
        >>> init_layout(tz.open_group("memory://", mode="w"))  # doctest: +SKIP
    """
    if STATE_ATTRIBUTE in group.attrs:
        return
    if group.read_only or len(group):
        raise MetadataError(
            f"group {group.name} in {group.store!r} is not a feature store "
            f"(no {STATE_ATTRIBUTE!r} attribute)"
        )
    group.create_array(  # dimension names: v3 metadata, or xarray's attribute in v2
        IDS,
        shape=(0,),
        dtype=torch.int64,
        chunks=(_ID_CHUNK_ROWS,),
        dimension_names=[IDS],
    )
    group.attrs[STATE_ATTRIBUTE] = {
        "format": LAYOUT_FORMAT,
        "num_rows": 0,
        "version": 0,
        "features": [],
        "store_id": uuid.uuid4().hex,
    }


def check_layout_bytes(chunk_bytes: Any, shard_bytes: Any) -> tuple[int | None, int]:
    """``(chunk_bytes, shard_bytes)`` as ints from 1 to :data:`MAX_LAYOUT_BYTES`
    (``chunk_bytes`` may be None: the format's default).

    Example:
        >>> check_layout_bytes(None, 1 << 20)
        (None, 1048576)
    """
    chunk = None if chunk_bytes is None else _layout_bytes("chunk_bytes", chunk_bytes)
    return chunk, _layout_bytes("shard_bytes", shard_bytes)


def _layout_bytes(what: str, value: Any) -> int:
    number = whole_number(what, value, 1)
    if number > MAX_LAYOUT_BYTES:
        raise InvalidArgumentError(
            f"{what} must be at most {MAX_LAYOUT_BYTES} (64 MiB), got {number}: a write "
            "decodes the whole chunk or shard its rows fall in"
        )
    return number


def feature_spec(
    name: str, dtype: Any, row_shape: Any, chunk_rows: Any
) -> tuple[torch.dtype, tuple[int, ...], int | None]:
    """A new feature's ``(dtype, row_shape, chunk_rows)`` checked: a dtype as a torch dtype,
    name or numpy dtype; a row shape as a tuple of ints or one int (``3`` is ``(3,)``);
    ``chunk_rows`` None or at least 1, its chunk at most :data:`MAX_LAYOUT_BYTES` unless it
    holds a single row.

    Example:
        >>> feature_spec("emb", "float32", 3, None)
        (torch.float32, (3,), None)
    """
    if dtype is None:
        raise ArgumentTypeError(f"feature {name!r}: dtype must be a torch dtype or a name")
    try:
        resolved = torch_dtype(data_type(dtype))
    except UnsupportedDtypeError as exc:
        raise UnsupportedDtypeError(f"feature {name!r}: {exc}") from None
    if isinstance(row_shape, int | np.integer) and not isinstance(row_shape, bool):
        row_shape = (row_shape,)
    if not isinstance(row_shape, tuple | list):
        raise ArgumentTypeError(
            f"feature {name!r}: row_shape must be a tuple of ints, got {row_shape!r}"
        )
    shape = tuple(
        whole_number(f"feature {name!r}: row_shape[{axis}]", extent, 0)
        for axis, extent in enumerate(row_shape)
    )
    if chunk_rows is not None:
        chunk_rows = whole_number(f"feature {name!r}: chunk_rows", chunk_rows, 1)
        chunk_bytes = chunk_rows * math.prod(shape) * resolved.itemsize
        if chunk_rows > 1 and chunk_bytes > MAX_LAYOUT_BYTES:
            raise InvalidArgumentError(
                f"feature {name!r}: chunk_rows={chunk_rows} makes chunks of {chunk_bytes} bytes; "
                f"at most {MAX_LAYOUT_BYTES} (64 MiB) are allowed"
            )
    return resolved, shape, chunk_rows


def reopened(group: Group) -> Group:
    """``group`` opened afresh from its store, to see what other writers published (a
    handle caches its metadata).

    Example:
        >>> published_stamp(reopened(group))  # doctest: +SKIP
        ('5f0c...', 3)
    """
    mode = "r" if group.read_only else "r+"
    if group.read_only and group.store.identity.startswith("zip://"):
        group.store.close()  # an open zip store keeps the version it read: read the file now
    try:  # its own format first: one request where the store was not rebuilt
        return open_group(
            group.store,
            mode,
            path=group.path,
            use_consolidated=False,
            zarr_format=group.zarr_format,
        )
    except GroupNotFoundError:  # rebuilt with mode="w", perhaps in the other format
        return open_group(group.store, mode, path=group.path, use_consolidated=False)


def writer_lock(group: Group) -> Any:
    """The process-wide lock of the feature store ``group``: every instance of this process
    writing it (threads, instances opened apart) takes it, so their writes run one at a time
    and each starts from the state the one before published.

    Example:
        >>> with writer_lock(group):  # doctest: +SKIP
        ...     pass
    """
    return _WRITERS[location(group.store.identity, group.path)]


def _cached(arrays: dict[str, Array], cache: ChunkCache) -> dict[str, Array]:
    """Read handles: through the decoded-chunk cache, keeping shard indexes even when the
    store is writable (writes in this process drop them; a refresh opens fresh handles)."""
    cached = {name: arr.with_cache(cache) for name, arr in arrays.items()}
    for arr in cached.values():
        keep_shard_indexes(arr)
    return cached


def keep_indexes(published: Published) -> None:
    """Make ``published``'s read handles keep shard indexes in this process: a forked child
    (a DataLoader worker) rebuilds each array's engine state, without the parent's choice.
    Its readers then keep what they first read until a refresh, as in any process and in
    Zarr v2 (whose decoded-chunk cache the child inherits), rather than read each index anew.

    Example:
        >>> keep_indexes(state)  # doctest: +SKIP
    """
    for arr in published.cached.values():
        keep_shard_indexes(arr)


def load_published(group: Group, cache: ChunkCache) -> Published:
    """The state the group's attribute publishes; the ids below ``num_rows`` are indexed.

    Example:
        >>> load_published(group, None).index.num_rows  # doctest: +SKIP
        0
    """
    state = group.attrs[STATE_ATTRIBUTE]
    where = f"{STATE_ATTRIBUTE!r} attribute of group {group.name} in {group.store!r}"
    if not isinstance(state, dict):
        raise MetadataError(f"malformed {where}: not an object, got {state!r}")
    layout = state.get("format")
    if type(layout) is not int or layout != LAYOUT_FORMAT:  # True and 1.0 == 1: refused too
        raise MetadataError(  # another layout, misread here, would be written into
            f"the {where} has "
            + ("no format" if "format" not in state else f"format {layout!r}")
            + f"; this version of torchzarr reads and writes "
            f"only format {LAYOUT_FORMAT}: open the store with the version that made it"
        )
    names = state.get("features")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise MetadataError(
            f"malformed {where}: its features must be a list of names, got {names!r}"
        )
    try:
        # whole numbers only: int() took -1 (hiding rows), 2.9, "3" and true
        num_rows = whole_number("its num_rows", state["num_rows"], 0)
        version = whole_number("its version", state["version"], 0)
    except InvalidArgumentError as err:
        raise MetadataError(f"malformed {where}: {err}") from None
    except KeyError as err:
        raise MetadataError(f"malformed {where}: it has no {err}: {state!r}") from None
    arrays: dict[str, Array] = {}
    for name in [IDS, *names]:
        node = group.get(name)
        if not isinstance(node, Array) or not node.shape or node.shape[0] < num_rows:
            raise MetadataError(
                f"feature store {group.name} in {group.store!r}: {name!r} is not an array of "
                f"at least {num_rows} rows"
            )
        arrays[name] = node
    ids_array = arrays[IDS]
    if ids_array.dtype != torch.int64 or len(ids_array.shape) != 1:
        raise MetadataError(  # any other dtype would wrap or round ids; 2-d has no row ids
            f"feature store {group.name} in {group.store!r}: {IDS!r} must be a 1-d int64 "
            f"array, got dtype {ids_array.dtype} and shape {ids_array.shape}"
        )
    ids = arrays.pop(IDS)[:num_rows].numpy()
    index = IdIndex.from_ids(ids, functools.partial(_duplicate_id, group, ids_array, ids))
    return Published(version, _store_id(state), index, arrays, _cached(arrays, cache))


def _duplicate_id(group: Group, ids_array: Array, ids: np.ndarray, dup: int) -> str:
    """The error for an id stored twice; where it is the fill value, the chunks of the ids
    array holding it that are not stored (lost: their rows read as the fill value)."""
    message = (
        f"feature store {group.name} in {group.store!r}: its {IDS!r} array holds id {dup} "
        "more than once"
    )
    fill = ids_array.fill_value  # None (a v2 null): unstored chunks read as zeros
    if dup != (0 if fill is None else fill):
        return message
    stored = (ids_array.shards or ids_array.chunks)[0]
    prefix = f"{ids_array.path}/" if ids_array.path else ""
    keys = [  # the first few chunks (or shards) holding it: a few lookups at most
        prefix + ids_array.metadata.chunk_key((int(i),))
        for i in np.unique(np.flatnonzero(ids == dup) // stored)[:_CHUNKS_LOOKED_UP]
    ]
    missing = [key for key in keys if not ids_array.store.exists(key)]
    if missing:
        message += (
            f", its fill value: chunks of it are not stored ({', '.join(map(repr, missing))}), "
            "so their rows read as the fill value (files lost or deleted: the store is damaged)"
        )
    return message


def published_stamp(group: Group) -> tuple[str | None, int]:
    """``(store_id, version)`` as the group's attribute publishes them (version -1 when it
    has none). A store rebuilt with mode="w" restarts its version at 0 under a new id, so
    compare both to tell whether a loaded state is still current.

    Example:
        >>> published_stamp(tz.open_group("memory://", mode="w"))  # doctest: +SKIP
        (None, -1)
    """
    state = group.attrs.get(STATE_ATTRIBUTE)
    if not isinstance(state, dict):
        return None, -1
    try:
        version = whole_number("version", state.get("version", -1), -1)
    except InvalidArgumentError:  # malformed: loading the state names it
        version = -1
    return _store_id(state), version


def _store_id(state: dict[str, Any]) -> str | None:
    """The store id in the state attribute (None in stores made before store ids)."""
    store_id = state.get("store_id")
    return None if store_id is None else str(store_id)


def publish(
    group: Group,
    published: Published,
    arrays: dict[str, Array],
    new_ids: np.ndarray,
    cache: ChunkCache,
) -> Published:
    """Make a complete write visible to readers elsewhere and return the state this
    instance swaps in whole, under its exclusive lock: the ``new_ids`` are stored
    (:func:`~torchzarr.features.rows.append_ids`: the ``ids`` array grows last of all the
    arrays, so xarray refuses a store whose write is unfinished), then the group attribute.

    Raises :class:`~torchzarr.errors.StoreError`, storing no id and publishing nothing,
    when another process published since ``published`` was loaded (two writing processes
    at once, which this check does not make safe: it is not atomic).
    """
    stamp = published_stamp(reopened(group))
    if stamp != (published.store_id, published.version):
        raise StoreError(
            f"feature store {group.name} in {group.store!r}: another writer published "
            f"version {stamp[1]} while this write (from version {published.version}) was "
            "storing its rows; nothing was published. Write from one process at a time: "
            "rows this write stored may have overwritten the other's."
        )
    if new_ids.size:  # only now: the ids of the other writer's rows are never cut
        ids = group[IDS]
        assert isinstance(ids, Array)
        append_ids(ids, published.index.num_rows, new_ids)
    version = published.version + 1
    index = published.index.extended(new_ids)
    state: dict[str, Any] = {
        "format": LAYOUT_FORMAT,
        "num_rows": index.num_rows,
        "version": version,
        "features": list(arrays),
    }
    if published.store_id is not None:  # stores made before store ids keep having none
        state["store_id"] = published.store_id
    group.attrs[STATE_ATTRIBUTE] = state
    return Published(version, published.store_id, index, arrays, _cached(arrays, cache))


def forget_cached(published: Published) -> None:
    """Drop a state's chunks from its cache: another writer may have changed them."""
    for arr in published.cached.values():
        cache = arr.cache
        if cache is not None:
            cache.invalidate_tree(arr.store.identity, arr.path)


def create_feature_array(
    group: Group,
    name: str,
    dtype: torch.dtype,
    row_shape: tuple[int, ...],
    rows: int,
    chunk_bytes: int | None,
    compressors: Any,
    *,
    store_id: str | None,
    fill_value: Any = None,
    chunk_rows: int | None = None,
    shard_bytes: int = DEFAULT_SHARD_BYTES,
) -> Array:
    """A new feature array of ``rows`` rows, whole rows per chunk, laid out for gathers.

    ``fill_value`` None is the dtype's own default (0, or the nearest value a float8 kind
    holds). The array is marked as a feature of the store ``store_id``
    (:data:`FEATURE_ATTRIBUTE`); an array left at ``name`` by a write of this store that
    never published is replaced, any other node there raises
    :class:`~torchzarr.errors.NodeExistsError` (nothing is deleted). A creation that
    fails removes what it wrote and nothing else; in Zarr v2 the marker (``.zattrs``) is
    written before ``.zarray``, so that no failure leaves an array unmarked
    (:func:`~torchzarr.features.marks.create_marked`).

    In Zarr v3 the rows go in shards of about ``shard_bytes`` holding small inner chunks of
    about ``chunk_bytes`` (4 KiB by default), stored raw unless ``compressors`` says
    otherwise: a gather fetches each shard's (cached) index and then only the inner chunks
    it needs. Zarr v2 has no sharding: chunks of about ``chunk_bytes`` (64 KiB by default).

    Example:
        >>> create_feature_array(group, "emb", torch.float32, (16,), 0, 1 << 16, None,
        ...                      store_id=None).chunks  # doctest: +SKIP
        (1024, 16)
    """
    row_shape = tuple(int(d) for d in row_shape)
    v3 = group.zarr_format == 3
    row_bytes = max(1, math.prod(row_shape) * dtype.itemsize)
    if chunk_rows is None:
        target = chunk_bytes or (DEFAULT_INNER_BYTES if v3 else DEFAULT_CHUNK_BYTES)
        chunk_rows = _pow2_rows(target, row_bytes)
    chunk_row_shape = tuple(max(1, d) for d in row_shape)  # a zero-width axis: 1-wide chunks
    dims = [IDS, *(f"{name}_{i}" for i in range(1, len(row_shape) + 1))]
    kwargs: dict[str, Any] = {}
    if compressors is not None:
        kwargs["compressors"] = compressors
    kwargs["dimension_names"] = dims  # v3 metadata, or xarray's attribute in v2
    kwargs["attributes"] = {FEATURE_ATTRIBUTE: store_id}
    if v3:
        shard_rows = max(chunk_rows, _pow2_rows(shard_bytes, row_bytes))
        shard_rows -= shard_rows % chunk_rows
        kwargs["shards"] = (shard_rows, *chunk_row_shape)
        kwargs.setdefault("compressors", [])  # raw inner chunks: a gather reads, no decode
    clear_lone_markers(group, store_id, ())
    if name in group:  # left behind by a write that never published: start clean
        if not is_own_feature(group, name, store_id):
            raise NodeExistsError(
                f"cannot create feature {name!r}: node {name!r} of group {group.name} in "
                f"{group.store!r} is not a feature of this feature store (a group, or an "
                "array it did not make); name the feature otherwise, or move that node"
            )
        del group[name]
    make = functools.partial(
        group.create_array,
        name,
        shape=(rows, *row_shape),
        dtype=dtype,
        chunks=(chunk_rows, *chunk_row_shape),
        fill_value=fill_value,
        **kwargs,
    )
    try:
        return create_marked(group, name, store_id, dims, make)
    except (MetadataError, UnsupportedDtypeError) as exc:  # a fill value out of range
        raise type(exc)(f"feature {name!r}: {exc}") from exc


def _pow2_rows(nbytes: int, row_bytes: int) -> int:
    """The largest power of two of rows within ``nbytes`` (at least one row)."""
    return 1 << max(0, (nbytes // row_bytes).bit_length() - 1)
