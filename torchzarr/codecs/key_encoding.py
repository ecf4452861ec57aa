"""Chunk key encodings: chunk grid coordinates <-> store keys (``default``, ``v2``, custom)."""

from __future__ import annotations

import abc
import re
import threading
from types import MappingProxyType
from typing import Any, ClassVar

from torchzarr.errors import MetadataError, UnknownExtensionError

__all__ = [
    "ChunkKeyEncoding",
    "DefaultChunkKeyEncoding",
    "V2ChunkKeyEncoding",
    "chunk_key_encoding_from_json",
    "register_chunk_key_encoding",
    "registered_chunk_key_encodings",
]


class ChunkKeyEncoding(abc.ABC):
    """Maps chunk coordinates to a key relative to the array and back."""

    name: ClassVar[str]

    def __init__(self, separator: str) -> None:
        if separator not in (".", "/"):
            raise MetadataError(
                f"chunk_key_encoding {self.name!r}: separator must be '.' or '/', got {separator!r}"
            )
        self.separator = separator

    @abc.abstractmethod
    def encode(self, chunk_coords: tuple[int, ...]) -> str:
        """The key of the chunk at ``chunk_coords``."""

    @abc.abstractmethod
    def decode(self, key: str) -> tuple[int, ...]:
        """The chunk coordinates of ``key`` (MetadataError if it is not a chunk key)."""

    @property
    @abc.abstractmethod
    def pattern(self) -> str:
        """A regular expression matching every chunk key of this encoding."""

    def to_json(self) -> dict[str, Any]:
        """The ``chunk_key_encoding`` object of ``zarr.json``."""
        return {"name": self.name, "configuration": {"separator": self.separator}}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ChunkKeyEncoding) and self.to_json() == other.to_json()

    def __hash__(self) -> int:
        return hash((self.name, self.separator))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(separator={self.separator!r})"

    def _parse(self, parts: list[str], key: str) -> tuple[int, ...]:
        try:
            coords = tuple(int(p) for p in parts)
        except ValueError:
            raise MetadataError(f"{key!r} is not a {self.name} chunk key") from None
        if any(c < 0 for c in coords) or any(not p.isdigit() for p in parts):
            raise MetadataError(f"{key!r} is not a {self.name} chunk key")
        return coords


class DefaultChunkKeyEncoding(ChunkKeyEncoding):
    """v3 ``default``: ``c/1/2`` (or ``c.1.2``); the 0-d chunk is ``c``.

    Example:
        >>> DefaultChunkKeyEncoding().encode((1, 2)), DefaultChunkKeyEncoding().decode("c/1/2")
        ('c/1/2', (1, 2))
    """

    name = "default"

    def __init__(self, separator: str = "/") -> None:
        super().__init__(separator)

    def encode(self, chunk_coords: tuple[int, ...]) -> str:
        return self.separator.join(["c", *map(str, chunk_coords)])

    def decode(self, key: str) -> tuple[int, ...]:
        parts = key.split(self.separator)
        if parts[0] != "c":
            raise MetadataError(f"{key!r} is not a default chunk key")
        return self._parse(parts[1:], key)

    @property
    def pattern(self) -> str:
        return r"^c(" + re.escape(self.separator) + r"\d+)*$"


class V2ChunkKeyEncoding(ChunkKeyEncoding):
    """v2 keys: ``1.2`` (or ``1/2``); the 0-d chunk is ``0``.

    Example:
        >>> V2ChunkKeyEncoding().encode((1, 2)), V2ChunkKeyEncoding().encode(())
        ('1.2', '0')
    """

    name = "v2"

    def __init__(self, separator: str = ".") -> None:
        super().__init__(separator)

    def encode(self, chunk_coords: tuple[int, ...]) -> str:
        return self.separator.join(map(str, chunk_coords)) if chunk_coords else "0"

    def decode(self, key: str) -> tuple[int, ...]:
        if key == "0":
            return (0,)
        return self._parse(key.split(self.separator), key)

    @property
    def pattern(self) -> str:
        return r"^\d+(" + re.escape(self.separator) + r"\d+)*$"


_registry: dict[str, type[ChunkKeyEncoding]] = {
    "default": DefaultChunkKeyEncoding,
    "v2": V2ChunkKeyEncoding,
}
_lock = threading.Lock()


def register_chunk_key_encoding(
    name: str, cls: type[ChunkKeyEncoding], *, overwrite: bool = False
) -> None:
    """Register a custom encoding, read from ``{"name": name, "configuration": {...}}``.

    The class is built as ``cls(**configuration)``.

    Example:
        >>> register_chunk_key_encoding("default", DefaultChunkKeyEncoding, overwrite=True)
    """
    with _lock:
        if name in _registry and not overwrite:
            raise ValueError(f"chunk key encoding {name!r} is already registered")
        _registry[name] = cls


def registered_chunk_key_encodings() -> MappingProxyType[str, type[ChunkKeyEncoding]]:
    """A read-only view of the registered encodings."""
    return MappingProxyType(_registry)


def chunk_key_encoding_from_json(obj: Any) -> ChunkKeyEncoding:
    """Parse ``chunk_key_encoding`` (configuration optional, as tensorstore writes it).

    Example:
        >>> chunk_key_encoding_from_json({"name": "default"}).separator
        '/'
    """
    if isinstance(obj, ChunkKeyEncoding):
        return obj
    if isinstance(obj, str):
        obj = {"name": obj}
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        raise MetadataError(f"chunk_key_encoding must be an object with a name, got {obj!r}")
    cls = _registry.get(obj["name"])
    if cls is None:
        raise UnknownExtensionError(f"unknown chunk_key_encoding {obj['name']!r}")
    config = obj.get("configuration") or {}
    if not isinstance(config, dict):
        raise MetadataError(f"chunk_key_encoding configuration must be an object, got {config!r}")
    try:
        return cls(**config)
    except TypeError as err:
        raise MetadataError(f"chunk_key_encoding {obj['name']!r}: {err}") from None
