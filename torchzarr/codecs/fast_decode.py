"""zstd and blosc decompression straight into a buffer, reusing a decoder context per thread."""

from __future__ import annotations

import contextlib
import ctypes
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from torchzarr.errors import ChecksumError, ChunkDecodeError

__all__ = [
    "ZstdContext",
    "available",
    "decompress_into",
    "decompress_prefix",
    "zstd_content_size",
    "decompress_to",
    "zstd_decompress_at_most",
    "zstd_decompressor",
    "zstd_decompressor_at",
    "zstd_error",
    "zstd_library",
    "zstd_prefix_applies",
]

_c_size_t, _c_void_p, _c_char_p = ctypes.c_size_t, ctypes.c_void_p, ctypes.c_char_p


def _load_zstd() -> Any:
    """numcodecs' own zstd (its extension exports the C API), or None where it does not."""
    try:
        import numcodecs.zstd

        lib = ctypes.CDLL(numcodecs.zstd.__file__)
        lib.ZSTD_createDCtx.restype = _c_void_p
        lib.ZSTD_createDCtx.argtypes = []
        lib.ZSTD_freeDCtx.restype = _c_size_t
        lib.ZSTD_freeDCtx.argtypes = [_c_void_p]
        lib.ZSTD_decompressDCtx.restype = _c_size_t
        lib.ZSTD_decompressDCtx.argtypes = [_c_void_p, _c_void_p, _c_size_t, _c_char_p, _c_size_t]
        lib.ZSTD_isError.restype = ctypes.c_uint
        lib.ZSTD_isError.argtypes = [_c_size_t]
        lib.ZSTD_getErrorName.restype = _c_char_p
        lib.ZSTD_getErrorName.argtypes = [_c_size_t]
        lib.ZSTD_DCtx_reset.restype = _c_size_t
        lib.ZSTD_DCtx_reset.argtypes = [_c_void_p, ctypes.c_int]
        lib.ZSTD_decompressStream.restype = _c_size_t
        lib.ZSTD_decompressStream.argtypes = [_c_void_p, _c_void_p, _c_void_p]
        lib.ZSTD_findFrameCompressedSize.restype = _c_size_t
        lib.ZSTD_findFrameCompressedSize.argtypes = [_c_char_p, _c_size_t]
    except (ImportError, OSError, AttributeError):
        return None
    return lib


class _Buffer(ctypes.Structure):  # ZSTD_inBuffer and ZSTD_outBuffer share this layout
    _fields_ = [("ptr", _c_void_p), ("size", _c_size_t), ("pos", _c_size_t)]


def _load_blosc() -> Any:
    try:
        import numcodecs.blosc

        lib = ctypes.CDLL(numcodecs.blosc.__file__)
        lib.blosc_decompress_ctx.restype = ctypes.c_int
        lib.blosc_decompress_ctx.argtypes = [_c_char_p, _c_void_p, _c_size_t, ctypes.c_int]
    except (ImportError, OSError, AttributeError):
        return None
    return lib


_ZSTD = _load_zstd()
_BLOSC = _load_blosc()


class ZstdContext:
    """A zstd context owned by one thread, freed with this object (so with the thread).

    ``kind`` is ``"D"`` (decompression) or ``"C"`` (compression).

    Example:
        >>> bool(ZstdContext("D").ptr)
        True
    """

    def __init__(self, kind: str) -> None:
        self.free = getattr(_ZSTD, f"ZSTD_free{kind}Ctx")
        self.ptr = getattr(_ZSTD, f"ZSTD_create{kind}Ctx")()
        if not self.ptr:
            raise MemoryError(f"ZSTD_create{kind}Ctx failed")

    def __del__(self) -> None:
        ptr = getattr(self, "ptr", None)
        if ptr:
            with contextlib.suppress(Exception):  # interpreter shutdown
                self.free(ptr)


_local = threading.local()


def available(codec_id: str) -> bool:
    """True when :func:`decompress_into` has a fast path for ``codec_id`` here.

    Example:
        >>> isinstance(available("zstd"), bool), available("gzip")
        (True, False)
    """
    return (codec_id == "zstd" and _ZSTD is not None) or (
        codec_id == "blosc" and _BLOSC is not None
    )


