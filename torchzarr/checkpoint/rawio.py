"""Raw chunk I/O for uncompressed local arrays: map and write chunk files directly.

An array stored uncompressed (codecs ``[bytes little]``) in a local directory, chunked
along its first axis only, is its tensor's bytes cut into files. Mapping them (``mmap``)
or writing them from a tensor's memory skips the engine's intermediate buffers; reads go
through the engine, which already reads raw local chunks straight into the output, but
for small arrays, read from their files directly (see :func:`read_array`). Everything
else goes through the engine as usual. A tensor of several chunks is mapped as one
contiguous range (chunk after chunk at fixed addresses), which needs Linux and chunks of
a whole number of pages.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import math
import mmap
import os
import sys
import weakref
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from torchzarr.checkpoint.threads import run_all
from torchzarr.core.array import Array
from torchzarr.core.fastpath import local_root
from torchzarr.errors import InvalidArgumentError, StoreError
from torchzarr.storage import LocalStore, Store
from torchzarr.storage.fileio import read_into

__all__ = [
    "empty_huge",
    "flat_bytes",
    "make_dirs",
    "map_array",
    "read_array",
    "sync_local",
    "write_rows",
]

_MAP_FIXED = 0x10  # Linux, all architectures torch ships for
_MAP_FAILED = ctypes.c_void_p(-1).value


def _layout(array: Array) -> tuple[int, int] | None:
    """(rows per chunk, bytes per row) when the chunks of ``array`` are raw local files."""
    store, meta = array.store, array.metadata
    if not isinstance(store, LocalStore) or getattr(meta, "zarr_format", 2) != 3:
        return None
    if meta.codec_names != ["bytes"] or meta.storage_transformers:
        return None
    endian = getattr(meta.codecs[0], "endian", None)
    itemsize = array.dtype.itemsize
    if itemsize > 1 and (endian not in (None, "little") or sys.byteorder != "little"):
        return None
    shape, chunks = array.shape, array.chunks
    if math.prod(shape) == 0 or tuple(chunks[1:]) != tuple(shape[1:]):
        return None  # only chunks that split the first axis are contiguous in memory
    return (chunks[0] if shape else 1), itemsize * math.prod(shape[1:])


def _chunk_key(array: Array, index: int) -> str:
    prefix = array.path + "/" if array.path else ""
    coords = (index,) + (0,) * (len(array.shape) - 1) if array.shape else ()
    return prefix + array.metadata.chunk_key(coords)


def _chunk_files(array: Array) -> tuple[list[Path], int] | None:
    """The chunk files of ``array`` in order and the bytes of one chunk, if all are raw."""
    layout = _layout(array)
    if layout is None:
        return None
    per_chunk, row_bytes = layout
    rows = array.shape[0] if array.shape else 1
    chunk_nbytes = per_chunk * row_bytes
    root = array.store.root
    files = []
    for i in range(-(-rows // per_chunk)):
        path = root.joinpath(*_chunk_key(array, i).split("/"))
        try:
            if os.stat(path).st_size != chunk_nbytes:
                return None  # missing (fill value) or not raw: read it the usual way
        except OSError:
            return None
        files.append(path)
    return files, chunk_nbytes


def _map_one(path: Path, nbytes: int) -> np.ndarray | None:
    try:
        return np.memmap(path, dtype=np.uint8, mode="c", shape=(nbytes,))
    except (OSError, ValueError):  # gone (a newer save pruned it) or cut short: read it
        return None


@functools.cache
def _libc() -> Any:
    """libc's mmap, munmap and madvise with their argument types (Linux)."""
    libc = ctypes.CDLL(None, use_errno=True)
    c_mmap, c_munmap, c_madvise = libc.mmap, libc.munmap, libc.madvise
    c_mmap.restype = ctypes.c_void_p
    c_mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int]
    c_mmap.argtypes += [ctypes.c_int, ctypes.c_long]
    c_munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    c_madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return c_mmap, c_munmap, c_madvise


