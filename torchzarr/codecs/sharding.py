"""The ``sharding_indexed`` codec: many inner chunks in one stored object, with an index."""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from torchzarr.codecs import fast_decode
from torchzarr.codecs.base import ArrayBytesCodec, ChunkSpec, Codec
from torchzarr.codecs.bytes_codec import BytesCodec
from torchzarr.codecs.chunks import is_all_fill
from torchzarr.codecs.compressors import Crc32cCodec
from torchzarr.codecs.transpose import TransposeCodec
from torchzarr.errors import ChunkDecodeError, MetadataError

__all__ = [
    "EMPTY",
    "MAX_SHARDING_DEPTH",
    "MAX_SHARD_BYTES",
    "ShardIndex",
    "ShardingCodec",
    "check_inner_range",
]

#: the inner chain of a configuration that gives none
_DEFAULT_INNER = {"name": "bytes", "configuration": {"endian": "little"}}
#: offset and length of an inner chunk that is not stored
EMPTY = np.uint64(2**64 - 1)
#: no file or object holds more bytes (offsets are signed 64-bit integers)
MAX_SHARD_BYTES = 2**63 - 1
#: the most ``sharding_indexed`` levels one chain may nest (real arrays use one or two)
MAX_SHARDING_DEPTH = 16


def _too_deep(depth: int) -> MetadataError:
    return MetadataError(
        f"sharding_indexed: codecs nest {depth} sharding_indexed levels deep, more than the "
        f"{MAX_SHARDING_DEPTH} allowed"
    )


def _same_spec(a: ChunkSpec, b: ChunkSpec) -> bool:
    """Equal specs, their fill values bit for bit (-0.0 is not 0.0; NaNs by payload)."""
    bits = [None if s.fill_value is None else np.asarray(s.fill_value).tobytes() for s in (a, b)]
    return bits[0] == bits[1] and (a.shape, a.dtype, a.data_type) == (b.shape, b.dtype, b.data_type)


def _json_depth(configuration: Any) -> int:
    """How many ``sharding_indexed`` levels a configuration nests (itself included), counted
    level by level without recursion: a hostile document cannot exhaust the stack."""
    depth, level = 1, [configuration]
    while level:
        level = [
            c.get("configuration")
            for config in level
            if isinstance(config, dict) and isinstance(config.get("codecs"), list)
            for c in config["codecs"]
            if isinstance(c, dict) and c.get("name") == "sharding_indexed"
        ]
        depth += bool(level)
    return depth


def check_inner_range(
    coords: tuple[int, ...],
    offset: int,
    nbytes: int,
    shard_nbytes: int | None,
    key: str | None = None,
) -> None:
    """Raise :class:`ChunkDecodeError` (naming shard ``key`` when given) unless inner chunk
    ``coords``, said by its shard's index to be ``nbytes`` at ``offset``, lies within the
    shard (``shard_nbytes`` long; None: of a size not known, checked against the largest a
    stored object can have).

    Example:
        >>> check_inner_range((0,), 90, 10, 100)
        >>> check_inner_range((1,), 2**63, 8, 100)
        Traceback (most recent call last):
        ...
        torchzarr.errors.ChunkDecodeError: inner chunk (1,) at bytes 9223372036854775808+8 lies past the end of a 100-byte shard
    """
    if offset + nbytes > (MAX_SHARD_BYTES if shard_nbytes is None else shard_nbytes):
        shard = "any shard" if shard_nbytes is None else f"a {shard_nbytes}-byte shard"
        where = "" if key is None else f"chunk {key!r}: "  # as a whole shard's decode says
        raise ChunkDecodeError(
            f"{where}inner chunk {coords} at bytes {offset}+{nbytes} lies past the end of {shard}"
        )


def _refuse_index_overlap(
    entries: np.ndarray, start: int, stop: int, key: str | None, shard_nbytes: int | None
) -> None:
    """Raise :class:`ChunkDecodeError` for a stored inner chunk whose bytes overlap the
    shard's index (bytes ``start`` to ``stop``): its entry is corrupt. One that also runs
    past the end of the shard (``shard_nbytes`` long, where known) is left to the check
    that says so."""
    offsets, sizes = entries[..., 0], entries[..., 1]
    stored = ~((offsets == EMPTY) & (sizes == EMPTY))
    ends = offsets + sizes  # uint64 wraps silently: a wrapped end is left to the range check
    overlap = stored & (offsets < np.uint64(stop)) & (ends > np.uint64(start)) & (ends >= offsets)
    if shard_nbytes is not None:
        overlap &= ends <= np.uint64(shard_nbytes)
    if overlap.any():
        coords = tuple(int(i) for i in np.argwhere(overlap)[0])
        offset, nbytes = (int(v) for v in entries[coords])
        where = "" if key is None else f"chunk {key!r}: "
        raise ChunkDecodeError(
            f"{where}inner chunk {coords} at bytes {offset}+{nbytes} overlaps the shard's "
            f"index (bytes {start} to {stop})"
        )


