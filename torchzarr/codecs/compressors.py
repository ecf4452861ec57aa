"""The v3 core bytes -> bytes codecs ``gzip``, ``zstd``, ``blosc`` and ``crc32c``, over numcodecs."""

from __future__ import annotations

import gzip
import io
from typing import Any, ClassVar

import crc32c as _crc32c
import numcodecs
import numpy as np
from numcodecs.compat import ensure_contiguous_ndarray

from torchzarr.codecs import fast_decode
from torchzarr.codecs.base import BytesBytesCodec, ChunkSpec
from torchzarr.codecs.bounded import (
    DECODES_INTO,
    compress_bound,
    decoded_size,
    decompress_at_most,
    frame_head,
    is_empty_frame,
    too_large,
)
from torchzarr.errors import ChecksumError, ChunkDecodeError, CodecError, MetadataError

__all__ = [
    "BloscCodec",
    "Crc32cCodec",
    "GzipCodec",
    "ZstdCodec",
    "blosc_cnames_available",
    "decode_at_most",
    "decode_error",
    "decode_into",
    "gzip_compress",
]


def decode_error(codec: str, err: Exception) -> ChunkDecodeError:
    """The error a codec's failure to decode raises, naming the codec and the failure.

    Example:
        >>> decode_error("zstd", ValueError("bad frame"))
        ChunkDecodeError('zstd codec: ValueError: bad frame')
    """
    kind = ChecksumError if is_checksum_mismatch(codec, err) else ChunkDecodeError
    return kind(f"{codec} codec: {type(err).__name__}: {err}")


#: numcodecs' checksum codecs: a mismatch is a RuntimeError naming the checksum
_CHECKSUMS = ("crc32c", "crc32", "adler32", "fletcher32", "jenkins_lookup3")


def is_checksum_mismatch(codec: str, err: Exception) -> bool:
    """Whether ``err`` is a checksum codec's mismatch (``codec``: its id, or v3 name).

    Example:
        >>> is_checksum_mismatch("adler32", RuntimeError("checksums do not match"))
        True
    """
    if not isinstance(err, RuntimeError):
        return False
    codec = codec.removeprefix("numcodecs.")
    return codec in _CHECKSUMS or (codec == "zstd" and "checksum" in str(err))  # its frame's


def _decode(impl: Any, codec_id: str, data: Any) -> bytes:
    if is_empty_frame(codec_id, data):
        return b""
    try:
        decoded = impl.decode(data)
    except Exception as err:
        raise decode_error(codec_id, err) from err
    return decoded if isinstance(decoded, bytes) else np.asarray(decoded).tobytes()


def decode_at_most(impl: Any, codec_id: str, data: Any, limit: int, name: str = "") -> Any:
    """Decode ``data`` with numcodecs codec ``impl``, knowing it decodes to at most ``limit``
    bytes (see :func:`~torchzarr.codecs.bounded.decompress_at_most`); a buffer comes back.

    Raises:
        ChunkDecodeError: corrupt data, or data that decodes to more than ``limit`` bytes,
            naming the codec (``name``, or else ``codec_id``).

    Example:
        >>> bytes(decode_at_most(numcodecs.GZip(), "gzip", gzip_compress(b"abc", 1), 3))
        b'abc'
    """
    try:
        return decompress_at_most(impl, codec_id, data, limit)
    except ChunkDecodeError:
        raise
    except Exception as err:
        raise decode_error(name or codec_id, err) from err


def decode_into(impl: Any, codec_id: str, data: Any, out: np.ndarray) -> None:
    """Decompress ``data`` straight into ``out`` (contiguous uint8 of the exact decoded size).

    The size the header states must equal ``out.nbytes``: numcodecs would otherwise fill part
    of a larger buffer without a word. Codecs that cannot decode in place copy once.

    Example:
        >>> out = np.empty(4, dtype=np.uint8)
        >>> decode_into(numcodecs.Zstd(), "zstd", numcodecs.Zstd().encode(b"abcd"), out)
        >>> out.tobytes()
        b'abcd'
    """
    if out.nbytes and fast_decode.available(codec_id) and out.flags.c_contiguous:
        try:
            fast_decode.decompress_into(codec_id, data, out)  # a reused context per thread
        except ChunkDecodeError:
            size = decoded_size(codec_id, data)
            if size is not None and size != out.nbytes:
                raise ChunkDecodeError(
                    f"{codec_id} codec: the chunk decompresses to {size} bytes, expected "
                    f"{out.nbytes}"
                ) from None
            raise
        return
    size = decoded_size(codec_id, data)
    if size is not None and size != out.nbytes:
        raise ChunkDecodeError(
            f"{codec_id} codec: the chunk decompresses to {size} bytes, expected {out.nbytes}"
        )
    if size is None or codec_id not in DECODES_INTO:
        decoded = np.frombuffer(decode_at_most(impl, codec_id, data, out.nbytes), np.uint8)
        if decoded.size != out.nbytes:
            raise ChunkDecodeError(
                f"{codec_id} codec: the chunk decompresses to {decoded.size} bytes, "
                f"expected {out.nbytes}"
            )
        out[...] = decoded
        return
    if is_empty_frame(codec_id, data):
        return
    try:
        impl.decode(data, out=out)
    except Exception as err:
        raise decode_error(codec_id, err) from err


