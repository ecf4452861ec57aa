"""Per-chunk read work: local files read in the decoding task, raw chunks read into the output."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from torchzarr.codecs import fast_decode
from torchzarr.codecs.bytes_codec import BytesCodec
from torchzarr.codecs.pipeline import V3Pipeline, decode_error
from torchzarr.codecs.v2_pipeline import V2Pipeline
from torchzarr.errors import ChunkDecodeError, StoreError
from torchzarr.storage.fileio import read_bytes, read_into
from torchzarr.storage.key_names import confined_key
from torchzarr.storage.local import LocalStore

__all__ = [
    "TINY_CHUNK_BYTES",
    "ChunkReader",
    "direct_target",
    "is_raw",
    "local_root",
    "needs_swap",
    "read_buffer",
    "scratch_buffer",
    "zstd_codec",
]

_MISSING = (FileNotFoundError, IsADirectoryError, NotADirectoryError)
# Files opened relative to an open directory (POSIX openat)
_RELATIVE_OPEN = os.open in os.supports_dir_fd and hasattr(os, "O_DIRECTORY") and os.sep == "/"
_SCRATCH_MAX = 64 << 20  # larger chunks get a fresh buffer rather than a per-thread one
#: decoded chunks below this are read on the calling thread alone
TINY_CHUNK_BYTES = 8 << 10
_local = threading.local()
# Chunk files below this are read into a new bytes object; larger ones into reused memory
# (glibc serves big allocations with fresh pages, each faulted in on first touch).
_FRESH_READ_MAX = 128 << 10
# Compressed bytes read past a zstd prefix: one block (128 KiB decoded, a little more when
# stored raw) and its header
_HEAD_SLACK = (128 << 10) + 4096


def local_root(store: Any) -> str | None:
    """The root directory of a plain ``LocalStore`` (not a subclass or wrapper), else None.

    Example:
        >>> local_root(LocalStore("/data/x.zarr"))
        '/data/x.zarr'
    """
    if type(store) is not LocalStore:
        return None
    return str(store.root)


def is_raw(pipeline: Any) -> bool:
    """True when a stored chunk is the chunk's bytes as they are: no codec but ``bytes``.

    Example:
        >>> from torchzarr.codecs.base import ChunkSpec
        >>> is_raw(V3Pipeline([BytesCodec("little")], ChunkSpec((2,), np.dtype("<i4"), 0)))
        True
    """
    if isinstance(pipeline, V3Pipeline):
        return (
            not pipeline.array_array
            and isinstance(pipeline.array_bytes, BytesCodec)
            and not pipeline.bytes_bytes
        )
    if isinstance(pipeline, V2Pipeline):
        return pipeline.compressor is None and not pipeline.filters
    return False


def needs_swap(pipeline: Any) -> bool:
    """True when raw stored bytes are in the other byte order than this machine's."""
    spec = pipeline.spec
    if spec.dtype.itemsize == 1:
        return False
    if isinstance(pipeline, V3Pipeline):
        return not pipeline.array_bytes.is_native  # type: ignore[attr-defined]
    return bool(pipeline.stored_dtype.isnative is False)


def direct_target(out: np.ndarray, projection: Any, chunk_shape: tuple[int, ...], size: int) -> Any:
    """The view of ``out`` a whole chunk decodes straight into, or None."""
    if not projection.is_complete_chunk:
        return None
    sel = projection.out_selection
    for s in sel:
        if not isinstance(s, slice | int):
            return None
    region = out[sel]
    if not isinstance(region, np.ndarray) or not region.flags.c_contiguous:
        return None
    if region.size != size:
        return None  # an edge chunk: the stored chunk is larger than the region
    return region.reshape(chunk_shape)


def zstd_codec(pipeline: Any) -> Any:
    """The zstd codec when stored chunks are zstd frames of the C-order native bytes, and the
    fast zstd path is there; else None.

    Example:
        >>> from torchzarr.codecs.base import ChunkSpec
        >>> spec = ChunkSpec((2,), np.dtype("<i4"), 0)
        >>> zstd_codec(V3Pipeline([BytesCodec("little")], spec)) is None
        True
    """
    codec = getattr(pipeline, "zstd_frame_codec", None)
    return codec if codec is not None and fast_decode.available("zstd") else None


def _rows_needed(item: Any) -> int | None:
    """How many leading positions along axis 0 a chunk selection item reaches."""
    if isinstance(item, int):
        return item + 1
    if isinstance(item, slice):
        start, stop, step = item.start or 0, item.stop, item.step or 1
        if stop is None or stop <= start:
            return None
        return start + (stop - start - 1) // step * step + 1
    if isinstance(item, np.ndarray) and item.size:
        return int(item.max()) + 1
    return None