def _zstd_context() -> Any:
    ctx = getattr(_local, "zstd", None)
    if ctx is None:
        ctx = _local.zstd = ZstdContext("D")
    return ctx.ptr


def _source(data: Any) -> tuple[Any, int]:
    """A pointer-able form of ``data`` (bytes pass as is, no copy) and its length."""
    if isinstance(data, bytes):
        return data, len(data)
    array = np.frombuffer(data, dtype=np.uint8)
    return ctypes.c_char_p(array.ctypes.data), array.size


# ZSTD_isError without a second foreign call: error codes are the last values of size_t.
_ZSTD_ERROR_FLOOR = 2 ** (8 * ctypes.sizeof(_c_size_t)) - 128


def decompress_into(codec_id: str, data: Any, out: np.ndarray) -> None:
    """Decompress ``data`` into ``out`` (C-contiguous, writable), which it must fill exactly.

    The GIL is released while the C code runs.

    Raises:
        ChunkDecodeError: corrupt or truncated data, or a decoded size other than ``out.nbytes``.

    Example:
        >>> import numcodecs
        >>> out = np.empty(4, dtype=np.uint8)
        >>> decompress_into("zstd", numcodecs.Zstd().encode(b"abcd"), out)
        >>> out.tobytes()
        b'abcd'
    """
    decompress_to(codec_id, data, out.__array_interface__["data"][0], out.nbytes)


def decompress_to(codec_id: str, data: Any, address: int, size: int) -> None:
    """Decompress ``data`` into the ``size`` writable bytes at ``address``, filling them exactly.

    The caller keeps the memory alive and writable; :func:`decompress_into` is the safe form.

    Raises:
        ChunkDecodeError: corrupt or truncated data, or a decoded size other than ``size``.

    Example:
        >>> import numcodecs
        >>> out = np.zeros(8, dtype=np.uint8)
        >>> decompress_to("zstd", numcodecs.Zstd().encode(b"abcd"), out.ctypes.data + 4, 4)
        >>> out.tobytes()
        b'\\x00\\x00\\x00\\x00abcd'
    """
    cap = size
    src, nsrc = _source(data)
    if codec_id == "zstd":
        n = _ZSTD.ZSTD_decompressDCtx(_zstd_context(), address, cap, src, nsrc)
        if n != cap:
            _zstd_failure(n, cap)
        return
    # blosc: its header states both sizes; the compressed one must match, or it reads past data
    head = bytes(memoryview(data).cast("B")[:16])
    if len(head) < 16:
        raise ChunkDecodeError(f"blosc codec: {len(head)} bytes cannot hold the 16-byte header")
    nbytes, cbytes = int.from_bytes(head[4:8], "little"), int.from_bytes(head[12:16], "little")
    if cbytes != nsrc:
        raise ChunkDecodeError(
            f"blosc codec: header says {cbytes} compressed bytes, the chunk holds {nsrc} "
            "(truncated or corrupt)"
        )
    if nbytes != cap:
        raise ChunkDecodeError(
            f"blosc codec: the chunk decompresses to {nbytes} bytes, expected {cap}"
        )
    n = _BLOSC.blosc_decompress_ctx(src, address, cap, 1)
    if n != cap:
        raise ChunkDecodeError(f"blosc codec: decompression failed (code {n})")


def zstd_decompress_at_most(data: Any, limit: int) -> np.ndarray | None:
    """Decompress the zstd frames of ``data``, stating their size or not, into a new buffer
    of ``limit`` bytes; returns the part filled, or None when the data decodes to more than
    ``limit`` bytes (found once ``limit`` bytes are written, not after decoding all of it).

    Raises:
        ChunkDecodeError: corrupt data.

    Example:
        >>> import numcodecs
        >>> zstd_decompress_at_most(numcodecs.Zstd().encode(b"abcd"), 8).tobytes()
        b'abcd'
        >>> zstd_decompress_at_most(numcodecs.Zstd().encode(b"abcd"), 3) is None
        True
    """
    out = np.empty(limit, dtype=np.uint8)
    src, nsrc = _source(data)
    n = _ZSTD.ZSTD_decompressDCtx(_zstd_context(), out.ctypes.data, limit, src, nsrc)
    name = zstd_error(n)
    if name is None:
        return out[:n]
    if "too small" in name:  # ZSTD_error_dstSize_tooSmall
        return None
    raise zstd_decode_error(name)


