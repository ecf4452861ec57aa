"""``FeatureStore``: features of entities, written and read by int64 id, kept as plain Zarr."""

from __future__ import annotations

import functools
import os
import weakref
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch

from torchzarr.arguments import flag
from torchzarr.config import config
from torchzarr.core.api import MODES
from torchzarr.core.array import Array
from torchzarr.core.cache import ChunkCache
from torchzarr.core.group import Group
from torchzarr.errors import (
    ArgumentTypeError,
    ArrayNotFoundError,
    InvalidArgumentError,
    MissingIdError,
    NodeExistsError,
    ShapeMismatchError,
)
from torchzarr.features.index import FeatureBatch, ReadWriteLock, as_ids, one_id, plan_gather
from torchzarr.features.layout import (
    DEFAULT_SHARD_BYTES,
    Published,
    check_layout_bytes,
    create_feature_array,
    feature_spec,
    keep_indexes,
    publish,
    writer_lock,
)
from torchzarr.features.opening import OpenedStore
from torchzarr.features.prefetch import Prefetcher
from torchzarr.features.rows import (
    as_feature_tensor,
    check_missing,
    check_name,
    check_out,
    check_out_names,
    copy_out,
    feature_names,
    gather_rows,
    missing_ids_message,
)
from torchzarr.features.upsert import apply_write
from torchzarr.forksafe import new_lock
from torchzarr.storage.base import Store

__all__ = ["FeatureStore"]


