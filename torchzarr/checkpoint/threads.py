"""Running checkpoint work on a few threads, or on the calling thread while Python exits."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from torchzarr.core.pool import TaskTally, refused_at_exit

__all__ = ["run_all"]

T = TypeVar("T")
R = TypeVar("R")


def run_all(
    work: Callable[[T], R], items: Sequence[T], threads: int, name: str = "torchzarr-ckpt"
) -> list[R]:
    """``work(item)`` for every item, on up to ``threads`` threads; the results in order.

    Where the pool refuses tasks because the interpreter is exiting
    (:func:`refused_at_exit`), the items it refused run on the calling thread instead, so
    a save that runs at exit still writes everything. On the first error (of an item, in
    item order, or one raised in the calling thread, such as ``KeyboardInterrupt`` while
    it submits or waits) no further item starts, and every item that started has ended
    before the error is raised: no thread is left writing.

    Example:
        >>> run_all(lambda x: x * 2, [1, 2, 3], threads=2)
        [2, 4, 6]
    """
    workers = max(1, min(threads, len(items)))
    if workers == 1:
        return [work(item) for item in items]
    tally = TaskTally()
    run = tally.wrap(work)
    pool = ThreadPoolExecutor(workers, thread_name_prefix=name)
    try:
        futures: list[Future[R]] = []
        for item in items:
            try:
                futures.append(pool.submit(run, item))
            except RuntimeError as exc:
                if not refused_at_exit(exc):
                    raise
                break
        results = [future.result() for future in futures]  # the first error in order
        # Refused at exit: the rest run here, in order.
        results.extend(work(item) for item in items[len(futures) :])
    except BaseException:
        tally.stop()  # what is left in the queue skips; the pool's threads then end
        with contextlib.suppress(BaseException):  # the first error is the one raised
            pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return results
