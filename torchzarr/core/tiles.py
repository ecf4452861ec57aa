"""Reads of many small local chunks: whole chunks decoded side by side, then one strided copy.

A chunk that does not span the output's trailing extents cannot decode straight into the
output, and with chunks of a few kilobytes the per-chunk work of the general path (a
projection, a scratch decode, a numpy region copy) costs more than the decode itself. Here
the chunks lying wholly inside a slice selection are decoded next to each other into a
per-thread tile (``(t0, t1, ..., k0, k1, ...)``), and each tile reaches the output with a
single transposing copy. The selection's edges, where chunks are cut, go the general way.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from torchzarr.codecs import fast_decode
from torchzarr.codecs.key_encoding import DefaultChunkKeyEncoding, V2ChunkKeyEncoding
from torchzarr.codecs.pipeline import decode_error
from torchzarr.core.fastpath import TINY_CHUNK_BYTES, ChunkReader
from torchzarr.errors import ChunkDecodeError

__all__ = ["TILE_CHUNK_MAX", "applies", "interior", "read_tiles", "split_edges"]

#: chunks of up to this many decoded bytes are read in tiles
TILE_CHUNK_MAX = 256 << 10
_TILE_BYTES = 4 << 20  # one tile's decoded bytes (a tile holds one chunk at least)
_MIN_CHUNKS = 16  # fewer whole chunks than this go the general way
_local = threading.local()

Span = tuple[int, int]  # [start, stop) along one axis


def interior(spans: Sequence[Span], chunks: Sequence[int]) -> list[Span] | None:
    """Per axis, the range of chunk coordinates lying wholly inside ``spans``; None if empty.

    Example:
        >>> interior([(3, 40), (0, 32)], (16, 16))
        [(1, 2), (0, 2)]
        >>> interior([(3, 20)], (16,)) is None
        True
    """
    box = [(-(-start // k), stop // k) for (start, stop), k in zip(spans, chunks, strict=True)]
    return box if box and all(lo < hi for lo, hi in box) else None


def split_edges(spans: Sequence[Span], inner: Sequence[Span]) -> list[list[Span]]:
    """The parts of the box ``spans`` outside the box ``inner`` (same coordinates), as boxes.

    Axis by axis: the slab before and after ``inner``, spanning ``inner`` on earlier axes and
    all of ``spans`` on later ones. The boxes do not overlap and, with ``inner``, cover
    ``spans``.

    Example:
        >>> split_edges([(0, 10), (0, 10)], [(2, 8), (0, 10)])
        [[(0, 2), (0, 10)], [(8, 10), (0, 10)]]
    """
    boxes: list[list[Span]] = []
    for axis, ((start, stop), (lo, hi)) in enumerate(zip(spans, inner, strict=True)):
        head, tail = list(inner[:axis]), list(spans[axis + 1 :])
        if start < lo:
            boxes.append([*head, (start, lo), *tail])
        if hi < stop:
            boxes.append([*head, (hi, stop), *tail])
    return boxes


def _tile_shape(counts: Sequence[int], chunk_bytes: int, budget: int) -> list[int]:
    """Chunks per tile along each axis: whole trailing rows of chunks while they fit."""
    shape = list(counts)
    for axis in range(len(shape)):
        row = math.prod(shape[axis + 1 :]) * chunk_bytes
        if row <= budget:
            shape[axis] = max(1, min(shape[axis], budget // row))
            return shape
        shape[axis] = 1
    return shape


def _tiles(box: Sequence[Span], shape: Sequence[int]) -> Iterator[list[Span]]:
    """The tiles of a box of chunk coordinates, in C order."""
    per_axis = [
        [(lo, min(lo + t, hi)) for lo in range(lo, hi, t)]
        for (lo, hi), t in zip(box, shape, strict=True)
    ]
    for tile in itertools.product(*per_axis):
        yield list(tile)


def _tile_buffer(nbytes: int) -> np.ndarray:
    """This thread's tile memory (reused: fresh pages would each fault on first touch)."""
    buf = getattr(_local, "buf", None)
    if buf is None or buf.size < nbytes:
        buf = _local.buf = np.empty(max(nbytes, _TILE_BYTES), dtype=np.uint8)
    return buf[:nbytes]