def _ints(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, list | tuple) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value
    ):
        raise MetadataError(
            f"sharding_indexed: {what} must be a list of positive ints, got {value!r}"
        )
    return tuple(int(v) for v in value)


def _check_fixed_size(index_codecs: Sequence[Codec]) -> None:
    """Refuse index codecs whose encoded size depends on the index's content: a reader finds
    the index by its size alone (the spec allows bytes, crc32c and transpose-like codecs)."""
    for codec in index_codecs:
        if not isinstance(codec, BytesCodec | Crc32cCodec | TransposeCodec):
            raise MetadataError(
                f"sharding_indexed: index codec {codec.codec_name!r} has no fixed encoded "
                "size; index_codecs take only 'bytes', 'crc32c' and 'transpose'"
            )


@dataclass(frozen=True)
class ShardIndex:
    """The (offset, nbytes) pair of every inner chunk of a shard, in C order of the inner grid."""

    entries: np.ndarray  # shape (*chunks_per_shard, 2), uint64

    @property
    def stored(self) -> np.ndarray:
        """Which inner chunks are stored: a boolean array of the inner grid's shape."""
        return ~((self.entries[..., 0] == EMPTY) & (self.entries[..., 1] == EMPTY))

    def get(self, inner_coords: tuple[int, ...]) -> tuple[int, int] | None:
        """Byte range of one inner chunk, or None if it is not stored."""
        offset, nbytes = self.entries[inner_coords]
        if offset == EMPTY and nbytes == EMPTY:
            return None
        return int(offset), int(nbytes)


