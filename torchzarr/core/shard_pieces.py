"""A shard's inner chunks ("pieces"): planned, fetched and decoded into their targets.

Local shards are read with one descriptor per run of pieces and one ``preadv`` per run of
adjacent pieces; other stores with coalesced byte-range requests. Each piece decodes into
the whole chunk's memory or, through reused scratch, into the region of the output it fills.
"""

from __future__ import annotations

import bisect
import os
from typing import Any, NamedTuple, TypeAlias

import numpy as np

from torchzarr.codecs import fast_decode
from torchzarr.codecs.pipeline import decode_error
from torchzarr.codecs.sharding import EMPTY, ShardIndex, check_inner_range
from torchzarr.config import config
from torchzarr.core.fastpath import (
    direct_target,
    is_raw,
    needs_swap,
    read_buffer,
    scratch_buffer,
    zstd_codec,
)
from torchzarr.core.indexing import basic_indexer
from torchzarr.core.shard_cache import inner_region, touched_chunks
from torchzarr.core.shard_files import ShardFiles
from torchzarr.errors import ChunkDecodeError, StoreError
from torchzarr.storage.base import ByteRange
from torchzarr.storage.fileio import read_into

__all__ = [
    "COALESCE_GAP",
    "Piece",
    "PieceFetcher",
    "Region",
    "SizedShardFiles",
    "Target",
    "coalesce",
    "place",
    "plan_region",
    "plan_rows",
    "plan_scatter",
    "spans",
]

#: byte ranges closer than this are fetched as one request
COALESCE_GAP = 1 << 16
#: raw (uncompressed) local pieces up to this many bytes are read on the calling thread
_INLINE_RAW_BYTES = 8 << 20
#: bytes an encoded inner chunk may take beyond twice its decoded size before the shard's
#: size is looked up to check it (no codec of fixed-size data grows it so much)
_SIZE_SLACK = 1 << 20


class Region(NamedTuple):
    """Where part of a decoded inner chunk goes: ``out[...] = chunk[selection]``."""

    out: np.ndarray  # a view of the read's output
    selection: tuple[Any, ...]  # into the inner chunk


#: a decoded inner chunk's destination: the whole chunk's memory (a view), or a region of
#: the output that part of it fills
Target: TypeAlias = np.ndarray | Region
#: one inner chunk to fetch: (shard key, offset, nbytes, target, inner coords)
Piece = tuple[str, int, int, Target, tuple[int, ...]]


def spans(pieces: list[Piece], limit: int = 4 << 20) -> list[tuple[int, list[Piece]]]:
    """Runs of pieces stored back to back (in the given order), each at most ``limit`` bytes
    long unless one piece alone is longer: ``(first offset, pieces)``.

    Example:
        >>> [(start, len(run)) for start, run in spans([("k", 0, 4, None, ()),
        ...     ("k", 4, 4, None, ()), ("k", 20, 4, None, ())])]
        [(0, 2), (20, 1)]
    """
    runs: list[tuple[int, list[Piece]]] = []
    end = -1
    for piece in pieces:
        off, size = piece[1], piece[2]
        if runs and off == end and off + size - runs[-1][0] <= limit:
            runs[-1][1].append(piece)
        else:
            runs.append((off, [piece]))
        end = off + size
    return runs


def place(chunk: np.ndarray, target: Target) -> None:
    """Copy a decoded inner chunk (or the part a region takes) to its target.

    Example:
        >>> out = np.zeros(4)
        >>> place(np.arange(3.0), Region(out[1:3], (slice(1, 3),)))
        >>> out.tolist()
        [0.0, 1.0, 2.0, 0.0]
    """
    if isinstance(target, Region):
        target.out[...] = chunk[target.selection]
    else:
        target[...] = chunk


def coalesce(ranges: list[tuple[int, int]], gap: int = COALESCE_GAP) -> list[tuple[int, int]]:
    """Merge ``(offset, nbytes)`` ranges whose gaps are at most ``gap`` bytes.

    Example:
        >>> coalesce([(0, 10), (12, 5), (1000, 4)], gap=8)
        [(0, 17), (1000, 4)]
    """
    merged: list[tuple[int, int]] = []
    for start, size in sorted(ranges):
        if merged and start <= merged[-1][0] + merged[-1][1] + gap:
            first, length = merged[-1]
            merged[-1] = (first, max(length, start + size - first))
        else:
            merged.append((start, size))
    return merged


