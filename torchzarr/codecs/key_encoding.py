"""Chunk key encodings: chunk grid coordinates <-> store keys (``default``, ``v2``, custom)."""

from __future__ import annotations

import abc
import re
from types import MappingProxyType
from typing import Any, ClassVar

from torchzarr.errors import MetadataError, UnknownExtensionError
from torchzarr.forksafe import new_lock

__all__ = [
    "ChunkKeyEncoding",
    "DefaultChunkKeyEncoding",
    "V2ChunkKeyEncoding",
    "chunk_key_encoding_from_json",
    "register_chunk_key_encoding",
    "registered_chunk_key_encodings",
]

# One coordinate as the encoders write it: decimal, no sign, no leading zeros. Decoding only
# canonical keys means every chunk has exactly one key (a stray "c/01" is not chunk (1,)).
_COORD = r"(?:0|[1-9][0-9]*)"
_COORD_RE = re.compile(_COORD)


class ChunkKeyEncoding(abc.ABC):
    """Maps chunk grid coordinates to a key relative to the array's path, and back.

    Subclasses set ``name`` (the ``chunk_key_encoding`` name in ``zarr.json``), implement
    :meth:`encode`, :meth:`decode` and :attr:`pattern`, and return their JSON settings from
    :meth:`configuration`; the registry builds them as ``cls(**configuration)``.

    Example:
        >>> enc = chunk_key_encoding_from_json({"name": "default"})
        >>> enc.encode((0, 3)), enc.decode("c/0/3")
        ('c/0/3', (0, 3))
    """

    name: ClassVar[str]

    @abc.abstractmethod
    def encode(self, chunk_coords: tuple[int, ...]) -> str:
        """The key of the chunk at ``chunk_coords``."""

    @abc.abstractmethod
    def decode(self, key: str, ndim: int | None = None) -> tuple[int, ...]:
        """The chunk coordinates of ``key``; MetadataError if it is not a chunk key.

        ``ndim``, when given, is the array's number of dimensions: keys of another length
        are refused, and ambiguous keys (the v2 ``"0"``) resolve to that length.
        """

    @property
    @abc.abstractmethod
    def pattern(self) -> str:
        """A regular expression (for ``re.fullmatch``) matching exactly the keys ``decode`` accepts."""

    def configuration(self) -> dict[str, Any]:
        """The ``configuration`` object of the JSON form (empty by default)."""
        return {}

    def to_json(self) -> dict[str, Any]:
        """The ``chunk_key_encoding`` object of ``zarr.json`` (configuration always written).

        Example:
            >>> V2ChunkKeyEncoding("/").to_json()
            {'name': 'v2', 'configuration': {'separator': '/'}}
        """
        return {"name": self.name, "configuration": self.configuration()}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ChunkKeyEncoding):
            return NotImplemented
        return type(self) is type(other) and self.to_json() == other.to_json()

    def __hash__(self) -> int:
        return hash((type(self), repr(self.to_json())))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.configuration().items())
        return f"{type(self).__name__}({args})"


class _SeparatedEncoding(ChunkKeyEncoding):
    """Shared part of ``default`` and ``v2``: decimal coordinates joined by ``.`` or ``/``."""

    def __init__(self, separator: str) -> None:
        if separator not in (".", "/"):
            raise MetadataError(
                f"chunk_key_encoding {self.name!r}: separator must be '.' or '/', got {separator!r}"
            )
        self.separator = separator

    def configuration(self) -> dict[str, Any]:
        return {"separator": self.separator}

    def _check_coords(self, chunk_coords: tuple[int, ...]) -> None:
        if chunk_coords and min(chunk_coords) < 0:
            raise MetadataError(
                f"chunk_key_encoding {self.name!r}: chunk coordinates {chunk_coords!r} must be >= 0"
            )

    def _parse(self, parts: list[str], key: str, ndim: int | None) -> tuple[int, ...]:
        if not all(_COORD_RE.fullmatch(p) for p in parts):
            raise MetadataError(f"{key!r} is not a {self.name!r} chunk key")
        if ndim is not None and len(parts) != ndim:
            raise MetadataError(
                f"{key!r} is a chunk key of {len(parts)} dims, the array has {ndim}"
            )
        return tuple(int(p) for p in parts)