def _keys(key: Callable[[tuple[int, ...]], str], tile: Sequence[Span], suffixed: bool) -> list[str]:
    """The store keys of a tile's chunks in C order.

    With ``suffixed`` (the built-in encodings: the last coordinate's digits end the key),
    keys along the last axis are built from one stem; otherwise each comes from ``key``.
    """
    if not suffixed:
        return [key(coords) for coords in itertools.product(*(range(a, b) for a, b in tile))]
    lo, hi = tile[-1]
    keys: list[str] = []
    for head in itertools.product(*(range(a, b) for a, b in tile[:-1])):
        first = key((*head, lo))
        stem = first[: len(first) - len(str(lo))]
        keys.extend(stem + str(c) for c in range(lo, hi))
    return keys


class _TileReader:
    """Decodes a tile's chunks side by side and copies the tile into the output."""

    def __init__(self, reader: ChunkReader, offsets: Sequence[int]) -> None:
        self.reader, self.out, self.offsets = reader, reader.out, offsets
        self.spec = reader.spec
        self.chunk_shape = reader.chunk_shape
        self.nbytes = reader.nbytes
        self.zstd = reader.zstd
        encoding = type(reader.source.metadata.chunk_key_encoding)
        self.suffixed = encoding in (DefaultChunkKeyEncoding, V2ChunkKeyEncoding)

    def __call__(self, tile: list[Span]) -> tuple[int, int, int]:
        """Read one tile: (chunks read, chunks missing, bytes fetched)."""
        reader, nbytes = self.reader, self.nbytes
        counts = [hi - lo for lo, hi in tile]
        n = math.prod(counts)
        buf = _tile_buffer(n * nbytes)
        chunks = buf.view(self.spec.dtype).reshape(n, *self.chunk_shape)
        keys = _keys(reader.source.key, tile, self.suffixed)
        if reader.raw and reader.direct:  # C-order bytes (raw v2 F-order chunks decode)
            fetched, missing = self._raw(keys, buf, chunks)
        else:
            fetched, missing = self._decode(keys, buf, chunks)
        self._scatter(tile, counts, chunks)
        return n - missing, missing, fetched

    def _decode(self, keys: list[str], buf: np.ndarray, chunks: np.ndarray) -> tuple[int, int]:
        reader, nbytes, zstd = self.reader, self.nbytes, self.zstd
        pipeline, direct, fill = reader.pipeline, reader.direct, reader.fill
        address = buf.__array_interface__["data"][0]
        decompress = fast_decode.zstd_decompressor() if zstd is not None else None
        fetched = missing = 0
        for i, (key, data) in enumerate(zip(keys, reader.read_files(keys), strict=True)):
            if data is None:
                chunks[i] = fill
                missing += 1
                continue
            fetched += len(data)
            if decompress is not None:
                try:
                    decompress(data, address + i * nbytes, nbytes)
                except ChunkDecodeError as err:
                    raise decode_error(err, zstd, key) from err
            elif direct:
                pipeline.decode(data, out=chunks[i], key=key)
            else:
                chunks[i] = pipeline.decode(data, key=key)
        return fetched, missing

    def _raw(self, keys: list[str], buf: np.ndarray, chunks: np.ndarray) -> tuple[int, int]:
        reader, nbytes = self.reader, self.nbytes
        fetched = 0
        absent = []
        for i, key in enumerate(keys):
            got = reader.readinto(key, buf[i * nbytes : (i + 1) * nbytes])
            if got < 0:
                absent.append(i)
            else:
                fetched += got
        if reader.swap:
            chunks.byteswap(inplace=True)
        for i in absent:  # after the swap: the fill value is already in native order
            chunks[i] = reader.fill
        return fetched, len(absent)

    def _scatter(self, tile: list[Span], counts: list[int], chunks: np.ndarray) -> None:
        """Copy the tile ``(t0, ..., k0, ...)`` to its output region ``(t0*k0, ...)``."""
        k = self.chunk_shape
        ndim = len(k)
        starts = [lo * kk - off for (lo, _), kk, off in zip(tile, k, self.offsets, strict=True)]
        region = self.out[
            tuple(slice(s, s + c * kk) for s, c, kk in zip(starts, counts, k, strict=True))
        ]
        strides = region.strides
        target = np.lib.stride_tricks.as_strided(
            region,
            shape=[d for c, kk in zip(counts, k, strict=True) for d in (c, kk)],
            strides=[s for st, kk in zip(strides, k, strict=True) for s in (st * kk, st)],
            writeable=True,
        )
        order = [a for axis in range(ndim) for a in (axis, ndim + axis)]
        np.copyto(target, chunks.reshape(*counts, *k).transpose(order))


