"""Running checkpoint work on a few threads, or on the calling thread while Python exits."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from torchzarr.core.pool import refused_at_exit

__all__ = ["run_all"]

T = TypeVar("T")
R = TypeVar("R")


class _Skipped(Exception):
    """An item that had not started when its call stopped: it did not run."""


class _Tally:
    """The items running now; once :meth:`stop` is called, items not yet started skip.

    The pool's own bookkeeping cannot be trusted for this: an interrupt (Ctrl-C) that
    lands in ``submit`` after the item was queued, while the pool starts a thread for it,
    leaves a thread the pool does not know of (``shutdown`` does not wait for it) running
    an item whose future the caller never got.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._running = 0
        self._stopped = False

    def wrap(self, work: Callable[[T], R]) -> Callable[[T], R]:
        def run(item: T) -> R:
            with self._cond:
                if self._stopped:
                    raise _Skipped
                self._running += 1
            try:
                return work(item)
            finally:
                with self._cond:
                    self._running -= 1
                    self._cond.notify_all()

        return run

    def stop(self) -> None:
        """No item starts from now on; wait for those running to end.

        Further interrupts while waiting do not cut the wait short: the items are the
        save's own writes, and one left running would write after the save was undone.
        """
        while True:
            try:
                with self._cond:
                    self._stopped = True
                    while self._running:
                        self._cond.wait()
                    return
            except BaseException:  # another Ctrl-C: the items still end first
                continue


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
    tally = _Tally()
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
