"""Chunk encoders that compress into reused per-thread memory for the local write path."""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import numcodecs
import numpy as np

from torchzarr.codecs import fast_encode
from torchzarr.codecs.compressors import ZstdCodec
from torchzarr.core.fastpath import zstd_codec

__all__ = ["reusing_encoder"]


def reusing_encoder(pipeline: Any) -> Callable[[np.ndarray], memoryview] | None:
    """An encoder writing a chunk's zstd frame into the thread's reused buffer, or None.

    It applies where a chunk is stored as one zstd frame of its C-order native bytes. Its
    result is valid until the thread's next call (write it out first); chunks too big for
    the buffer, or of another dtype, take ``pipeline.encode``, as do
    levels that are not integers.

    Example:
        >>> from torchzarr.codecs import BytesCodec
        >>> from torchzarr.codecs.base import ChunkSpec
        >>> from torchzarr.codecs.pipeline import V3Pipeline
        >>> spec = ChunkSpec((4,), np.dtype("<i4"), 0)
        >>> encode = reusing_encoder(V3Pipeline([BytesCodec("little"), ZstdCodec(1)], spec))
        >>> len(encode(np.arange(4, dtype="<i4"))) > 0
        True
    """
    codec = zstd_codec(pipeline)
    if codec is None or not fast_encode.available():
        return None
    if not isinstance(codec, ZstdCodec | numcodecs.Zstd):
        return None
    try:
        level = operator.index(codec.level)
    except TypeError:
        return None  # a level numcodecs cannot take either: its encode names the codec
    checksum = bool(getattr(codec, "checksum", False))
    spec = pipeline.spec
    dtype, small = spec.dtype, spec.nbytes <= fast_encode.MAX_INPUT_BYTES
    fallback = pipeline.encode

    def encode(chunk: np.ndarray) -> Any:
        if small and chunk.dtype == dtype and chunk.shape == spec.shape:
            return fast_encode.zstd_compress(chunk, level, checksum)
        return fallback(chunk)

    return encode
