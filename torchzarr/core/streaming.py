"""Chunk streaming: every chunk of an array in order, read ahead on a few threads, in bounded memory."""

from __future__ import annotations

import collections
import itertools
import math
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import torch

from torchzarr.arguments import whole_number
from torchzarr.core.chunking import grid_coords
from torchzarr.core.indexing import chunk_grid_shape, chunk_region
from torchzarr.errors import ArgumentTypeError, ShapeMismatchError

__all__ = ["iter_chunks"]

Progress = bool | Callable[[int, int], None] | None


def _progress_callback(progress: Progress, total: int, name: str) -> tuple[Any, Any]:
    """A per-chunk callback and a closer, from ``True`` (tqdm), a callable, or nothing
    (as :func:`iter_chunks` checked it)."""
    if progress is None or progress is False:
        return None, None
    if callable(progress):
        done = itertools.count(1)
        return (lambda: progress(next(done), total)), None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is optional: report through logging instead
        import logging

        log = logging.getLogger("torchzarr")
        done = itertools.count(1)
        step = max(1, total // 20)

        def report() -> None:
            n = next(done)
            if n % step == 0 or n == total:
                log.info("%s: %d/%d chunks", name, n, total)

        return report, None
    bar = tqdm(total=total, desc=name, unit="chunk")
    return (lambda: bar.update(1)), bar.close


def iter_chunks(
    array: Any, parallel: int = 2, progress: Progress = None
) -> Iterator[tuple[tuple[int, ...], tuple[slice, ...], torch.Tensor]]:
    """Yield ``(chunk_coords, region, tensor)`` for every chunk, in C order of the chunk grid.

    Reads run ``parallel`` chunks ahead of the consumer on their own threads, so memory stays
    bounded however large the array is: the stream holds at most ``parallel + 1`` chunks
    besides the one the consumer keeps (a ``for`` loop keeps its last chunk until the next
    arrives). The process's resident memory can reach about 2.5x that with many threads:
    the C allocator keeps freed chunks in per-thread pools rather than returning them to
    the system (on glibc, ``MALLOC_MMAP_THRESHOLD_=1048576`` makes it return them). ``progress`` is
    True (a tqdm bar, else logging), a ``callback(done, total)`` or None. The arguments are
    checked at the call (``ArgumentTypeError``, ``InvalidArgumentError``); nothing is read
    before the first ``next()``.

    Example:
        >>> import torchzarr as tz
        >>> arr = tz.create_array("memory://", shape=(5,), dtype=torch.int8, chunks=(2,))
        >>> [coords for coords, _, _ in iter_chunks(arr)]
        [(0,), (1,), (2,)]
        >>> iter_chunks(arr, parallel=0)
        Traceback (most recent call last):
        ...
        torchzarr.errors.InvalidArgumentError: parallel must be >= 1, got 0
    """
    parallel = whole_number("parallel", parallel, 1)
    if not (progress is None or isinstance(progress, bool) or callable(progress)):
        raise ArgumentTypeError(
            f"progress must be True, False, None or a callback(done, total), got {progress!r}"
        )
    return _stream(array, parallel, progress)


def _stream(
    array: Any, parallel: int, progress: Progress
) -> Iterator[tuple[tuple[int, ...], tuple[slice, ...], torch.Tensor]]:
    """:func:`iter_chunks`' generator, its arguments checked."""
    shape, chunks = array.shape, array.chunks
    grid = chunk_grid_shape(shape, chunks)
    total = math.prod(grid)
    tick, close = _progress_callback(progress, total, array.name)
    coords_iter = grid_coords(grid)  # one at a time: millions of chunks take no memory
    pending: collections.deque[tuple[tuple[int, ...], tuple[slice, ...], Future[Any]]] = (
        collections.deque()
    )
    pool = ThreadPoolExecutor(parallel, thread_name_prefix="torchzarr-stream")
    try:
        for coords in itertools.chain(coords_iter, [None]):
            if coords is not None:
                region = chunk_region(coords, shape, chunks)
                pending.append((coords, region, pool.submit(array.read, region)))
                if len(pending) <= parallel:
                    continue
            while pending and (coords is None or len(pending) > parallel):
                done_coords, done_region, future = pending.popleft()
                tensor = future.result()
                _check_inside(array, shape, done_coords, done_region, tensor)
                if tick is not None:
                    tick()
                yield done_coords, done_region, tensor
                # the consumer may drop the chunk now: hold it no longer (nor its future)
                del tensor, future
    finally:
        for _, _, future in pending:
            future.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
        if close is not None:
            close()


def _check_inside(
    array: Any,
    shape: tuple[int, ...],
    coords: tuple[int, ...],
    region: tuple[slice, ...],
    tensor: torch.Tensor,
) -> None:
    """Refuse a chunk read short: the array shrank (resize) while the stream ran."""
    if tuple(tensor.shape) != tuple(r.stop - r.start for r in region):
        raise ShapeMismatchError(
            f"array {array.name!r} changed shape from {shape} to {tuple(array.shape)} while "
            f"iter_chunks streamed it: chunk {coords} (region "
            f"{tuple((r.start, r.stop) for r in region)}) is no longer inside it"
        )