def scratch_buffer(nbytes: int) -> np.ndarray:
    """A per-thread uint8 buffer of ``nbytes`` to decode a chunk into (reused by the next).

    Example:
        >>> scratch_buffer(8).nbytes
        8
    """
    if nbytes > _SCRATCH_MAX:
        return np.empty(nbytes, dtype=np.uint8)
    buf = getattr(_local, "buf", None)
    if buf is None or buf.size != nbytes:
        buf = _local.buf = np.empty(nbytes, dtype=np.uint8)
    return buf


def read_buffer(nbytes: int) -> memoryview:
    """A per-thread buffer of ``nbytes`` to read a chunk file into (reused by the next one).

    Example:
        >>> len(read_buffer(10))
        10
    """
    if nbytes > _SCRATCH_MAX:
        return _uninitialised(nbytes)
    buf = getattr(_local, "read_buf", None)
    if buf is None or len(buf) < nbytes:
        buf = _local.read_buf = _uninitialised(nbytes)
    return buf[:nbytes]


def _uninitialised(nbytes: int) -> memoryview:
    # not zero-filled (as a bytearray is): pages no read reaches stay out of memory
    return np.empty(nbytes, dtype=np.uint8).data


class ChunkReader:
    """Reads, decodes and scatters one chunk of a batch; a task runs it over many chunks.

    With a local root, the file is read in the task (system calls overlap on the pool);
    otherwise ``fetched`` holds the bytes ``get_many`` returned. Raw chunks are read with
    ``readv`` straight into the output region, or into per-thread scratch for partial chunks.
    Missing chunks become ``fill``. Counters are summed per reader, not per chunk.
    """

    def __init__(
        self,
        source: Any,
        out: np.ndarray,
        fill: Any,
        *,
        root: str | None,
        fetched: dict[str, Any] | None = None,
        generation: Any = None,
    ) -> None:
        pipeline = source.pipeline
        spec = pipeline.spec
        self.source, self.out, self.fill, self.fetched = source, out, fill, fetched
        self.pipeline, self.spec, self.generation = pipeline, spec, generation
        self.cache = source.cache
        self.chunk_shape = tuple(spec.shape)
        self.size = int(np.prod(self.chunk_shape, dtype=np.int64))
        self.nbytes = int(spec.nbytes)
        self.prefix = None if root is None else root.rstrip(os.sep) + os.sep
        self.raw = root is not None and hasattr(os, "readv") and is_raw(pipeline)
        self.swap = needs_swap(pipeline) if self.raw else False
        self.direct = bool(pipeline.supports_direct_decode)  # C layout: F order is not
        self.zstd = zstd_codec(pipeline)  # the codec, where the fast zstd path applies
        shape = self.chunk_shape
        self.row_bytes = self.nbytes // shape[0] if shape and self.zstd is not None else 0
        # zstd and blosc frames of a chunk stay below this (incompressible data included)
        self.read_hint = self.nbytes + self.nbytes // 128 + 1024
        self.chunks = self.missing = self.bytes_fetched = 0

    # -- files ------------------------------------------------------------------------------
    def _path(self, key: str) -> str:
        """The file of ``key`` below the root; ``InvalidKeyError`` for a key that could
        leave it (``../x``, ``/x``), whatever metadata it came from."""
        assert self.prefix is not None
        key = confined_key(key)
        return self.prefix + (key if os.sep == "/" else key.replace("/", os.sep))

    def _open(self, key: str) -> int | None:
        path = self._path(key)  # outside the try: InvalidKeyError is an OSError too
        try:
            return os.open(path, os.O_RDONLY)
        except _MISSING:
            return None
        except OSError as err:
            raise StoreError(f"cannot read {key!r} from {self.source.store}: {err}") from err

    def read_file(self, key: str) -> Any:
        """The file's bytes: a view of this thread's read buffer, valid until its next read.

        Reads of up to the largest size a chunk encodes to, no ``fstat``, into memory
        reused chunk after chunk (a fresh ``bytes`` per read lands on new pages, which
        cost as much as the decode here); a bigger file is read on to its end.
        """
        fd = self._open(key)
        return None if fd is None else self._read_open(fd, key)

    def read_files(self, keys: Sequence[str]) -> Iterator[Any]:
        """:meth:`read_file` of each key in turn, each directory opened once for its run of keys.

        Files are opened relative to their directory (one path component for the kernel to
        walk, not the whole path); where that is not available, by full path.
        """
        if not _RELATIVE_OPEN:
            yield from map(self.read_file, keys)
            return
        current, dir_fd = None, None
        try:
            for key in keys:
                folder, _, name = confined_key(key).rpartition("/")
                if folder != current:
                    if dir_fd is not None:
                        os.close(dir_fd)
                        dir_fd = None
                    dir_fd, current = self._open_dir(folder), folder
                if dir_fd is None:  # the directory is missing: so is the chunk
                    yield None
                    continue
                try:
                    fd = os.open(name, os.O_RDONLY, dir_fd=dir_fd)
                except _MISSING:
                    yield None
                    continue
                except OSError as err:
                    raise StoreError(
                        f"cannot read {key!r} from {self.source.store}: {err}"
                    ) from err
                yield self._read_open(fd, key)
        finally:
            if dir_fd is not None:
                os.close(dir_fd)

    def _open_dir(self, folder: str) -> int | None:
        """The directory ``folder`` of a key checked by the caller ("": the root), open."""
        assert self.prefix is not None
        try:
            return os.open(self.prefix + folder, os.O_RDONLY | os.O_DIRECTORY)
        except _MISSING:
            return None
        except OSError as err:
            raise StoreError(f"cannot read {folder!r} from {self.source.store}: {err}") from err

    def _read_open(self, fd: int, key: str) -> Any:
        """Read an open chunk file (see :meth:`read_file`), closing it."""
        try:
            hint = self.read_hint
            if hint < _FRESH_READ_MAX:  # small: a new bytes object is heap memory, and
                data = read_bytes(fd, hint)  # bytes pass to the decoders without conversion
                if len(data) < hint:
                    return data
                parts = [data]
            else:
                buf = read_buffer(hint)
                got = read_into(fd, [buf])
                if got < hint:
                    return buf[:got]
                parts = [bytes(buf)]
            while more := read_bytes(fd, max(hint, 1 << 16)):
                parts.append(more)
            return b"".join(parts)
        except _MISSING:
            return None
        except OSError as err:
            raise StoreError(f"cannot read {key!r} from {self.source.store}: {err}") from err
        finally:
            os.close(fd)

    def readinto(self, key: str, buf: np.ndarray) -> int:
        """Read a raw chunk file into ``buf`` (uint8, exact size); -1 when missing."""
        fd = self._open(key)
        if fd is None:
            return -1
        view = memoryview(buf.data)
        try:  # a byte past the end tells a longer file from an exact one
            got = read_into(fd, [view, bytearray(1)], needed=len(view))
        except _MISSING:
            return -1
        except OSError as err:
            raise StoreError(f"cannot read {key!r} from {self.source.store}: {err}") from err
        finally:
            os.close(fd)
        if got != len(view):
            size = f"more than {len(view)}" if got > len(view) else str(got)
            raise ChunkDecodeError(
                f"cannot decode chunk {key!r} with codec 'bytes': the chunk holds {size} "
                f"bytes, expected {len(view)} for shape {self.chunk_shape} of {self.spec.dtype}"
            )
        return got

    # -- one chunk --------------------------------------------------------------------------
    def __call__(self, projection: Any) -> int:
        """Read one chunk into ``out``: bytes fetched, or -1 when the chunk is missing."""
        source, out = self.source, self.out
        key = source.key(projection.chunk_coords)
        target = (
            direct_target(out, projection, self.chunk_shape, self.size) if self.direct else None
        )
        if self.raw:
            return self._raw(key, projection, target)
        if self.zstd is not None and target is None and self.prefix is not None:
            prefix = self._prefix(projection)
            if prefix:  # the rows selected end early in the chunk
                return self._zstd_head(key, projection, prefix)
        data = self.read_file(key) if self.prefix is not None else self.fetched.get(key)  # type: ignore[union-attr]
        if data is None:
            out[projection.out_selection] = self.fill
            return -1
        if self.zstd is not None:  # one zstd frame of the chunk's bytes: no codec layers
            return self._zstd(key, data, projection, target)
        pipeline = self.pipeline
        if target is not None:
            self._cache(projection, pipeline.decode(data, out=target, key=key))
            return len(data)
        if self.direct:  # decompress into per-thread scratch, then copy the region
            buf = scratch_buffer(self.nbytes).view(self.spec.dtype).reshape(self.chunk_shape)
            chunk = pipeline.decode(data, out=buf, key=key)
        else:
            chunk = pipeline.decode(data, key=key)
        self._cache(projection, chunk)
        out[projection.out_selection] = chunk[projection.chunk_selection]
        return len(data)

    def _zstd(self, key: str, data: Any, projection: Any, target: Any) -> int:
        try:
            if target is not None:
                fast_decode.decompress_into("zstd", data, target.reshape(-1).view(np.uint8))
                self._cache(projection, target)
                return len(data)
            scratch = scratch_buffer(self.nbytes)
            prefix = self._prefix(projection)
            if prefix and not fast_decode.zstd_prefix_applies(data, self.nbytes):
                prefix = 0  # checksummed, several frames, or no stated size: verify it all
            if prefix:  # the rows selected end early in the chunk: decode only up to there
                fast_decode.decompress_prefix(data, scratch[:prefix])
            else:
                fast_decode.decompress_into("zstd", data, scratch)
        except ChunkDecodeError as err:
            raise decode_error(err, self.zstd, key) from err
        chunk = scratch.view(self.spec.dtype).reshape(self.chunk_shape)
        if not prefix:
            self._cache(projection, chunk)
        self.out[projection.out_selection] = chunk[projection.chunk_selection]
        return len(data)

    def _zstd_head(self, key: str, projection: Any, prefix: int) -> int:
        """Decode the first ``prefix`` bytes of a local zstd chunk from the head of its file.

        zstd decodes block by block (128 KiB at most), so the compressed bytes up to the
        prefix plus one block do; a frame that needs more is read whole after all, and a
        chunk that a prefix cannot stand for (see ``zstd_prefix_applies``) is decoded whole.
        """
        data, whole = self._read_head(key, min(self.read_hint, prefix + _HEAD_SLACK))
        if data is None:
            self.out[projection.out_selection] = self.fill
            return -1
        if fast_decode.zstd_prefix_applies(data, self.nbytes, whole):
            scratch = scratch_buffer(self.nbytes)
            try:
                fast_decode.decompress_prefix(data, scratch[:prefix])
            except ChunkDecodeError as err:
                if whole:
                    raise decode_error(err, self.zstd, key) from err
            else:
                chunk = scratch.view(self.spec.dtype).reshape(self.chunk_shape)
                self.out[projection.out_selection] = chunk[projection.chunk_selection]
                return len(data)
        if not whole:  # the frame needs more than its head, or must be checked whole
            data = self.read_file(key)
            if data is None:
                self.out[projection.out_selection] = self.fill
                return -1
        return self._zstd(key, data, projection, None)

    def _read_head(self, key: str, nbytes: int) -> tuple[Any, bool]:
        """Up to ``nbytes`` leading bytes of a chunk file (this thread's read buffer) and
        whether they are the whole file; ``(None, True)`` when it is missing."""
        fd = self._open(key)
        if fd is None:
            return None, True
        try:
            buf = read_buffer(nbytes)
            got = read_into(fd, [buf])
        except _MISSING:
            return None, True
        except OSError as err:
            raise StoreError(f"cannot read {key!r} from {self.source.store}: {err}") from err
        finally:
            os.close(fd)
        return buf[:got], got < nbytes

    def _prefix(self, projection: Any) -> int:
        """Bytes of the chunk to decode for a partial read, or 0 for all of it."""
        if not self.row_bytes or self.cache is not None:
            return 0
        rows = _rows_needed(projection.chunk_selection[0])
        prefix = rows * self.row_bytes if rows is not None else self.nbytes
        return prefix if prefix < self.nbytes * 7 // 8 else 0

    def _raw(self, key: str, projection: Any, target: Any) -> int:
        if target is not None:
            got = self.readinto(key, target.reshape(-1).view(np.uint8))
            if got < 0:
                target[...] = self.fill
                return got
            if self.swap:
                target.byteswap(inplace=True)
            self._cache(projection, target)
            return got
        buf = scratch_buffer(self.nbytes)
        got = self.readinto(key, buf)
        if got < 0:
            self.out[projection.out_selection] = self.fill
            return got
        chunk = self.pipeline.decode(buf, key=key)  # a view of buf (swapped: a copy)
        self._cache(projection, chunk)
        self.out[projection.out_selection] = chunk[projection.chunk_selection]
        return got

    def _cache(self, projection: Any, chunk: np.ndarray) -> None:
        """Offer the decoded chunk to the cache (which keeps its own copy)."""
        cache = self.cache
        if cache is not None:
            key = (self.source.store.identity, self.source.path, projection.chunk_coords)
            cache.put(key, chunk, since=self.generation)

    def run(self, projections: Sequence[Any], parallel: Callable[..., list[Any]]) -> None:
        """Read every projection on the pool (``parallel`` is the engine's ``run_parallel``)."""
        nbytes = self.nbytes
        if nbytes < TINY_CHUNK_BYTES and self.prefix is not None:
            # Tiny local chunks: each system call or decode releases the GIL for a few
            # microseconds, and handing it back and forth between threads costs more.
            results = [self(projection) for projection in projections]
        else:
            results = parallel(self, projections, cost=lambda _: nbytes)  # small ones grouped
        missing = results.count(-1)
        self.missing += missing
        self.chunks += len(results) - missing
        self.bytes_fetched += sum(results) + missing
