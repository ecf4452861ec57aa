"""Decompression bounded by what a chunk can hold: the sizes frame headers state, the most a
codec's encoding of n bytes can take, and stream decoders that stop at a limit.

A few kilobytes of gzip, zlib, bz2, lzma or zstd can inflate to gigabytes. A pipeline knows
how large each codec's output may be (the chunk's size, then what the codecs in between add
to it) and decodes with that limit: data that would go past it is refused after at most the
limit was produced, not once all of it was.
"""

from __future__ import annotations

import bz2
import lzma
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np

from torchzarr.codecs import fast_decode
from torchzarr.errors import ChunkDecodeError

__all__ = [
    "DECODES_INTO",
    "compress_bound",
    "decoded_size",
    "decompress_at_most",
    "frame_head",
    "is_empty_frame",
    "loose_bound",
    "max_encoded_size",
    "nbytes_of",
    "too_large",
]

#: numcodecs compressors whose ``decode`` takes ``out=`` and whose header states the size
DECODES_INTO = frozenset({"zstd", "lz4", "blosc"})
#: compressors: what they add to incompressible data (block headers, frame and gzip
#: headers; a gzip header may carry a name and a comment) stays far below this bound
_COMPRESSORS = frozenset({"zstd", "lz4", "blosc", "gzip", "zlib", "bz2", "lzma"})
#: numcodecs codecs that append a 4-byte checksum
_CHECKSUMS = frozenset({"crc32", "crc32c", "adler32", "fletcher32", "jenkins_lookup3"})
_OVERHEAD = 1 << 16


def compress_bound(nbytes: int) -> int:
    """A bound on what a compressor makes of ``nbytes`` bytes, well above what any of zstd,
    lz4, blosc, deflate, bz2 and lzma adds to incompressible data.

    Example:
        >>> compress_bound(0), compress_bound(800)
        (65536, 66436)
    """
    return nbytes + nbytes // 8 + _OVERHEAD


def loose_bound(nbytes: int) -> int:
    """The bound for a codec whose growth is not known: 64 times (a 1-byte type cast to a
    64-byte one; numcodecs' ``astype`` to complex256 or ``<U8`` grows 32 times) plus 64 KiB.
    It only has to stop decompression bombs.

    Example:
        >>> loose_bound(1)
        65600
    """
    return 64 * nbytes + _OVERHEAD


