"""The common interface of array and group metadata, v2 and v3 alike, and shared validators."""

from __future__ import annotations

import abc
import dataclasses
from typing import TYPE_CHECKING, Any

import numpy as np

from torchzarr.codecs.base import ChunkSpec
from torchzarr.dtypes import DataType, raw_bits_dtype
from torchzarr.errors import MetadataError
from torchzarr.metadata.fill import fill_key

if TYPE_CHECKING:
    from torchzarr.codecs.key_encoding import ChunkKeyEncoding
    from torchzarr.codecs.pipeline import ChunkPipeline

__all__ = [
    "MAX_NDIM",
    "ArrayMetadata",
    "GroupMetadata",
    "check_attributes",
    "check_int_tuple",
    "chunks_of_empty_axes",
    "describe_codec",
]

#: shapes and chunk shapes stay below 2**63 so element counts and offsets fit int64
_MAX_EXTENT = 2**63 - 1
#: numpy arrays, which every chunk is decoded into, have at most this many dimensions
MAX_NDIM = 64


def check_int_tuple(value: Any, *, key: str, where: str, minimum: int) -> tuple[int, ...]:
    """A list of integers >= ``minimum`` as a tuple of ints; MetadataError naming ``key``.

    Bools and floats are refused (``4.0`` is not a valid extent); numpy integers pass; more
    than :data:`MAX_NDIM` entries are refused.

    Example:
        >>> check_int_tuple([2, 3], key="shape", where="zarr.json", minimum=0)
        (2, 3)
    """
    if not isinstance(value, list | tuple):
        raise MetadataError(f"{where}: {key} must be a list of integers, got {value!r}")
    if len(value) > MAX_NDIM:
        raise MetadataError(
            f"{where}: {key} has {len(value)} dimensions; at most {MAX_NDIM} are supported "
            "(numpy, which decodes every chunk, holds no more)"
        )
    for v in value:
        if isinstance(v, bool | np.bool_) or not isinstance(v, int | np.integer):
            raise MetadataError(f"{where}: {key} must hold integers, got {v!r} in {value!r}")
        if not minimum <= v <= _MAX_EXTENT:
            raise MetadataError(
                f"{where}: {key} entries must be >= {minimum} (and < 2**63), got {v} in "
                f"{list(value)!r}"
            )
    return tuple(int(v) for v in value)


def chunks_of_empty_axes(
    chunks: tuple[int, ...], shape: tuple[int, ...], *, key: str, where: str
) -> tuple[int, ...]:
    """``chunks`` read from a document, a 0 on an axis of extent 0 read as 1.

    zarr-python writes ``chunks: [0]`` for a ``(0,)`` array when asked to; such an axis
    holds no chunk at all, so an extent of 1 reads the same and keeps the grid arithmetic
    defined. A 0 on an axis with elements is a :class:`MetadataError` naming ``key``.

    Example:
        >>> chunks_of_empty_axes((0, 4), (0, 8), key="chunks", where=".zarray")
        (1, 4)
    """
    if 0 not in chunks:
        return chunks
    for c, n in zip(chunks, shape, strict=False):
        if c == 0 and (n != 0 or len(chunks) != len(shape)):
            raise MetadataError(
                f"{where}: {key} entries must be >= 1 (and < 2**63), got 0 in {list(chunks)!r} "
                f"(0 is read only on an axis of extent 0; shape is {list(shape)!r})"
            )
    return tuple(c or 1 for c in chunks)


def check_attributes(value: Any, *, where: str) -> dict[str, Any]:
    """Attributes as a plain dict with str keys; MetadataError otherwise.

    Example:
        >>> check_attributes({"a": 1}, where="zarr.json")
        {'a': 1}
    """
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise MetadataError(f"{where}: attributes must be an object with str keys, got {value!r}")
    return dict(value)


def _describe_value(value: Any) -> str:
    if isinstance(value, dict) and isinstance(value.get("name") or value.get("id"), str):
        return describe_codec(value)
    if isinstance(value, list):
        return "[" + ", ".join(_describe_value(v) for v in value) + "]"
    return repr(value) if isinstance(value, str) else str(value)


def describe_codec(obj: dict[str, Any]) -> str:
    """A short human description of a codec's JSON (v3 ``name`` or v2 ``id`` form).

    Example:
        >>> describe_codec({"name": "zstd", "configuration": {"level": 0, "checksum": False}})
        'zstd(level=0, checksum=False)'
        >>> describe_codec({"id": "blosc", "cname": "lz4"})
        "blosc(cname='lz4')"
    """
    if "name" in obj:
        name, config = str(obj["name"]), obj.get("configuration") or {}
    else:
        name, config = str(obj.get("id")), {k: v for k, v in obj.items() if k != "id"}
    if not config:
        return name
    return f"{name}(" + ", ".join(f"{k}={_describe_value(v)}" for k, v in config.items()) + ")"


