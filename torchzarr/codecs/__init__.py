"""Codecs: the v3 codec chain, v2 numcodecs pipelines, sharding, registries."""

from __future__ import annotations

from torchzarr.codecs.base import ArrayArrayCodec, ArrayBytesCodec, BytesBytesCodec, ChunkSpec, Codec
from torchzarr.codecs.key_encoding import (
    ChunkKeyEncoding,
    DefaultChunkKeyEncoding,
    V2ChunkKeyEncoding,
    register_chunk_key_encoding,
)
from torchzarr.codecs.pipeline import V3Pipeline, default_v3_codecs
from torchzarr.codecs.registry import codec_from_json, get_codec_class, register_codec, registered_codecs
from torchzarr.codecs.v2_pipeline import V2Pipeline, v2_codec_config

__all__ = [
    "ArrayArrayCodec",
    "ArrayBytesCodec",
    "BytesBytesCodec",
    "ChunkKeyEncoding",
    "ChunkSpec",
    "Codec",
    "DefaultChunkKeyEncoding",
    "V2ChunkKeyEncoding",
    "V2Pipeline",
    "V3Pipeline",
    "codec_from_json",
    "default_v3_codecs",
    "get_codec_class",
    "register_chunk_key_encoding",
    "register_codec",
    "registered_codecs",
    "v2_codec_config",
]