class ShardingCodec(ArrayBytesCodec):
    """``sharding_indexed`` per the Zarr v3 sharding extension.

    Example:
        >>> from torchzarr.codecs.registry import codec_from_json
        >>> codec = codec_from_json({"name": "sharding_indexed", "configuration": {
        ...     "chunk_shape": [2, 2], "codecs": [{"name": "bytes"}]}})
        >>> codec.chunk_shape
        (2, 2)
    """

    codec_name = "sharding_indexed"

    def __init__(
        self,
        chunk_shape: Sequence[int],
        codecs: Sequence[Codec] | None = None,
        index_codecs: Sequence[Codec] | None = None,
        index_location: str = "end",
    ) -> None:
        self.chunk_shape = _ints(list(chunk_shape), "chunk_shape")
        self.codecs = tuple(codecs) if codecs else (BytesCodec("little"),)
        self.index_codecs = (
            tuple(index_codecs) if index_codecs else (BytesCodec("little"), Crc32cCodec())
        )
        _check_fixed_size(self.index_codecs)
        if index_location not in ("start", "end"):
            raise MetadataError(
                f"sharding_indexed: index_location must be 'start' or 'end', got {index_location!r}"
            )
        self.index_location = index_location
        #: sharding levels from this codec down; the inner pipeline as last built, by spec
        nested = [c.depth for c in self.codecs if isinstance(c, ShardingCodec)]
        self.depth: int = 1 + max(nested, default=0)
        if self.depth > MAX_SHARDING_DEPTH:
            raise _too_deep(self.depth)
        self._inner: tuple[ChunkSpec, ChunkSpec, Any] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_inner": None}  # pickles light; rebuilt on first use

    @classmethod
    def from_config(cls, configuration: dict[str, Any]) -> ShardingCodec:
        from torchzarr.codecs.registry import codec_from_json

        config = dict(configuration)
        if "chunk_shape" not in config:
            raise MetadataError("sharding_indexed: configuration needs chunk_shape")
        for chain in ("codecs", "index_codecs"):
            if chain in config and not config[chain]:  # absent: the defaults
                raise MetadataError(
                    f"sharding_indexed: {chain} is empty: a codec chain needs an array -> "
                    "bytes codec (e.g. 'bytes')"
                )
        if (depth := _json_depth(config)) > MAX_SHARDING_DEPTH:  # before parsing the levels
            raise _too_deep(depth)
        return cls(
            chunk_shape=_ints(config["chunk_shape"], "chunk_shape"),
            # absent: bytes little endian, as zarr-python (evolve drops it for 1-byte types)
            codecs=[codec_from_json(c) for c in config.get("codecs", [_DEFAULT_INNER])],
            index_codecs=[codec_from_json(c) for c in config.get("index_codecs", [])] or None,
            index_location=config.get("index_location", "end"),
        )

    def configuration(self) -> dict[str, Any]:
        return {
            "chunk_shape": list(self.chunk_shape),
            "codecs": [c.to_json() for c in self.codecs],
            "index_codecs": [c.to_json() for c in self.index_codecs],
            "index_location": self.index_location,
        }

    def evolve(self, spec: ChunkSpec) -> ShardingCodec:
        """Evolve the inner and index chains as a pipeline does: each codec for the chunk it
        sees (after a filter that changes the dtype, ``bytes`` and ``blosc`` see its output).

        Example:
            >>> from torchzarr.codecs.numcodecs_adapter import numcodecs_v3_codec
            >>> to_u1 = numcodecs_v3_codec("astype", {"encode_dtype": "|u1"})
            >>> codec = ShardingCodec([2], [to_u1, BytesCodec("little")])
            >>> codec.evolve(ChunkSpec((4,), np.dtype("<f8"), 0.0)).codecs[1].to_json()
            {'name': 'bytes'}
        """
        self._check_divides(spec.shape)
        return self._with_inner(spec, self._index_pipeline(spec).codecs)

    def evolve_inner(self, spec: ChunkSpec) -> ShardingCodec:
        """This codec with its inner chain evolved for ``spec``'s dtype (``blosc`` takes its
        ``typesize``), as :meth:`evolve` does where the shard shape is not known yet.

        Example:
            >>> from torchzarr.codecs.compressors import BloscCodec
            >>> codec = ShardingCodec([2], [BytesCodec("little"), BloscCodec()])
            >>> spec = ChunkSpec((), np.dtype("<i4"), np.int32(0))
            >>> codec.evolve_inner(spec).codecs[1].typesize
            4
        """
        return self._with_inner(spec, self.index_codecs)

    def _with_inner(self, spec: ChunkSpec, index_codecs: Sequence[Codec]) -> ShardingCodec:
        """This codec with the inner chain as evolved for ``spec``, its pipeline kept: each
        nesting level builds its inner pipeline once (evolving an evolved chain changes nothing)."""
        inner = self.inner_pipeline(spec)
        evolved = ShardingCodec(self.chunk_shape, inner.codecs, index_codecs, self.index_location)
        evolved._inner = self._inner
        return evolved

    # -- geometry -------------------------------------------------------------------------
    def _check_divides(self, shard_shape: tuple[int, ...]) -> None:
        if len(shard_shape) != len(self.chunk_shape) or any(
            s % c for s, c in zip(shard_shape, self.chunk_shape, strict=True)
        ):
            raise MetadataError(
                f"sharding_indexed: inner chunk_shape {self.chunk_shape} must divide the shard "
                f"shape {shard_shape} on every axis"
            )

    def chunks_per_shard(self, shard_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Inner chunks along each axis of a shard."""
        return tuple(s // c for s, c in zip(shard_shape, self.chunk_shape, strict=True))

    def inner_spec(self, spec: ChunkSpec) -> ChunkSpec:
        """The spec the inner codecs see."""
        return dataclasses.replace(spec, shape=self.chunk_shape)

    def _index_spec(self, spec: ChunkSpec) -> ChunkSpec:
        return ChunkSpec((*self.chunks_per_shard(spec.shape), 2), np.dtype("uint64"), EMPTY)

    def inner_pipeline(self, spec: ChunkSpec) -> Any:
        """The pipeline of one inner chunk, built once for a spec and kept (for the last one).

        Example:
            >>> spec = ChunkSpec((4,), np.dtype("uint8"), 0)
            >>> codec = ShardingCodec([2])
            >>> codec.inner_pipeline(spec) is codec.inner_pipeline(spec)
            True
        """
        from torchzarr.codecs.pipeline import V3Pipeline

        cached = self._inner
        if cached is not None and cached[0] is spec:
            return cached[2]
        inner_spec = self.inner_spec(spec)
        if cached is None or not _same_spec(cached[1], inner_spec):
            cached = (spec, inner_spec, V3Pipeline(self.codecs, inner_spec))
        else:
            cached = (spec, *cached[1:])
        self._inner = cached
        return cached[2]

    def _index_pipeline(self, spec: ChunkSpec) -> Any:
        from torchzarr.codecs.pipeline import V3Pipeline

        return V3Pipeline(self.index_codecs, self._index_spec(spec))

    def index_nbytes(self, spec: ChunkSpec) -> int:
        """Encoded size of a shard's index, counted, never built: 16 bytes per inner chunk,
        and 4 for each ``crc32c`` index codec (``bytes`` and ``transpose`` add nothing).

        Example:
            >>> codec = ShardingCodec([1])
            >>> codec.index_nbytes(ChunkSpec((2**40,), np.dtype("uint8"), 0))
            17592186044420
        """
        self._index_pipeline(spec)  # the index codecs in a valid order, or MetadataError
        crc32c = sum(isinstance(codec, Crc32cCodec) for codec in self.index_codecs)
        return self._index_spec(spec).nbytes + 4 * crc32c

    def max_encoded_size(self, spec: ChunkSpec) -> int:
        """A bound on an encoded shard's size: its index and every inner chunk's bound.

        Example:
            >>> ShardingCodec([2]).max_encoded_size(ChunkSpec((4,), np.dtype("uint8"), 0))
            40
        """
        inner = self.inner_pipeline(spec).size_bounds()[-1]
        return self.index_nbytes(spec) + math.prod(self.chunks_per_shard(spec.shape)) * inner

    # -- index ----------------------------------------------------------------------------
    def decode_index(
        self,
        data: bytes | memoryview,
        spec: ChunkSpec,
        key: str | None = None,
        shard_nbytes: int | None = None,
    ) -> ShardIndex:
        """Parse an encoded index (the crc32c index codec verifies it). Entries pointing
        into the index raise :class:`ChunkDecodeError`: always for an index at the start of
        its shard, for one at the end where the shard's size (``shard_nbytes``) is known."""
        entries = np.asarray(self._index_pipeline(spec).decode(data, key=key), dtype=np.uint64)
        n = self.index_nbytes(spec)
        if self.index_location == "start":
            _refuse_index_overlap(entries, 0, n, key, shard_nbytes)
        elif shard_nbytes is not None:
            _refuse_index_overlap(entries, shard_nbytes - n, shard_nbytes, key, shard_nbytes)
        return ShardIndex(entries)

    def index_of_shard(
        self, shard: bytes | memoryview, spec: ChunkSpec, key: str | None = None
    ) -> ShardIndex:
        """The index of a whole encoded shard."""
        n = self.index_nbytes(spec)
        if len(shard) < n:
            name = f"shard {key!r}" if key is not None else "shard"
            raise ChunkDecodeError(f"{name} is {len(shard)} bytes, shorter than its {n}-byte index")
        view = memoryview(shard)
        raw = view[:n] if self.index_location == "start" else view[len(view) - n :]
        return self.decode_index(raw, spec, key, len(view))

    # -- whole shards ---------------------------------------------------------------------
    def inner_regions(self, spec: ChunkSpec) -> Any:
        """``(coordinates, region)`` of each inner chunk of a shard, in C order of its grid.

        Example:
            >>> [c for c, _ in ShardingCodec([2]).inner_regions(ChunkSpec((4,), np.dtype("u1"), 0))]
            [(0,), (1,)]
        """
        cps = self.chunks_per_shard(spec.shape)
        for coords in itertools.product(*(range(n) for n in cps)):
            region = tuple(
                slice(c * k, (c + 1) * k) for c, k in zip(coords, self.chunk_shape, strict=True)
            )
            yield coords, region

    def encode(self, chunk: np.ndarray, spec: ChunkSpec) -> bytes:
        """Encode a whole shard; inner chunks that are all fill value are not stored."""
        inner = self.inner_pipeline(spec)
        pieces = {}
        for coords, region in self.inner_regions(spec):
            sub = chunk[(*region, ...)]  # a view, also when 0-d
            if not is_all_fill(sub, spec.fill_value, spec.data_type):
                pieces[coords] = inner.encode(sub)
        return self.assemble(pieces, spec)

    def encode_update(
        self,
        shard: bytes | None,
        spec: ChunkSpec,
        origin: tuple[int, ...],
        block: np.ndarray,
        key: str | None = None,
        index: ShardIndex | None = None,
    ) -> tuple[bytes, int]:
        """``shard`` (None: a shard not stored) with the inner chunks that ``block`` covers,
        a block of whole inner chunks from element ``origin`` of the shard, encoded anew
        from it (those all fill value dropped); the other inner chunks keep their stored
        bytes, neither decoded nor encoded. Returns the shard and how many inner chunks it
        stores. ``index``: ``shard``'s, where the caller has parsed it already.

        Example:
            >>> spec = ChunkSpec((4,), np.dtype("uint8"), 0)
            >>> codec = ShardingCodec([2], [BytesCodec()]).evolve(spec)
            >>> shard = codec.encode(np.array([1, 2, 3, 4], np.uint8), spec)
            >>> shard, stored = codec.encode_update(shard, spec, (2,), np.array([0, 9], np.uint8))
            >>> codec.decode(shard, spec).tolist(), stored
            ([1, 2, 0, 9], 2)
        """
        inner = self.inner_pipeline(spec)
        if index is None and shard is not None:
            index = self.index_of_shard(shard, spec, key)
        view = memoryview(b"" if shard is None else shard)
        first = tuple(o // k for o, k in zip(origin, self.chunk_shape, strict=True))
        counts = tuple(n // k for n, k in zip(block.shape, self.chunk_shape, strict=True))
        pieces: dict[tuple[int, ...], bytes | memoryview] = {}
        if index is not None:  # the stored inner chunks outside the block: bytes as stored
            for position in np.argwhere(index.stored):
                coords = tuple(int(c) for c in position)
                if all(f <= c < f + n for c, f, n in zip(coords, first, counts, strict=True)):
                    continue
                offset, nbytes = (int(v) for v in index.entries[coords])
                check_inner_range(coords, offset, nbytes, len(view), key)
                pieces[coords] = view[offset : offset + nbytes]
        for local in itertools.product(*(range(n) for n in counts)):
            sub = block[
                tuple(
                    slice(c * k, (c + 1) * k) for c, k in zip(local, self.chunk_shape, strict=True)
                )
            ]
            if not is_all_fill(sub, spec.fill_value, spec.data_type):
                coords = tuple(f + c for f, c in zip(first, local, strict=True))
                pieces[coords] = inner.encode(sub)
        return self.assemble(pieces, spec), len(pieces)

    def assemble(self, pieces: dict[tuple[int, ...], bytes | memoryview], spec: ChunkSpec) -> bytes:
        """A shard of encoded inner chunks (by inner-grid coordinates; those missing are not
        stored), laid out in C order of the grid, with its index first or last."""
        entries = np.full((*self.chunks_per_shard(spec.shape), 2), EMPTY, dtype=np.uint64)
        offset = self.index_nbytes(spec) if self.index_location == "start" else 0
        ordered = []
        for coords in sorted(pieces):
            data = pieces[coords]
            entries[coords] = (offset, len(data))
            ordered.append(data)
            offset += len(data)
        index = self._index_pipeline(spec).encode(entries)
        if self.index_location == "start":
            return b"".join([index, *ordered])
        return b"".join([*ordered, index])

    def decode(self, data: bytes, spec: ChunkSpec, out: np.ndarray | None = None) -> np.ndarray:
        """Decode a whole shard into ``out`` (or a new array); missing inner chunks are fill."""
        index = self.index_of_shard(data, spec)
        inner = self.inner_pipeline(spec)
        if out is None:
            out = np.empty(spec.shape, dtype=spec.dtype)
        view = memoryview(data)
        # inner chunks whose region is not contiguous decode into one reused scratch
        scratch = (
            np.empty(inner.spec.shape, inner.spec.dtype) if inner.supports_direct_decode else None
        )
        # one zstd frame each: decoded by address, without the codec chain per inner chunk
        zstd = inner.zstd_frame_codec is not None and fast_decode.available("zstd")
        decompress = fast_decode.zstd_decompressor_at() if zstd else None
        base = np.frombuffer(view, dtype=np.uint8).ctypes.data if len(view) else 0
        for coords, region in self.inner_regions(spec):
            target = out[(*region, ...)]  # a view, also when 0-d
            found = index.get(coords)
            if found is None:
                target[...] = spec.fill_value
                continue
            offset, nbytes = found
            check_inner_range(coords, offset, nbytes, len(view))
            if decompress is not None and scratch is not None:
                whole = target.flags.c_contiguous
                into = target if whole else scratch
                try:
                    decompress(base + offset, nbytes, into.ctypes.data, into.nbytes)
                except ChunkDecodeError as err:
                    raise ChunkDecodeError(f"inner chunk {coords}: {err}") from err
                if not whole:
                    target[...] = scratch
                continue
            piece = view[offset : offset + nbytes]
            if target.flags.c_contiguous:
                inner.decode(piece, out=target)
            elif scratch is not None:
                target[...] = inner.decode(piece, out=scratch)
            else:
                target[...] = inner.decode(piece)
        return out
