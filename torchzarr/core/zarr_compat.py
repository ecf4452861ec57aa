"""zarr-python's ``Array`` conveniences: named selection methods, block indexing, codec views."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import numcodecs
import numpy as np
import torch

from torchzarr.codecs.base import ArrayArrayCodec, ArrayBytesCodec, BytesBytesCodec
from torchzarr.core._index_axes import as_int
from torchzarr.core.create import XARRAY_DIMENSIONS
from torchzarr.core.indexing import normalize_selection
from torchzarr.core.nodes import node_keys
from torchzarr.core.selection import make_indexer, to_numpy_selection
from torchzarr.errors import ArgumentTypeError, BoundsError, SelectionError

__all__ = ["ZarrArrayMethods", "block_selection"]


def _holds(block: torch.Tensor, value: Any) -> bool:
    equal: torch.Tensor = block == value  # torch's stubs type ``==`` as bool
    return bool(equal.any())


def _sought(value: Any, dtype: torch.dtype, path: str) -> bool | int | float | complex | None:
    """``value`` (a number, numpy scalar or one-element tensor) as a Python number that
    ``==`` compares with elements of ``dtype`` without wrapping it into that dtype, or None
    where no element can equal it (1000 for int8, 1.5 or NaN for ints, 1j for floats).

    Example:
        >>> _sought(1000, torch.int8, "a"), _sought(2.0, torch.int8, "a"), _sought(1j, torch.float32, "a")
        (None, 2, None)
    """
    if isinstance(value, torch.Tensor) and value.numel() == 1 and value.layout == torch.strided:
        value = value.detach().cpu().item() if not value.is_meta else value
    elif isinstance(value, np.bool_ | np.number):
        value = value.item()
    if not isinstance(value, bool | int | float | complex):
        raise ArgumentTypeError(
            f"'in' takes a number (or one-element tensor), got {type(value).__name__} for "
            f"array {path!r}"
        )
    if isinstance(value, complex) and not dtype.is_complex:
        if value.imag != 0:  # (a NaN imaginary part too)
            return None
        value = value.real
    if dtype.is_floating_point or dtype.is_complex or dtype == torch.bool:
        return value  # compared in the array's dtype, as torch compares
    if isinstance(value, float):
        if not value.is_integer():  # fractions, NaN, infinities
            return None
        value = int(value)
    bounds = torch.iinfo(dtype)
    return value if bounds.min <= value <= bounds.max else None


def _block_axis(item: Any, axis: int, extent: int, block: int) -> slice:
    nblocks = -(-extent // block)
    index = as_int(item)
    if index is not None:
        if not -nblocks <= index < nblocks:
            raise BoundsError(
                f"block {index} is out of bounds for axis {axis} with {nblocks} blocks"
            )
        index += nblocks if index < 0 else 0
        return slice(index * block, min((index + 1) * block, extent))
    if isinstance(item, slice):
        try:
            start, stop, step = item.indices(nblocks)
        except (TypeError, ValueError) as err:  # a step of 0, a float or str bound
            raise SelectionError(f"invalid block slice {item!r} on axis {axis}: {err}") from None
        if step != 1:
            raise SelectionError(f"block slices take step 1, got {item!r} on axis {axis}")
        return slice(start * block, min(max(start, stop) * block, extent))
    # lists, ranges and tensors arrive as arrays (to_numpy_selection): named as what they were
    given = "an index list or array" if isinstance(item, np.ndarray) else type(item).__name__
    raise SelectionError(f"block selections take ints and slices, got {given} on axis {axis}")


def block_selection(
    selection: Any, shape: tuple[int, ...], grid: tuple[int, ...]
) -> tuple[slice, ...]:
    """The element slices that a selection of whole blocks (chunks, or shards) covers.

    Example:
        >>> block_selection((1, slice(0, 2)), shape=(10, 7), grid=(3, 4))
        (slice(3, 6, None), slice(0, 7, None))
    """
    items = normalize_selection(to_numpy_selection(selection), len(shape))
    return tuple(
        _block_axis(item, axis, extent, block)
        for axis, (item, extent, block) in enumerate(zip(items, shape, grid, strict=True))
    )


class _Blocks:
    """``arr.blocks[...]``: read and write whole blocks of the chunk grid."""

    def __init__(self, array: ZarrArrayMethods) -> None:
        self._array = array

    def __getitem__(self, selection: Any) -> torch.Tensor:
        return self._array.get_block_selection(selection)

    def __setitem__(self, selection: Any, value: Any) -> None:
        self._array.set_block_selection(selection, value)


class ZarrArrayMethods:
    """Methods of zarr-python's ``Array`` that :class:`~torchzarr.Array` has too.

    Each ``get_*_selection`` / ``set_*_selection`` pair is one kind of indexing
    (``arr[...]``, ``arr.oindex``, ``arr.vindex``, a boolean mask, ``arr.blocks``) under
    zarr-python's name; the getters take ``out=`` as :meth:`~torchzarr.Array.read` does.
    """

    if TYPE_CHECKING:  # what the class using this one provides (torchzarr.Array)
        _metadata: Any
        _store: Any

        @property
        def shape(self) -> tuple[int, ...]: ...
        @property
        def chunks(self) -> tuple[int, ...]: ...
        def __getitem__(self, selection: Any) -> torch.Tensor: ...
        @property
        def zarr_format(self) -> int: ...
        @property
        def dtype(self) -> torch.dtype: ...
        @property
        def path(self) -> str: ...
        @property
        def _grid(self) -> tuple[int, ...]: ...
        @property
        def _sharding(self) -> Any: ...
        def _chunk_keys(self) -> dict[str, tuple[int, ...]]: ...
        def _read(
            self, indexer: Any, out: torch.Tensor | None = None, pin_memory: bool = False
        ) -> torch.Tensor: ...
        def _write(self, indexer: Any, value: Any) -> None: ...

    # -- views of the metadata --------------------------------------------------------------
    @property
    def dimension_names(self) -> tuple[str | None, ...] | None:
        """Names of the axes (v3 ``dimension_names``; in v2 xarray's ``_ARRAY_DIMENSIONS``
        attribute), or None.

        Example:
            >>> import torchzarr as tz
            >>> tz.create_array("memory://", shape=(2, 3), dtype="int8",
            ...                 dimension_names=["t", "c"]).dimension_names
            ('t', 'c')
        """
        if self.zarr_format == 2:  # xarray's attribute, where v2 keeps them
            names = self._metadata.attributes.get(XARRAY_DIMENSIONS)
            ok = isinstance(names, list) and len(names) == len(self.shape)
            return tuple(names) if ok and all(isinstance(n, str) for n in names) else None
        names = getattr(self._metadata, "dimension_names", None)
        return None if names is None else tuple(names)

    def _v3_codecs(self, kind: type) -> tuple[Any, ...]:
        """The v3 codecs of one kind, of the inner chunks when sharded (as in zarr-python)."""
        sharding = self._sharding
        codecs = sharding.codecs if sharding else getattr(self._metadata, "codecs", ())
        return tuple(c for c in codecs if isinstance(c, kind))

    @property
    def filters(self) -> tuple[Any, ...]:
        """Array-to-array codecs (v3) or numcodecs filters (v2), in encoding order.

        Example:
            >>> import torchzarr as tz
            >>> tz.create_array("memory://", shape=(2,), dtype="int8").filters
            ()
        """
        if self.zarr_format == 2:
            return tuple(numcodecs.get_codec(dict(f)) for f in self._metadata.filters or ())
        return self._v3_codecs(ArrayArrayCodec)

    @property
    def serializer(self) -> Any:
        """The array-to-bytes codec of the (inner) chunks (v3: ``bytes``); None in v2.

        Example:
            >>> import torchzarr as tz
            >>> tz.create_array("memory://", shape=(2,), dtype="int8").serializer.codec_name
            'bytes'
        """
        found = self._v3_codecs(ArrayBytesCodec)
        return found[0] if found else None

    @property
    def compressors(self) -> tuple[Any, ...]:
        """Bytes-to-bytes codecs (v3) or the numcodecs compressor (v2), as a tuple.

        Of a sharded array, those of its inner chunks (as in zarr-python); the sharding codec
        itself is ``arr.metadata.codecs[0]``.

        Example:
            >>> import torchzarr as tz
            >>> [c.codec_name for c in tz.create_array("memory://", shape=(2,), dtype="int8").compressors]
            ['zstd']
        """
        if self.zarr_format == 2:
            compressor = self._metadata.compressor
            return () if compressor is None else (numcodecs.get_codec(dict(compressor)),)
        return self._v3_codecs(BytesBytesCodec)

    @property
    def order(self) -> str:
        """Memory order of the stored chunks: v2's ``order`` ("C" or "F"); "C" in v3."""
        return str(getattr(self._metadata, "order", "C"))

    def nbytes_stored(self) -> int:
        """Bytes the array takes in the store: its chunks (or shards) and its metadata
        documents, as zarr-python counts them (other files beside the chunks are not).

        Example:
            >>> import torchzarr as tz
            >>> arr = tz.create_array("memory://", shape=(4,), dtype="int8", zarr_format=2)
            >>> arr.nbytes_stored() == len(arr.store.get(".zarray"))
            True
        """
        return self._stored_bytes(self._chunk_keys())

    def _stored_bytes(self, keys: Iterable[str]) -> int:
        documents = node_keys(self.path, self.zarr_format)
        return sum(self._store.getsize(k) or 0 for k in (*keys, *documents))

    def __iter__(self) -> Iterator[torch.Tensor]:
        """Rows along axis 0, read one chunk row at a time (not one read per row).

        Example:
            >>> import torchzarr as tz
            >>> [r.tolist() for r in tz.create_array("memory://", data=[[1, 2], [3, 4]])]
            [[1, 2], [3, 4]]
        """
        if not self.shape:
            raise ArgumentTypeError("iteration over a 0-d array")
        step = self._grid[0]  # whole shards (or chunks): one read each
        for start in range(0, self.shape[0], step):
            yield from self[start : start + step]

    def __contains__(self, value: Any) -> bool:
        """``value in arr``: whether any element equals the number ``value``, as numpy
        answers (a value the dtype cannot hold is in no array: ``1000 in`` int8 is False,
        not wrapped as torch does), read a chunk row (of shards) at a time.

        Example:
            >>> import torchzarr as tz
            >>> arr = tz.create_array("memory://", data=[[1, 2], [3, 4]])
            >>> 3 in arr, 5 in arr
            (True, False)
        """
        value = _sought(value, self.dtype, self.path)
        if value is None:
            return False
        if not self.shape:
            return _holds(self[()], value)
        step = self._grid[0]  # whole shards (or chunks) along axis 0: one read each
        starts = range(0, self.shape[0], step)
        return any(_holds(self[start : start + step], value) for start in starts)

    # -- named selections -------------------------------------------------------------------
    def _get(self, selection: Any, kind: str, out: torch.Tensor | None) -> torch.Tensor:
        return self._read(make_indexer(selection, self.shape, self._grid, kind), out)

    def _set(self, selection: Any, value: Any, kind: str) -> None:
        self._write(make_indexer(selection, self.shape, self._grid, kind), value)

    def get_basic_selection(
        self, selection: Any = Ellipsis, *, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``arr[selection]`` for ints, slices and Ellipsis only.

        Example:
            >>> arr.get_basic_selection((slice(0, 2), 1))  # doctest: +SKIP
        """
        return self._get(selection, "basic", out)

    def set_basic_selection(self, selection: Any, value: Any) -> None:
        """``arr[selection] = value`` for ints, slices and Ellipsis only."""
        self._set(selection, value, "basic")

    def get_orthogonal_selection(
        self, selection: Any, *, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``arr.oindex[selection]``: integer arrays or masks applied axis by axis.

        Example:
            >>> arr.get_orthogonal_selection(([0, 2], slice(None)))  # doctest: +SKIP
        """
        return self._get(selection, "orthogonal", out)

    def set_orthogonal_selection(self, selection: Any, value: Any) -> None:
        """``arr.oindex[selection] = value``."""
        self._set(selection, value, "orthogonal")

    def get_coordinate_selection(
        self, selection: Any, *, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``arr.vindex[selection]``: one coordinate array per axis, taken pointwise.

        Example:
            >>> arr.get_coordinate_selection(([0, 2], [1, 1]))  # doctest: +SKIP
        """
        return self._get(selection, "vectorized", out)

    def set_coordinate_selection(self, selection: Any, value: Any) -> None:
        """``arr.vindex[selection] = value``."""
        self._set(selection, value, "vectorized")

    def _check_mask(self, mask: Any) -> Any:
        mask = to_numpy_selection(mask)
        if not (isinstance(mask, np.ndarray) and mask.dtype == bool and mask.shape == self.shape):
            got = getattr(mask, "dtype", type(mask).__name__), np.shape(mask)
            raise SelectionError(
                f"a mask selection is a boolean array of the array's shape {self.shape}, got "
                f"{got[0]} of shape {got[1]}"
            )
        return mask

    def get_mask_selection(self, mask: Any, *, out: torch.Tensor | None = None) -> torch.Tensor:
        """The elements where a boolean ``mask`` of the array's shape is True, in C order.

        Example:
            >>> arr.get_mask_selection(mask)  # doctest: +SKIP
        """
        return self._get(self._check_mask(mask), "vectorized", out)

    def set_mask_selection(self, mask: Any, value: Any) -> None:
        """Write ``value`` where a boolean ``mask`` of the array's shape is True."""
        self._set(self._check_mask(mask), value, "vectorized")

    def get_block_selection(
        self, selection: Any, *, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Whole blocks of the chunk grid (shards, for a sharded array) by block index.

        Example:
            >>> arr.get_block_selection((1, slice(0, 2)))  # doctest: +SKIP
        """
        return self._get(block_selection(selection, self.shape, self._grid), "basic", out)

    def set_block_selection(self, selection: Any, value: Any) -> None:
        """Write whole blocks of the chunk grid by block index."""
        self._set(block_selection(selection, self.shape, self._grid), value, "basic")

    @property
    def blocks(self) -> _Blocks:
        """Block indexing: ``arr.blocks[1, :2]`` reads block row 1, block columns 0 and 1.

        Example:
            >>> import torchzarr as tz
            >>> a = tz.create_array("memory://", shape=(5,), dtype="int8", chunks=(2,))
            >>> a.blocks[-1] = 7
            >>> a[:].tolist()
            [0, 0, 0, 0, 7]
        """
        return _Blocks(self)
