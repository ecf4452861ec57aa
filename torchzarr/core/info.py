"""``Array.info`` and ``Group.info``: printable summaries of a node's layout and storage."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torchzarr.codecs.sharding import EMPTY
from torchzarr.core.printable import printable, printable_list
from torchzarr.errors import ChunkDecodeError

__all__ = ["ArrayInfo", "GroupInfo", "count_initialized", "stored_dtype_name"]

#: the damaged shards ``Array.info`` names (the count says how many there are in all)
_NAMED = 5


def stored_dtype_name(document: Mapping[str, Any]) -> Any:
    """The dtype a stored array document names: its v3 ``data_type`` (an extension type's
    ``name``, without its configuration) or its v2 ``dtype``.

    Example:
        >>> stored_dtype_name({"data_type": {"name": "fixed_length_utf32", "configuration": {}}})
        'fixed_length_utf32'
        >>> stored_dtype_name({"dtype": "<M8[ns]"})
        '<M8[ns]'
    """
    dtype = document.get("data_type", document.get("dtype"))
    return dtype.get("name", dtype) if isinstance(dtype, Mapping) else dtype


def count_initialized(
    indexes: Callable[[list[str]], Mapping[str, Any]],
    shards: Mapping[str, tuple[int, ...]],
    layout: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]],
    damaged: list[str] | None = None,
) -> int:
    """The inner chunks stored in ``shards`` (their keys and grid coordinates), counted from
    the shard indexes ``indexes(keys)`` reads; ``layout`` is the shard shape, the inner
    chunk shape and the array's shape (an edge shard's chunks past the array are left out).

    A shard whose index cannot be read raises its :class:`ChunkDecodeError`; with
    ``damaged`` (a list), its key is appended there instead and it counts no chunk.

    Example:
        >>> import numpy as np
        >>> class Index:
        ...     entries = np.array([[0, 8], [2**64 - 1, 2**64 - 1]], dtype=np.uint64)
        >>> def indexes(keys):
        ...     if "c/1" in keys:
        ...         raise ChunkDecodeError("shard 'c/1' is 1 bytes, shorter than its index")
        ...     return {key: Index() for key in keys}
        >>> damaged = []
        >>> count_initialized(indexes, {"c/0": (0,), "c/1": (1,)}, ((4,), (2,), (8,)), damaged)
        1
        >>> damaged
        ['c/1']
    """
    keys = list(shards)
    try:
        found = dict(indexes(keys))
    except ChunkDecodeError:
        if damaged is None:
            raise
        found = {}
        for key in keys:  # one at a time: the others still count
            try:
                found.update(indexes([key]))
            except ChunkDecodeError:
                damaged.append(key)
    grid, chunks, shape = layout
    count = 0
    for key, index in found.items():
        if index is not None:  # its inner chunks inside the array, stored
            inside = tuple(
                slice(0, -(-max(0, min(s, extent - c * s)) // k))
                for c, s, k, extent in zip(shards[key], grid, chunks, shape, strict=True)
            )
            count += int((~(index.entries[inside] == EMPTY).all(axis=-1)).sum())
    return count


def _human(n: int) -> str:
    if n >= 1 << 1000:  # past what a float holds: a power of two
        return f"about 2**{n.bit_length() - 1} B"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{n} B"
        value /= 1024
    return f"{n} B"  # pragma: no cover - the loop always returns


@dataclass(frozen=True)
class ArrayInfo:
    """Facts about an array; ``str(info)`` is a human table.

    Example:
        >>> import torchzarr as tz, torch
        >>> arr = tz.create_array("memory://", shape=(4,), dtype=torch.int32, chunks=(2,))
        >>> arr.info.nchunks, arr.info.nchunks_initialized
        (2, 0)
    """

    name: str
    zarr_format: int
    shape: tuple[int, ...]
    dtype: Any
    chunks: tuple[int, ...]
    codecs: tuple[str, ...]
    fill_value: Any
    store: str
    nbytes: int
    nbytes_stored: int
    nchunks: int
    nchunks_initialized: int
    read_only: bool
    shards: tuple[int, ...] | None = None
    dimension_names: tuple[str | None, ...] | None = None
    #: the shards whose index cannot be read (damaged, truncated): their chunks are not
    #: counted in ``nchunks_initialized``, and the table names them
    damaged_shards: tuple[str, ...] = ()

    @property
    def ratio(self) -> float:
        """Decoded bytes over stored bytes of the initialised chunks' share (inf if none);
        the stored bytes count the metadata documents too, as zarr-python counts them."""
        if not self.nbytes_stored or not self.nchunks_initialized:
            return float("inf")
        share = self.nbytes * self.nchunks_initialized / max(self.nchunks, 1)
        return share / self.nbytes_stored

    def __str__(self) -> str:
        rows = [
            ("Name", printable(self.name)),
            ("Zarr format", str(self.zarr_format)),
            ("Shape", str(self.shape)),
            ("Data type", str(self.dtype)),
            ("Chunk shape", str(self.chunks)),
            *([("Shard shape", str(self.shards))] if self.shards else []),
            *([("Dimension names", str(self.dimension_names))] if self.dimension_names else []),
            ("Codecs", ", ".join(self.codecs) or "none"),
            ("Fill value", repr(self.fill_value)),
            ("Store", printable(self.store)),
            ("Read-only", str(self.read_only)),
            ("No. bytes", f"{self.nbytes} ({_human(self.nbytes)})"),
            ("No. bytes stored", f"{self.nbytes_stored} ({_human(self.nbytes_stored)})"),
            ("Storage ratio", f"{self.ratio:.1f}"),
            ("Chunks initialized", f"{self.nchunks_initialized}/{self.nchunks}"),
        ]
        if self.damaged_shards:
            named = printable_list(self.damaged_shards, _NAMED)
            rows.append(
                (
                    "Damaged shards",
                    f"{len(self.damaged_shards)} ({named}): index unreadable, "
                    "their chunks not counted",
                )
            )
        return _table(rows)


def _table(rows: list[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}} : {v}" for k, v in rows)


@dataclass(frozen=True)
class GroupInfo:
    """Facts about a group and its direct members; ``str(info)`` is a human table.

    ``unsupported`` names the member arrays of dtypes torchzarr cannot hold,
    ``unsupported_metadata`` the members whose metadata it cannot read (an unknown codec,
    malformed metadata): :meth:`Group.tree` marks both "unsupported".

    Example:
        >>> import torchzarr as tz
        >>> g = tz.open_group("memory://", mode="w")
        >>> _ = g.create_array("x", shape=(2,), dtype="int8")
        >>> g.info.arrays, g.info.groups
        (('x',), ())
    """

    name: str
    zarr_format: int
    store: str
    read_only: bool
    arrays: tuple[str, ...]
    groups: tuple[str, ...]
    unsupported: tuple[str, ...]
    attributes: tuple[str, ...]
    consolidated: bool
    unsupported_metadata: tuple[str, ...] = ()

    def __str__(self) -> str:
        rows = [
            ("Name", printable(self.name)),
            ("Type", f"group (Zarr v{self.zarr_format})"),
            ("Store", printable(self.store)),
            ("Read-only", str(self.read_only)),
            ("Arrays", f"{len(self.arrays)} ({printable_list(self.arrays) or 'none'})"),
            ("Groups", f"{len(self.groups)} ({printable_list(self.groups) or 'none'})"),
        ]
        if self.unsupported:
            rows.append(("Unsupported dtypes", printable_list(self.unsupported)))
        if self.unsupported_metadata:
            rows.append(("Unsupported metadata", printable_list(self.unsupported_metadata)))
        rows.append(("Attributes", printable_list(self.attributes) or "none"))
        rows.append(("Consolidated", "yes" if self.consolidated else "no"))
        return _table(rows)