def _int(config: dict[str, Any], key: str, default: int, name: str, lo: int, hi: int) -> int:
    value = config.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise MetadataError(f"{name} codec: {key} must be an int in [{lo}, {hi}], got {value!r}")
    return value


def _check_keys(name: str, config: dict[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(config) - set(allowed))
    if unknown:
        raise MetadataError(
            f"{name} codec: unknown configuration key(s) {unknown}; expected some of "
            f"{list(allowed)}"
        )


class _NumcodecsCompressor(BytesBytesCodec):
    """A core codec backed by a numcodecs compressor object."""

    _impl: Any
    #: True when :meth:`decode_into` decompresses straight into the destination
    decodes_into: ClassVar[bool] = False

    def encode(self, data: bytes) -> bytes:
        """Compress ``data``."""
        try:
            encoded = self._impl.encode(data)
        except Exception as err:
            raise CodecError(f"{self.codec_name} codec: cannot encode: {err}") from err
        return encoded if isinstance(encoded, bytes) else np.asarray(encoded).tobytes()

    def decode(self, data: bytes) -> bytes:
        """Decompress ``data``; corrupt input raises :class:`ChunkDecodeError`."""
        return _decode(self._impl, self.codec_name, data)

    def decode_bounded(self, data: Any, limit: int) -> Any:
        """Decompress ``data``, refusing it once past ``limit`` bytes (see
        :func:`decode_at_most`)."""
        return decode_at_most(self._impl, self.codec_name, data, limit)

    def max_encoded_size(self, nbytes: int) -> int:
        """A bound on the compressed size of ``nbytes`` bytes (incompressible data grows)."""
        return compress_bound(nbytes)

    def decode_into(self, data: bytes, out: np.ndarray) -> None:
        """Decompress into ``out``, a contiguous uint8 array of the exact decoded size."""
        decode_into(self._impl, self.codec_name, data, out)


def gzip_compress(data: Any, level: int) -> bytes:
    """One gzip member of ``data`` (any contiguous buffer, in memory order) with mtime 0,
    so equal chunks encode to equal bytes: numcodecs' ``GZip`` stamps the current time.

    Example:
        >>> gzip_compress(b"abc", 5) == gzip_compress(b"abc", 5)
        True
    """
    view = ensure_contiguous_ndarray(data).view(np.uint8)
    out = io.BytesIO()
    # GzipFile, as numcodecs uses it: the same header (OS byte included) but for the time
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=level, mtime=0) as writer:
        writer.write(memoryview(view))
    return out.getvalue()


class GzipCodec(_NumcodecsCompressor):
    """``gzip`` (RFC 1952) at ``level`` 0-9.

    Example:
        >>> GzipCodec(5).to_json()
        {'name': 'gzip', 'configuration': {'level': 5}}
    """

    codec_name = "gzip"

    def __init__(self, level: int = 5) -> None:
        self.level = _int({"level": level}, "level", 5, "gzip", 0, 9)
        self._impl = numcodecs.GZip(level=self.level)

    def encode(self, data: bytes) -> bytes:
        """Compress ``data``: see :func:`gzip_compress`."""
        try:
            return gzip_compress(data, self.level)
        except Exception as err:
            raise CodecError(f"gzip codec: cannot encode: {err}") from err

    @classmethod
    def from_config(cls, configuration: dict[str, Any]) -> GzipCodec:
        """Build from ``{"level": int}`` (level defaults to 5)."""
        _check_keys("gzip", configuration, ("level",))
        return cls(_int(configuration, "level", 5, "gzip", 0, 9))

    def configuration(self) -> dict[str, Any]:
        """``{"level": ...}``."""
        return {"level": self.level}


