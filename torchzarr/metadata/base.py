"""The common interface of array and group metadata, v2 and v3 alike."""

from __future__ import annotations

import abc
import dataclasses
from typing import Any

from torchzarr.codecs.base import ChunkSpec
from torchzarr.dtypes import DataType
from torchzarr.errors import MetadataError

__all__ = ["ArrayMetadata", "GroupMetadata", "check_int_tuple"]


def check_int_tuple(value: Any, *, key: str, where: str, minimum: int) -> tuple[int, ...]:
    """A JSON list of ints >= ``minimum`` as a tuple; MetadataError naming ``key`` otherwise.

    Example:
        >>> check_int_tuple([2, 3], key="shape", where="zarr.json", minimum=0)
        (2, 3)
    """
    if not isinstance(value, list | tuple) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= minimum for v in value
    ):
        raise MetadataError(f"{where}: {key} must be a list of ints >= {minimum}, got {value!r}")
    return tuple(int(v) for v in value)


class ArrayMetadata(abc.ABC):
    """What core needs from an array's metadata, whatever the format."""

    zarr_format: int
    shape: tuple[int, ...]
    chunk_shape: tuple[int, ...]
    data_type: DataType
    fill_value: Any
    attributes: dict[str, Any]
    dimension_names: tuple[str | None, ...] | None

    @abc.abstractmethod
    def chunk_key(self, chunk_coords: tuple[int, ...]) -> str:
        """Key of a chunk, relative to the array's path."""

    @abc.abstractmethod
    def codec_pipeline(self) -> Any:
        """The chunk pipeline (``V2Pipeline`` or ``V3Pipeline``) for a full chunk."""

    @abc.abstractmethod
    def to_json(self) -> dict[str, Any]:
        """The metadata document (``.zarray`` without attributes, or ``zarr.json``)."""

    @property
    @abc.abstractmethod
    def codec_names(self) -> list[str]:
        """Short descriptions of the codec chain, for ``Array.info``."""

    def chunk_spec(self) -> ChunkSpec:
        """The spec of one full decoded chunk (a v2 ``null`` fill reads as zero)."""
        fill = self.fill_value if self.fill_value is not None else self.data_type.storage.type(0)
        return ChunkSpec(tuple(self.chunk_shape), self.data_type.storage, fill)

    def evolve(self, **changes: Any) -> ArrayMetadata:
        """A copy with some fields replaced (``shape=...``, ``attributes=...``)."""
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


class GroupMetadata(abc.ABC):
    """What core needs from a group's metadata."""

    zarr_format: int
    attributes: dict[str, Any]
    node_type = "group"

    @abc.abstractmethod
    def to_json(self) -> dict[str, Any]:
        """The metadata document (``.zgroup`` or ``zarr.json``)."""

    def evolve(self, **changes: Any) -> GroupMetadata:
        """A copy with some fields replaced."""
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]
