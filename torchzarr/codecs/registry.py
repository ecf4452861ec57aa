"""The v3 codec registry: codec names to classes, built-ins, user codecs and entry points."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from importlib.metadata import entry_points
from types import MappingProxyType
from typing import Any

from torchzarr.codecs.base import Codec
from torchzarr.errors import MetadataError, UnknownCodecError

__all__ = ["codec_from_json", "get_codec_class", "register_codec", "registered_codecs"]

_registry: dict[str, type[Codec]] = {}
_lock = threading.Lock()
_entry_points_loaded = False


def register_codec(name: str, cls: type[Codec], *, overwrite: bool = False) -> None:
    """Make ``{"name": name, ...}`` in ``zarr.json`` build ``cls.from_config(configuration)``.

    Example:
        >>> from torchzarr.codecs.compressors import GzipCodec
        >>> register_codec("gzip", GzipCodec, overwrite=True)
    """
    with _lock:
        if name in _registry and not overwrite and _registry[name] is not cls:
            raise ValueError(f"codec {name!r} is already registered (pass overwrite=True)")
        _registry[name] = cls


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in entry_points(group="torchzarr.codecs"):
        if ep.name not in _registry:
            _registry[ep.name] = ep.load()


def registered_codecs() -> Mapping[str, type[Codec]]:
    """A read-only view of the registered v3 codecs.

    Example:
        >>> "zstd" in registered_codecs()
        True
    """
    _load_entry_points()
    return MappingProxyType(_registry)


def get_codec_class(name: str) -> type[Codec]:
    """The class registered for a codec name.

    Example:
        >>> get_codec_class("bytes").__name__
        'BytesCodec'
    """
    found = _registry.get(name)
    if found is None:
        _load_entry_points()
        found = _registry.get(name)
    if found is None:
        raise UnknownCodecError(f"unknown codec {name!r}: no registered codec has that name")
    return found


def codec_from_json(obj: Any) -> Codec:
    """Build a codec from its JSON form (``configuration`` optional) or a bare name.

    Example:
        >>> codec_from_json({"name": "zstd", "configuration": {"level": 3}}).to_json()
        {'name': 'zstd', 'configuration': {'level': 3, 'checksum': False}}
    """
    if isinstance(obj, Codec):
        return obj
    if isinstance(obj, str):
        obj = {"name": obj}
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        raise MetadataError(f"a codec must be an object with a 'name', got {obj!r}")
    name = obj["name"]
    config = obj.get("configuration") or {}
    if not isinstance(config, dict):
        raise MetadataError(f"codec {name!r}: configuration must be an object, got {config!r}")
    if name.startswith("numcodecs.") and name not in _registry:
        from torchzarr.codecs.numcodecs_adapter import numcodecs_v3_codec

        return numcodecs_v3_codec(name[len("numcodecs.") :], config)
    try:
        return get_codec_class(name).from_config(config)
    except TypeError as err:
        raise MetadataError(f"codec {name!r}: invalid configuration {config!r}: {err}") from None


def _register_builtins() -> None:
    from torchzarr.codecs.bytes_codec import BytesCodec
    from torchzarr.codecs.compressors import BloscCodec, Crc32cCodec, GzipCodec, ZstdCodec
    from torchzarr.codecs.sharding import ShardingCodec
    from torchzarr.codecs.transpose import TransposeCodec

    for cls in (BytesCodec, TransposeCodec, GzipCodec, ZstdCodec, BloscCodec, Crc32cCodec,
                ShardingCodec):
        _registry[cls.codec_name] = cls
    _registry["endian"] = BytesCodec  # the name early v3 drafts (and old tensorstore) used


_register_builtins()
