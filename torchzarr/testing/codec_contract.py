"""``CodecContract``: the pytest suite every v3 codec passes; each codec adds a small subclass."""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

import numpy as np
import pytest

from torchzarr.codecs.base import (
    ArrayArrayCodec,
    ArrayBytesCodec,
    BytesBytesCodec,
    ChunkSpec,
    Codec,
)
from torchzarr.codecs.bytes_codec import BytesCodec
from torchzarr.codecs.compressors import ZstdCodec
from torchzarr.codecs.pipeline import V3Pipeline, evolve_checked
from torchzarr.codecs.registry import codec_from_json
from torchzarr.errors import ChunkDecodeError

__all__ = ["CodecContract", "random_chunk"]


def random_chunk(rng: np.random.Generator, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """Random data of any storage dtype: full-range integers, normal floats, random bools.

    Example:
        >>> random_chunk(np.random.default_rng(0), (2, 3), "int16").shape
        (2, 3)
    """
    dt = np.dtype(dtype)
    if dt.kind == "b":
        return rng.integers(0, 2, size=shape).astype(bool)
    if dt.kind in "iu":
        info = np.iinfo(dt)
        return rng.integers(info.min, info.max, size=shape, dtype=dt, endpoint=True)
    if dt.kind == "f":
        return rng.normal(0.0, 1000.0, size=shape).astype(dt)
    if dt.kind == "c":
        parts = rng.normal(0.0, 1000.0, size=(2, *shape))
        return (parts[0] + 1j * parts[1]).astype(dt)
    raise TypeError(f"random_chunk: no generator for dtype {dt}")


class CodecContract:
    """The behaviour every v3 codec must have, as a pytest base class.

    Subclass it as ``Test<Something>`` and set ``codec`` (or override :meth:`make_codec` to
    build one per dtype) and ``dtypes``. The codec is run inside the smallest chain it needs
    (``bytes`` little endian around array -> array and bytes -> bytes codecs) over random
    data of every dtype in ``dtypes`` and every shape in ``shapes``. Lossy codecs set
    ``exact = False`` with ``atol``/``rtol``, or override :meth:`make_data` to draw data they
    represent exactly.

    Example:
        >>> from torchzarr.codecs.compressors import ZstdCodec
        >>> class TestZstd(CodecContract):
        ...     codec = ZstdCodec(level=3)
        ...     dtypes = ("uint8", "float32")
    """

    #: the codec under test (or override :meth:`make_codec`)
    codec: ClassVar[Codec | None] = None
    #: storage dtypes to run it on
    dtypes: ClassVar[Sequence[str]] = ("bool", "uint8", "int16", "int32", "float32", "float64")
    #: chunk shapes, including empty ones and odd sizes
    shapes: ClassVar[Sequence[tuple[int, ...]]] = ((0,), (1,), (37,), (4, 5), (3, 0, 2), (2, 3, 5))
    #: the codec's exact JSON form, when the test pins it
    expected_json: ClassVar[dict[str, Any] | None] = None
    #: False for lossy codecs, compared with ``atol``/``rtol``
    exact: ClassVar[bool] = True
    atol: ClassVar[float] = 0.0
    rtol: ClassVar[float] = 0.0
    #: False where the codec cannot notice a truncated chunk on its own and no codec after it
    #: checks the size (never the case for the chains built here)
    detects_truncation: ClassVar[bool] = True
    seed: ClassVar[int] = 1234
    #: threads and distinct chunks per dtype of the concurrency check
    threads: ClassVar[int] = 8
    concurrent_chunks: ClassVar[int] = 32

    # -- hooks ------------------------------------------------------------------------------
    def make_codec(self, dtype: np.dtype[Any]) -> Codec:
        """The codec to test for ``dtype``."""
        if self.codec is None:
            raise TypeError(f"{type(self).__name__}: set `codec` or override make_codec()")
        return self.codec

    def make_data(
        self, rng: np.random.Generator, shape: tuple[int, ...], dtype: np.dtype[Any]
    ) -> np.ndarray:
        """Random data the codec should round-trip."""
        return random_chunk(rng, shape, dtype)

    def chain(self, codec: Codec, dtype: np.dtype[Any]) -> list[Codec]:
        """The smallest valid chain around ``codec``."""
        if isinstance(codec, ArrayBytesCodec):
            return [codec]
        if isinstance(codec, ArrayArrayCodec):
            return [codec, BytesCodec("little")]
        return [BytesCodec("little"), codec]

    def assert_same(self, decoded: np.ndarray, original: np.ndarray, what: str) -> None:
        """Decoded data equals the original (bit for bit when exact; NaN equals NaN)."""
        assert decoded.shape == original.shape, f"{what}: shape {decoded.shape}"
        assert decoded.dtype == original.dtype, f"{what}: dtype {decoded.dtype}"
        if self.exact:
            a = np.ascontiguousarray(decoded).view(np.uint8)
            b = np.ascontiguousarray(original).view(np.uint8)
            assert np.array_equal(a, b), f"{what}: decoded data differs"
        else:
            np.testing.assert_allclose(
                decoded, original, atol=self.atol, rtol=self.rtol, err_msg=what
            )

    # -- helpers ----------------------------------------------------------------------------
    def _specs(self) -> Iterator[tuple[Codec, ChunkSpec, np.ndarray, str]]:
        """``(codec, chunk spec, data, description)`` for each dtype and shape tested."""
        rng = np.random.default_rng(self.seed)
        for name in self.dtypes:
            dtype = np.dtype(name)
            codec = self.make_codec(dtype)
            for shape in self.shapes:
                spec = ChunkSpec(tuple(shape), dtype, dtype.type(0))
                data = self.make_data(rng, tuple(shape), dtype)
                yield codec, spec, data, f"{codec!r} on {dtype} {tuple(shape)}"

    def _cases(self) -> list[tuple[str, tuple[int, ...], V3Pipeline, np.ndarray]]:
        return [
            (what, spec.shape, V3Pipeline(self.chain(codec, spec.dtype), spec), data)
            for codec, spec, data, what in self._specs()
        ]

    def _codec(self) -> Codec:
        return self.make_codec(np.dtype(self.dtypes[0]))

    # -- the contract -----------------------------------------------------------------------
    def test_round_trip(self) -> None:
        for what, _, pipe, data in self._cases():
            encoded = pipe.encode(data)
            assert isinstance(encoded, bytes), f"{what}: encode returned {type(encoded)}"
            self.assert_same(pipe.decode(encoded), data, what)
            self.assert_same(pipe.decode(memoryview(encoded)), data, f"{what} (memoryview)")

    def test_decode_into_out(self) -> None:
        for what, shape, pipe, data in self._cases():
            encoded = pipe.encode(data)
            out = np.empty(shape, dtype=data.dtype)
            result = pipe.decode(encoded, out=out)
            assert result is out, f"{what}: decode(out=...) must return out"
            self.assert_same(out, data, f"{what} (out=)")

    def test_any_memory_layout_encodes_the_same(self) -> None:
        for what, _, pipe, data in self._cases():
            fortran = np.asfortranarray(data)
            assert pipe.encode(fortran) == pipe.encode(data), f"{what}: F-order input differs"

    def test_truncated_chunk_raises(self) -> None:
        if not self.detects_truncation:
            pytest.skip("this codec cannot detect truncation")
        for what, _, pipe, data in self._cases():
            encoded = pipe.encode(data)
            if not encoded:
                continue
            with pytest.raises(ChunkDecodeError):
                pipe.decode(encoded[:-1], key="c/0")
                raise AssertionError(f"{what}: a truncated chunk decoded")

    def test_json_round_trip(self) -> None:
        codec = self._codec()
        doc = codec.to_json()
        assert json.loads(json.dumps(doc)) == doc, "to_json must be plain JSON"
        assert isinstance(doc["name"], str) and doc["name"] == codec.codec_name
        again = codec_from_json(json.loads(json.dumps(doc)))
        assert again == codec and again.to_json() == doc
        if self.expected_json is not None:
            assert doc == self.expected_json

    def test_evolved_json_round_trip(self) -> None:
        for name in self.dtypes:
            dtype = np.dtype(name)
            spec = ChunkSpec(tuple(self.shapes[-1]), dtype, dtype.type(0))
            evolved = self.make_codec(dtype).evolve(spec)
            assert codec_from_json(evolved.to_json()) == evolved

    def test_equality_and_hash(self) -> None:
        codec = self._codec()
        twin = codec_from_json(copy.deepcopy(codec.to_json()))
        assert codec == twin and hash(codec) == hash(twin)
        assert codec != "not a codec"
        assert len({codec, twin}) == 1

    def test_repr_is_readable(self) -> None:
        text = repr(self._codec())
        assert isinstance(text, str) and " object at 0x" not in text

    def test_encoded_size_within_max_encoded_size(self) -> None:
        """The codec's own output never exceeds its declared ``max_encoded_size``: readers
        refuse to decode past that bound (it stops decompression bombs)."""
        for codec, spec, data, what in self._specs():
            data = np.ascontiguousarray(data)
            if isinstance(codec, BytesBytesCodec):
                raw = data.tobytes()
                bb = evolve_checked(codec, spec)
                size, bound = len(bb.encode(raw)), bb.max_encoded_size(len(raw))
            elif isinstance(codec, ArrayBytesCodec):
                ab = evolve_checked(codec, spec)
                size, bound = len(ab.encode(data, spec)), ab.max_encoded_size(spec)
            else:
                continue  # array -> array codecs declare no byte bound
            assert size <= bound, f"{what}: encoded to {size} bytes, max_encoded_size {bound}"

    def test_round_trip_with_a_compressor_after_it(self) -> None:
        """Followed by zstd (which decodes no further than this codec's bound) it still reads."""
        for codec, spec, data, what in self._specs():
            pipe = V3Pipeline([*self.chain(codec, spec.dtype), ZstdCodec()], spec)
            self.assert_same(pipe.decode(pipe.encode(data), key="c/0"), data, f"{what}, then zstd")

    def test_concurrent_encode_decode(self) -> None:
        """Codecs are called from several threads at once: many distinct chunks encoded and
        decoded in parallel give what they give one at a time (no shared scratch state)."""
        rng = np.random.default_rng(self.seed)
        shape = max(self.shapes, key=math.prod)
        for name in self.dtypes:
            dtype = np.dtype(name)
            spec = ChunkSpec(tuple(shape), dtype, dtype.type(0))
            pipe = V3Pipeline(self.chain(self.make_codec(dtype), dtype), spec)
            chunks = [
                self.make_data(rng, tuple(shape), dtype) for _ in range(self.concurrent_chunks)
            ]
            serial = [pipe.encode(c) for c in chunks]
            with ThreadPoolExecutor(self.threads) as pool:
                encoded = list(pool.map(pipe.encode, chunks))
                decoded = list(pool.map(pipe.decode, serial))
            for i, (chunk, enc, dec) in enumerate(zip(chunks, encoded, decoded, strict=True)):
                what = f"{dtype} chunk {i} of {len(chunks)} on {self.threads} threads"
                self.assert_same(pipe.decode(enc), chunk, f"{what}: concurrent encode")
                self.assert_same(dec, chunk, f"{what}: concurrent decode")
