"""The v3 core bytes -> bytes codecs: ``gzip``, ``zstd``, ``blosc`` and ``crc32c``."""

from __future__ import annotations

from typing import Any, ClassVar

import crc32c as _crc32c
import numcodecs
import numpy as np

from torchzarr.codecs.base import BytesBytesCodec, ChunkSpec
from torchzarr.errors import ChecksumError, ChunkDecodeError, MetadataError

__all__ = ["BloscCodec", "Crc32cCodec", "GzipCodec", "ZstdCodec"]


def _int(config: dict[str, Any], key: str, default: int, name: str, lo: int, hi: int) -> int:
    value = config.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise MetadataError(f"{name} codec: {key} must be an int in [{lo}, {hi}], got {value!r}")
    return value


class _NumcodecsCompressor(BytesBytesCodec):
    """A core codec backed by a numcodecs compressor object."""

    _impl: Any

    def encode(self, data: bytes) -> bytes:
        return bytes(self._impl.encode(data))

    def decode(self, data: bytes) -> bytes:
        return bytes(self._impl.decode(data))

    #: True when :meth:`decode_into` writes straight into the destination
    decodes_into: ClassVar[bool] = False

    def decode_into(self, data: bytes, out: np.ndarray) -> None:
        """Decompress into ``out`` (a contiguous array of the exact decoded size)."""
        self._impl.decode(data, out=out)


class GzipCodec(_NumcodecsCompressor):
    """``gzip`` at ``level`` 0-9.

    Example:
        >>> GzipCodec(5).to_json()
        {'name': 'gzip', 'configuration': {'level': 5}}
    """

    codec_name = "gzip"

    def __init__(self, level: int = 5) -> None:
        self.level = _int({"level": level}, "level", 5, "gzip", 0, 9)
        self._impl = numcodecs.GZip(level=self.level)

    @classmethod
    def from_config(cls, configuration: dict[str, Any]) -> GzipCodec:
        return cls(_int(configuration, "level", 5, "gzip", 0, 9))

    def configuration(self) -> dict[str, Any]:
        return {"level": self.level}

    def decode_into(self, data: bytes, out: np.ndarray) -> None:
        out.reshape(-1).view(np.uint8)[...] = np.frombuffer(self.decode(data), dtype=np.uint8)


class ZstdCodec(_NumcodecsCompressor):
    """``zstd`` at ``level`` (negative levels are fast modes), optional frame ``checksum``.

    Example:
        >>> ZstdCodec(1).to_json()
        {'name': 'zstd', 'configuration': {'level': 1, 'checksum': False}}
    """

    codec_name = "zstd"
    decodes_into = True

    def __init__(self, level: int = 0, checksum: bool = False) -> None:
        self.level = _int({"level": level}, "level", 0, "zstd", -131072, 22)
        if not isinstance(checksum, bool):
            raise MetadataError(f"zstd codec: checksum must be a bool, got {checksum!r}")
        self.checksum = checksum
        self._impl = numcodecs.Zstd(level=self.level, checksum=checksum)

    @classmethod
    def from_config(cls, configuration: dict[str, Any]) -> ZstdCodec:
        return cls(
            _int(configuration, "level", 0, "zstd", -131072, 22),
            configuration.get("checksum", False),
        )

    def configuration(self) -> dict[str, Any]:
        return {"level": self.level, "checksum": self.checksum}


_SHUFFLE = {"noshuffle": numcodecs.Blosc.NOSHUFFLE, "shuffle": numcodecs.Blosc.SHUFFLE,
            "bitshuffle": numcodecs.Blosc.BITSHUFFLE}
_CNAMES = ("lz4", "lz4hc", "blosclz", "zstd", "snappy", "zlib")