def zstd_decode_error(name: str, detail: str = "") -> ChunkDecodeError:
    """The error for zstd's error ``name``: a :class:`ChecksumError` for a frame whose
    content checksum does not match, else a :class:`ChunkDecodeError`.

    Example:
        >>> type(zstd_decode_error("Restored data doesn't match checksum")).__name__
        'ChecksumError'
    """
    kind = ChecksumError if "checksum" in name else ChunkDecodeError
    return kind(f"zstd codec: {name}{detail}")


def zstd_library() -> Any:
    """numcodecs' zstd extension loaded as a C library (its API exported), or None.

    Example:
        >>> zstd_library() is None or hasattr(zstd_library(), "ZSTD_decompressDCtx")
        True
    """
    return _ZSTD


def zstd_error(result: int) -> str | None:
    """zstd's name for the error a ``size_t`` result encodes, or None when it is a size.

    Example:
        >>> zstd_error(5) is None
        True
    """
    if result >= _ZSTD_ERROR_FLOOR and _ZSTD.ZSTD_isError(result):
        return str(_ZSTD.ZSTD_getErrorName(result).decode(errors="replace"))
    return None


def _zstd_failure(result: int, expected: int) -> None:
    name = zstd_error(result)
    if name is not None:
        raise zstd_decode_error(name, f" (expected {expected} bytes)")
    raise ChunkDecodeError(
        f"zstd codec: the chunk decompresses to {result} bytes, expected {expected}"
    )


def zstd_decompressor() -> Callable[[Any, int, int], None]:
    """:func:`decompress_to` for zstd, for many calls on the calling thread only.

    The thread's context and the C function are looked up once: for chunks of a kilobyte
    that lookup costs as much as the decode.

    Example:
        >>> import numcodecs
        >>> out = np.zeros(4, dtype=np.uint8)
        >>> zstd_decompressor()(numcodecs.Zstd().encode(b"abcd"), out.ctypes.data, 4)
        >>> out.tobytes()
        b'abcd'
    """
    call, ctx = _ZSTD.ZSTD_decompressDCtx, _zstd_context()

    def decompress(data: Any, address: int, size: int) -> None:
        src, nsrc = (data, len(data)) if type(data) is bytes else _source(data)
        n = call(ctx, address, size, src, nsrc)
        if n != size:
            _zstd_failure(n, size)

    return decompress


# ZSTD_decompressDCtx with the source as an address, for frames inside a larger buffer
_DECOMPRESS_AT = ctypes.CFUNCTYPE(_c_size_t, _c_void_p, _c_void_p, _c_size_t, _c_void_p, _c_size_t)


def zstd_decompressor_at() -> Callable[[int, int, int, int], None]:
    """Like :func:`zstd_decompressor`, with the frame given by address and length.

    For frames that lie side by side in one buffer (a run of a shard's inner chunks): no
    view or conversion per frame. The caller keeps both buffers alive.

    Example:
        >>> import numcodecs
        >>> frame = np.frombuffer(numcodecs.Zstd().encode(b"abcd"), dtype=np.uint8)
        >>> out = np.zeros(4, dtype=np.uint8)
        >>> zstd_decompressor_at()(frame.ctypes.data, frame.size, out.ctypes.data, 4)
        >>> out.tobytes()
        b'abcd'
    """
    call = _DECOMPRESS_AT(ctypes.cast(_ZSTD.ZSTD_decompressDCtx, _c_void_p).value or 0)
    ctx = _zstd_context()

    def decompress(source: int, nsource: int, dest: int, size: int) -> None:
        n = call(ctx, dest, size, source, nsource)
        if n != size:
            _zstd_failure(n, size)

    return decompress


_ZSTD_MAGIC = 0xFD2FB528


_CHECKSUM_FLAG = 0x04  # Frame_Header_Descriptor bit 2: Content_Checksum_flag