class FeatureStore(OpenedStore):
    """Features of entities addressed by int64 id: a Zarr group with an ``ids`` array and
    one array per feature, rows on axis 0 (zarr-python, tensorstore and xarray open it).

    One writer and many reader threads may share an instance: a read sees every write call
    either wholly or not at all. Other instances and processes see rows published up to
    their last :meth:`refresh` (done automatically when a read meets an unknown id); after
    a rebuild with mode="w" they read wrong rows until they refresh, and rows another
    process overwrote may read old until then. A write starts from
    the latest published state, so instances and processes that write one after the other
    never lose each other's rows; in one process, writes run one at a time whatever
    instance makes them. Processes writing at once are unsupported (one may be
    refused at publication with :class:`~torchzarr.errors.StoreError`, but rows can be lost).

    Args:
        store: a path, URL or :class:`~torchzarr.Store`. A store opened here from a path or
            URL is closed by :meth:`close` (and a ``with`` block); a Store passed in is not.
        mode: "r", "r+", "a" (create if absent), "w" (start empty) or "w-" (must be new).
            "w" and "w-" act when the instance is made, as in zarr-python (a copy sent to
            a DataLoader worker reopens the store without wiping it); the other modes
            open the store at first use.
        path: the group's path inside the store.
        zarr_format: 2 or 3 for a new store (default 3); an existing store opens in its
            own format when left out.
        chunk_bytes: decoded bytes per chunk of a new feature (rows per chunk follow):
            by default 4 KiB inner chunks in Zarr v3, 64 KiB chunks in v2. Small chunks
            keep random gathers cheap. At most 64 MiB.
        shard_bytes: decoded bytes per shard of a new v3 feature (about 1 MiB): a gather
            reads a shard's cached index, then only the inner chunks it needs. At most
            64 MiB: a write decodes each whole shard its rows fall in.
        compressors: compressors of new feature arrays (``create_array``'s argument); by
            default none in v3 (raw inner chunks: nothing to decode), zstd in v2.
        cache: the decoded-chunk cache reads go through (default: one of
            ``tz.config.cache_bytes`` owned by this instance, so that :meth:`refresh` can
            drop what other writers made stale without touching other readers' caches).
        storage_options: options for a URL store.

    A forked child (a DataLoader worker) gets fresh locks and no read-ahead thread, so
    whatever the parent's threads were doing at the fork never blocks it.

    Example:
        >>> import torch, torchzarr as tz
        >>> fs = FeatureStore("memory://", mode="w")
        >>> fs.write([7, 3], {"emb": torch.tensor([[1.0, 2.0], [3.0, 4.0]])})
        >>> fs.read([3, 7, 3])["emb"]
        tensor([[3., 4.],
                [1., 2.],
                [3., 4.]])
    """

    def __init__(
        self,
        store: Any,
        mode: str = "a",
        *,
        path: str = "",
        zarr_format: int | None = None,
        chunk_bytes: int | None = None,
        shard_bytes: int = DEFAULT_SHARD_BYTES,
        compressors: Any = None,
        cache: ChunkCache | None = None,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        if mode not in MODES:
            raise InvalidArgumentError(f"mode must be one of {MODES}, got {mode!r}")
        chunk_bytes, shard_bytes = check_layout_bytes(chunk_bytes, shard_bytes)
        self._spec = (store, mode, path, zarr_format, storage_options)
        # a store this instance opens from a path or URL is its own: close() closes it
        self._owns_store = not isinstance(store, Store)
        self._chunk_bytes = chunk_bytes
        self._shard_bytes = shard_bytes
        self._compressors = compressors
        self._cache = cache if cache is not None else ChunkCache(config.cache_bytes)
        self._init_runtime()
        if mode in ("w", "w-"):  # start empty (or refuse an existing store) now, as zarr does
            self._state()

    def _layout(self) -> dict[str, Any]:
        return {
            "chunk_bytes": self._chunk_bytes,
            "compressors": self._compressors,
            "shard_bytes": self._shard_bytes,
        }

    def _init_runtime(self) -> None:
        self._group: Group | None = None
        self._published: Published | None = None
        self._kept_in = os.getpid()  # the process whose array handles keep shard indexes
        self._start_threading()
        _instances.add(self)

    def _start_threading(self) -> None:
        """Fresh locks and read-ahead: at creation, and in a forked child, which has none of
        its parent's threads (a lock one held at the fork would never be released there, a
        batch it was reading never finish). The published state stays: it is immutable."""
        self._rw = ReadWriteLock()
        self._open_lock = new_lock()
        self._ahead = Prefetcher()

    # -- pickling: the spec travels, the process-local state is rebuilt lazily -------------
    def __getstate__(self) -> dict[str, Any]:
        group = self._group
        store, mode, path, zarr_format, options = self._spec
        if group is not None:  # after "w", reopening must not wipe the store again
            store, mode = group.store, "r" if group.read_only else "r+"
            options = None  # group.store was made with them
            # the store exists: the copy detects its format, which a rebuild (mode="w", by
            # another instance) may have changed since this one was opened
            zarr_format = None
        return {
            "spec": (store, mode, path, zarr_format, options),
            "chunk_bytes": self._chunk_bytes,
            "shard_bytes": self._shard_bytes,
            "compressors": self._compressors,
            "cache": self._cache,  # as its settings: one made like it in the child
            "owns_store": self._owns_store,  # the copy's store is its own unpickled object
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._spec = state["spec"]
        self._chunk_bytes = state["chunk_bytes"]
        self._shard_bytes = state.get("shard_bytes", DEFAULT_SHARD_BYTES)
        self._compressors = state["compressors"]
        self._owns_store = state.get("owns_store", True)
        cache = state.get("cache")
        self._cache = cache if isinstance(cache, ChunkCache) else ChunkCache(config.cache_bytes)
        self._init_runtime()

    # -- description ------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._state().index.num_rows

    def __contains__(self, entity_id: object) -> bool:
        one = one_id(entity_id)  # None: no id a store can hold
        if one is None:
            return False
        _, found = self._state().index.lookup(np.array([one], dtype=np.int64))
        return bool(found[0])

    @property
    def ids(self) -> torch.Tensor:
        """The stored ids in row order (int64)."""
        return torch.from_numpy(self._state().index.ids_in_row_order())

    @property
    def features(self) -> tuple[str, ...]:
        """Names of the published features, in creation order."""
        return tuple(self._state().arrays)

    @property
    def version(self) -> int:
        """Number of published writes; changes whenever a write becomes visible."""
        return self._state().version

    @property
    def group(self) -> Group:
        """The Zarr group holding the store."""
        self._state()
        assert self._group is not None
        return self._group

    def array(self, name: str) -> Array:
        """The Zarr array of one feature (rows beyond ``len(self)`` are not published)."""
        arrays = self._state().arrays
        if name not in arrays:
            raise ArrayNotFoundError(f"no feature {name!r} in the feature store")
        return arrays[name]

    def __repr__(self) -> str:
        if self._published is None:
            return f"<torchzarr.FeatureStore {self._spec[0]!r} (not opened yet)>"
        return (
            f"<torchzarr.FeatureStore {self._group!r} rows={len(self)} "
            f"features={list(self.features)} version={self.version}>"
        )

    # -- reading ----------------------------------------------------------------------------
    def read(
        self,
        ids: Any,
        features: Iterable[str] | str | None = None,
        *,
        out: Mapping[str, torch.Tensor] | None = None,
        pin_memory: bool = False,
        missing: str = "raise",
    ) -> FeatureBatch:
        """The rows of ``ids`` (caller's order, duplicates allowed) for each feature.

        Each touched chunk is read once, through the decoded-chunk cache. ``out`` maps
        requested feature names to preallocated tensors (any device) of shape
        ``(len(ids), *row)``; ``pin_memory=True`` allocates page-locked results when CUDA
        is present. Unknown ids raise :class:`~torchzarr.errors.MissingIdError` naming them;
        with ``missing="fill"`` they get the feature's fill value and ``result.mask`` is
        False there. A batch prepared by :meth:`prefetch` with the same arguments is used.

        Example:
            >>> fs = FeatureStore("memory://", mode="w")
            >>> fs.write([3], {"x": torch.tensor([1.5])})
            >>> batch = fs.read(torch.tensor([3, 99]), missing="fill")
            >>> batch["x"], batch.mask
            (tensor([1.5000, 0.0000]), tensor([ True, False]))
        """
        check_missing(missing)
        check_out(out)
        pin_memory = flag("pin_memory", pin_memory)
        query = as_ids(ids)
        names = feature_names(features)
        prefetched = self._ahead.take((query, names, pin_memory, missing), self._state)
        if prefetched is not None:
            return prefetched if out is None else copy_out(prefetched, out, self.features)
        return self._read_fresh(query, names, out, pin_memory, missing)

    def _read_fresh(
        self,
        query: np.ndarray,
        names: tuple[str, ...] | None,
        out: Mapping[str, torch.Tensor] | None,
        pin_memory: bool,
        missing: str,
    ) -> FeatureBatch:
        try:
            return self._read(query, names, out, pin_memory, missing="raise-quiet")
        except _Unknown:
            self.refresh()  # another writer may have published these ids or features since
        return self._read(query, names, out, pin_memory, missing)

    def _read(
        self,
        query: np.ndarray,
        names: tuple[str, ...] | None,
        out: Mapping[str, torch.Tensor] | None,
        pin_memory: bool,
        missing: str,
    ) -> FeatureBatch:
        with self._rw.shared():
            published = self._state()
            if self._kept_in != os.getpid():  # forked: handles rebuilt here must keep indexes
                keep_indexes(published)
                self._kept_in = os.getpid()
            names = tuple(published.arrays) if names is None else names
            for name in names:
                if name not in published.cached:
                    if missing == "raise-quiet":  # another writer may have published it since
                        raise _Unknown
                    raise ArrayNotFoundError(
                        f"no feature {name!r} in the feature store (features: "
                        f"{sorted(published.cached)})"
                    )
            check_out_names(out, names, published.cached)
            plan = plan_gather(published.index, query)
            if not plan.all_found:
                if missing == "raise-quiet":
                    raise _Unknown
                if missing == "raise":
                    raise MissingIdError(missing_ids_message(query, plan.mask))
            result = FeatureBatch(torch.from_numpy(plan.mask))
            for name in names:
                dest = None if out is None else out.get(name)
                result[name] = gather_rows(published.cached[name], plan, dest, pin_memory)
            return result

    def prefetch(
        self,
        ids: Any,
        features: Iterable[str] | str | None = None,
        *,
        pin_memory: bool = False,
        missing: str = "raise",
    ) -> None:
        """Start reading a batch on a background thread; the matching :meth:`read` takes it.

        Call it with the next step's ids before running the current step.

        Example:
            >>> fs.prefetch(next_ids)  # doctest: +SKIP
            >>> batch = fs.read(next_ids)  # doctest: +SKIP
        """
        check_missing(missing)
        pin_memory = flag("pin_memory", pin_memory)
        query = as_ids(ids).copy()  # the caller may refill its id buffer for the next batch
        names = feature_names(features)
        read = functools.partial(self._read_fresh, query, names, None, pin_memory, missing)
        # a failed read raises in the matching read(); a state published meanwhile voids it
        self._ahead.start((query, names, pin_memory, missing), self._state(), read)

    # -- writing ----------------------------------------------------------------------------
    def write(self, ids: Any, features: Mapping[str, Any]) -> None:
        """Upsert rows: new ids are appended, known ids overwritten, new features created.

        Every value holds one row per id (tensor on any device, numpy array or nested
        lists; a scalar is no row). A feature missing from the call keeps its rows; for new
        ids it holds its fill value. When an id repeats in ``ids``, its last row wins; new
        ids are appended in the order of their first appearance. Values a feature's dtype
        cannot hold, rows of another shape, and values that are no dense grid of numbers
        (sparse, nested or meta tensors, ragged lists) are refused before anything is
        written. The call becomes visible to readers at once, when it is complete.

        Example:
            >>> fs.write(torch.tensor([1, 2]), {"label": torch.tensor([0, 1])})  # doctest: +SKIP
        """
        query = as_ids(ids)
        if not isinstance(features, Mapping):
            raise ArgumentTypeError(
                f"features must map feature names to values, got {type(features).__name__}"
            )
        for name in features:
            check_name(name)
        values = {name: as_feature_tensor(name, v, query.size) for name, v in features.items()}
        if not values:
            raise ShapeMismatchError("write needs at least one feature")
        with writer_lock(self._open()), self._rw.exclusive():
            group, published = self._latest_writable()
            self._published = apply_write(
                group, published, query, values, self._cache, self._layout()
            )

    def create_feature(
        self,
        name: str,
        dtype: torch.dtype | str | np.dtype[Any],
        row_shape: int | tuple[int, ...] = (),
        *,
        fill_value: Any = None,
        chunk_rows: int | None = None,
    ) -> None:
        """Create an empty feature explicitly (a write creates one implicitly, filled with
        the dtype's default: 0, or the nearest value a float8 kind holds).

        ``dtype`` is a torch dtype, a name (``"float32"``) or a numpy dtype; ``row_shape``
        a tuple of ints, or one int for 1-d rows. Every known id reads as ``fill_value``
        until written; so do misses with ``missing="fill"``. ``chunk_rows`` defaults to
        ``chunk_bytes`` worth of rows; chunks of more than one row hold at most 64 MiB.

        Example:
            >>> fs.create_feature("score", torch.float32, fill_value=float("nan"))  # doctest: +SKIP
            >>> fs.create_feature("emb", "float16", 64)  # doctest: +SKIP
        """
        check_name(name)
        dtype, row_shape, chunk_rows = feature_spec(name, dtype, row_shape, chunk_rows)
        with writer_lock(self._open()), self._rw.exclusive():
            group, published = self._latest_writable()
            if name in published.arrays:
                raise NodeExistsError(f"feature {name!r} already exists in {group.name}")
            rows = published.index.num_rows
            arr = create_feature_array(
                group,
                name,
                dtype,
                row_shape,
                rows,
                store_id=published.store_id,
                fill_value=fill_value,
                chunk_rows=chunk_rows,
                **self._layout(),
            )
            arrays = {**published.arrays, name: arr}
            empty = np.empty(0, dtype=np.int64)
            self._published = publish(group, published, arrays, empty, self._cache)

    def close(self) -> None:
        """Stop the prefetch thread and, when this instance opened the store from a path or
        URL, close it (a zip file is then complete on disk); a Store object passed in stays
        open. The instance stays usable: the store and the thread restart on demand.

        Example:
            >>> with FeatureStore("memory://", mode="w") as fs:  # closed at the end
            ...     fs.write([1], {"x": torch.tensor([1.0])})
        """
        self._ahead.close()
        group = self._group
        if self._owns_store and group is not None:
            with self._rw.exclusive():  # never under a read or write of this instance
                group.store.close()

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Unknown(Exception):
    """Internal: a read met ids or feature names it does not hold (refresh, then decide)."""


_instances: weakref.WeakSet[FeatureStore] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for store in list(_instances):
        store._start_threading()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
