"""``Array``: a Zarr array read as torch tensors and written from tensors, arrays or scalars."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from functools import cached_property
from typing import Any

import numpy as np
import torch

from torchzarr.arguments import flag
from torchzarr.core import engine
from torchzarr.core.array_protocols import ArrayProtocols
from torchzarr.core.attributes import (
    Attributes,
    internal_attributes,
    logical_data_type,
    user_attributes,
)
from torchzarr.core.cache import ChunkCache, default_cache, register_cache
from torchzarr.core.chunking import normalize_shape
from torchzarr.core.consolidated import refresh_consolidated
from torchzarr.core.create import check_v2_dimension_attribute
from torchzarr.core.indexing import chunk_grid_shape
from torchzarr.core.info import ArrayInfo, count_initialized
from torchzarr.core.node_base import NodeBase
from torchzarr.core.nodes import node_lock, write_node
from torchzarr.core.read_out import check_out, fills_in_place
from torchzarr.core.reshape import append_along, resize_from, shape_lock, stored_shape
from torchzarr.core.selection import make_indexer
from torchzarr.core.streaming import iter_chunks
from torchzarr.core.zarr_compat import ZarrArrayMethods
from torchzarr.errors import (
    ArgumentTypeError,
    CodecError,
    InvalidArgumentError,
    MetadataError,
    ReadOnlyError,
    ShapeMismatchError,
)
from torchzarr.tensors import allocate, as_storage_array, storage_view, torch_dtype

__all__ = ["Array"]


class Array(NodeBase, ZarrArrayMethods, ArrayProtocols):
    """A Zarr v2 or v3 array in a store.

    Indexing returns CPU tensors; assignment takes tensors (any device), numpy arrays or
    scalars. Open one with :func:`torchzarr.open_array` or create it with
    :func:`torchzarr.create_array`. zarr-python's named selections (``get_orthogonal_selection``
    ...), ``blocks`` and codec views come from :class:`~torchzarr.core.zarr_compat.ZarrArrayMethods`.

    Example:
        >>> import torchzarr as tz
        >>> arr = tz.create_array("memory://", shape=(4, 3), dtype=torch.float32, chunks=(2, 3))
        >>> arr[1:3] = torch.ones(2, 3)
        >>> arr[:, 0]
        tensor([0., 1., 1., 0.])
    """

    def __init__(
        self,
        store: Any,
        path: str,
        metadata: Any,
        *,
        read_only: bool = False,
        cache: ChunkCache | None = None,
    ) -> None:
        self._store = store
        self._path = path
        self._metadata = metadata
        self._read_only = read_only
        if cache is not None:  # writes in this process invalidate it, as for with_cache
            if not isinstance(cache, ChunkCache):
                raise ArgumentTypeError(f"cache must be a ChunkCache or None, got {cache!r}")
            register_cache(cache)
        self._cache = cache

    # -- pickling: a spec, reopened lazily --------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        # the spec only: the store pickles as its own spec; no chunks, pools, locks or handles
        names = ("_store", "_path", "_metadata", "_read_only", "_cache")
        # a cache pickles as its settings (ChunkCache.__reduce__): the child reads through a
        # cache of its own made like it, the shared one for the shared one
        return {name: self.__dict__[name] for name in names}

    def __setstate__(self, state: dict[str, Any]) -> None:
        if state.get("_cache") is True:  # pickled by torchzarr before caches pickled
            state["_cache"] = default_cache()
        self.__dict__.update(state)

    def with_cache(self, cache: ChunkCache | None = None) -> Array:
        """This array, reading through a decoded-chunk cache (the shared one by default).

        Repeated reads of hot chunks then skip fetch and decode; writes made through torchzarr
        in this process invalidate what they change; other writers' changes (zarr-python,
        Dask, another process) are not seen until the chunks are evicted.

        Example:
            >>> cached = arr.with_cache()  # doctest: +SKIP
        """
        cache = cache if cache is not None else default_cache()
        return Array(
            self._store, self._path, self._metadata, read_only=self._read_only, cache=cache
        )

    @property
    def cache(self) -> ChunkCache | None:
        """The decoded-chunk cache reads go through, or None."""
        return self._cache

    # -- description (store, path, names, metadata: NodeBase) --------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        """The array's shape."""
        return tuple(self._metadata.shape)

    @property
    def ndim(self) -> int:
        """Number of dimensions."""
        return len(self.shape)

    @property
    def size(self) -> int:
        """Number of elements."""
        return math.prod(self.shape)

    @property
    def chunks(self) -> tuple[int, ...]:
        """Shape of one chunk (the inner chunk of a sharded array; the shard where sharding
        comes after a ``transpose``, read and written a whole shard at a time)."""
        sharding = self._sharding
        return tuple(sharding.chunk_shape) if sharding else self._grid

    @property
    def shards(self) -> tuple[int, ...] | None:
        """Shape of one shard (the stored object) of a sharded array, else None."""
        return self._grid if self._sharding else None

    @property
    def _grid(self) -> tuple[int, ...]:
        return tuple(self._metadata.chunk_shape)

    @property
    def _sharding(self) -> Any:
        codecs: tuple[Any, ...] = tuple(getattr(self._metadata, "codecs", ()))
        return (
            codecs[0] if len(codecs) == 1 and codecs[0].codec_name == "sharding_indexed" else None
        )

    @cached_property
    def data_type(self) -> Any:
        """The torchzarr :class:`~torchzarr.dtypes.DataType` reads return."""
        return logical_data_type(self._metadata)

    @property
    def dtype(self) -> torch.dtype:
        """The torch dtype that reads return."""
        return torch_dtype(self.data_type)

    @property
    def nbytes(self) -> int:
        """Bytes of the array's data when decoded."""
        return self.size * self._metadata.data_type.itemsize

    @property
    def fill_value(self) -> Any:
        """The fill value as a Python scalar of the array's type; None for a v2 ``null``
        (no fill value, as zarr-python reports it: unwritten chunks read as zeros).

        Example:
            >>> import torchzarr as tz
            >>> tz.create_array("memory://", shape=(2,), dtype="int8", zarr_format=2).fill_value is None
            True
        """
        if self._metadata.fill_value is None:
            return None
        spec_fill = self._metadata.chunk_spec().fill_value
        value = torch.from_numpy(np.asarray(spec_fill).reshape(1))
        if self.data_type.is_reinterpreted:
            value = value.view(self.dtype)
        return value[0].item()

    @property
    def attrs(self) -> Attributes:
        """User attributes, persisted as JSON on every change."""
        return Attributes(lambda: user_attributes(self._metadata), self._change_attributes)

    @property
    def cdata_shape(self) -> tuple[int, ...]:
        """Shape of the grid of :attr:`chunks` (inner chunks when sharded, as zarr-python).

        Example:
            >>> import torchzarr as tz
            >>> tz.create_array("memory://", shape=(8,), dtype="int8", chunks=(2,), shards=(4,)).cdata_shape
            (4,)
        """
        return chunk_grid_shape(self.shape, self.chunks)

    @property
    def _shard_grid_shape(self) -> tuple[int, ...]:
        """Shape of the grid of stored objects: shards when sharded, else chunks (the
        grid the engine, block indexing and the chunk cache work in; zarr-python's name)."""
        return chunk_grid_shape(self.shape, self._grid)

    @property
    def nchunks(self) -> int:
        """Number of chunks in the grid (inner chunks when sharded, as zarr-python)."""
        return math.prod(self.cdata_shape)

    @property
    def nchunks_initialized(self) -> int:
        """Number of chunks stored; of a sharded array, of inner chunks, as zarr-python:
        those stored in its shards, read from the index of every stored shard (in one
        batch; zarr-python 3.1 counts every inner chunk of a stored shard instead).

        Example:
            >>> import torchzarr as tz
            >>> a = tz.create_array("memory://", shape=(8,), dtype="int8", chunks=(2,), shards=(4,))
            >>> a[:3] = 1
            >>> a.nchunks_initialized, a.nchunks
            (2, 4)
        """
        return self._initialized(self._chunk_keys())

    def _initialized(
        self, shards: dict[str, tuple[int, ...]], damaged: list[str] | None = None
    ) -> int:
        """:attr:`nchunks_initialized` from the array's stored chunk (shard) keys; a shard
        whose index cannot be read raises, or with ``damaged`` is listed there."""
        reader = self._source.shard_reader if self._sharding is not None else None
        if reader is None:
            return len(shards)
        layout = (self._grid, self.chunks, self.shape)
        return count_initialized(reader.indexes, shards, layout, damaged)

    @property
    def info(self) -> ArrayInfo:
        """A summary: shape, dtype, chunks, codecs, stored bytes, ratio, chunks initialised.

        A shard whose index cannot be read is named there (``damaged_shards``) and counts
        no chunk, where :attr:`nchunks_initialized` raises its ``ChunkDecodeError``."""
        keys = self._chunk_keys()
        damaged: list[str] = []
        return ArrayInfo(
            name=self.name,
            zarr_format=self.zarr_format,
            shape=self.shape,
            dtype=self.dtype,
            chunks=self.chunks,
            codecs=self._codec_summary(),
            fill_value=self.fill_value,
            store=repr(self._store),
            nbytes=self.nbytes,
            nbytes_stored=self._stored_bytes(keys),
            nchunks=self.nchunks,
            nchunks_initialized=self._initialized(keys, damaged),
            read_only=self._read_only,
            shards=self.shards,
            dimension_names=self.dimension_names,
            damaged_shards=tuple(damaged),
        )

    def _codec_summary(self) -> tuple[str, ...]:
        sharding = self._sharding
        if sharding is None:
            return tuple(self._metadata.codec_names)
        inner = ", ".join(c.codec_name for c in sharding.codecs)
        return (f"sharding_indexed ({inner})",)

    def _chunk_keys(self) -> dict[str, tuple[int, ...]]:
        """The stored keys of the array's chunks (shards) in its grid, with their coords, as
        zarr-python counts them: no metadata document, nor any other file beside them."""
        grid = self._shard_grid_shape
        return {
            key: coords
            for key, coords in self._source.stored_chunks().items()
            if all(c < n for c, n in zip(coords, grid, strict=True))
        }

    def __len__(self) -> int:
        if not self.shape:
            raise ArgumentTypeError("len() of a 0-d array")
        return self.shape[0]

    def __repr__(self) -> str:
        return (
            f"<torchzarr.Array {self._store!r} {self.name} shape={self.shape} "
            f"dtype={self.dtype} chunks={self.chunks}{' read-only' if self._read_only else ''}>"
        )

    # -- the engine -------------------------------------------------------------------------
    @property
    def _source(self) -> engine.ChunkSource:
        # one per process: a forked child must not reuse the parent's shard-index locks
        pid, source = self.__dict__.get("_source_of", (-1, None))
        if source is None or pid != os.getpid():
            try:  # v2 codecs are looked up here, at the first read or write
                pipeline = self._metadata.codec_pipeline()
            except (CodecError, MetadataError) as err:
                raise type(err)(f"array {self.name} in {self._store!r}: {err}") from None
            source = engine.ChunkSource(
                self._store, self._path, self._metadata, pipeline, self._cache
            )
            self.__dict__["_source_of"] = (os.getpid(), source)
        return source

    def _check_writable(self) -> None:
        if self._read_only:
            raise ReadOnlyError(f"array {self.name} in {self._store!r} is read-only")

    def _read(
        self, indexer: Any, out: torch.Tensor | None = None, pin_memory: bool = False
    ) -> torch.Tensor:
        shape = tuple(indexer.shape)
        dt = self.data_type
        if out is not None:
            check_out(out, shape, self.dtype, self.name)
            if fills_in_place(out):
                engine.read_into(self._source, indexer, storage_view(out, dt))
                return out
        result = allocate(shape, dt, pin_memory=pin_memory or self._pins(shape, out))
        engine.read_into(self._source, indexer, storage_view(result, dt))
        if out is not None:
            out.copy_(result)
            return out
        return result

    def _pins(self, shape: tuple[int, ...], out: torch.Tensor | None) -> bool:
        """Whether a read's result is pinned for its cache: results up to its pinned cap."""
        cache = self._cache
        if out is not None or cache is None or not cache.pins_reads:
            return False
        return math.prod(shape) * self.data_type.itemsize <= cache.max_pinned_bytes

    def _write(self, indexer: Any, value: Any, write_empty_chunks: bool = False) -> None:
        self._check_writable()
        data = as_storage_array(value, self.data_type)
        shape = tuple(indexer.shape)
        fitted = _broadcast_value(data, shape)
        if fitted is None:
            raise ShapeMismatchError(
                f"cannot write data of shape {data.shape} to a selection of shape {shape} in "
                f"array {self.name}"
            )
        # the chunks a batch at a time: a write over millions of tiny chunks lists none ahead
        engine.write_from(self._source, indexer, fitted, write_empty_chunks=write_empty_chunks)

    # -- indexing ---------------------------------------------------------------------------
    def __getitem__(self, selection: Any) -> torch.Tensor:
        return self._read(make_indexer(selection, self.shape, self._grid))

    def __setitem__(self, selection: Any, value: Any) -> None:
        self._write(make_indexer(selection, self.shape, self._grid), value)

    def read(
        self,
        selection: Any = Ellipsis,
        *,
        out: torch.Tensor | None = None,
        pin_memory: bool = False,
    ) -> torch.Tensor:
        """Read a selection, into ``out`` if given (any device), else into a new tensor;
        ``pin_memory=True`` (a bool) allocates it page-locked where CUDA is present.

        Example:
            >>> buf = torch.empty(2, 3)
            >>> _ = arr.read(slice(0, 2), out=buf)  # doctest: +SKIP
        """
        if type(pin_memory) is not bool:  # "no" would be read as a truth value
            pin_memory = flag(f"read(pin_memory=...) of array {self.name}", pin_memory)
        return self._read(make_indexer(selection, self.shape, self._grid), out, pin_memory)

    def write(self, selection: Any, value: Any) -> None:
        """Write ``value`` (tensor, numpy array or scalar) to a selection; same as ``a[sel] = v``."""
        self._write(make_indexer(selection, self.shape, self._grid), value)

    def iter_chunks(
        self, parallel: int = 2, progress: Any = None
    ) -> Iterator[tuple[tuple[int, ...], tuple[slice, ...], torch.Tensor]]:
        """Every chunk as ``(chunk_coords, region, tensor)``, in order, in bounded memory.

        ``parallel`` chunks are read ahead on their own threads; ``progress`` is True (a tqdm
        bar when tqdm is installed, else log lines) or a ``callback(done, total)``.

        Example:
            >>> total = sum(float(t.sum()) for _, _, t in arr.iter_chunks())  # doctest: +SKIP
        """
        return iter_chunks(self, parallel=parallel, progress=progress)

    @property
    def oindex(self) -> _Accessor:
        """Orthogonal indexing: integer arrays or boolean masks applied per axis."""
        return _Accessor(self, "orthogonal")

    @property
    def vindex(self) -> _Accessor:
        """Vectorized (pointwise) indexing with coordinate arrays or one boolean mask."""
        return _Accessor(self, "vectorized")

    # -- metadata changes -------------------------------------------------------------------
    def _commit_metadata(self, change: Callable[[Any], Any]) -> None:
        """Write ``change(metadata)``, applied to the metadata as stored, and refresh the
        consolidated entries above, under the node's lock: a concurrent change of this
        array in this process, through any Array, is kept. An array deleted, or replaced
        by a group, since this handle was opened is neither brought back nor written over
        (``ArrayNotFoundError``)."""
        with node_lock(self._store, [self._path]):
            metadata = change(self._stored_metadata())
            write_node(self._store, self._path, metadata)
            refresh_consolidated(self._store, [(self._path, metadata)])
            self._metadata = metadata
            for derived in ("_source_of", "data_type"):  # made from the metadata replaced
                self.__dict__.pop(derived, None)

    def _change_attributes(self, change: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        self._check_writable()

        def evolve(metadata: Any) -> Any:
            attributes = change(user_attributes(metadata))
            if metadata.zarr_format == 2:
                check_v2_dimension_attribute(
                    attributes, len(metadata.shape), f" of array {self.name}"
                )
            return metadata.evolve(attributes={**attributes, **internal_attributes(metadata)})

        self._commit_metadata(evolve)

    def resize(self, *shape: Any) -> None:
        """Change the shape; chunks left outside are deleted, cut edge chunks reset to fill.

        Example:
            >>> arr.resize(8, 3)  # doctest: +SKIP
        """
        self._check_writable()
        try:
            new_shape = normalize_shape(shape[0] if len(shape) == 1 else shape)
        except MetadataError as err:  # the argument is at fault (no ints: a TypeError)
            typed = isinstance(err.__context__, TypeError)
            kind = ArgumentTypeError if typed else InvalidArgumentError
            raise kind(f"cannot resize array {self.name}: {err}") from None
        if len(new_shape) != self.ndim:
            raise ShapeMismatchError(
                f"cannot resize array {self.name} of shape {self.shape} to {new_shape}: "
                "the number of dimensions must stay the same"
            )
        with shape_lock(self):  # from the shape as stored: another handle may have moved it
            resize_from(self, stored_shape(self), new_shape)

    def append(self, data: Any, axis: int = 0) -> tuple[int, ...]:
        """Grow the array along ``axis`` and write ``data`` there; returns the new shape.

        Example:
            >>> arr.append(torch.zeros(2, 3))  # doctest: +SKIP
            (6, 3)
        """
        self._check_writable()
        return append_along(self, data, axis)


def _broadcast_value(data: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | None:
    """``data`` broadcast to a selection's ``shape`` as numpy and torch assign: leading
    axes of size 1 beyond the selection's dimensions are dropped first (a ``(1, 5)`` row
    fills ``arr[1]``); None when it does not fit.

    Example:
        >>> _broadcast_value(np.ones((1, 1, 5)), (2, 5)).shape
        (2, 5)
        >>> _broadcast_value(np.ones((2, 5)), (5,)) is None
        True
    """
    extra = data.ndim - len(shape)
    if extra > 0 and all(size == 1 for size in data.shape[:extra]):
        data = data.reshape(data.shape[extra:])
    try:
        return np.broadcast_to(data, shape)
    except ValueError:
        return None


class _Accessor:
    """``arr.oindex[...]`` and ``arr.vindex[...]``."""

    def __init__(self, array: Array, kind: str) -> None:
        self._array = array
        self._kind = kind

    def __getitem__(self, selection: Any) -> torch.Tensor:
        return self._array._get(selection, self._kind, None)

    def __setitem__(self, selection: Any, value: Any) -> None:
        self._array._set(selection, value, self._kind)