def _map_many(files: list[Path], chunk_nbytes: int) -> np.ndarray | None:
    """Map the files back to back at fixed addresses of one reserved range (Linux only)."""
    if sys.platform != "linux" or chunk_nbytes % mmap.ALLOCATIONGRANULARITY:
        return None
    c_mmap, c_munmap, _ = _libc()
    total = chunk_nbytes * len(files)
    prot = mmap.PROT_READ | mmap.PROT_WRITE
    base = c_mmap(None, total, prot, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
    if base in (None, _MAP_FAILED):
        return None
    try:
        for i, path in enumerate(files):
            fd = os.open(path, os.O_RDONLY)
            try:
                at = base + i * chunk_nbytes
                flags = mmap.MAP_PRIVATE | _MAP_FIXED
                if c_mmap(at, chunk_nbytes, prot, flags, fd, 0) != at:
                    raise OSError(ctypes.get_errno(), f"mmap of {path} failed")
            finally:
                os.close(fd)
    except OSError:
        c_munmap(base, total)
        return None
    view = np.frombuffer(memoryview((ctypes.c_uint8 * total).from_address(base)), dtype=np.uint8)
    # The tensor keeps ``view`` alive; when the last tensor on it goes, the range goes.
    # Not at exit: the process's memory goes then anyway, and a late user would crash.
    weakref.finalize(view, c_munmap, base, total).atexit = False
    return view


def map_array(array: Array) -> torch.Tensor:
    """The whole of ``array`` as a CPU tensor, memory-mapped when its chunks allow it.

    Falls back to reading (``array[...]``) for arrays that cannot be mapped: see the
    module docstring. A mapped tensor is writable; writes stay in this process.

    Example:
        >>> import torchzarr as tz
        >>> arr = tz.create_array("memory://", shape=(2,), dtype=torch.int8, compressors=None)
        >>> map_array(arr)  # a memory store: read as usual
        tensor([0, 0], dtype=torch.int8)
    """
    found = _chunk_files(array)
    if found is None:
        return array[...]
    files, chunk_nbytes = found
    raw = _map_one(files[0], chunk_nbytes) if len(files) == 1 else _map_many(files, chunk_nbytes)
    if raw is None:
        return array[...]
    itemsize = array.dtype.itemsize
    numel = math.prod(array.shape)
    flat = torch.from_numpy(raw)[: numel * itemsize]  # the last chunk is padded past the edge
    return flat.view(array.dtype).view(array.shape)


_HUGE_PAGE = 2 * 2**20
_MADV_HUGEPAGE = 14  # Linux


def empty_huge(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised CPU tensor on transparent huge pages where the system allows them.

    Filling fresh memory costs a page fault per page; on 2 MiB pages (Linux with
    transparent huge pages in ``madvise`` or ``always`` mode) there are 512 times fewer,
    and reading a checkpoint into the tensor can run several times faster. Not always: in
    a VM whose host takes back freed guest memory (free page reporting), a huge page's
    first touch can cost far more than 512 small ones. Only whole 2 MiB
    pages inside the tensor are advised, so it takes no more memory than its bytes. Small
    tensors and other systems get :func:`torch.empty`. The memory is released with the
    last tensor that uses it; the tensor cannot be resized.

    Example:
        >>> empty_huge((2, 3), torch.float32).shape
        torch.Size([2, 3])
    """
    nbytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
    if sys.platform != "linux" or nbytes < 2 * _HUGE_PAGE:
        return torch.empty(shape, dtype=dtype)
    c_mmap, c_munmap, c_madvise = _libc()
    total = nbytes + _HUGE_PAGE
    prot, flags = mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
    base = c_mmap(None, total, prot, flags, -1, 0)
    if base in (None, _MAP_FAILED):
        return torch.empty(shape, dtype=dtype)
    start = -(-base // _HUGE_PAGE) * _HUGE_PAGE
    c_madvise(start, nbytes // _HUGE_PAGE * _HUGE_PAGE, _MADV_HUGEPAGE)  # a hint: may fail
    raw = (ctypes.c_uint8 * nbytes).from_address(start)
    view = np.frombuffer(memoryview(raw), dtype=np.uint8)
    weakref.finalize(view, c_munmap, base, total).atexit = False  # as in _map_many
    return torch.from_numpy(view).view(dtype).view(shape)


#: arrays below this size are read from their raw chunk files directly: those that
#: :func:`empty_huge` would not put on huge pages
_SMALL_READ = 2 * _HUGE_PAGE


def read_array(array: Array, *, huge_pages: bool = False) -> torch.Tensor:
    """The whole of ``array`` as a new CPU tensor (the engine reads raw local chunks into it).

    ``huge_pages`` allocates the tensor with :func:`empty_huge` (see there). An array too
    small for huge pages whose chunks are raw local files is read from them directly, one
    ``readv`` per file: for a small tensor, planning an engine read costs several times
    more than the read (thousands of them make up a checkpoint's biases and norms).

    Example:
        >>> import torchzarr as tz
        >>> arr = tz.create_array("memory://", shape=(2,), dtype=torch.int8, compressors=None)
        >>> read_array(arr)
        tensor([0, 0], dtype=torch.int8)
    """
    if array.nbytes < _SMALL_READ:
        small = _read_small(array)
        if small is not None:
            return small
    if not huge_pages:
        return array[...]
    out = empty_huge(tuple(array.shape), array.dtype)
    return array.read(..., out=out)


def _read_small(array: Array) -> torch.Tensor | None:
    """``array`` read from its raw chunk files into a new tensor; None (read it the usual
    way, which also reports what is wrong) unless the store is a plain ``LocalStore`` (the
    engine's reads of raw local chunks skip the same stores) and every file is there, of a
    whole chunk's size."""
    root = local_root(array.store)  # a subclass or wrapper sees its reads, as in the engine
    layout = None if root is None else _layout(array)
    if root is None or layout is None:
        return None
    per_chunk, row_bytes = layout
    chunk_nbytes = per_chunk * row_bytes
    rows = array.shape[0] if array.shape else 1
    out = torch.empty(tuple(array.shape), dtype=array.dtype)
    target = flat_bytes(out).numpy().data
    for c in range(-(-rows // per_chunk)):
        lo = c * per_chunk * row_bytes
        part = target[lo : min(lo + chunk_nbytes, len(target))]
        # the edge chunk is stored full size; one byte more tells a longer file
        rest = bytearray(chunk_nbytes - len(part) + 1)
        try:
            fd = os.open(os.path.join(root, *_chunk_key(array, c).split("/")), os.O_RDONLY)
        except OSError:
            return None  # missing (fill value, or lost: the engine says which) or unreadable
        try:
            got = read_into(fd, [part, rest], needed=chunk_nbytes)
        except OSError:
            return None
        finally:
            os.close(fd)
        if got != chunk_nbytes:
            return None
    return out


def flat_bytes(data: torch.Tensor) -> torch.Tensor:
    """The bytes of a contiguous CPU tensor as a 1-d ``uint8`` view of its memory (no copy).

    ``is_contiguous()`` ignores the strides of size-1 axes (``weight[:, 0]`` of a ``(1, 5)``
    weight has shape ``(1,)``, stride ``(5,)``), which ``view(torch.uint8)`` refuses; the
    elements are still back to back, so a 1-d view with stride 1 over them is exact.

    Example:
        >>> column = torch.ones(1, 5)[:, 0]  # shape (1,), stride (5,)
        >>> flat_bytes(column)
        tensor([  0,   0, 128,  63], dtype=torch.uint8)
    """
    if not data.is_contiguous():
        raise InvalidArgumentError(
            f"flat_bytes needs a contiguous tensor, got shape {tuple(data.shape)} "
            f"strides {data.stride()}"
        )
    return data.as_strided((data.numel(),), (1,)).view(torch.uint8)


def write_rows(array: Array, start: int, stop: int, data: torch.Tensor) -> bool:
    """Write rows ``start:stop`` of ``array`` from ``data`` as whole raw chunk files.

    Each chunk is written from ``data``'s memory (the edge chunk padded to full size, as
    Zarr stores it). Returns False (nothing written) unless the array's chunks are raw
    local files, ``start:stop`` covers whole chunks (or ends at the edge), and ``data``
    is a contiguous CPU tensor of the array's dtype.

    Example:
        >>> import torchzarr as tz
        >>> arr = tz.create_array("memory://", shape=(2,), dtype=torch.int8, compressors=None)
        >>> write_rows(arr, 0, 2, torch.ones(2, dtype=torch.int8))  # not local files
        False
    """
    layout = _layout(array)
    if layout is None or array.read_only:
        return False
    if data.device.type != "cpu" or not data.is_contiguous() or data.dtype != array.dtype:
        return False
    per_chunk, row_bytes = layout
    rows = array.shape[0] if array.shape else 1
    if start % per_chunk or (stop % per_chunk and stop != rows):
        return False
    buf = flat_bytes(data).numpy().data
    for c in range(start // per_chunk, -(-stop // per_chunk)):
        lo, hi = c * per_chunk, min(stop, (c + 1) * per_chunk)
        piece = buf[(lo - start) * row_bytes : (hi - start) * row_bytes]
        if hi - lo < per_chunk:  # the edge chunk is stored full size
            piece = memoryview(bytes(piece) + bytes((per_chunk - (hi - lo)) * row_bytes))
        array.store.set(_chunk_key(array, c), piece)
    return True


def make_dirs(store: Store, prefix: str, paths: Iterable[str]) -> None:
    """Make the directories of the nodes ``paths`` below ``prefix`` of a local store, each
    with one ``mkdir`` (parents first; ``prefix`` must exist), before their files are
    written: a write into a missing directory fails, looks up the path and makes it before
    it tries again. Best effort: what cannot be made here, the store's writes make (or
    report). Other stores need nothing.

    Example:
        >>> import tempfile
        >>> store = LocalStore(tempfile.mkdtemp())
        >>> make_dirs(store, "", ["a/b", "a"])
        >>> (store.root / "a" / "b").is_dir()
        True
    """
    if not isinstance(store, LocalStore):
        return
    top = os.path.join(str(store.root), *prefix.split("/")) if prefix else str(store.root)
    for path in sorted(paths, key=lambda p: p.count("/")):
        with contextlib.suppress(OSError):
            os.mkdir(os.path.join(top, *path.split("/")))


def sync_local(store: Store, prefix: str = "", threads: int = 32) -> None:
    """Flush the files below ``prefix`` of a local store to disk, many ``fsync`` at once.

    Files are written without a flush each, then flushed here together on a few threads
    (the file system merges concurrent flushes into few journal commits: the more at
    once, the fewer commits), before the manifest names them. Each thread flushes its
    share of the files in turn (a task per file would cost more than a flush of a small
    one). Other stores need nothing. Also at interpreter exit (a pending background
    save, an ``atexit`` handler): the flushes then run on the calling thread.

    Raises:
        StoreError: a flush failed (an I/O error); the message names the file, the
            ``OSError`` is its cause.

    Example:
        >>> from torchzarr.storage import MemoryStore
        >>> sync_local(MemoryStore())  # nothing to flush in memory
    """
    if not isinstance(store, LocalStore):
        return
    top = store.root.joinpath(*prefix.split("/")) if prefix else store.root
    paths: list[str] = []
    for directory, _, files in os.walk(top):
        paths.extend(os.path.join(directory, name) for name in files)
        paths.append(directory)

    def flush(share: list[str]) -> None:
        for path in share:
            try:
                handle = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue  # another writer's temporary file, renamed or removed meanwhile
            try:
                os.fsync(handle)  # a failed flush raises: the caller must not commit
            except OSError as err:
                raise StoreError(f"cannot flush {path!r} to disk (fsync failed): {err}") from err
            finally:
                os.close(handle)

    workers = max(1, min(threads, len(paths)))
    run_all(flush, [paths[i::workers] for i in range(workers)], workers, "torchzarr-fsync")
