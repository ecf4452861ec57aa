"""Any numcodecs codec as a v3 ``numcodecs.<id>`` codec, and short names to numcodecs objects.

zarr-python 3.1 writes numcodecs codecs in ``zarr.json`` as ``{"name": "numcodecs.<id>",
"configuration": <numcodecs config without "id">}``, classed by id: the typed filters are
array -> array, ``pcodec``/``zfpy`` array -> bytes, everything else bytes -> bytes.
"""

from __future__ import annotations

import importlib
from typing import Any, ClassVar

import numcodecs
import numcodecs.errors
import numcodecs.pickles
import numpy as np
from numcodecs.abc import Codec as NumcodecsObject

from torchzarr.codecs.base import (
    ArrayArrayCodec,
    ArrayBytesCodec,
    BytesBytesCodec,
    ChunkSpec,
    Codec,
)
from torchzarr.codecs.bounded import DECODES_INTO, is_empty_frame, max_encoded_size
from torchzarr.codecs.compressors import decode_at_most, decode_error, decode_into
from torchzarr.errors import ChunkDecodeError, CodecError, MetadataError, UnknownCodecError
from torchzarr.forksafe import new_lock

__all__ = [
    "ARRAY_TO_ARRAY_IDS",
    "ARRAY_TO_BYTES_IDS",
    "PREFIX",
    "NumcodecsArrayArrayCodec",
    "NumcodecsArrayBytesCodec",
    "NumcodecsBytesBytesCodec",
    "NumcodecsCodec",
    "OBJECT_CODEC_IDS",
    "check_numeric_codec",
    "numcodecs_codec_class",
    "numcodecs_defaults",
    "numcodecs_object",
    "numcodecs_v3_codec",
]

#: the prefix of numcodecs codec names in ``zarr.json``
PREFIX = "numcodecs."
#: numcodecs filters on typed arrays (zarr-python classes them array -> array)
ARRAY_TO_ARRAY_IDS = frozenset(
    {"delta", "bitround", "fixedscaleoffset", "quantize", "packbits", "astype"}
)
#: numcodecs codecs that serialise an array themselves (array -> bytes)
ARRAY_TO_BYTES_IDS = frozenset({"pcodec", "zfpy"})
#: numcodecs codecs that build Python objects from stored bytes. ``pickle`` runs any code
#: the bytes name wherever numcodecs unpickles (before 0.15.2, 0.16.0-0.16.5, 0.17.0, or
#: with NUMCODECS_ALLOW_UNSAFE_PICKLE_DECODE set); the others make object arrays, which
#: no torch dtype holds. torchzarr neither reads nor writes with any of them.
OBJECT_CODEC_IDS = frozenset(
    {
        "pickle",
        "msgpack",
        "msgpack2",
        "json",
        "json2",
        "vlen-utf8",
        "vlen-bytes",
        "vlen-array",
        "categorize",
    }
)
#: settings zarr-python lets one leave out and fills from the array's dtype (``evolve``)
EVOLVED_FROM_DTYPE = {"fixedscaleoffset": "dtype", "quantize": "dtype", "astype": "decode_dtype"}
#: settings with a numcodecs default that ``evolve`` replaces by the dtype's when left unset
_DEFAULT_FROM_DTYPE = {"shuffle": "elementsize"}


def _object_codec_classes() -> tuple[type, ...]:
    """numcodecs' classes of the codecs in :data:`OBJECT_CODEC_IDS` (those this build has),
    so that one registered under another id is refused too."""
    found: list[type] = []
    for module, name in (
        ("pickles", "Pickle"),
        ("json", "JSON"),
        ("msgpacks", "MsgPack"),
        ("vlen", "VLenUTF8"),
        ("vlen", "VLenBytes"),
        ("vlen", "VLenArray"),
        ("categorize", "Categorize"),
    ):
        try:
            cls = getattr(importlib.import_module(f"numcodecs.{module}"), name)
        except (ImportError, AttributeError):  # msgpack is optional
            continue
        found.append(cls)
    return tuple(found)


_OBJECT_CODEC_CLASSES = _object_codec_classes()


