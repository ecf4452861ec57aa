"""Running checkpoint work on a few threads, or on the calling thread while Python exits."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from torchzarr.core.pool import refused_at_exit

__all__ = ["run_all"]

T = TypeVar("T")
R = TypeVar("R")


def run_all(
    work: Callable[[T], R], items: Sequence[T], threads: int, name: str = "torchzarr-ckpt"
) -> list[R]:
    """``work(item)`` for every item, on up to ``threads`` threads; the results in order.

    Where the pool refuses tasks because the interpreter is exiting
    (:func:`refused_at_exit`), the items it refused run on the calling thread instead, so
    a save that runs at exit still writes everything. Every task started is waited for
    before the first error is raised (no thread is left writing).

    Example:
        >>> run_all(lambda x: x * 2, [1, 2, 3], threads=2)
        [2, 4, 6]
    """
    workers = max(1, min(threads, len(items)))
    if workers == 1:
        return [work(item) for item in items]
    results: list[R] = []
    error: BaseException | None = None
    with ThreadPoolExecutor(workers, thread_name_prefix=name) as pool:
        futures: list[Future[R]] = []
        for item in items:
            try:
                futures.append(pool.submit(work, item))
            except RuntimeError as exc:
                if not refused_at_exit(exc):
                    error = exc
                break
        for future in futures:
            try:
                results.append(future.result())
            except BaseException as exc:  # raised below, once all ended
                error = error or exc
        for item in items[len(futures) :]:  # refused at exit: run here, in order
            if error is not None:
                break
            try:
                results.append(work(item))
            except BaseException as exc:  # raised below
                error = exc
    if error is not None:
        raise error
    return results
