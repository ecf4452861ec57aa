"""The array of each DCP tensor key: laid out from the plans, kept in the dtype of the data written.

DCP's plan caching (``DefaultSavePlanner(enable_plan_caching=True)``) compares plans by
keys and boxes only, not dtypes: a save of another state dict with the same keys and
shapes (a bf16 model, then its fp32 EMA copy; a model cast between saves) reuses plans,
and so array layouts and DCP metadata, made for another dtype. So each rank checks the
dtype of the data it writes against its array before writing a key: an array that only
this rank writes is laid out again in the data's dtype (and reported, so that the
metadata committed says so); data for an array other ranks write too is refused, naming
the key, before anything is committed. Values are stored exactly, never cast.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch
from torch.distributed.checkpoint.metadata import Metadata, TensorStorageMetadata
from torch.distributed.checkpoint.planner import SavePlan, WriteItem
from torch.distributed.checkpoint.storage import WriteResult

from torchzarr.checkpoint.dcp_metadata import aligned_chunks, boxes_tile
from torchzarr.checkpoint.format import DCP_KEY_ATTRIBUTE, EVERY_CHUNK
from torchzarr.core.api import create_array
from torchzarr.dtypes import data_type
from torchzarr.errors import InvalidArgumentError, MetadataError, UnsupportedDtypeError

__all__ = ["KeyArrays", "other_dtype", "shared_keys", "stored_metadata", "tensor_spec"]


def tensor_spec(
    path: Any,
    fqn: str,
    items: Sequence[WriteItem],
    dtype: torch.dtype | None,
    chunk_bytes: int,
    compressors: Any,
) -> dict[str, Any]:
    """The array spec (``create_array``'s arguments) of tensor key ``fqn`` whose write
    ``items`` (every rank's boxes of it) hold ``dtype`` data (None: the dtype the items
    say), for the writer of ``path``.

    Raises:
        UnsupportedDtypeError: no Zarr data type holds ``dtype`` (the message names the
            key, dtype and shape).

    Example:
        >>> from torch.distributed.checkpoint.planner_helpers import _create_write_items
        >>> items = _create_write_items("w", torch.zeros(4, 2))
        >>> tensor_spec("ckpt", "w", items, torch.float32, 2**20, None)["chunks"]
        (4, 2)
    """
    data = items[0].tensor_data
    if data is None:
        raise MetadataError(f"DCP write item for {fqn!r} has no tensor_data")
    dtype = data.properties.dtype if dtype is None else dtype
    try:
        data_type(dtype)
    except UnsupportedDtypeError as err:
        raise UnsupportedDtypeError(
            f"DCP key {fqn!r} ({dtype}, shape {tuple(data.size)}) cannot be saved to "
            f"{path!r}: {err}. Nothing was committed: save it converted to one of those"
        ) from None
    shape = tuple(data.size)
    boxes = [(i.tensor_data.chunk.offsets, i.tensor_data.chunk.sizes) for i in items]  # type: ignore[union-attr]
    itemsize = torch.empty((), dtype=dtype).element_size()
    chunks = aligned_chunks(shape, boxes, itemsize, chunk_bytes)
    key_info: dict[str, Any] = {"key": fqn, "kind": "tensor"}
    # Every chunk of every box is stored: when the boxes tile the tensor, so is every
    # chunk of its grid, and a load can tell a lost chunk from an unwritten one.
    if boxes_tile(shape, boxes):
        key_info[EVERY_CHUNK] = list(chunks)
    return {
        "shape": shape,
        "dtype": dtype,
        "chunks": chunks,
        "compressors": compressors,
        "fill_value": None,
        # c.0.1 files, not c/0/1: no directory per row of chunks to create and delete
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "."}},
        "attributes": {DCP_KEY_ATTRIBUTE: key_info},
    }


def shared_keys(plans: Sequence[SavePlan]) -> set[str]:
    """The keys that the items of more than one of ``plans`` write.

    Example:
        >>> shared_keys([SavePlan([]), SavePlan([])])
        set()
    """
    ranks = Counter(fqn for plan in plans for fqn in {item.index.fqn for item in plan.items})
    return {fqn for fqn, count in ranks.items() if count > 1}


class KeyArrays:
    """The arrays of one rank's save (a version group ``root``), each checked against
    the dtype of the data this rank writes to it before its first write (see the module
    docstring).

    Args:
        root: the version group.
        items: this rank's write items.
        shared: the keys other ranks write too.
        spec: ``spec(fqn, items, dtype)``, the array spec of a key (:func:`tensor_spec`).
        path: the checkpoint, for error messages.

    Example:
        >>> import torchzarr as tz
        >>> root = tz.create_group("memory://")
        >>> arrays = KeyArrays(root, [], set(), lambda *a: {}, "ckpt")
        >>> arrays.retyped
        {}
    """

    def __init__(
        self, root: Any, items: Sequence[WriteItem], shared: set[str], spec: Any, path: Any
    ) -> None:
        self._root = root
        self._items: dict[str, list[WriteItem]] = {}
        for item in items:
            self._items.setdefault(item.index.fqn, []).append(item)
        self._shared = shared
        self._spec = spec
        self._path = path
        self._lock = threading.Lock()
        self._key_locks: dict[str, threading.Lock] = {}
        #: the keys whose arrays this rank laid out again, and their new dtype
        self.retyped: dict[str, torch.dtype] = {}

    def array(self, fqn: str, name: str, dtype: torch.dtype) -> Any:
        """The array ``name`` of key ``fqn``, for data of ``dtype``.

        Raises:
            InvalidArgumentError: the array holds another dtype and other ranks write
                to it too (the message names the key and both dtypes).
        """
        with self._lock:
            lock = self._key_locks.setdefault(name, threading.Lock())
        with lock:  # the first write of a key waits for its check; the others find it done
            arr = self._root[name]
            if arr.dtype == dtype or (fqn in self._shared and widens(dtype, arr.dtype)):
                return arr  # (a planner's resolve_data may widen: stored exactly)
            if fqn in self._shared or fqn in self.retyped:
                raise other_dtype(self._path, fqn, arr, dtype, fqn in self._shared)
            spec = self._spec(fqn, self._items[fqn], dtype)
            self.retyped[fqn] = dtype
            return create_array(
                self._root.store, path=f"{self._root.path}/{name}", overwrite=True, **spec
            )


_EXACT_FLOATS = {torch.float16: 2, torch.bfloat16: 2, torch.float32: 4, torch.float64: 8}


def widens(source: torch.dtype, dest: torch.dtype) -> bool:
    """Whether every value of ``source`` is exactly a value of ``dest`` (float16 into
    float32, int8 into int64, uint8 into int16), so writing one into the other loses nothing.

    Example:
        >>> widens(torch.float16, torch.float32), widens(torch.float32, torch.bfloat16)
        (True, False)
    """
    if source in _EXACT_FLOATS and dest in _EXACT_FLOATS:
        return dest.itemsize > source.itemsize or source == dest
    if source.is_floating_point or dest.is_floating_point or source.is_complex:
        return False
    if source == torch.bool or dest == torch.bool or dest.is_complex:
        return source == dest
    wider = dest.itemsize > source.itemsize
    if source.is_signed == dest.is_signed:
        return wider or source == dest
    return wider and dest.is_signed  # unsigned into a wider signed int


def other_dtype(
    path: Any, fqn: str, arr: Any, dtype: torch.dtype, shared: bool = False
) -> InvalidArgumentError:
    """The error for ``dtype`` data of key ``fqn`` bound for ``arr`` of another dtype
    (``shared``: an array other ranks write too, which one rank cannot lay out again).

    Example:
        >>> import torchzarr as tz
        >>> arr = tz.create_array("memory://", shape=(2,), dtype=torch.bfloat16)
        >>> str(other_dtype("ckpt", "w", arr, torch.float32))[:40]
        "ZarrStorageWriter('ckpt'): DCP key 'w' h"
    """
    where = ", which other ranks write too" if shared else ""
    return InvalidArgumentError(
        f"ZarrStorageWriter({path!r}): DCP key {fqn!r} holds {dtype} data, but its array "
        f"{arr.path} was laid out for {arr.dtype}{where}: DCP's plan caching reused plans "
        "made for another dtype (it compares keys and shapes only), or the planner's "
        "resolve_data changed the dtype (only widening, float16 into float32, is taken "
        "into an array other ranks write). Nothing was committed: with plan caching on, "
        "leave it off (DefaultSavePlanner(enable_plan_caching=False)) for state dicts with "
        "these keys and shapes in other dtypes; a planner that changes dtypes should "
        "change them in its plans too"
    )


def stored_metadata(
    metadata: Metadata, laid_out: dict[str, torch.dtype], results: Sequence[Sequence[WriteResult]]
) -> dict[str, Any]:
    """Correct ``metadata`` to what was stored: each tensor key's dtype is that of its
    array (``laid_out`` by the coordinator, or retyped by a rank, as its ``results``
    say), whatever the plans DCP's plan caching reused said. Returns the key -> array
    name map of the results (the metadata's ``storage_data``).

    Example:
        >>> md = Metadata({})
        >>> stored_metadata(md, {}, [[]])
        {}
    """
    names: dict[str, Any] = {}
    dtypes = dict(laid_out)
    for rank_results in results:
        for result in rank_results:
            data = result.storage_data
            if isinstance(data, dict):  # {"name", "dtype"}: an array a rank retyped
                dtypes[result.index.fqn] = vars(torch)[data["dtype"]]
                data = data["name"]
            names[result.index.fqn] = data
    entries = dict(metadata.state_dict_metadata)
    for fqn, entry in entries.items():
        dtype = dtypes.get(fqn)
        if isinstance(entry, TensorStorageMetadata) and dtype not in (None, entry.properties.dtype):
            properties = replace(entry.properties, dtype=dtype)
            entries[fqn] = TensorStorageMetadata(properties, entry.size, entry.chunks)
    metadata.state_dict_metadata = entries
    return names
