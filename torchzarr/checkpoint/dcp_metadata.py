"""DCP ``Metadata`` <-> JSON (so loading unpickles nothing), and the arrays' chunk layout.

DCP's own ``FileSystemWriter`` pickles its ``Metadata``. Every field the default planners
fill is plain data, so it round-trips through JSON exactly:

* ``state_dict_metadata``: per key, ``{"kind": "tensor", "dtype", "size", "chunks":
  [[offsets, sizes], ...], "requires_grad"}`` or ``{"kind": "bytes"}``;
* ``planner_data`` (the default planner's key -> object path mapping; paths mix str and int
  keys) as typed JSON (:mod:`torchzarr.checkpoint.values`), so tuples and int keys survive;
* ``storage_data``: key -> array path inside the checkpoint version (torchzarr's own);
* ``storage_meta`` and ``version`` as strings.

A custom planner that puts objects typed JSON cannot hold into ``planner_data`` gets an
:class:`~torchzarr.checkpoint.values.UnrepresentableError` at save time, never a pickle.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch.distributed.checkpoint.metadata import (
    BytesStorageMetadata,
    ChunkStorageMetadata,
    Metadata,
    StorageMeta,
    TensorProperties,
    TensorStorageMetadata,
)

from torchzarr.checkpoint.values import UnrepresentableError, decode_value, encode_value
from torchzarr.errors import MetadataError

__all__ = [
    "DCP_FORMAT",
    "KIND",
    "aligned_chunks",
    "box_region",
    "boxes_tile",
    "metadata_from_json",
    "metadata_to_json",
]

#: Version of the JSON layout below.
DCP_FORMAT = 1
#: ``kind`` field of the manifest of a DCP checkpoint.
KIND = "torch.distributed.checkpoint"


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _dtype(name: Any, where: str = "DCP metadata") -> torch.dtype:
    dtype = vars(torch).get(str(name))  # not getattr: torch's __getattr__ imports submodules
    if not isinstance(dtype, torch.dtype):
        raise MetadataError(f"{where} names an unknown dtype {name!r}")
    return dtype


def _sizes(value: Any, where: str, ndim: int | None = None) -> torch.Size:
    """``value`` as a ``torch.Size`` of whole numbers >= 0 (``ndim`` of them when given)."""
    good = isinstance(value, list) and (ndim is None or len(value) == ndim)
    if good and all(type(v) is int and v >= 0 for v in value):
        return torch.Size(value)
    rank = "" if ndim is None else f"{ndim} "
    raise MetadataError(f"{where} is {value!r}, not a list of {rank}whole numbers >= 0")


def _entry_to_json(key: str, entry: Any) -> dict[str, Any]:
    if isinstance(entry, BytesStorageMetadata):
        return {"kind": "bytes"}
    if isinstance(entry, TensorStorageMetadata):
        out: dict[str, Any] = {
            "kind": "tensor",
            "dtype": _dtype_name(entry.properties.dtype),
            "size": list(entry.size),
            "chunks": [[list(c.offsets), list(c.sizes)] for c in entry.chunks],
        }
        if entry.properties.requires_grad:
            out["requires_grad"] = True
        return out
    raise UnrepresentableError(
        f"DCP metadata for {key!r} is a {type(entry).__qualname__}; only tensor and bytes "
        "entries are stored"
    )


def _entry_from_json(key: str, doc: Any, source: str = "DCP metadata") -> Any:
    where = f"{source}: entry {key!r}"
    if not isinstance(doc, dict) or doc.get("kind") not in ("tensor", "bytes"):
        raise MetadataError(f"{where} is malformed: {doc!r}")
    if doc["kind"] == "bytes":
        return BytesStorageMetadata()
    missing = [field for field in ("dtype", "size", "chunks") if field not in doc]
    if missing:
        raise MetadataError(f"{where} is malformed: a tensor entry without {missing}: {doc!r}")
    requires_grad = doc.get("requires_grad", False)
    if not isinstance(requires_grad, bool):
        raise MetadataError(f"{where}: requires_grad is {requires_grad!r}, not a bool")
    properties = TensorProperties(dtype=_dtype(doc["dtype"], where), requires_grad=requires_grad)
    size = _sizes(doc["size"], f"{where}: size")
    if not isinstance(doc["chunks"], list):
        raise MetadataError(f"{where}: chunks is {doc['chunks']!r}, not a list of boxes")
    chunks = []
    for i, box in enumerate(doc["chunks"]):
        if not (isinstance(box, list) and len(box) == 2):
            raise MetadataError(f"{where}: chunk {i} is {box!r}, not [offsets, sizes]")
        offsets = _sizes(box[0], f"{where}: offsets of chunk {i}", len(size))
        sizes = _sizes(box[1], f"{where}: sizes of chunk {i}", len(size))
        if any(o + n > extent for o, n, extent in zip(offsets, sizes, size, strict=True)):
            raise MetadataError(
                f"{where}: chunk {i} (offsets {list(offsets)}, sizes {list(sizes)}) reaches "
                f"past the tensor's size {list(size)}"
            )
        chunks.append(ChunkStorageMetadata(offsets=offsets, sizes=sizes))
    return TensorStorageMetadata(properties, size, chunks)


def _storage_meta(doc: Any, source: str) -> StorageMeta:
    if not isinstance(doc, dict):
        return StorageMeta()
    for field in ("checkpoint_id", "save_id"):
        if not isinstance(doc.get(field), (str, type(None))):
            raise MetadataError(f"{source}: storage_meta.{field} is {doc[field]!r}, not a string")
    modules = doc.get("modules") or []
    if not (isinstance(modules, list) and all(isinstance(m, str) for m in modules)):
        raise MetadataError(f"{source}: storage_meta.modules is {modules!r}, not a list of strings")
    return StorageMeta(
        checkpoint_id=doc.get("checkpoint_id"), save_id=doc.get("save_id"), modules=modules
    )


def metadata_to_json(metadata: Metadata) -> dict[str, Any]:
    """The JSON document of a DCP ``Metadata`` (inverse of :func:`metadata_from_json`).

    Raises:
        UnrepresentableError: a field holds an object typed JSON cannot hold.

    Example:
        >>> from torch.distributed.checkpoint.metadata import BytesStorageMetadata, Metadata
        >>> metadata_to_json(Metadata({"step": BytesStorageMetadata()}))["state_dict_metadata"]
        {'step': {'kind': 'bytes'}}
    """
    meta = metadata.storage_meta
    return {
        "format": DCP_FORMAT,
        "version": metadata.version,
        "state_dict_metadata": {
            key: _entry_to_json(key, entry) for key, entry in metadata.state_dict_metadata.items()
        },
        "planner_data": encode_value(metadata.planner_data, ("planner_data",)),
        "storage_data": encode_value(metadata.storage_data, ("storage_data",)),
        "storage_meta": None
        if meta is None
        else {
            "checkpoint_id": None if meta.checkpoint_id is None else str(meta.checkpoint_id),
            "save_id": meta.save_id,
            "modules": list(meta.modules),
        },
    }


def metadata_from_json(doc: Any, *, source: str = "DCP metadata") -> Metadata:
    """The DCP ``Metadata`` stored as ``doc`` by :func:`metadata_to_json`; runs no code.

    Args:
        doc: the JSON document.
        source: what ``doc`` is, for error messages (``ZarrStorageReader`` names the
            ``zarr.json`` it read it from).

    Raises:
        MetadataError: ``doc`` is malformed (a field missing or of the wrong type, a
            negative size or offset, an unknown dtype); the message names ``source``
            and the entry at fault.

    Example:
        >>> from torch.distributed.checkpoint.metadata import BytesStorageMetadata, Metadata
        >>> md = Metadata({"step": BytesStorageMetadata()}, planner_data={"step": ("step",)})
        >>> metadata_from_json(metadata_to_json(md)).planner_data
        {'step': ('step',)}
    """
    if not isinstance(doc, dict) or not isinstance(doc.get("state_dict_metadata"), dict):
        raise MetadataError(f"{source} is missing or malformed (no state_dict_metadata)")
    fmt = doc.get("format", 0)
    if type(fmt) is not int:
        raise MetadataError(f"{source} has format {fmt!r}, not a whole number")
    if fmt > DCP_FORMAT:
        raise MetadataError(f"{source} has format {fmt}; this torchzarr reads up to {DCP_FORMAT}")
    if not isinstance(doc.get("version"), (str, type(None))):
        raise MetadataError(f"{source} has version {doc['version']!r}, not a string")
    entries = {
        key: _entry_from_json(key, entry, source)
        for key, entry in doc["state_dict_metadata"].items()
    }
    try:
        planner_data = decode_value(doc.get("planner_data"), ("planner_data",))
        storage_data = decode_value(doc.get("storage_data"), ("storage_data",))
    except MetadataError as err:
        raise MetadataError(f"{source}: {err}") from None
    return Metadata(
        state_dict_metadata=entries,
        planner_data=planner_data,
        storage_data=storage_data,
        storage_meta=_storage_meta(doc.get("storage_meta"), source),
        version=doc.get("version"),
    )


Box = tuple[Sequence[int], Sequence[int]]  # (offsets, sizes)


def box_region(offsets: Sequence[int], sizes: Sequence[int]) -> tuple[slice, ...]:
    """The selection of the box at ``offsets`` of extent ``sizes``.

    Example:
        >>> box_region((2, 0), (3, 4))
        (slice(2, 5, None), slice(0, 4, None))
    """
    return tuple(slice(o, o + s) for o, s in zip(offsets, sizes, strict=True))


#: Most cells of the grid of box boundaries that :func:`boxes_tile` paints to check.
MAX_TILE_CELLS = 1 << 22


def boxes_tile(shape: Sequence[int], boxes: Sequence[Box]) -> bool:
    """Whether ``boxes`` cover the tensor of ``shape`` exactly once: inside it, disjoint,
    leaving no gap.

    The box boundaries cut each axis into intervals; every box is a block of the grid of
    those cells, so the boxes tile the tensor when their cells add up to the grid's and
    none is painted twice. Cost: sorting the boundaries, then, when each box is one cell
    (a sharding on a mesh), a set of the boxes' cells; else one pass over the cells, and
    a grid of more than :data:`MAX_TILE_CELLS` cells counts as not tiled (the caller then
    claims less).

    Example:
        >>> boxes_tile((8,), [((0,), (4,)), ((4,), (4,))])
        True
        >>> boxes_tile((8,), [((0,), (4,)), ((2,), (4,))])  # overlap [2, 4), gap [6, 8)
        False
    """
    if math.prod(shape) == 0:
        return True  # nothing to cover
    for offsets, sizes in boxes:
        if any(o < 0 or s < 0 or o + s > n for o, s, n in zip(offsets, sizes, shape, strict=True)):
            return False
    cuts = [
        sorted({0, extent, *(o[axis] for o, _ in boxes), *(o[axis] + s[axis] for o, s in boxes)})
        for axis, extent in enumerate(shape)
    ]
    cell_of = [{bound: i for i, bound in enumerate(axis_cuts)} for axis_cuts in cuts]
    grid = tuple(len(axis_cuts) - 1 for axis_cuts in cuts)
    blocks = []
    for offsets, sizes in boxes:
        if math.prod(sizes) == 0:
            continue
        block = tuple(
            slice(cell[o], cell[o + s]) for cell, o, s in zip(cell_of, offsets, sizes, strict=True)
        )
        blocks.append(block)
    if sum(math.prod(b.stop - b.start for b in block) for block in blocks) != math.prod(grid):
        return False
    if all(b.stop - b.start == 1 for block in blocks for b in block):  # a mesh: one cell each
        return len({tuple(b.start for b in block) for block in blocks}) == len(blocks)
    if math.prod(grid) > MAX_TILE_CELLS:
        return False
    painted = torch.zeros(grid, dtype=torch.bool)
    for block in blocks:
        if painted[block].any():
            return False  # an overlap: with the same cell count, a gap elsewhere
        painted[block] = True
    return True


def _largest_divisor(n: int, at_most: int) -> int:
    best = 1
    for d in range(1, math.isqrt(n) + 1):
        if n % d == 0:
            for q in (d, n // d):
                if best < q <= at_most:
                    best = q
    return best


def aligned_chunks(
    shape: Sequence[int], boxes: Sequence[Box], itemsize: int, chunk_bytes: int
) -> tuple[int, ...]:
    """A chunk shape whose every chunk lies inside one of ``boxes`` (the ranks' shards).

    Per axis, the chunk extent divides every interior box boundary (their gcd), so each
    rank writes whole chunks and no chunk has two writers. Chunks larger than
    ``chunk_bytes`` are then split by a divisor of their extent, axis by axis; an axis
    whose best divisor would make chunks under 1/16 of ``chunk_bytes`` (a prime extent)
    is left whole and the next axis split instead (one large chunk only when no axis can).

    Example:
        >>> aligned_chunks((10, 4), [((0, 0), (5, 4)), ((5, 0), (5, 4))], 4, 2**20)
        (5, 4)
        >>> aligned_chunks((9, 4), [((0, 0), (5, 4)), ((5, 0), (4, 4))], 4, 2**20)
        (5, 4)
        >>> aligned_chunks((1009, 64), [((0, 0), (1009, 64))], 4, 16384)  # 1009 is prime
        (1009, 4)
    """
    chunk = []
    for axis, extent in enumerate(shape):
        step = 0
        for offsets, sizes in boxes:
            for bound in (offsets[axis], offsets[axis] + sizes[axis]):
                if 0 < bound < extent:
                    step = math.gcd(step, bound)
        chunk.append(step or max(1, extent))
    nbytes = itemsize * math.prod(chunk)
    for axis, extent in enumerate(chunk):
        if nbytes <= chunk_bytes:
            break
        rest = nbytes // extent
        split = _largest_divisor(extent, max(1, chunk_bytes // rest))
        # A poor divisor (a prime extent) would make tiny chunks: split the next axis.
        if rest * split * 16 < chunk_bytes and split < extent:
            continue
        chunk[axis] = split
        nbytes = rest * split
    return tuple(chunk)