def check_numeric_codec(codec: Any) -> None:
    """Refuse a numcodecs codec (an id, or a codec object) that builds Python objects from
    stored bytes: ``pickle`` (which runs any code the bytes name) and the object-array codecs
    (``json``, ``json2``, ``msgpack``, ``msgpack2``, ``vlen-*``, ``categorize``). Checked before anything is decoded
    or encoded, whatever numcodecs' version or settings.

    Raises:
        UnknownCodecError: naming the codec and why torchzarr does not take it.

    Example:
        >>> check_numeric_codec("zstd")
        >>> check_numeric_codec("pickle")
        Traceback (most recent call last):
        ...
        torchzarr.errors.UnknownCodecError: numcodecs codec 'pickle' is refused: it unpickles the stored bytes, which runs any code they name; torchzarr reads and writes numeric arrays only
    """
    codec_id = codec if isinstance(codec, str) else getattr(codec, "codec_id", None)
    name = codec_id if isinstance(codec_id, str) else type(codec).__name__
    if name.lower() not in OBJECT_CODEC_IDS and not isinstance(codec, _OBJECT_CODEC_CLASSES):
        return
    unpickles = name.lower() == "pickle" or isinstance(codec, numcodecs.pickles.Pickle)
    why = (
        "it unpickles the stored bytes, which runs any code they name"
        if unpickles
        else "it decodes to Python objects, which no torch dtype holds"
    )
    raise UnknownCodecError(
        f"numcodecs codec {name!r} is refused: {why}; torchzarr reads and writes numeric "
        "arrays only"
    )


def numcodecs_object(value: Any) -> NumcodecsObject:
    """A numcodecs codec from a codec object, a config dict or a short name ("zstd", "lz4", ...).

    Codecs that build Python objects (``pickle``, ``json2``, ``vlen-utf8``, ...) are refused
    before numcodecs builds them (see :func:`check_numeric_codec`).

    Raises:
        UnknownCodecError: naming the id numcodecs does not know, or a refused codec.
        CodecError: a known id with an invalid configuration.

    Example:
        >>> numcodecs_object("zlib").get_config()["id"]
        'zlib'
        >>> numcodecs_object({"id": "zstd", "level": 3})
        Zstd(level=3)
    """
    if isinstance(value, NumcodecsObject):
        check_numeric_codec(value)
        return value
    if isinstance(value, str):
        config: dict[str, Any] = {"id": value.lower()}
    elif isinstance(value, dict) and isinstance(value.get("id"), str):
        config = dict(value)
    else:
        raise CodecError(
            f"cannot make a numcodecs codec from {value!r}: pass a numcodecs codec, a config "
            "dict with an 'id', or a short name such as 'zstd'"
        )
    check_numeric_codec(config["id"])
    try:
        codec = numcodecs.get_codec(config)
    except numcodecs.errors.UnknownCodecError:
        raise UnknownCodecError(
            f"unknown numcodecs codec id {config['id']!r}: numcodecs has no such codec "
            "(is the package that provides it installed?)"
        ) from None
    except (TypeError, ValueError, KeyError) as err:
        raise CodecError(
            f"numcodecs codec {config['id']!r}: invalid config {config!r}: {err}"
        ) from None
    check_numeric_codec(codec)  # a plugin may register an object codec under another id
    return codec


def numcodecs_defaults(codec_id: str) -> dict[str, Any]:
    """numcodecs' default configuration of ``codec_id`` (without ``id``), less the settings
    ``evolve`` takes from the array's dtype (shuffle's ``elementsize``), as zarr-python
    leaves them unset; empty for codecs that cannot be built without settings.

    Example:
        >>> numcodecs_defaults("zlib"), numcodecs_defaults("shuffle")
        ({'level': 1}, {})
    """
    try:
        config = dict(numcodecs_object(codec_id).get_config())
    except CodecError:  # needs settings evolve() fills from the dtype (quantize, ...)
        return {}
    config.pop("id", None)
    if codec_id in _DEFAULT_FROM_DTYPE:
        config.pop(_DEFAULT_FROM_DTYPE[codec_id], None)
    return config


def _to_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, np.ndarray):
        return value.tobytes(order="A")
    return bytes(memoryview(value))


