"""Codecs: v3 codec chains, v2 numcodecs pipelines, the codec registry and chunk key encodings.

Core builds one pipeline per array (``V3Pipeline`` or ``V2Pipeline``, both ``ChunkPipeline``)
and calls ``encode``/``decode`` per chunk; metadata parses codec JSON with
``codec_from_json``; users add codecs with ``register_codec`` or the ``torchzarr.codecs``
entry-point group.

Example:
    >>> from torchzarr.codecs import codec_from_json
    >>> codec_from_json({"name": "zstd", "configuration": {"level": 3}}).codec_name
    'zstd'
"""

from __future__ import annotations

from torchzarr.codecs.base import (
    ArrayArrayCodec,
    ArrayBytesCodec,
    BytesBytesCodec,
    ChunkSpec,
    Codec,
)
from torchzarr.codecs.bytes_codec import BytesCodec
from torchzarr.codecs.compressors import BloscCodec, Crc32cCodec, GzipCodec, ZstdCodec
from torchzarr.codecs.key_encoding import (
    ChunkKeyEncoding,
    DefaultChunkKeyEncoding,
    V2ChunkKeyEncoding,
    register_chunk_key_encoding,
)
from torchzarr.codecs.numcodecs_adapter import NumcodecsCodec
from torchzarr.codecs.pipeline import ChunkPipeline, V3Pipeline
from torchzarr.codecs.registry import (
    codec_from_json,
    get_codec_class,
    register_codec,
    registered_codecs,
)
from torchzarr.codecs.transpose import TransposeCodec
from torchzarr.codecs.user_chains import default_v3_codecs
from torchzarr.codecs.v2_pipeline import V2Pipeline, v2_codec_config

__all__ = [
    "ArrayArrayCodec",
    "ArrayBytesCodec",
    "BloscCodec",
    "BytesBytesCodec",
    "BytesCodec",
    "ChunkKeyEncoding",
    "ChunkPipeline",
    "ChunkSpec",
    "Codec",
    "Crc32cCodec",
    "DefaultChunkKeyEncoding",
    "GzipCodec",
    "NumcodecsCodec",
    "TransposeCodec",
    "V2ChunkKeyEncoding",
    "V2Pipeline",
    "V3Pipeline",
    "ZstdCodec",
    "codec_from_json",
    "default_v3_codecs",
    "get_codec_class",
    "register_chunk_key_encoding",
    "register_codec",
    "registered_codecs",
    "v2_codec_config",
]
