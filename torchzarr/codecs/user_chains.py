"""The v3 codec chain ``create_array`` writes, from what users pass: numcodecs codecs, short
names, codec JSON, torchzarr codecs and zarr-python codec objects."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numcodecs
import numpy as np

from torchzarr.codecs.base import (
    ArrayArrayCodec,
    ArrayBytesCodec,
    BytesBytesCodec,
    ChunkSpec,
    Codec,
)
from torchzarr.codecs.bytes_codec import BytesCodec
from torchzarr.codecs.compressors import Crc32cCodec
from torchzarr.codecs.pipeline import evolve_checked
from torchzarr.codecs.user_settings import check_v3_filters, plain_numbers
from torchzarr.errors import CodecError, TorchZarrError, UnknownCodecError

__all__ = ["default_v3_codecs", "trailing_bytes_filters"]


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return list(value)
    return [value]


def _as_v3(value: Any, dtype: np.dtype[Any]) -> Codec:
    """One ``compressors``/``filters`` entry as a v3 codec (numcodecs core ids become core codecs)."""
    from torchzarr.codecs.compressors import BLOSC_SHUFFLE, BloscCodec, GzipCodec, ZstdCodec
    from torchzarr.codecs.numcodecs_adapter import (
        numcodecs_codec_class,
        numcodecs_defaults,
        numcodecs_object,
        numcodecs_v3_codec,
    )
    from torchzarr.codecs.registry import codec_from_json

    if isinstance(value, Codec):
        return value
    if isinstance(value, dict) and "name" in value:
        return codec_from_json(plain_numbers(value))
    document = _zarr_python_codec(value)
    if document is not None:
        return codec_from_json(plain_numbers(document))
    if isinstance(value, str) and _registered(value):
        return codec_from_json(value)  # a codec of the registry (register_codec, plugins)
    if isinstance(value, str) and value.startswith("numcodecs."):
        codec_id = value[len("numcodecs.") :]
        numcodecs_codec_class(codec_id)  # an unknown id fails here, under its v3 name
        # as named, with numcodecs' defaults spelled out but for those evolve() takes from
        # the dtype (shuffle's elementsize)
        return numcodecs_v3_codec(codec_id, numcodecs_defaults(codec_id))
    obj = numcodecs_object(value)
    config = plain_numbers(dict(obj.get_config()))  # np.int8(3) -> 3: JSON holds numbers
    codec_id = config.pop("id")
    if codec_id == "zstd":
        return ZstdCodec(config.get("level", 0), bool(config.get("checksum", False)))
    if codec_id == "gzip":
        return GzipCodec(config.get("level", 5))
    if codec_id == "crc32c":
        return Crc32cCodec()
    if codec_id == "blosc":
        names = {v: k for k, v in BLOSC_SHUFFLE.items()}  # AUTOSHUFFLE (-1): chosen by dtype
        typesize = plain_numbers(getattr(obj, "typesize", None))
        return BloscCodec(
            config.get("cname", "lz4"),
            config.get("clevel", 5),
            names.get(config.get("shuffle", 1)),
            typesize if isinstance(typesize, int) and typesize > 0 else None,
            config.get("blocksize", 0),
        )
    return numcodecs_v3_codec(codec_id, config)


def _registered(name: str) -> bool:
    """Whether ``name`` is a codec of the v3 registry (one registered with ``register_codec``
    or by a plugin) and no numcodecs id: those keep numcodecs' settings ("zstd" is level 0)."""
    from torchzarr.codecs.registry import get_codec_class

    if name.startswith("numcodecs.") or name.lower() in numcodecs.registry.codec_registry:
        return False
    try:
        get_codec_class(name)
    except UnknownCodecError:
        return False
    return True


def _zarr_python_codec(value: Any) -> dict[str, Any] | None:
    """The JSON form of a zarr-python codec object (``zarr.codecs.ZstdCodec(level=3)``: one
    with a ``to_dict()`` giving a ``name``), else None."""
    to_dict = getattr(value, "to_dict", None)
    if not callable(to_dict) or isinstance(value, numcodecs.abc.Codec):
        return None
    document = to_dict()
    if not isinstance(document, dict) or not isinstance(document.get("name"), str):
        return None
    config = dict(document.get("configuration") or {})
    # settings zarr-python takes from the dtype when not given (blosc's typesize and
    # shuffle, as its objects list them) are left out, for the dtype to set them here too
    for name in getattr(value, "_tunable_attrs", None) or ():
        config.pop(name, None)
    for name in ("codecs", "index_codecs"):  # sharding's inner chains: their objects alike
        inner = getattr(value, name, None)
        if name in config and isinstance(inner, list | tuple):
            config[name] = [_zarr_python_codec(codec) or codec for codec in inner]
    return {"name": document["name"], "configuration": config}