def _frame_header(data: Any) -> tuple[int, int | None] | None:
    """(Frame_Header_Descriptor, Frame_Content_Size or None) of the first zstd frame, or
    None when ``data`` does not start with a zstd frame header."""
    view = memoryview(data)
    if view.ndim != 1 or view.itemsize != 1:
        view = view.cast("B")
    head = bytes(view[:18])
    if len(head) < 6 or int.from_bytes(head[:4], "little") != _ZSTD_MAGIC:
        return None
    descriptor = head[4]
    fcs_flag, single_segment, dict_flag = descriptor >> 6, (descriptor >> 5) & 1, descriptor & 3
    pos = 5 + (0 if single_segment else 1) + (0, 1, 2, 4)[dict_flag]
    width = (1 if single_segment else 0, 2, 4, 8)[fcs_flag]
    if width == 0 or len(head) < pos + width:
        return descriptor, None
    size = int.from_bytes(head[pos : pos + width], "little")
    return descriptor, size + 256 if width == 2 else size


def zstd_content_size(data: Any) -> int | None:
    """Frame_Content_Size of the first zstd frame, or None when the header leaves it out.

    Example:
        >>> import numcodecs
        >>> zstd_content_size(numcodecs.Zstd().encode(bytes(1000)))
        1000
    """
    header = _frame_header(data)
    return None if header is None else header[1]


def zstd_prefix_applies(data: Any, total: int, complete: bool = True) -> bool:
    """Whether :func:`decompress_prefix` may stand in for a whole decode of ``data``.

    Only for one frame stating ``total`` as its content size and carrying no checksum (a
    checksum is verified only at the frame's end, so such chunks are always decoded whole).
    With ``complete`` (``data`` is the whole chunk), the frame must also end where ``data``
    does: a chunk of several frames, or with bytes after its frame, is decoded whole.
    Anything else returns False: decode the whole chunk the usual way, which checks it.

    Example:
        >>> import numcodecs
        >>> zstd_prefix_applies(numcodecs.Zstd().encode(bytes(1000)), 1000)
        True
        >>> zstd_prefix_applies(numcodecs.Zstd(checksum=True).encode(bytes(1000)), 1000)
        False
    """
    header = _frame_header(data)
    if header is None or header[1] != total or header[0] & _CHECKSUM_FLAG:
        return False
    if not complete:
        return True
    source, size = _source(data)
    return bool(_ZSTD.ZSTD_findFrameCompressedSize(source, size) == size)


def decompress_prefix(data: Any, out: np.ndarray) -> None:
    """Decompress only the first ``out.nbytes`` bytes of a zstd frame into ``out``.

    zstd stops after the block that fills ``out``: reading a few rows of a large chunk
    decodes the chunk up to the last of them, not the whole of it, so nothing past them is
    verified. Call it only where :func:`zstd_prefix_applies` (one frame of the chunk's
    stated size, without a checksum).

    Raises:
        ChunkDecodeError: corrupt data, or a frame shorter than ``out``.

    Example:
        >>> import numcodecs
        >>> out = np.empty(2, dtype=np.uint8)
        >>> decompress_prefix(numcodecs.Zstd().encode(b"abcd"), out)
        >>> out.tobytes()
        b'ab'
    """
    lib, ctx = _ZSTD, _zstd_context()
    lib.ZSTD_DCtx_reset(ctx, 1)  # ZSTD_reset_session_only: a previous frame may be unfinished
    source, size = _source(data)
    inbuf = _Buffer(ctypes.cast(source, _c_void_p), size, 0)
    outbuf = _Buffer(out.ctypes.data, out.nbytes, 0)
    while outbuf.pos < outbuf.size:
        ret = lib.ZSTD_decompressStream(ctx, ctypes.byref(outbuf), ctypes.byref(inbuf))
        if lib.ZSTD_isError(ret):
            name = lib.ZSTD_getErrorName(ret).decode(errors="replace")
            raise zstd_decode_error(name)
        if outbuf.pos < outbuf.size and (ret == 0 or inbuf.pos == inbuf.size):
            raise ChunkDecodeError(
                f"zstd codec: the chunk ends after {outbuf.pos} bytes, expected at least "
                f"{outbuf.size}"
            )
