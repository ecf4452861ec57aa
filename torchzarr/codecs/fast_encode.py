"""zstd compression from an array's memory into a reused per-thread buffer (no fresh pages)."""

from __future__ import annotations

import ctypes
import threading
from typing import Any

import numpy as np

from torchzarr.codecs import fast_decode
from torchzarr.errors import CodecError

__all__ = ["MAX_INPUT_BYTES", "available", "zstd_compress"]

#: inputs above this are left to numcodecs (the per-thread output buffer stays bounded)
MAX_INPUT_BYTES = 64 << 20
_ZSTD_C_COMPRESSION_LEVEL = 100  # ZSTD_cParameter values of zstd.h (stable API)
_ZSTD_C_CHECKSUM_FLAG = 201
_c_size_t, _c_void_p = ctypes.c_size_t, ctypes.c_void_p


def _load() -> Any:
    lib = fast_decode.zstd_library()
    if lib is None:
        return None
    try:
        lib.ZSTD_createCCtx.restype = _c_void_p
        lib.ZSTD_createCCtx.argtypes = []
        lib.ZSTD_freeCCtx.restype = _c_size_t
        lib.ZSTD_freeCCtx.argtypes = [_c_void_p]
        lib.ZSTD_CCtx_setParameter.restype = _c_size_t
        lib.ZSTD_CCtx_setParameter.argtypes = [_c_void_p, ctypes.c_int, ctypes.c_int]
        lib.ZSTD_compress2.restype = _c_size_t
        lib.ZSTD_compress2.argtypes = [_c_void_p, _c_void_p, _c_size_t, _c_void_p, _c_size_t]
        lib.ZSTD_compressBound.restype = _c_size_t
        lib.ZSTD_compressBound.argtypes = [_c_size_t]
    except AttributeError:
        return None
    return lib


_ZSTD = _load()
_local = threading.local()


def available() -> bool:
    """True when :func:`zstd_compress` can run here (numcodecs exports zstd's C API).

    Example:
        >>> isinstance(available(), bool)
        True
    """
    return _ZSTD is not None


def _check(result: int, what: str) -> int:
    name = fast_decode.zstd_error(result)
    if name is not None:
        raise CodecError(f"zstd codec: cannot encode: {what} failed ({name})")
    return result


def _contiguous(array: np.ndarray) -> np.ndarray:
    """A C-contiguous copy of ``array`` in this thread's reused staging memory."""
    nbytes = array.nbytes
    stage = getattr(_local, "stage", None)
    if stage is None or stage.nbytes < nbytes:
        stage = _local.stage = np.empty(nbytes, dtype=np.uint8)
    copy = stage[:nbytes].view(array.dtype).reshape(array.shape)
    np.copyto(copy, array)
    return copy


def zstd_compress(array: np.ndarray, level: int, checksum: bool) -> memoryview:
    """One zstd frame of ``array``'s bytes (C-contiguous), as numcodecs' ``Zstd`` writes it.

    The result is a view of this thread's output buffer: it is valid until the thread's
    next call, so write it out (or copy it) first. A fresh output per chunk would land on
    new pages, each faulted in on first touch, which costs about as much as level-1
    compression itself.

    Raises:
        CodecError: zstd refused the input or the parameters.

    Example:
        >>> import numcodecs
        >>> data = np.arange(1000, dtype=np.int32)
        >>> frame = zstd_compress(data, 1, False)
        >>> bytes(frame) == numcodecs.Zstd(level=1).encode(data)
        True
    """
    src = array if array.flags.c_contiguous else _contiguous(array)
    nbytes = src.nbytes
    ctx = getattr(_local, "ctx", None)
    if ctx is None:
        ctx = _local.ctx = fast_decode.ZstdContext("C")
    cap = _ZSTD.ZSTD_compressBound(nbytes)
    buf: np.ndarray | None = getattr(_local, "buf", None)
    if buf is None or buf.nbytes < cap:
        buf = _local.buf = np.empty(cap, dtype=np.uint8)
    _check(_ZSTD.ZSTD_CCtx_setParameter(ctx.ptr, _ZSTD_C_COMPRESSION_LEVEL, level), "level")
    _check(_ZSTD.ZSTD_CCtx_setParameter(ctx.ptr, _ZSTD_C_CHECKSUM_FLAG, int(checksum)), "checksum")
    address = src.__array_interface__["data"][0] if nbytes else None
    size = _check(_ZSTD.ZSTD_compress2(ctx.ptr, buf.ctypes.data, cap, address, nbytes), "compress")
    return memoryview(buf.data)[:size]