class NumcodecsCodec(Codec):
    """Common part of the ``numcodecs.<id>`` codecs: the id, the config and the numcodecs object.

    Build them with :func:`numcodecs_v3_codec` or ``codec_from_json``; one class per id.

    Example:
        >>> codec = numcodecs_v3_codec("zlib", {"level": 1})
        >>> isinstance(codec, NumcodecsCodec), codec.numcodecs_codec
        (True, Zlib(level=1))
    """

    codec_id: ClassVar[str]

    def __init__(self, configuration: dict[str, Any] | None = None) -> None:
        config = dict(configuration or {})
        if config.pop("id", self.codec_id) != self.codec_id:
            raise MetadataError(
                f"{self.codec_name}: configuration id {configuration!r} contradicts the name"
            )
        self.config = config
        self._impl: NumcodecsObject | None = None
        deferred = EVOLVED_FROM_DTYPE.get(self.codec_id)
        if deferred is None or config.get(deferred) is not None:
            self._impl = self._build()  # validate now; otherwise once evolve() fills it in

    def _build(self) -> NumcodecsObject:
        try:
            return numcodecs_object({"id": self.codec_id, **self.config})
        except UnknownCodecError:
            raise
        except CodecError as err:
            raise MetadataError(f"{self.codec_name}: {err}") from None

    @classmethod
    def from_config(cls, configuration: dict[str, Any]) -> NumcodecsCodec:
        """Build from the numcodecs config (without ``id``)."""
        return cls(configuration)

    def configuration(self) -> dict[str, Any]:
        """The numcodecs config without ``id``."""
        return dict(self.config)

    def to_json(self) -> dict[str, Any]:
        """Always with ``configuration`` (possibly empty), as zarr-python writes it."""
        return {"name": self.codec_name, "configuration": self.configuration()}

    @property
    def numcodecs_codec(self) -> NumcodecsObject:
        """The numcodecs object doing the work (built once the dtype settings are known).

        Raises:
            MetadataError: a codec whose dtype settings were never filled in by ``evolve``.
        """
        if self._impl is None:
            key = EVOLVED_FROM_DTYPE[self.codec_id]
            if self.config.get(key) is None:
                raise MetadataError(
                    f"{self.codec_name}: {key!r} is unset; evolve() the codec for the array's "
                    "dtype (a codec pipeline does) before encoding or decoding"
                )
            self._impl = self._build()
        return self._impl

    def _evolved(self, **fill: Any) -> Codec:
        missing = {k: v for k, v in fill.items() if self.config.get(k) is None}
        return type(self)({**self.config, **missing}) if missing else self

    def __repr__(self) -> str:
        return f"NumcodecsCodec({self.codec_name!r}, {self.config!r})"


class NumcodecsBytesBytesCodec(NumcodecsCodec, BytesBytesCodec):
    """A numcodecs compressor, shuffle or checksum as a v3 bytes -> bytes codec.

    Example:
        >>> lz4 = numcodecs_v3_codec("lz4", {"acceleration": 1})
        >>> lz4.decode(lz4.encode(b"abc"))
        b'abc'
    """

    @property
    def decodes_into(self) -> bool:
        """True when :meth:`decode_into` decompresses straight into the destination."""
        return self.codec_id in DECODES_INTO

    def evolve(self, spec: ChunkSpec) -> Codec:
        """``shuffle`` gets its ``elementsize`` from the dtype, as zarr-python does."""
        key = _DEFAULT_FROM_DTYPE.get(self.codec_id)
        return self._evolved(**{key: int(spec.dtype.itemsize)}) if key is not None else self

    def encode(self, data: bytes) -> bytes:
        """Encode with numcodecs."""
        impl = self.numcodecs_codec
        try:
            return _to_bytes(impl.encode(data))
        except Exception as err:
            raise CodecError(f"{self.codec_name} codec: cannot encode: {err}") from err

    def decode(self, data: bytes) -> bytes:
        """Decode with numcodecs; failures raise :class:`ChunkDecodeError`."""
        if self.codec_id in DECODES_INTO and is_empty_frame(self.codec_id, data):
            return b""  # numcodecs rejects the frames it writes for empty input
        impl = self.numcodecs_codec
        try:
            return _to_bytes(impl.decode(data))
        except Exception as err:
            raise decode_error(self.codec_name, err) from err

    def decode_bounded(self, data: Any, limit: int) -> Any:
        """Decode ``data`` known to decode to at most ``limit`` bytes: compressors stop once
        past it (see :func:`~torchzarr.codecs.compressors.decode_at_most`)."""
        return decode_at_most(self.numcodecs_codec, self.codec_id, data, limit, self.codec_name)

    def max_encoded_size(self, nbytes: int) -> int:
        """A bound on the encoded size of ``nbytes`` bytes: compressors grow incompressible
        data a little, checksums add 4 bytes, others get a generous bound."""
        return max_encoded_size(self.codec_id, nbytes)

    def decode_into(self, data: bytes, out: np.ndarray) -> None:
        """Decode into ``out``, a contiguous uint8 array of the exact decoded size."""
        decode_into(self.numcodecs_codec, self.codec_id, data, out)