def max_encoded_size(codec_id: str, nbytes: int) -> int:
    """A bound on the size of numcodecs codec ``codec_id``'s encoding of ``nbytes`` bytes.

    Example:
        >>> max_encoded_size("crc32c", 100), max_encoded_size("shuffle", 100)
        (104, 100)
    """
    if codec_id in _COMPRESSORS:
        return compress_bound(nbytes)
    if codec_id in _CHECKSUMS:
        return nbytes + 4
    if codec_id == "shuffle":
        return nbytes
    if codec_id == "base64":
        return 4 * -(-nbytes // 3)
    return loose_bound(nbytes)


def nbytes_of(data: Any) -> int:
    """The size in bytes of a buffer (bytes, memoryview, numpy array).

    Example:
        >>> nbytes_of(b"abc"), nbytes_of(np.zeros(2, dtype=np.float64))
        (3, 16)
    """
    if isinstance(data, np.ndarray):
        return int(data.nbytes)
    return memoryview(data).nbytes


def too_large(codec_id: str, limit: int) -> ChunkDecodeError:
    """The error for data that decodes to more than ``limit`` bytes.

    Example:
        >>> str(too_large("gzip", 64))
        'gzip codec: the data decompresses to more than 64 bytes, more than this chunk can hold (corrupt, or a decompression bomb)'
    """
    return ChunkDecodeError(
        f"{codec_id} codec: the data decompresses to more than {limit} bytes, more than this "
        "chunk can hold (corrupt, or a decompression bomb)"
    )


def frame_head(data: Any, n: int) -> bytes:
    """The first ``n`` bytes of a buffer (fewer when it is shorter).

    Example:
        >>> frame_head(np.arange(4, dtype=np.uint16), 3)
        b'\\x00\\x00\\x01'
    """
    view = memoryview(data)
    if view.ndim != 1 or view.itemsize != 1:
        view = view.cast("B")
    return bytes(view[:n])


def decoded_size(codec_id: str, data: Any) -> int | None:
    """The decoded size a compressed buffer's header states, or None where it states none.

    Knows numcodecs' ``zstd`` (frame header), ``lz4`` (4-byte size prefix) and ``blosc``
    (16-byte header, whose stated compressed size is also checked against the buffer).

    Example:
        >>> import numcodecs
        >>> decoded_size("zstd", numcodecs.Zstd().encode(bytes(100)))
        100
    """
    if codec_id == "zstd":
        return fast_decode.zstd_content_size(data)
    if codec_id == "lz4":
        head = frame_head(data, 4)
        if len(head) < 4:
            raise ChunkDecodeError(f"lz4 codec: {len(head)} bytes cannot hold the size header")
        return int.from_bytes(head, "little")
    if codec_id == "blosc":
        head = frame_head(data, 16)
        if len(head) < 16:
            raise ChunkDecodeError(f"blosc codec: {len(head)} bytes cannot hold the 16-byte header")
        cbytes = int.from_bytes(head[12:16], "little")
        if cbytes != nbytes_of(data):
            raise ChunkDecodeError(
                f"blosc codec: header says {cbytes} compressed bytes, the chunk holds "
                f"{nbytes_of(data)} (truncated or corrupt)"
            )
        return int.from_bytes(head[4:8], "little")
    return None


def _zstd_empty_frame_length(head: bytes) -> int:
    descriptor = head[4]
    fcs_flag, single_segment = descriptor >> 6, (descriptor >> 5) & 1
    header = 5 + (0 if single_segment else 1) + (0, 1, 2, 4)[descriptor & 3]
    header += (1 if single_segment else 0, 2, 4, 8)[fcs_flag]
    block = int.from_bytes(head[header : header + 3], "little") if len(head) >= header + 3 else 1
    if block != 1:  # one block: last, raw, 0 bytes; what zstd writes for empty input
        return -1
    return header + 3 + (4 if descriptor & 4 else 0)


def is_empty_frame(codec_id: str, data: Any) -> bool:
    """True when ``data`` is a well-formed frame of nothing (numcodecs cannot decode those).

    numcodecs writes zstd, lz4 and blosc frames for empty input that it then refuses to
    decode; a header that states 0 bytes must frame nothing else.

    Raises:
        ChunkDecodeError: a header stating 0 bytes on a malformed or truncated frame.

    Example:
        >>> import numcodecs
        >>> is_empty_frame("zstd", numcodecs.Zstd().encode(b""))
        True
    """
    if decoded_size(codec_id, data) != 0:
        return False
    head = frame_head(data, 32)
    if codec_id == "zstd":
        expected = _zstd_empty_frame_length(head)
    elif codec_id == "lz4":
        expected = 5 if head[4:5] == b"\0" else -1
    else:
        expected = nbytes_of(data)  # blosc: the stated compressed size was checked already
    if expected != nbytes_of(data):
        raise ChunkDecodeError(f"{codec_id} codec: a malformed frame of 0 bytes (truncated?)")
    return True


def _streams(codec_id: str, new: Callable[[], Any], data: Any, limit: int) -> bytes:
    """Decompress the streams of ``data`` with decompressors made by ``new``, producing at
    most ``limit + 1`` bytes: one stream for zlib (bytes after it are ignored, as
    ``zlib.decompress`` does), gzip members one after another with zero padding between
    them (as ``gzip.GzipFile``), bz2 and lzma streams up to the first that does not decode
    (as ``bz2.decompress`` and ``lzma.decompress``)."""
    view = memoryview(data)
    if view.ndim != 1 or view.itemsize != 1:
        view = view.cast("B")
    rest: Any = view
    if codec_id == "gzip" and not len(rest):
        return b""  # GzipFile reads nothing from nothing
    parts: list[bytes] = []
    total = 0
    while True:
        stream = new()
        try:
            part = stream.decompress(rest, limit + 1 - total)  # never 0: that is "no limit"
        except (zlib.error, OSError, lzma.LZMAError, EOFError):
            if parts and codec_id in ("bz2", "lzma"):
                break  # what follows the last stream is not one: ignored
            raise  # corrupt: the caller names the codec and the chunk
        total += len(part)
        if total > limit:
            raise too_large(codec_id, limit)
        parts.append(part)
        if not stream.eof:
            raise ChunkDecodeError(
                f"{codec_id} codec: the data ends before the end of its stream (truncated?)"
            )
        rest = stream.unused_data
        if codec_id == "gzip":
            rest = rest.lstrip(b"\0")
        if codec_id == "zlib" or not rest:
            break
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _stream_decompressor(impl: Any, codec_id: str) -> Callable[[], Any] | None:
    if codec_id in ("gzip", "zlib"):
        wbits = 31 if codec_id == "gzip" else 15
        return lambda: zlib.decompressobj(wbits)
    if codec_id == "bz2":
        return bz2.BZ2Decompressor
    if codec_id == "lzma":
        fmt = getattr(impl, "format", lzma.FORMAT_AUTO)
        filters = getattr(impl, "filters", None)
        return lambda: lzma.LZMADecompressor(format=fmt, filters=filters)
    return None


def decompress_at_most(impl: Any, codec_id: str, data: Any, limit: int) -> Any:
    """Decode ``data`` with numcodecs codec ``impl`` (id ``codec_id``), knowing it decodes to
    at most ``limit`` bytes; returns a buffer (bytes or a uint8 array).

    zstd, lz4 and blosc frames stating more are refused before anything is decoded, and
    decode into what they state; zstd frames stating nothing decode into a buffer of
    ``limit`` bytes (where numcodecs' zstd library can be called directly; else whole, and
    checked after); gzip, zlib, bz2 and lzma stop once past the limit. Other codecs decode
    whole and are checked after.

    Raises:
        ChunkDecodeError: data decoding to more than ``limit`` bytes, or truncated streams.
        Exception: what the codec raises on corrupt data (callers name the codec).

    Example:
        >>> import numcodecs
        >>> bytes(decompress_at_most(numcodecs.Zlib(), "zlib", numcodecs.Zlib().encode(b"ab"), 2))
        b'ab'
        >>> decompress_at_most(numcodecs.Zlib(), "zlib", numcodecs.Zlib().encode(b"abc"), 2)
        Traceback (most recent call last):
        ...
        torchzarr.errors.ChunkDecodeError: zlib codec: the data decompresses to more than 2 bytes, more than this chunk can hold (corrupt, or a decompression bomb)
    """
    if codec_id in DECODES_INTO:
        size = decoded_size(codec_id, data)
        if size is not None and size > limit:
            raise too_large(codec_id, limit)
        if is_empty_frame(codec_id, data):
            return b""  # numcodecs rejects the frames it writes for empty input
        if size is not None:  # stated, within the limit: decoded into exactly that much
            return impl.decode(data)
        if codec_id == "zstd" and fast_decode.available(
            "zstd"
        ):  # no content size: stops at the limit
            decoded = fast_decode.zstd_decompress_at_most(data, limit)
            if decoded is None:
                raise too_large(codec_id, limit)
            return decoded
        decoded = impl.decode(data)  # numcodecs streams it whole; checked after
        if nbytes_of(decoded) > limit:
            raise too_large(codec_id, limit)
        return decoded
    new = _stream_decompressor(impl, codec_id)
    if new is not None:
        return _streams(codec_id, new, data, limit)
    decoded = impl.decode(data)
    if nbytes_of(decoded) > limit:
        raise too_large(codec_id, limit)
    return decoded
