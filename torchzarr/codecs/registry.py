"""The v3 codec registry: codec names to classes (built-ins, user codecs, entry points, numcodecs)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from torchzarr.codecs.base import Codec
from torchzarr.errors import (
    CodecError,
    InvalidArgumentError,
    MetadataError,
    TorchZarrError,
    UnknownCodecError,
)
from torchzarr.forksafe import new_rlock
from torchzarr.plugins import PluginGroup

__all__ = [
    "ENTRY_POINT_GROUP",
    "codec_from_json",
    "get_codec_class",
    "register_codec",
    "registered_codecs",
]

#: the entry-point group third-party packages register v3 codecs under
ENTRY_POINT_GROUP = "torchzarr.codecs"

_registry: dict[str, type[Codec]] = {}
_lock = new_rlock()
_plugins = PluginGroup(ENTRY_POINT_GROUP)
_log = logging.getLogger(__name__)


def register_codec(name: str, cls: type[Codec], *, overwrite: bool = False) -> None:
    """Make ``{"name": name, ...}`` in ``zarr.json`` build ``cls.from_config(configuration)``.

    ``name`` must be ``cls.codec_name``: arrays record a codec under its ``codec_name``, so
    a codec registered under another name would write arrays that cannot be opened again.

    Args:
        name: the codec's name in ``zarr.json`` (``cls.codec_name``).
        cls: a subclass of ``ArrayArrayCodec``, ``ArrayBytesCodec`` or ``BytesBytesCodec``.
        overwrite: replace a codec already registered under ``name``.

    Raises:
        CodecError: ``name`` is taken (and ``overwrite`` is false), or ``cls`` is no codec class.
        InvalidArgumentError: ``name`` differs from ``cls.codec_name``, naming both.

    Example:
        >>> from torchzarr.codecs.compressors import GzipCodec
        >>> register_codec("gzip", GzipCodec, overwrite=True)
        >>> get_codec_class("gzip").__name__
        'GzipCodec'
    """
    if not isinstance(name, str) or not name:
        raise CodecError(f"a codec name must be a non-empty string, got {name!r}")
    if not (isinstance(cls, type) and issubclass(cls, Codec)):
        raise CodecError(f"codec {name!r}: {cls!r} is not a subclass of torchzarr Codec")
    own = getattr(cls, "codec_name", None)
    if own != name:
        raise InvalidArgumentError(
            f"cannot register {cls.__name__} as codec {name!r}: its codec_name is {own!r}, "
            f"which is what arrays record (register it as {own!r}, or set codec_name = {name!r})"
        )
    with _lock:
        current = _registry.get(name)
        if current is not None and current is not cls and not overwrite:
            raise CodecError(
                f"codec {name!r} is already registered to {current.__name__} "
                "(pass overwrite=True to replace it)"
            )
        _registry[name] = cls


def _load_plugin(name: str) -> type[Codec] | None:
    """The codec class of ``name``'s entry point, loaded and registered now (None: no plugin
    names it). Each plugin loads on its own, so a broken one fails only lookups of its own
    name; a failed load is tried again at the next lookup.
    """
    ep = _plugins.entry_point(name)
    if ep is None:
        return None
    where = f"entry point {ep.value!r} in group {ENTRY_POINT_GROUP!r}"
    try:
        cls = _plugins.load(ep)
    except Exception as err:
        raise CodecError(
            f"codec {name!r}: {where} failed to load: {type(err).__name__}: {err}"
        ) from err
    if not (isinstance(cls, type) and issubclass(cls, Codec)):
        raise CodecError(f"codec {name!r}: {where} is {cls!r}, not a torchzarr Codec subclass")
    if getattr(cls, "codec_name", None) != name:
        raise CodecError(
            f"codec {name!r}: {where} gives {cls.__name__}, whose codec_name is "
            f"{getattr(cls, 'codec_name', None)!r}: the entry point's name must be its codec_name"
        )
    with _lock:  # explicit registrations (the plugin's own import among them) win
        if name not in _registry:
            register_codec(name, cls)
        return _registry[name]


def _sweep() -> None:
    """Load the entry points not tried yet (a plugin's module may register more names than
    its entry point's); a broken one is logged and skipped here, raising only for its name."""
    _plugins.sweep(_registry.__contains__, _load_plugin, _log)


def registered_codecs() -> Mapping[str, type[Codec]]:
    """A read-only view of the registered v3 codecs (``numcodecs.<id>`` ones resolve on demand).

    Example:
        >>> "zstd" in registered_codecs()
        True
    """
    _sweep()
    return MappingProxyType(_registry)


def get_codec_class(name: str) -> type[Codec]:
    """The class registered for a codec name; entry points load on the first miss.

    Raises:
        UnknownCodecError: naming the codec when nothing provides it.

    Example:
        >>> get_codec_class("bytes").__name__
        'BytesCodec'
        >>> get_codec_class("numcodecs.lz4").codec_name
        'numcodecs.lz4'
    """
    found = _registry.get(name)
    if found is None and isinstance(name, str):
        found = _load_plugin(name)
        if found is None and _plugins.entry_point(name) is None:
            _sweep()  # a plugin's module may register names its entry point does not give
            found = _registry.get(name)
    if found is not None:
        return found
    if isinstance(name, str) and name.startswith("numcodecs.") and len(name) > len("numcodecs."):
        from torchzarr.codecs.numcodecs_adapter import numcodecs_codec_class

        return numcodecs_codec_class(name[len("numcodecs.") :])
    raise UnknownCodecError(
        f"unknown codec {name!r}: no registered codec has that name (register it with "
        "torchzarr.codecs.register_codec or install the package that provides it)"
    )


_CODEC_KEYS = frozenset({"name", "configuration", "must_understand"})


def codec_from_json(obj: Any) -> Codec:
    """Build a codec from its JSON form or a bare name; ``configuration`` may be left out.

    Raises:
        MetadataError: a malformed codec object or configuration.
        UnknownCodecError: naming a codec nothing provides.

    Example:
        >>> codec_from_json({"name": "zstd", "configuration": {"level": 3}}).to_json()
        {'name': 'zstd', 'configuration': {'level': 3, 'checksum': False}}
        >>> codec_from_json("crc32c")
        Crc32cCodec({})
    """
    if isinstance(obj, Codec):
        return obj
    if isinstance(obj, str):
        obj = {"name": obj}
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        raise MetadataError(f"a codec must be an object with a string 'name', got {obj!r}")
    name = obj["name"]
    extra = sorted(set(obj) - _CODEC_KEYS)
    if extra:
        raise MetadataError(f"codec {name!r}: unknown key(s) {extra}")
    config = obj.get("configuration")
    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise MetadataError(f"codec {name!r}: configuration must be an object, got {config!r}")
    cls = get_codec_class(name)
    try:
        return cls.from_config(dict(config))
    except TorchZarrError:
        raise  # the codec's own MetadataError / CodecError already name the problem
    except (TypeError, KeyError, ValueError) as err:
        raise MetadataError(f"codec {name!r}: invalid configuration {config!r}: {err}") from None


def _register_builtins() -> None:
    from torchzarr.codecs.bytes_codec import BytesCodec
    from torchzarr.codecs.compressors import BloscCodec, Crc32cCodec, GzipCodec, ZstdCodec
    from torchzarr.codecs.sharding import ShardingCodec
    from torchzarr.codecs.transpose import TransposeCodec

    for cls in (
        BytesCodec,
        TransposeCodec,
        GzipCodec,
        ZstdCodec,
        BloscCodec,
        Crc32cCodec,
        ShardingCodec,
    ):
        _registry[cls.codec_name] = cls
    _registry["endian"] = BytesCodec  # the name early v3 drafts (and old tensorstore) used


_register_builtins()