def _fit(array: np.ndarray, spec: ChunkSpec, codec: str, *, encoding: bool) -> np.ndarray:
    """``array`` as ``spec``: byte order by value, other same-size kinds by bits (the output
    of an encode: ``bitround``'s ints hold its floats' bits) or by value (of a decode, as
    zarr-python reads). Only a filter whose dtype misfits meets both; ``create_array``
    refuses those (:mod:`~torchzarr.codecs.user_settings`), existing ones read as written.

    Raises:
        CodecError: an encode produced the wrong number of elements.
        ChunkDecodeError: a decode did.
    """
    if array.size != int(np.prod(spec.shape, dtype=np.int64)):
        error = CodecError if encoding else ChunkDecodeError
        raise error(f"{codec} codec: produced {array.size} elements, expected shape {spec.shape}")
    if array.dtype != spec.dtype:
        same_kind = array.dtype.newbyteorder("=") == spec.dtype.newbyteorder("=")
        if encoding and not same_kind and array.dtype.itemsize == spec.dtype.itemsize:
            array = np.ascontiguousarray(array).view(spec.dtype.newbyteorder("="))
        array = array.astype(spec.dtype, copy=False)
    return array.reshape(spec.shape)


class NumcodecsArrayArrayCodec(NumcodecsCodec, ArrayArrayCodec):
    """A numcodecs filter (delta, astype, packbits, ...) as a v3 array -> array codec.

    Example:
        >>> delta = numcodecs_v3_codec("delta", {"dtype": "<i4"})
        >>> spec = ChunkSpec((4,), np.dtype("int32"), np.int32(0))
        >>> delta.encode(np.array([1, 2, 4, 7], dtype=np.int32), spec).tolist()
        [1, 1, 2, 3]
    """

    def evolve(self, spec: ChunkSpec) -> Codec:
        """Fill the dtype settings zarr-python fills from the array's dtype."""
        name = str(spec.dtype)
        if self.codec_id in ("fixedscaleoffset", "quantize"):
            return self._evolved(dtype=name)
        if self.codec_id == "astype":
            return self._evolved(decode_dtype=name)
        return self

    def resolve_spec(self, spec: ChunkSpec) -> ChunkSpec:
        """The shape and dtype of the filter's output."""
        if self.codec_id == "packbits":
            n = int(np.prod(spec.shape, dtype=np.int64))
            return ChunkSpec((1 + -(-n // 8),), np.dtype("uint8"), np.uint8(0))
        if self.codec_id == "astype":
            value = self.config.get("encode_dtype")
        elif self.codec_id in ("delta", "fixedscaleoffset", "quantize"):
            value = self.config.get("astype")  # zarr-python 3.1 forgets quantize's astype
        else:
            value = None
        if value is None:
            return spec
        dtype = np.dtype(value).newbyteorder("=")
        return ChunkSpec(spec.shape, dtype, dtype.type(0))

    def encode(self, chunk: np.ndarray, spec: ChunkSpec) -> np.ndarray:
        """Apply the filter; the output has the shape and dtype of :meth:`resolve_spec`."""
        out_spec = self.resolve_spec(spec)
        if chunk.size == 0 and int(np.prod(out_spec.shape, dtype=np.int64)) == 0:
            return np.empty(out_spec.shape, dtype=out_spec.dtype)
        impl = self.numcodecs_codec
        try:
            encoded = np.asarray(impl.encode(np.ascontiguousarray(chunk)))
        except Exception as err:
            raise CodecError(f"{self.codec_name} codec: cannot encode: {err}") from err
        return _fit(encoded, out_spec, self.codec_name, encoding=True)

    def decode(self, chunk: np.ndarray, spec: ChunkSpec) -> np.ndarray:
        """Invert the filter; the output has ``spec``'s shape and dtype."""
        if chunk.size == 0 and int(np.prod(spec.shape, dtype=np.int64)) == 0:
            return np.empty(spec.shape, dtype=spec.dtype)
        impl = self.numcodecs_codec
        try:
            decoded = np.asarray(impl.decode(np.ascontiguousarray(chunk)))
        except Exception as err:
            raise decode_error(self.codec_name, err) from err
        return _fit(decoded, spec, self.codec_name, encoding=False)


class NumcodecsArrayBytesCodec(NumcodecsCodec, ArrayBytesCodec):
    """A numcodecs codec that serialises arrays itself (``pcodec``, ``zfpy``): array -> bytes.

    Example:
        >>> sorted(ARRAY_TO_BYTES_IDS)  # built when numcodecs can load them
        ['pcodec', 'zfpy']
    """

    def encode(self, chunk: np.ndarray, spec: ChunkSpec) -> bytes:
        """Serialise a chunk with numcodecs."""
        impl = self.numcodecs_codec
        try:
            return _to_bytes(impl.encode(np.ascontiguousarray(chunk, dtype=spec.dtype)))
        except Exception as err:
            raise CodecError(f"{self.codec_name} codec: cannot encode: {err}") from err

    def decode(self, data: Any, spec: ChunkSpec, out: np.ndarray | None = None) -> np.ndarray:
        """Deserialise a chunk of ``spec``; into ``out`` when given."""
        impl = self.numcodecs_codec
        try:
            decoded = np.asarray(impl.decode(data))
        except Exception as err:
            raise decode_error(self.codec_name, err) from err
        array = _fit(decoded, spec, self.codec_name, encoding=False)
        if out is not None:
            out[...] = array
            return out
        return array


_classes: dict[str, type[NumcodecsCodec]] = {}
_lock = new_lock()


def numcodecs_codec_class(codec_id: str) -> type[NumcodecsCodec]:
    """The v3 codec class of ``numcodecs.<codec_id>`` (one class per id, made on first use).

    Raises:
        UnknownCodecError: numcodecs does not know ``codec_id``.

    Example:
        >>> numcodecs_codec_class("delta").codec_name
        'numcodecs.delta'
    """
    with _lock:
        found = _classes.get(codec_id)
        if found is not None:
            return found
        check_numeric_codec(codec_id)
        if codec_id not in numcodecs.registry.codec_registry:
            try:
                numcodecs.get_codec({"id": codec_id})
            except numcodecs.errors.UnknownCodecError:
                raise UnknownCodecError(
                    f"unknown codec {PREFIX + codec_id!r}: numcodecs has no codec {codec_id!r} "
                    "(is the package that provides it installed?)"
                ) from None
            except Exception:  # known, but needs arguments: the id is what we wanted to learn
                pass
        base: type[NumcodecsCodec]
        if codec_id in ARRAY_TO_ARRAY_IDS:
            base = NumcodecsArrayArrayCodec
        elif codec_id in ARRAY_TO_BYTES_IDS:
            base = NumcodecsArrayBytesCodec
        else:
            base = NumcodecsBytesBytesCodec
        name = "Numcodecs_" + "".join(c if c.isalnum() else "_" for c in codec_id)
        cls = type(name, (base,), {"codec_id": codec_id, "codec_name": PREFIX + codec_id})
        _classes[codec_id] = cls
        return cls


def numcodecs_v3_codec(codec_id: str, configuration: dict[str, Any] | None = None) -> Codec:
    """The v3 codec ``numcodecs.<codec_id>`` with its configuration.

    Example:
        >>> numcodecs_v3_codec("delta", {"dtype": "<i4"}).to_json()
        {'name': 'numcodecs.delta', 'configuration': {'dtype': '<i4'}}
    """
    return numcodecs_codec_class(codec_id)(configuration or {})
