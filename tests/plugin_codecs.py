"""Plugin codecs that break a codec's promises, for the tests of what catches them."""

from __future__ import annotations

from typing import Any

from torchzarr.codecs import BytesBytesCodec


class ShortBoundHeader(BytesBytesCodec):
    """Adds an 8-byte header, yet declares ``max_encoded_size(n) == n``."""

    codec_name = "test.short_bound"

    @classmethod
    def from_config(cls, configuration: dict[str, Any]) -> ShortBoundHeader:
        return cls()

    def configuration(self) -> dict[str, Any]:
        return {}

    def encode(self, data: bytes) -> bytes:
        return b"HDR00000" + bytes(data)

    def decode(self, data: bytes) -> bytes:
        return bytes(data)[8:]

    def max_encoded_size(self, nbytes: int) -> int:
        return nbytes