class DefaultChunkKeyEncoding(_SeparatedEncoding):
    """The v3 ``default`` encoding: ``c/1/2`` (or ``c.1.2``); the 0-d chunk is ``c``.

    Example:
        >>> enc = DefaultChunkKeyEncoding()
        >>> enc.encode((1, 2)), enc.encode(()), enc.decode("c/1/2")
        ('c/1/2', 'c', (1, 2))
    """

    name = "default"

    def __init__(self, separator: str = "/") -> None:
        super().__init__(separator)

    def encode(self, chunk_coords: tuple[int, ...]) -> str:
        self._check_coords(chunk_coords)
        return self.separator.join(["c", *map(str, chunk_coords)])

    def decode(self, key: str, ndim: int | None = None) -> tuple[int, ...]:
        parts = key.split(self.separator)
        if parts[0] != "c":
            raise MetadataError(f"{key!r} is not a 'default' chunk key (keys start with 'c')")
        return self._parse(parts[1:], key, ndim)

    @property
    def pattern(self) -> str:
        return "c(?:" + re.escape(self.separator) + _COORD + ")*"


class V2ChunkKeyEncoding(_SeparatedEncoding):
    """Zarr v2 keys: ``1.2`` (or ``1/2``); the 0-d chunk is ``0``.

    ``decode("0")`` is ``(0,)`` unless ``ndim=0`` says the array is 0-d.

    Example:
        >>> enc = V2ChunkKeyEncoding()
        >>> enc.encode((1, 2)), enc.encode(()), enc.decode("0", ndim=0)
        ('1.2', '0', ())
    """

    name = "v2"

    def __init__(self, separator: str = ".") -> None:
        super().__init__(separator)

    def encode(self, chunk_coords: tuple[int, ...]) -> str:
        self._check_coords(chunk_coords)
        return self.separator.join(map(str, chunk_coords)) if chunk_coords else "0"

    def decode(self, key: str, ndim: int | None = None) -> tuple[int, ...]:
        if key == "0" and ndim == 0:
            return ()
        return self._parse(key.split(self.separator), key, ndim)

    @property
    def pattern(self) -> str:
        return _COORD + "(?:" + re.escape(self.separator) + _COORD + ")*"


_registry: dict[str, type[ChunkKeyEncoding]] = {
    "default": DefaultChunkKeyEncoding,
    "v2": V2ChunkKeyEncoding,
}
_lock = new_lock()


def register_chunk_key_encoding(
    name: str, cls: type[ChunkKeyEncoding], *, overwrite: bool = False
) -> None:
    """Make ``{"name": name, "configuration": {...}}`` build ``cls(**configuration)``.

    Raises:
        MetadataError: ``cls`` is not a ChunkKeyEncoding, or ``name`` is taken and
            ``overwrite`` is false.

    Example:
        >>> register_chunk_key_encoding("default", DefaultChunkKeyEncoding, overwrite=True)
    """
    if not isinstance(name, str) or not name:
        raise MetadataError(f"chunk key encoding name must be a non-empty str, got {name!r}")
    if not (isinstance(cls, type) and issubclass(cls, ChunkKeyEncoding)):
        raise MetadataError(f"chunk key encoding {name!r}: {cls!r} is not a ChunkKeyEncoding")
    with _lock:
        if name in _registry and not overwrite and _registry[name] is not cls:
            raise MetadataError(
                f"chunk key encoding {name!r} is already registered (pass overwrite=True)"
            )
        _registry[name] = cls


def registered_chunk_key_encodings() -> MappingProxyType[str, type[ChunkKeyEncoding]]:
    """A read-only view of the registered encodings.

    Example:
        >>> {"default", "v2"} <= set(registered_chunk_key_encodings())  # plug-ins may add more
        True
    """
    return MappingProxyType(_registry)


def chunk_key_encoding_from_json(obj: Any) -> ChunkKeyEncoding:
    """Parse a ``chunk_key_encoding``: an object, a bare name, or an encoding instance.

    ``configuration`` is optional (tensorstore omits it); a top-level ``separator``
    (``{"name": "v2", "separator": "/"}``, as zarr-python accepts) is read as configuration.

    Raises:
        UnknownExtensionError: no encoding of that name is registered.
        MetadataError: the object or its configuration is malformed.

    Example:
        >>> chunk_key_encoding_from_json({"name": "default"}).separator
        '/'
        >>> chunk_key_encoding_from_json("v2").encode((3, 4))
        '3.4'
    """
    if isinstance(obj, ChunkKeyEncoding):
        return obj
    if isinstance(obj, str):
        obj = {"name": obj}
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        raise MetadataError(f"chunk_key_encoding must be an object with a name, got {obj!r}")
    name = obj["name"]
    cls = _registry.get(name)
    if cls is None:
        raise UnknownExtensionError(
            f"unknown chunk_key_encoding {name!r} (registered: {sorted(_registry)})"
        )
    config = obj.get("configuration")
    if config is None:
        config = {"separator": obj["separator"]} if "separator" in obj else {}
    if not isinstance(config, dict):
        raise MetadataError(
            f"chunk_key_encoding {name!r}: configuration must be an object, got {config!r}"
        )
    try:
        return cls(**config)
    except TypeError:
        raise MetadataError(
            f"chunk_key_encoding {name!r}: invalid configuration {config!r}"
        ) from None