class ZstdCodec(_NumcodecsCompressor):
    """``zstd`` at ``level`` (negative levels are fast modes) with an optional frame ``checksum``.

    Example:
        >>> ZstdCodec(1).to_json()
        {'name': 'zstd', 'configuration': {'level': 1, 'checksum': False}}
    """

    codec_name = "zstd"
    decodes_into = True

    def __init__(self, level: int = 0, checksum: bool = False) -> None:
        self.level = _int({"level": level}, "level", 0, "zstd", -131072, 22)
        if not isinstance(checksum, bool):
            raise MetadataError(f"zstd codec: checksum must be true or false, got {checksum!r}")
        self.checksum = checksum
        self._impl = numcodecs.Zstd(level=self.level, checksum=checksum)

    @classmethod
    def from_config(cls, configuration: dict[str, Any]) -> ZstdCodec:
        """Build from ``{"level": int, "checksum": bool}`` (defaults 0 and false)."""
        _check_keys("zstd", configuration, ("level", "checksum"))
        return cls(
            _int(configuration, "level", 0, "zstd", -131072, 22),
            configuration.get("checksum", False),
        )

    def configuration(self) -> dict[str, Any]:
        """``{"level": ..., "checksum": ...}``, as zarr-python writes it."""
        return {"level": self.level, "checksum": self.checksum}


#: v3 shuffle names to numcodecs' Blosc constants
BLOSC_SHUFFLE = {
    "noshuffle": numcodecs.Blosc.NOSHUFFLE,
    "shuffle": numcodecs.Blosc.SHUFFLE,
    "bitshuffle": numcodecs.Blosc.BITSHUFFLE,
}
BLOSC_CNAMES = ("lz4", "lz4hc", "blosclz", "zstd", "snappy", "zlib")
#: the compressor a blosc frame names in its header (flags bits 5-7), by code
_BLOSC_FORMATS = {0: "blosclz", 1: "lz4", 2: "snappy", 3: "zlib", 4: "zstd"}


def blosc_cnames_available() -> list[str]:
    """The blosc compressors this numcodecs build has (snappy is often left out).

    Example:
        >>> "zstd" in blosc_cnames_available()
        True
    """
    return list(numcodecs.blosc.list_compressors())


def _missing_blosc_compressor(data: Any) -> str | None:
    """The compressor a blosc frame's header names when this build lacks it, else None."""
    head = frame_head(data, 3)
    name = _BLOSC_FORMATS.get(head[2] >> 5) if len(head) == 3 else None
    return name if name is not None and name not in blosc_cnames_available() else None


class BloscCodec(_NumcodecsCompressor):
    """``blosc``: ``cname``, ``clevel``, ``shuffle``, ``typesize`` and ``blocksize``.

    ``typesize`` and ``shuffle`` left as None are filled in by :meth:`evolve` from the
    dtype, as zarr-python does: the item size, and ``bitshuffle`` for 1-byte types,
    ``shuffle`` otherwise.

    Example:
        >>> spec = ChunkSpec((8,), np.dtype("float32"), np.float32(0))
        >>> BloscCodec("lz4").evolve(spec).configuration()
        {'typesize': 4, 'cname': 'lz4', 'clevel': 5, 'shuffle': 'shuffle', 'blocksize': 0}
    """

    codec_name = "blosc"
    decodes_into = True

    def __init__(
        self,
        cname: str = "zstd",
        clevel: int = 5,
        shuffle: str | None = None,
        typesize: int | None = None,
        blocksize: int = 0,
    ) -> None:
        if cname not in BLOSC_CNAMES:
            raise MetadataError(f"blosc codec: cname must be one of {BLOSC_CNAMES}, got {cname!r}")
        if shuffle is not None and shuffle not in BLOSC_SHUFFLE:
            raise MetadataError(
                f"blosc codec: shuffle must be one of {list(BLOSC_SHUFFLE)}, got {shuffle!r}"
            )
        if typesize is not None:
            typesize = _int({"typesize": typesize}, "typesize", 1, "blosc", 1, 255)
        self.cname = cname
        self.clevel = _int({"clevel": clevel}, "clevel", 5, "blosc", 0, 9)
        self.shuffle = shuffle
        self.typesize = typesize
        self.blocksize = _int({"blocksize": blocksize}, "blocksize", 0, "blosc", 0, 2**31 - 1)
        self._impl = numcodecs.Blosc(
            cname=cname,
            clevel=self.clevel,
            shuffle=BLOSC_SHUFFLE[shuffle or "bitshuffle"],
            blocksize=self.blocksize,
            typesize=typesize,
        )

    @classmethod
    def from_config(cls, configuration: dict[str, Any]) -> BloscCodec:
        """Build from the JSON configuration (numcodecs' integer shuffles are accepted too)."""
        keys = ("cname", "clevel", "shuffle", "typesize", "blocksize")
        _check_keys("blosc", configuration, keys)
        shuffle: Any = configuration.get("shuffle")
        if isinstance(shuffle, int) and not isinstance(shuffle, bool):
            shuffle = {v: k for k, v in BLOSC_SHUFFLE.items()}.get(shuffle, shuffle)
        return cls(
            configuration.get("cname", "zstd"),
            _int(configuration, "clevel", 5, "blosc", 0, 9),
            shuffle,
            configuration.get("typesize"),
            _int(configuration, "blocksize", 0, "blosc", 0, 2**31 - 1),
        )

    def configuration(self) -> dict[str, Any]:
        """The configuration in zarr-python's key order; unset tunables are left out."""
        config: dict[str, Any] = {
            "typesize": self.typesize,
            "cname": self.cname,
            "clevel": self.clevel,
            "shuffle": self.shuffle,
            "blocksize": self.blocksize,
        }
        return {k: v for k, v in config.items() if v is not None}

    def check_available(self) -> None:
        """Refuse a ``cname`` this numcodecs build cannot compress with (before any write).

        Raises:
            CodecError: naming the cname and the ones available.

        Example:
            >>> BloscCodec("zstd").check_available()
        """
        available = blosc_cnames_available()
        if self.cname not in available:
            raise CodecError(
                f"blosc codec: cname {self.cname!r} is not in this numcodecs build; "
                f"available: {available}"
            )

    def decode(self, data: bytes) -> bytes:
        """Decompress ``data``; a frame of a compressor this build lacks says so."""
        try:
            return super().decode(data)
        except ChunkDecodeError as err:
            raise self._explained(err, data) from err

    def decode_into(self, data: bytes, out: np.ndarray) -> None:
        """Decompress into ``out``; a frame of a compressor this build lacks says so."""
        try:
            super().decode_into(data, out)
        except ChunkDecodeError as err:
            raise self._explained(err, data) from err

    def decode_bounded(self, data: Any, limit: int) -> Any:
        """Decompress at most ``limit`` bytes; a frame of a compressor this build lacks says so."""
        try:
            return super().decode_bounded(data, limit)
        except ChunkDecodeError as err:
            raise self._explained(err, data) from err

    def _explained(self, err: ChunkDecodeError, data: Any) -> ChunkDecodeError:
        missing = _missing_blosc_compressor(data)
        if missing is None:
            return err
        return ChunkDecodeError(
            f"blosc codec: the chunk is compressed with {missing!r}, which this numcodecs "
            f"build lacks (available: {blosc_cnames_available()})"
        )

    def evolve(self, spec: ChunkSpec) -> BloscCodec:
        """Fill ``typesize`` and ``shuffle`` from the dtype where they were left unset."""
        if self.typesize is not None and self.shuffle is not None:
            return self
        itemsize = int(spec.dtype.itemsize)
        shuffle = self.shuffle or ("bitshuffle" if itemsize == 1 else "shuffle")
        typesize = self.typesize or min(itemsize, 255)
        return BloscCodec(self.cname, self.clevel, shuffle, typesize, self.blocksize)