class SizedShardFiles(ShardFiles):
    """The local shard files of one read (see :class:`ShardFiles`), with the size of each
    shard's file when its index was read through them: what the index entries are checked
    against before their pieces are read, with no ``fstat`` of their own.

    Example:
        >>> import tempfile
        >>> with SizedShardFiles(tempfile.mkdtemp(), keep=False) as files:
        ...     files.sizes["s0"] = 3  # as the shard's index was read
        ...     _file_size(files, "s0")
        3
    """

    def __init__(self, root: str, keep: bool, version: int = 0) -> None:
        super().__init__(root, keep, version)
        #: shard key -> the size of its file when its index was read (by ``ShardReader``)
        self.sizes: dict[str, int] = {}

    def close(self) -> None:
        self.sizes.clear()  # the files given back: the next ones may be other versions
        super().close()


class PieceFetcher:
    """Fetches pieces of one array's shards and decodes them with its inner pipeline.

    Args:
        store: the array's store.
        inner: the inner chunks' pipeline.
    """

    def __init__(self, store: Any, inner: Any) -> None:
        self.store, self.inner = store, inner
        self.raw = is_raw(inner) and not needs_swap(inner)
        self.zstd = zstd_codec(inner)  # inner chunks of one zstd frame: the lean decode

    def fetch(self, pieces: list[Piece], run_parallel: Any, files: ShardFiles | None) -> int:
        """Fetch and decode every piece into its target: local shards through the
        descriptors of ``files`` (which their indexes were read through), other stores
        with byte-range requests (``files`` None). Returns the bytes fetched."""
        if not pieces:
            return 0
        store = self.store
        if files is not None:
            by_key: dict[str, list[Piece]] = {}
            for piece in pieces:
                by_key.setdefault(piece[0], []).append(piece)
            for key, group in by_key.items():  # before any memory is taken for them
                _check_ranges(group, _file_size(files, key))
            if self.raw and sum(piece[2] for piece in pieces) <= _INLINE_RAW_BYTES:
                # raw pieces are a pread each: threads would only pass the GIL around
                for key, group in by_key.items():
                    self._read_file(files, key, group)
                return sum(piece[2] for piece in pieces)
            # Raw pieces: one task per shard (a pread each). Encoded pieces: runs of a
            # shard's pieces, so that the inner chunks of one shard decode on all threads.
            if self.raw:
                groups = list(by_key.items())
            else:
                nbytes = self.inner.spec.nbytes
                share = min(config.task_bytes, len(pieces) * nbytes // max(1, config.threads))
                run = max(1, share // max(1, nbytes))
                groups = [
                    (key, group[i : i + run])
                    for key, group in by_key.items()
                    for i in range(0, len(group), run)
                ]
            run_parallel(
                lambda group: self._read_file(files, *group),
                groups,
                cost=lambda group: len(group[1]) * self.inner.spec.nbytes,
            )
            return sum(piece[2] for piece in pieces)
        _check_ranges(pieces, None)  # offsets no store could take (sizes not known here)
        spans: dict[str, list[tuple[int, int]]] = {}
        for key, off, size, _, _ in pieces:
            spans.setdefault(key, []).append((off, size))
        # a piece far larger than its chunk decodes to is checked against its shard's size
        # first: a store may take the memory a range asks for before it reads
        likely = 2 * self.inner.spec.nbytes + _SIZE_SLACK
        for key in {piece[0] for piece in pieces if piece[2] > likely}:
            shard_nbytes = store.getsize(key)
            if shard_nbytes is not None:
                _check_ranges([piece for piece in pieces if piece[0] == key], shard_nbytes)
        requests = [
            (key, ByteRange(off, size))
            for key, ranges in spans.items()
            for off, size in coalesce(ranges)
        ]
        starts: dict[str, list[int]] = {}
        for key, rng in requests:
            starts.setdefault(key, []).append(rng.start)  # ascending: coalesce sorts
        blobs = store.get_ranges(requests)
        fetched: dict[tuple[str, int], bytes] = {}
        for (key, rng), blob in zip(requests, blobs, strict=True):
            if blob is None:
                raise ChunkDecodeError(f"shard {key!r} vanished while it was being read")
            fetched[(key, rng.start)] = blob
        tasks = []
        for key, off, size, target, coords in pieces:
            at = starts[key]
            start = at[bisect.bisect_right(at, off) - 1]
            blob = fetched[(key, start)]
            view = memoryview(blob)[off - start : off - start + size]
            if len(view) != size:
                if blob:  # a range read stops only where the shard ends
                    check_inner_range(coords, off, size, start + len(blob), key)
                raise ChunkDecodeError(f"inner chunk {coords} of shard {key!r} is truncated")
            tasks.append((key, coords, view, target))
        run_parallel(lambda task: self._decode(*task), tasks, cost=lambda _: self.inner.spec.nbytes)
        return sum(len(blob) for blob in fetched.values())  # coalesced gaps included

    def _read_file(self, files: ShardFiles, key: str, pieces: list[Piece]) -> None:
        """Read one local shard's pieces through the descriptor its index was read through."""
        fd = files.fd(key)
        decode_at = None if self.zstd is None else self._zstd_decoder()
        encoded: list[Piece] = []
        for piece in pieces:
            _, off, size, target, coords = piece
            if (
                self.raw
                and isinstance(target, np.ndarray)
                and target.flags.c_contiguous
                and size == target.nbytes
            ):
                if read_into(fd, [target.data], off, needed=size) != size:
                    raise ChunkDecodeError(f"inner chunk {coords} of shard {key!r} is truncated")
            else:
                encoded.append(piece)
        for start, span in spans(encoded):
            # one read per run of adjacent pieces, into reused memory (fresh bytes would
            # land on new pages), then each piece decodes from its slice
            first, last = span[0], span[-1]
            data = read_buffer(last[1] + last[2] - first[1])
            if read_into(fd, [data], first[1], needed=len(data)) != len(data):
                raise ChunkDecodeError(f"inner chunks of shard {key!r} are truncated")
            if decode_at is not None:  # frames by address: no view per piece
                base = np.frombuffer(data, dtype=np.uint8).ctypes.data - start
                for _, off, size, target, coords in span:
                    decode_at(key, coords, base + off, size, target)
            else:
                for _, off, size, target, coords in span:
                    self._decode(key, coords, data[off - start : off - start + size], target)

    def _zstd_decoder(self) -> Any:
        """``_decode`` for inner chunks that are one zstd frame each, bound for one thread
        and one run of frames (it keeps the thread's scratch for itself meanwhile)."""
        decompress = fast_decode.zstd_decompressor_at()
        spec = self.inner.spec
        nbytes = spec.nbytes
        scratch = scratch_buffer(nbytes)
        at = scratch.ctypes.data
        chunk = scratch.view(spec.dtype).reshape(spec.shape)

        def decode(
            key: str, coords: tuple[int, ...], source: int, size: int, target: Target
        ) -> None:
            whole = isinstance(target, np.ndarray) and target.flags.c_contiguous
            dest = target.ctypes.data if whole else at  # type: ignore[union-attr]
            try:
                decompress(source, size, dest, nbytes)
            except ChunkDecodeError as err:
                raise decode_error(err, self.zstd, f"{key}[{coords}]") from err
            if not whole:
                place(chunk, target)

        return decode

    def _decode(self, key: str, coords: tuple[int, ...], data: Any, target: Target) -> None:
        inner, where = self.inner, f"{key}[{coords}]"
        if isinstance(target, np.ndarray) and target.flags.c_contiguous:
            inner.decode(data, out=target, key=where)
        elif inner.supports_direct_decode:  # into reused scratch, then one copy
            spec = inner.spec
            chunk = scratch_buffer(spec.nbytes).view(spec.dtype).reshape(spec.shape)
            place(inner.decode(data, out=chunk, key=where), target)
        else:
            place(inner.decode(data, key=where), target)


def _file_size(files: ShardFiles, key: str) -> int:
    """The size of local shard ``key``: when its index was read through ``files``, else
    now, through the descriptor its pieces are read by."""
    size = files.sizes.get(key) if isinstance(files, SizedShardFiles) else None
    if size is not None:
        return size
    try:
        return os.fstat(files.fd(key)).st_size
    except OSError as err:
        raise StoreError(f"cannot read shard {key!r} in {files.root}: {err}") from err


def _check_ranges(pieces: list[Piece], shard_nbytes: int | None) -> None:
    """Raise :class:`ChunkDecodeError` for a piece whose index entry points past the end of
    its shard (``shard_nbytes`` long; None: not known), as a whole shard's decode does."""
    for key, off, size, _, coords in pieces:
        check_inner_range(coords, off, size, shard_nbytes, key)


# -- plans: which pieces a read of part of a shard fetches, and where they land ----------------
def plan_rows(
    reader: Any,
    p: Any,
    key: str,
    index: ShardIndex,
    rows: np.ndarray,
    pieces: list[Piece],
    finish: list[tuple[Any, np.ndarray, Any]],
) -> int:
    """Plan a selection of whole rows into a compact buffer of the touched inner chunks;
    the inner chunks not stored (filled), counted.

    Example:
        >>> plan_rows(reader, p, "c/0", index, np.arange(8), pieces, finish)  # doctest: +SKIP
        2
    """
    step = reader.inner_shape[0]
    inner = rows // step
    touched = np.unique(inner)
    entries = index.entries.reshape(-1, 2)[touched]
    buf = np.empty((touched.size, *reader.inner_shape), dtype=reader.spec.dtype)
    absent = (entries[:, 0] == EMPTY) & (entries[:, 1] == EMPTY)
    if absent.any():
        buf[absent] = reader.spec.fill_value
    tail = (0,) * (len(reader.inner_shape) - 1)
    present = np.flatnonzero(~absent)
    for j, c, (off, size) in zip(
        present.tolist(), touched[present].tolist(), entries[present].tolist(), strict=True
    ):
        pieces.append((key, off, size, buf[j], (c, *tail)))
    flat = buf.reshape(-1, *reader.inner_shape[1:])
    position = np.searchsorted(touched, inner) * step + rows % step
    finish.append((p, flat, (position, *p.chunk_selection[1:])))
    return touched.size - present.size


def plan_scatter(
    reader: Any, p: Any, key: str, index: ShardIndex, view: np.ndarray, pieces: list[Piece]
) -> int:
    """Plan a basic selection of a shard: each inner chunk lands in ``view`` (the shard's
    part of the output) directly, straight from the decoder where its region is
    contiguous, with no shard-sized scratch and no second copy. Returns how many
    inner chunks were not stored (filled).

    Example:
        >>> plan_scatter(reader, p, "c/0", index, out[0:8], pieces)  # doctest: +SKIP
        0
    """
    inner, fill = reader.inner_shape, reader.spec.fill_value
    size = reader.inner.spec.nbytes // reader.inner.spec.dtype.itemsize
    missing = 0
    for ip in basic_indexer(p.chunk_selection, reader.spec.shape, inner):
        stored = index.get(ip.chunk_coords)
        if stored is None:
            view[ip.out_selection] = fill
            missing += 1
            continue
        target = direct_target(view, ip, inner, size)
        if target is None:
            target = Region(view[(*ip.out_selection, Ellipsis)], ip.chunk_selection)
        pieces.append((key, *stored, target, ip.chunk_coords))
    return missing


def plan_region(
    reader: Any,
    p: Any,
    key: str,
    index: ShardIndex,
    pieces: list[Piece],
    finish: list[tuple[Any, np.ndarray, Any]],
) -> int:
    """Plan any selection through a shard-sized scratch; the inner chunks not stored
    (filled), counted.

    Example:
        >>> plan_region(reader, p, "c/0", index, pieces, finish)  # doctest: +SKIP
        0
    """
    scratch = np.empty(reader.spec.shape, dtype=reader.spec.dtype)
    missing = 0
    for coords in touched_chunks(p.chunk_selection, reader.inner_shape, reader.spec.shape):
        region = inner_region(coords, reader.inner_shape)
        stored = index.get(coords)
        if stored is None:
            scratch[region] = reader.spec.fill_value
            missing += 1
        else:
            pieces.append((key, *stored, scratch[region], coords))
    finish.append((p, scratch, p.chunk_selection))
    return missing
