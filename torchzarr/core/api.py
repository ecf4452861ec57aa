"""Opening and creating nodes: ``open``, ``open_array``, ``open_group``, ``create_array``."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from torchzarr.core import nodes
from torchzarr.core.array import Array
from torchzarr.core.attributes import logical_data_type
from torchzarr.core.chunking import normalize_shape
from torchzarr.core.consolidated import load_consolidated, write_consolidated
from torchzarr.core.create import AUTO, array_metadata_from_args
from torchzarr.core.group import Group, node_from_metadata
from torchzarr.core.placement import group_metadata, write_new_node
from torchzarr.errors import (
    ArgumentTypeError,
    ArrayNotFoundError,
    GroupNotFoundError,
    InvalidArgumentError,
    NodeExistsError,
    NodeNotFoundError,
    ShapeMismatchError,
)
from torchzarr.storage.local import LocalStore
from torchzarr.storage.local_names import file_note
from torchzarr.storage.registry import resolve_store
from torchzarr.tensors import as_storage_array, rectangular, tensor_from_storage

__all__ = [
    "consolidate_metadata",
    "create_array",
    "create_group",
    "open",
    "open_array",
    "open_group",
]

MODES = ("r", "r+", "a", "w", "w-")


def _other_format(store: Any, path: str, zarr_format: int | None) -> str:
    """When ``zarr_format`` hid a node of the other format at ``path``, a note saying so."""
    if zarr_format is None:
        return ""
    other = nodes.read_node(store, path, 5 - zarr_format) if zarr_format in (2, 3) else None
    if other is None:
        return ""
    kind = "an array" if hasattr(other, "shape") else "a group"
    return (
        f": {kind} of Zarr v{other.zarr_format} is there, and zarr_format={zarr_format} was asked"
    )


def local_file_note(store: Any) -> str:
    """For a local store whose root is a file, or below one, a note saying so (what an
    error that found nothing there adds); "" for any other store."""
    return file_note(store.root) if isinstance(store, LocalStore) else ""


def _read_existing(
    store: Any, path: str, zarr_format: int | None, mode: str, use_consolidated: bool | None
) -> tuple[Any, dict[str, Any] | None]:
    """The node's metadata, and its consolidated members when they are to be used.

    By default consolidated metadata is used for read-only opens (``mode="r"``), where it
    cannot go stale under the reader's own writes; ``use_consolidated=True`` requires it,
    ``False`` ignores it. (A writable group lists its members from the store all the same:
    its consolidated entries are only looked for, not parsed.)
    """
    wanted = mode == "r" if use_consolidated is None else use_consolidated
    if not wanted:
        return nodes.read_node(store, path, zarr_format), None
    required = bool(use_consolidated)
    return load_consolidated(store, path, zarr_format, required=required, parse_members=mode == "r")


def _create_or_open_raced(
    create: Callable[[], Any],
    store: Any,
    path: str,
    zarr_format: int | None,
    mode: str,
    kind: type,
    check: Callable[[Any], None] | None = None,
) -> Any:
    """``create()``; in mode "a", a node of ``kind`` that another thread or process created
    after the caller looked for it is opened instead, as if it had been there then (after
    ``check(node)``, which raises where it does not fit); one of another kind re-raises."""
    try:
        return create()
    except NodeExistsError:
        if mode != "a":
            raise
        meta = nodes.read_node(store, path, zarr_format)
        node = None if meta is None else node_from_metadata(store, path, meta, False)
        if not isinstance(node, kind):
            raise
        if check is not None:
            check(node)
        return node


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise InvalidArgumentError(f"mode must be one of {MODES}, got {mode!r}")


def _check_create_kwargs(create_kwargs: dict[str, Any]) -> None:
    """Refuse keyword arguments that :func:`create_array` does not take (``path``,
    ``zarr_format``, ``storage_options`` and the mode are given apart)."""
    taken = _ARRAY_ARGUMENTS - {"path", "zarr_format", "storage_options", "overwrite"}
    unknown = sorted(set(create_kwargs) - taken)
    if unknown:
        raise ArgumentTypeError(
            f"unexpected keyword argument(s) {', '.join(unknown)}: the arguments creating an "
            f"array are {', '.join(sorted(taken))} (mode='w' replaces a node)"
        )


def _store(store: Any, mode: str, storage_options: dict[str, Any] | None) -> Any:
    return resolve_store(store, mode=mode, storage_options=storage_options)


def _shape_and_dtype_of(data: Any, shape: Any, dtype: Any) -> tuple[Any, Any]:
    """``create_array(data=...)``: shape and dtype from the data where not given."""
    if data is None:
        if shape is None or dtype is None:
            raise InvalidArgumentError("create_array needs shape= and dtype= (or data=)")
        return shape, dtype
    if not isinstance(data, torch.Tensor | np.ndarray):
        data = rectangular(data, "create_array's data= has no shape")
    data_shape = tuple(data.shape)
    if shape is not None and normalize_shape(shape) != data_shape:
        raise ShapeMismatchError(f"shape {shape!r} does not match the data's shape {data_shape}")
    return data_shape, data.dtype if dtype is None else dtype


def create_array(
    store: Any,
    *,
    shape: Any = None,
    dtype: Any = None,
    data: Any = None,
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
    overwrite: bool = False,
    path: str = "",
    storage_options: dict[str, Any] | None = None,
) -> Array:
    """Create an array and return it open for writing.

    Args:
        store: a path, URL (``memory://``, ``file://``, ...) or Store.
        shape, dtype: the array's shape and dtype (torch, numpy or name).
        data: a tensor, numpy array, list or scalar to write once the array exists;
            ``shape`` and ``dtype`` default to its own (given, ``dtype`` casts it).
        chunks: chunk shape; None picks about 1-4 MiB chunks.
        compressors: numcodecs codecs or short names; a preset ("fast": blosc lz4 +
            shuffle, "balanced": zstd 3, "small": blosc zstd 9 + shuffle); default zstd
            level 1; None for none.
        filters: numcodecs filters (v2) or array-to-array codecs (v3).
        fill_value: value of unwritten elements (default 0; in v2 ``null``, which reads as
            0 too and which xarray does not take for a missing-data marker).
        zarr_format: 3 (default) or 2; a group above the array must be of the same format.
        order: memory order of v2 chunks, "C" or "F".
        chunk_key_encoding: a chunk key encoding or its JSON (default: the format's).
        dimension_separator: ``"."`` or ``"/"`` between chunk coordinates in chunk keys
            (v2's ``dimension_separator``; in v3, the ``default`` encoding's separator).
        shards: shard shape (v3): each stored object holds a block of ``chunks``, with an
            index, so that millions of small chunks do not become millions of objects.
        overwrite: replace an existing node at ``path`` (deleting everything below it).
            Without it an existing node is an error, but keys no metadata owns (chunks
            a deleted array left behind) are kept, as zarr-python keeps them, and read
            as the new array's data: ``open_array(..., mode="w-")`` refuses them.

    Example:
        >>> import torchzarr as tz, torch
        >>> arr = tz.create_array("memory://", shape=(100, 8), dtype=torch.float32)
        >>> arr.chunks
        (100, 8)
        >>> tz.create_array("memory://", data=torch.arange(3))[:]
        tensor([0, 1, 2])
    """
    return _create_array(
        store,
        path,
        "w" if overwrite else "a",
        storage_options,
        data,
        shape=shape,
        dtype=dtype,
        chunks=chunks,
        compressors=compressors,
        filters=filters,
        fill_value=fill_value,
        zarr_format=zarr_format,
        order=order,
        dimension_names=dimension_names,
        attributes=attributes,
        chunk_key_encoding=chunk_key_encoding,
        dimension_separator=dimension_separator,
        shards=shards,
    )


#: the keyword arguments of :func:`create_array`
_ARRAY_ARGUMENTS = frozenset(inspect.signature(create_array).parameters) - {"store"}


def _create_array(
    store: Any,
    path: str,
    mode: str,
    storage_options: dict[str, Any] | None,
    data: Any = None,
    *,
    shape: Any = None,
    dtype: Any = None,
    **metadata_args: Any,
) -> Array:
    """:func:`create_array`, ``mode`` as ``placement.prepare_path`` takes it."""
    if isinstance(data, Array):
        data = data[...]  # its own dtype (numpy would widen bfloat16); from_array streams it
    shape, dtype = _shape_and_dtype_of(data, shape, dtype)
    metadata = array_metadata_from_args(shape=shape, dtype=dtype, **metadata_args)
    if data is not None:  # converted first: a value that does not fit fails before any change
        data = as_storage_array(data, logical_data_type(metadata))
    st = _store(store, "w" if mode == "w" else "a", storage_options)
    path = nodes.normalize_path(path, metadata.zarr_format)
    write_new_node(st, path, metadata, mode)
    array = Array(st, path, metadata)
    if data is not None:  # as a tensor of the array's dtype: bfloat16/float8 bits stay bits
        array[...] = (
            tensor_from_storage(data, array.data_type) if array.data_type.is_reinterpreted else data
        )
    return array


def create_group(
    store: Any,
    *,
    path: str = "",
    zarr_format: int = 3,
    overwrite: bool = False,
    attributes: dict[str, Any] | None = None,
    storage_options: dict[str, Any] | None = None,
) -> Group:
    """Create a group (and its missing parents, in its format; a group above it must be
    of the same format).

    Example:
        >>> g = create_group("memory://", attributes={"project": "demo"})
        >>> dict(g.attrs)
        {'project': 'demo'}
    """
    st = _store(store, "w" if overwrite else "a", storage_options)
    return _create_group(st, path, zarr_format, "w" if overwrite else "a", attributes)


def _create_group(
    store: Any, path: str, zarr_format: int, mode: str, attributes: dict[str, Any] | None
) -> Group:
    """:func:`create_group` in a resolved store, ``mode`` as ``placement.prepare_path``
    takes it."""
    metadata = group_metadata(zarr_format, attributes)
    path = nodes.normalize_path(path, zarr_format)
    write_new_node(store, path, metadata, mode)
    return Group(store, path, metadata)


def open(
    store: Any,
    mode: str = "a",
    *,
    path: str = "",
    zarr_format: int | None = None,
    use_consolidated: bool | None = None,
    storage_options: dict[str, Any] | None = None,
    **create_kwargs: Any,
) -> Array | Group:
    """Open the array or group at ``path`` (format detected). Mode "a" creates a group if empty.

    It takes the arguments of :func:`create_array` too, and sends them on as zarr-python's
    ``open`` does: given ``shape=`` (or ``data=``, whose shape it is), it opens an array as
    :func:`open_array` does, creating it with them where that one would. Otherwise an
    array stored at ``path`` is opened as it is; anything else is opened or created as a
    group by :func:`open_group`, which takes ``attributes=`` (so ``mode="w"`` replaces
    the node with a group holding them). The arguments only an array takes (``dtype=``,
    ``chunks=`` ...) raise ``ArgumentTypeError`` naming them when the node is, or would
    be created as, a group; nothing is written or deleted then. ``use_consolidated`` is
    used where a node is opened from the store's metadata; with ``shape=`` or ``data=``
    the array's own metadata is read, and ``use_consolidated=True`` is refused.

    Example:
        >>> node = open("memory://", mode="w")
        >>> type(node).__name__
        'Group'
        >>> open("memory://", mode="w", shape=(3,), dtype="float32").shape
        (3,)
        >>> dict(open("memory://", mode="w", attributes={"run": 1}).attrs)
        {'run': 1}
    """
    _check_mode(mode)
    _check_create_kwargs(create_kwargs)
    st = _store(store, mode, storage_options)
    if "shape" in create_kwargs or "data" in create_kwargs:
        if use_consolidated:
            raise InvalidArgumentError(
                "use_consolidated=True cannot open an array given shape= or data=: such an "
                "array is opened (or created) from its own metadata, as open_array does"
            )
        return open_array(st, mode, path=path, zarr_format=zarr_format, **create_kwargs)
    path = nodes.normalize_path(path, zarr_format)
    meta, members = (None, None)
    if mode not in ("w", "w-"):
        meta, members = _read_existing(st, path, zarr_format, mode, use_consolidated)
    if meta is not None:
        node = node_from_metadata(st, path, meta, mode == "r", members)
        if isinstance(node, Group):
            _refuse_array_arguments(create_kwargs, f"{path or '/'!r} in {st!r} is a group")
        return node
    if mode in ("r", "r+"):
        raise NodeNotFoundError(
            f"no array or group at {path or '/'!r} in {st!r}{_other_format(st, path, zarr_format)}"
            + local_file_note(st)
        )
    _refuse_array_arguments(create_kwargs, f"open creates a group at {path or '/'!r}")
    return open_group(st, mode, path=path, zarr_format=zarr_format, **create_kwargs)


#: the arguments of :func:`create_array` that :func:`open` passes to :func:`open_group` too
_GROUP_ARGUMENTS = frozenset({"attributes"})


def _refuse_array_arguments(create_kwargs: dict[str, Any], why: str) -> None:
    """Refuse the arguments of ``create_kwargs`` only an array takes, saying ``why`` a
    group is opened."""
    array_only = sorted(set(create_kwargs) - _GROUP_ARGUMENTS)
    if array_only:
        raise ArgumentTypeError(
            f"{why}, and {', '.join(f'{name}=' for name in array_only)} apply to arrays "
            "only: pass shape= (or data=) to open or create an array with them, or leave "
            f"them out (a group takes {', '.join(sorted(f'{n}=' for n in _GROUP_ARGUMENTS))})"
        )


def open_array(
    store: Any,
    mode: str = "a",
    *,
    path: str = "",
    zarr_format: int | None = None,
    storage_options: dict[str, Any] | None = None,
    **create_kwargs: Any,
) -> Array:
    """Open an array; with mode "a", "w" or "w-" and ``shape``/``dtype`` given, create it.

    Modes are zarr-python's: "r" read-only, "r+" read/write (must exist), "a" read/write
    (created if absent), "w" create (overwrite), "w-" create (fail if any key is under
    the path: a node, or chunks no metadata owns).

    Example:
        >>> arr = open_array("memory://", mode="w", shape=(3,), dtype="int8")
        >>> arr.shape
        (3,)
    """
    _check_mode(mode)
    _check_create_kwargs(create_kwargs)
    st = _store(store, mode, storage_options)
    path = nodes.normalize_path(path, zarr_format)
    if mode not in ("w", "w-"):
        meta = nodes.read_node(st, path, zarr_format)
        if meta is not None:
            node = node_from_metadata(st, path, meta, mode == "r")
            if not isinstance(node, Array):
                raise ArrayNotFoundError(f"{path or '/'!r} in {st!r} is a group, not an array")
            return node
        if mode in ("r", "r+") or ("shape" not in create_kwargs and "data" not in create_kwargs):
            hint = (
                "" if mode in ("r", "r+") else " (pass shape= and dtype=, or data=, to create it)"
            )
            raise ArrayNotFoundError(
                f"no array at {path or '/'!r} in {st!r}{_other_format(st, path, zarr_format)}"
                f"{local_file_note(st) or hint}"
            )
    if zarr_format is not None:
        create_kwargs["zarr_format"] = zarr_format
    data = create_kwargs.pop("data", None)
    return _create_or_open_raced(
        lambda: _create_array(st, path, mode, None, data, **create_kwargs),
        st,
        path,
        zarr_format,
        mode,
        Array,
    )


def open_group(
    store: Any,
    mode: str = "a",
    *,
    path: str = "",
    zarr_format: int | None = None,
    attributes: dict[str, Any] | None = None,
    use_consolidated: bool | None = None,
    storage_options: dict[str, Any] | None = None,
) -> Group:
    """Open a group; modes as :func:`open_array` (created when absent with "a", "w", "w-").

    Example:
        >>> root = open_group("memory://", mode="w")
        >>> root.require_group("exp1/run2").name
        '/exp1/run2'
    """
    _check_mode(mode)
    st = _store(store, mode, storage_options)
    path = nodes.normalize_path(path, zarr_format)
    if mode not in ("w", "w-"):
        meta, members = _read_existing(st, path, zarr_format, mode, use_consolidated)
        if meta is not None:
            node = node_from_metadata(st, path, meta, mode == "r", members)
            if not isinstance(node, Group):
                raise GroupNotFoundError(f"{path or '/'!r} in {st!r} is an array, not a group")
            return node
        if mode in ("r", "r+"):
            raise GroupNotFoundError(
                f"no group at {path or '/'!r} in {st!r}{_other_format(st, path, zarr_format)}"
                + local_file_note(st)
            )
    fmt = 3 if zarr_format is None else zarr_format
    return _create_or_open_raced(
        lambda: _create_group(st, path, fmt, mode, attributes), st, path, zarr_format, mode, Group
    )


def consolidate_metadata(
    store: Any,
    *,
    path: str = "",
    zarr_format: int | None = None,
    storage_options: dict[str, Any] | None = None,
) -> Group:
    """Gather the metadata of every node below a group into that group, as zarr-python does.

    v3 writes it inline in the group's ``zarr.json`` (``consolidated_metadata``); v2 writes
    ``.zmetadata``. Opening read-only then needs one request for the whole hierarchy.
    torchzarr's own changes below the group afterwards (new, deleted, resized nodes,
    attributes) update it as they are made; run it again after other tools changed the
    hierarchy. Returns the group, opened from the result.

    Example:
        >>> root = open_group("memory://demo-consolidate", mode="w")
        >>> _ = root.create_array("a/x", shape=(2,), dtype="int8")
        >>> sorted(consolidate_metadata("memory://demo-consolidate"))
        ['a']
    """
    st = _store(store, "a", storage_options)
    path = nodes.normalize_path(path, zarr_format)
    with nodes.node_lock(st, [path]):  # changes below wait: none is missed by the listing
        meta = nodes.read_node(st, path, zarr_format)
        if meta is None:
            note = local_file_note(st)
            raise GroupNotFoundError(f"no group at {path or '/'!r} in {st!r} to consolidate{note}")
        if hasattr(meta, "shape"):
            hint = "the store holds no group to consolidate"
            if path:
                hint = f"consolidate the group holding it, {path.rpartition('/')[0] or '/'!r}"
            raise GroupNotFoundError(f"{path or '/'!r} in {st!r} is an array, not a group: {hint}")
        root = Group(st, path, meta)
        updated = write_consolidated(st, path, root.member_metadata(), meta)
    return Group(st, path, updated)  # writable: it lists its members from the store