def read_tiles(
    reader: ChunkReader,
    box: Sequence[Span],
    offsets: Sequence[int],
    parallel: Callable[..., list[Any]],
    threads: int,
) -> None:
    """Read the whole chunks of ``box`` (chunk coordinates) into ``reader.out``.

    ``offsets`` are the selection's first element per axis (output position 0);
    ``parallel`` is the engine's ``run_parallel``. Counters add up on ``reader``.

    Example:
        >>> import tempfile, torch, torchzarr as tz
        >>> from torchzarr.core.engine import run_parallel
        >>> arr = tz.create_array(tempfile.mkdtemp(), shape=(8, 8), chunks=(2, 2), dtype="i4")
        >>> arr[:] = torch.arange(64, dtype=torch.int32).reshape(8, 8)
        >>> out = np.zeros((4, 8), dtype="i4")
        >>> reader = ChunkReader(arr._source, out, 0, root=str(arr.store.root))
        >>> read_tiles(reader, [(1, 3), (0, 4)], [2, 0], run_parallel, 1)
        >>> out[0].tolist(), reader.chunks
        ([16, 17, 18, 19, 20, 21, 22, 23], 8)
    """
    counts = [hi - lo for lo, hi in box]
    nbytes = reader.nbytes
    read = _TileReader(reader, offsets)
    if nbytes < TINY_CHUNK_BYTES:
        # Each system call or decode of a tiny chunk releases the GIL for a few
        # microseconds: threads would spend more handing it over than they gain.
        shape = _tile_shape(counts, nbytes, _TILE_BYTES)
        results = [read(tile) for tile in _tiles(box, shape)]
    else:
        total = math.prod(counts) * nbytes
        budget = max(nbytes, min(_TILE_BYTES, -(-total // max(1, threads))))
        tiles = list(_tiles(box, _tile_shape(counts, nbytes, budget)))
        results = parallel(read, tiles, cost=lambda t: math.prod(b - a for a, b in t) * nbytes)
    for chunks, missing, fetched in results:
        reader.chunks += chunks
        reader.missing += missing
        reader.bytes_fetched += fetched


def applies(reader: ChunkReader, box: Sequence[Span] | None, spans: Sequence[Span]) -> bool:
    """Whether tiles pay off: enough small whole chunks that cannot decode into the output.

    Example:
        >>> import tempfile, torchzarr as tz
        >>> arr = tz.create_array(tempfile.mkdtemp(), shape=(64, 64), chunks=(8, 8), dtype="i4")
        >>> reader = ChunkReader(arr._source, np.zeros((64, 64), "i4"), 0, root=str(arr.store.root))
        >>> applies(reader, [(0, 8), (0, 8)], [(0, 64), (0, 64)])
        True
    """
    if box is None or reader.prefix is None or reader.cache is not None:
        return False
    if reader.nbytes > TILE_CHUNK_MAX or math.prod(hi - lo for lo, hi in box) < _MIN_CHUNKS:
        return False
    # Chunks spanning the output's trailing extents already decode straight into it.
    return [stop - start for start, stop in spans[1:]] != list(reader.chunk_shape[1:])