class Crc32cCodec(BytesBytesCodec):
    """``crc32c``: a little-endian CRC-32C of the data appended, verified on decode.

    Example:
        >>> Crc32cCodec().encode(b"abc")
        b'abc\\xb7?K6'
        >>> Crc32cCodec().decode(b"abc\\xb7?K6")
        b'abc'
    """

    codec_name = "crc32c"

    @classmethod
    def from_config(cls, configuration: dict[str, Any]) -> Crc32cCodec:
        """Build from an empty configuration."""
        _check_keys("crc32c", configuration, ())
        return cls()

    def configuration(self) -> dict[str, Any]:
        """Always empty: zarr-python writes ``{"name": "crc32c"}``."""
        return {}

    def encode(self, data: bytes) -> bytes:
        """Append the checksum."""
        return bytes(data) + _crc32c.crc32c(data).to_bytes(4, "little")

    def payload(self, data: Any) -> memoryview:
        """The data without its checksum, verified, as a view (no copy).

        Raises:
            ChecksumError: the stored checksum does not match the data.
        """
        view = memoryview(data)
        if view.ndim != 1 or view.itemsize != 1:
            view = view.cast("B")
        if len(view) < 4:
            raise ChunkDecodeError(f"crc32c codec: {len(view)} bytes cannot hold a checksum")
        body, stored = view[:-4], int.from_bytes(view[-4:], "little")
        actual = _crc32c.crc32c(body)
        if actual != stored:
            raise ChecksumError(
                f"crc32c codec: checksum mismatch, stored {stored:#010x}, computed {actual:#010x}"
            )
        return body

    def decode(self, data: bytes) -> bytes:
        """Verify and strip the checksum."""
        return bytes(self.payload(data))

    def decode_bounded(self, data: Any, limit: int) -> memoryview:
        """The verified payload as a view (no copy of the whole chunk to strip 4 bytes).

        Raises:
            ChunkDecodeError: a payload longer than ``limit`` bytes.
        """
        body = self.payload(data)
        if len(body) > limit:
            raise too_large(self.codec_name, limit)
        return body

    def max_encoded_size(self, nbytes: int) -> int:
        """``nbytes`` and the 4-byte checksum."""
        return nbytes + 4