class BloscCodec(_NumcodecsCompressor):
    """``blosc`` with ``cname``, ``clevel``, ``shuffle``, ``typesize`` (from the dtype) and ``blocksize``.

    Example:
        >>> BloscCodec("lz4", 5, "shuffle", typesize=4).configuration()["shuffle"]
        'shuffle'
    """

    codec_name = "blosc"
    decodes_into = True

    def __init__(
        self,
        cname: str = "zstd",
        clevel: int = 5,
        shuffle: str = "shuffle",
        typesize: int | None = None,
        blocksize: int = 0,
    ) -> None:
        if cname not in _CNAMES:
            raise MetadataError(f"blosc codec: cname must be one of {_CNAMES}, got {cname!r}")
        if shuffle not in _SHUFFLE:
            raise MetadataError(
                f"blosc codec: shuffle must be one of {sorted(_SHUFFLE)}, got {shuffle!r}"
            )
        self.cname = cname
        self.clevel = _int({"clevel": clevel}, "clevel", 5, "blosc", 0, 9)
        self.shuffle = shuffle
        self.typesize = typesize
        self.blocksize = _int({"blocksize": blocksize}, "blocksize", 0, "blosc", 0, 2**31)
        self._impl = numcodecs.Blosc(
            cname=cname, clevel=self.clevel, shuffle=_SHUFFLE[shuffle], blocksize=self.blocksize
        )

    @classmethod
    def from_config(cls, configuration: dict[str, Any]) -> BloscCodec:
        shuffle = configuration.get("shuffle", "shuffle")
        if isinstance(shuffle, int) and not isinstance(shuffle, bool):  # numcodecs-style ints
            shuffle = {v: k for k, v in _SHUFFLE.items()}.get(shuffle, shuffle)
        return cls(
            configuration.get("cname", "zstd"),
            _int(configuration, "clevel", 5, "blosc", 0, 9),
            shuffle,
            configuration.get("typesize"),
            _int(configuration, "blocksize", 0, "blosc", 0, 2**31),
        )

    def configuration(self) -> dict[str, Any]:
        config: dict[str, Any] = {"typesize": self.typesize, "cname": self.cname,
                                  "clevel": self.clevel, "shuffle": self.shuffle,
                                  "blocksize": self.blocksize}
        if self.typesize is None:
            del config["typesize"]
        return config

    def evolve(self, spec: ChunkSpec) -> BloscCodec:
        if self.typesize is not None:
            return self
        shuffle = "noshuffle" if spec.dtype.itemsize == 1 and self.shuffle == "shuffle" else self.shuffle
        return BloscCodec(self.cname, self.clevel, shuffle, spec.dtype.itemsize, self.blocksize)

    def encode(self, data: bytes) -> bytes:
        size = self.typesize or 1
        if size > 1 and len(data) % size == 0:
            # numcodecs takes blosc's typesize from the buffer's item size
            return bytes(self._impl.encode(np.frombuffer(data, dtype=f"u{size}")))
        return bytes(self._impl.encode(data))


class Crc32cCodec(BytesBytesCodec):
    """``crc32c``: a little-endian CRC-32C of the data appended; verified on decode.

    Example:
        >>> Crc32cCodec().decode(Crc32cCodec().encode(b"abc"))
        b'abc'
    """

    codec_name = "crc32c"

    @classmethod
    def from_config(cls, configuration: dict[str, Any]) -> Crc32cCodec:
        return cls()

    def configuration(self) -> dict[str, Any]:
        return {}

    def encode(self, data: bytes) -> bytes:
        return bytes(data) + _crc32c.crc32c(data).to_bytes(4, "little")

    def decode(self, data: bytes) -> bytes:
        if len(data) < 4:
            raise ChunkDecodeError(f"crc32c codec: {len(data)} bytes cannot hold a checksum")
        view = memoryview(data)
        body, stored = view[:-4], int.from_bytes(view[-4:], "little")
        actual = _crc32c.crc32c(body)
        if actual != stored:
            raise ChecksumError(
                f"crc32c checksum mismatch: stored {stored:#010x}, computed {actual:#010x}"
            )
        return bytes(body)