class ArrayMetadata(abc.ABC):
    """What core needs from an array's metadata, whatever the format.

    Implementations are frozen dataclasses; equality compares every field, fill values by
    :func:`~torchzarr.metadata.fill.fill_key` (NaN equals NaN, ``0.0`` differs from ``-0.0``).

    Example:
        >>> from torchzarr.metadata import build_array_metadata
        >>> from torchzarr.dtypes import data_type
        >>> meta = build_array_metadata(zarr_format=3, shape=(10,), chunk_shape=(4,),
        ...     data_type=data_type("float32"), fill_value=float("nan"))
        >>> meta.chunk_key((2,)), meta.chunk_spec().shape
        ('c/2', (4,))
    """

    zarr_format: int
    shape: tuple[int, ...]
    chunk_shape: tuple[int, ...]
    data_type: DataType
    fill_value: np.generic | None
    attributes: dict[str, Any]
    dimension_names: tuple[str | None, ...] | None
    chunk_key_encoding: ChunkKeyEncoding

    @property
    def ndim(self) -> int:
        """Number of dimensions."""
        return len(self.shape)

    def chunk_key(self, chunk_coords: tuple[int, ...]) -> str:
        """Key of a chunk, relative to the array's path (``"c/0/1"``, ``"0.1"``)."""
        return self.chunk_key_encoding.encode(chunk_coords)

    @abc.abstractmethod
    def codec_pipeline(self) -> ChunkPipeline:
        """The chunk pipeline (``V2Pipeline`` or ``V3Pipeline``) for a full chunk."""

    @abc.abstractmethod
    def to_json(self) -> dict[str, Any]:
        """The metadata document (``.zarray`` without attributes, or ``zarr.json``)."""

    @property
    @abc.abstractmethod
    def codec_names(self) -> list[str]:
        """The names of the codec chain, in order (``["bytes", "zstd"]``)."""

    @property
    @abc.abstractmethod
    def codecs_repr(self) -> list[str]:
        """One short description per codec with its settings, for ``Array.info``."""

    def chunk_spec(self) -> ChunkSpec:
        """The spec of one full decoded chunk (a v2 ``null`` fill reads as zero)."""
        fill = self.fill_value if self.fill_value is not None else self.data_type.storage.type(0)
        held = raw_bits_dtype(self.attributes, self.data_type) or self.data_type
        return ChunkSpec(tuple(self.chunk_shape), self.data_type.storage, fill, held)

    def evolve(self, **changes: Any) -> ArrayMetadata:
        """A validated copy with some fields replaced (``shape=...``, ``attributes=...``).

        Raises:
            MetadataError: an unknown field, or a value the metadata cannot hold.
        """
        return _evolve(self, changes)

    def __eq__(self, other: object) -> bool:
        if type(self) is not type(other):
            return NotImplemented
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            if not f.compare:
                continue
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if f.name == "fill_value":
                if fill_key(mine, self.data_type) != fill_key(theirs, self.data_type):
                    return False
            elif mine != theirs:
                return False
        return True

    __hash__ = None  # type: ignore[assignment]  # attributes are mutable dicts


class GroupMetadata(abc.ABC):
    """What core needs from a group's metadata.

    Example:
        >>> from torchzarr.metadata import GroupMetadataV3
        >>> GroupMetadataV3(attributes={"a": 1}).evolve(attributes={}).attributes
        {}
    """

    zarr_format: int
    attributes: dict[str, Any]
    node_type = "group"

    @abc.abstractmethod
    def to_json(self) -> dict[str, Any]:
        """The metadata document (``.zgroup`` or ``zarr.json``)."""

    def evolve(self, **changes: Any) -> GroupMetadata:
        """A validated copy with some fields replaced."""
        return _evolve(self, changes)


def _evolve(meta: Any, changes: dict[str, Any]) -> Any:
    names = {f.name for f in dataclasses.fields(meta) if f.init}
    unknown = sorted(set(changes) - names)
    if unknown:
        raise MetadataError(
            f"{type(meta).__name__}.evolve: unknown field(s) {unknown} (fields: {sorted(names)})"
        )
    return dataclasses.replace(meta, **changes)