def default_v3_codecs(dtype: Any, compressors: Any, filters: Any = None) -> tuple[Codec, ...]:
    """The v3 chain ``create_array`` writes: filters, ``bytes`` (little endian), compressors.

    Args:
        dtype: the storage dtype (numpy).
        compressors: None, or one or a list of: a numcodecs codec, a v3 codec, a codec JSON
            object, a short name ("zstd", "gzip", "blosc", "lz4", "zlib", "bz2", "lzma",
            "crc32c") or ``"numcodecs.<id>"``. numcodecs Zstd/GZip/Blosc/CRC32C become the
            spec's core codecs, others ``numcodecs.<id>``. A v3 array -> bytes codec in the
            list (as an object or as JSON: ``bytes`` big endian, ``sharding_indexed``)
            replaces ``bytes``. A name you registered (``register_codec``) is that codec.
            numpy scalars in settings (``Zlib(level=np.int8(3))``) are recorded as numbers.
        filters: likewise, array -> array codecs (numcodecs Delta -> ``numcodecs.delta``).

    Returns:
        The chain, evolved for ``dtype`` (``blosc`` gets its typesize, ``bytes`` no endian
        for 1-byte types, a given ``bytes`` big endian too; inside ``sharding_indexed``
        too), as zarr-python records it.

    Raises:
        CodecError: a filter that is not array -> array, a compressor that is neither
            bytes -> bytes nor array -> bytes, or two array -> bytes codecs; naming the codec,
            its kind and the argument it belongs in; a numcodecs filter whose dtype setting
            does not fit the dtype reaching it (``Delta(dtype="<i4")`` on float32, which
            would store garbage), naming both; or a ``blosc`` cname this numcodecs build
            lacks (often snappy).
        UnknownCodecError: a name or numcodecs id nobody provides.

    Example:
        >>> [c.codec_name for c in default_v3_codecs(np.dtype("float32"), ["zstd"])]
        ['bytes', 'zstd']
        >>> default_v3_codecs(np.dtype("uint8"), "blosc")[1].to_json()["configuration"]
        {'typesize': 1, 'cname': 'lz4', 'clevel': 5, 'shuffle': 'shuffle', 'blocksize': 0}
        >>> big = {"name": "bytes", "configuration": {"endian": "big"}}
        >>> [c.to_json() for c in default_v3_codecs(np.dtype("int32"), [big])]
        [{'name': 'bytes', 'configuration': {'endian': 'big'}}]
        >>> [c.to_json() for c in default_v3_codecs(np.dtype("uint8"), [big])]
        [{'name': 'bytes'}]
    """
    from torchzarr.codecs.sharding import ShardingCodec
    from torchzarr.codecs.transpose import TransposeCodec

    dtype = np.dtype(dtype)
    current = ChunkSpec((), dtype, dtype.type(0))
    chain: list[Codec] = []
    for value in _as_list(filters):
        codec = _as_v3(value, current.dtype)
        if not isinstance(codec, ArrayArrayCodec):
            raise CodecError(f"filter {value!r} {_misplaced(codec, 'filters')}")
        if not isinstance(codec, TransposeCodec):  # its order depends on the chunk's ndim
            codec = evolve_checked(codec, current)
            current = codec.resolve_spec(current)
        chain.append(codec)
    # converted first: a codec given as JSON or by name is classified like a codec object
    given = [(value, _as_v3(value, current.dtype)) for value in _as_list(compressors)]
    serializers = [codec for _, codec in given if isinstance(codec, ArrayBytesCodec)]
    if len(serializers) > 1:
        names = [codec.codec_name for codec in serializers]
        raise CodecError(
            f"compressors take at most one array -> bytes codec (it replaces bytes), got {names}"
        )
    if not serializers:
        chain.append(BytesCodec("little").evolve(current))
    elif isinstance(serializers[0], ShardingCodec):  # its own shape is the inner chunks'
        chain.append(serializers[0].evolve_inner(current))
    else:  # ``bytes`` big endian drops endian for 1-byte types, as zarr-python records it
        chain.append(evolve_checked(serializers[0], current))
    for value, codec in given:
        if isinstance(codec, ArrayBytesCodec):
            continue
        if not isinstance(codec, BytesBytesCodec):
            raise CodecError(f"compressor {value!r} {_misplaced(codec, 'compressors')}")
        chain.append(evolve_checked(codec, current))
    check_v3_filters(chain, dtype)  # in sharding's inner chain too
    _check_writable(chain)
    return tuple(chain)


def trailing_bytes_filters(filters: Any, dtype: Any) -> tuple[list[Any], list[Any]]:
    """``filters`` split into what v3 takes as filters and the bytes -> bytes codecs ending
    them (a v2 ``Shuffle`` filter), which a v3 chain runs at the same point: first among
    its compressors.

    Example:
        >>> import numcodecs
        >>> trailing_bytes_filters([numcodecs.Delta("<i4"), numcodecs.Shuffle(4)], "int32")
        ([Delta(dtype='<i4')], [Shuffle(elementsize=4)])
    """
    items, dtype = _as_list(filters), np.dtype(dtype)
    cut = len(items)
    while cut:
        try:
            if not isinstance(_as_v3(items[cut - 1], dtype), BytesBytesCodec):
                break
        except TorchZarrError:  # create_array names what it cannot take
            break
        cut -= 1
    return items[:cut], items[cut:]


def _check_writable(codecs: Sequence[Codec]) -> None:
    """Refuse codecs this installation can read but not write with (blosc's snappy)."""
    from torchzarr.codecs.compressors import BloscCodec
    from torchzarr.codecs.sharding import ShardingCodec

    for codec in codecs:
        if isinstance(codec, BloscCodec):
            codec.check_available()
        elif isinstance(codec, ShardingCodec):
            _check_writable(codec.codecs)


def _misplaced(codec: Codec, where: str) -> str:
    """Why ``codec`` does not belong in ``where`` (filters or compressors), and where it goes."""
    wanted = "an array -> array" if where == "filters" else "a bytes -> bytes"
    if isinstance(codec, ArrayArrayCodec):
        found = "an array -> array codec: pass it in filters="
    elif isinstance(codec, ArrayBytesCodec):
        found = "an array -> bytes codec: pass it in compressors=, where it replaces bytes"
    elif isinstance(codec, BytesBytesCodec):
        found = "a bytes -> bytes codec: pass it in compressors="
    else:
        found = f"a {type(codec).__name__}, of no codec kind"
    return f"({codec.codec_name}) is not {wanted} codec but {found}"
