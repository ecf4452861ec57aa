"""The process's thread pool for decoding and encoding chunks: leased per call, one per
``config.threads`` setting, dropped in forked children."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from torchzarr.config import config

__all__ = [
    "ItemSkipped",
    "TaskTally",
    "group_by_cost",
    "on_pool_thread",
    "refused_at_exit",
    "run_parallel",
]

T = TypeVar("T")
R = TypeVar("R")

# -- the pool -------------------------------------------------------------------------------
# One pool of ``config.threads`` threads. When the setting changes, the next call makes a new
# pool; calls still running on the old one keep it (it is leased to them) and the last of them
# shuts it down, so no call ever submits to a pool that was shut down under it.
_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_pool_lock = threading.Lock()
_pool_users: dict[ThreadPoolExecutor, int] = {}  # calls using each pool now
_worker = threading.local()  # ``.is_worker`` is True on the pool's own threads


def _mark_worker() -> None:
    _worker.is_worker = True


def on_pool_thread() -> bool:
    """Whether the calling thread is one of the engine's pool threads: work it would hand
    to the pool runs on it instead (a codec reading or writing another array there would
    else wait for pool threads that may all be waiting, as it is, on such work).

    Example:
        >>> on_pool_thread()
        False
    """
    return getattr(_worker, "is_worker", False)


@contextlib.contextmanager
def _leased_pool(threads: int) -> Iterator[ThreadPoolExecutor]:
    """The pool of ``threads`` threads, kept open until the caller is done with it."""
    global _pool, _pool_size
    with _pool_lock:
        if _pool is None or _pool_size != threads:
            old = _pool
            _pool = ThreadPoolExecutor(threads, "torchzarr", initializer=_mark_worker)
            _pool_size = threads
            if old is not None and old not in _pool_users:
                old.shutdown(wait=False)  # idle: nobody will submit to it again
        pool = _pool
        _pool_users[pool] = _pool_users.get(pool, 0) + 1
    try:
        yield pool
    finally:
        with _pool_lock:
            _pool_users[pool] -= 1
            idle = not _pool_users[pool]
            if idle:
                del _pool_users[pool]
            # Decided under the lock: once it is released, another call may lease this pool
            # (if still current) and a third may replace it while the second still uses it.
            retired = idle and pool is not _pool
        if retired:
            pool.shutdown(wait=False)  # replaced and unused; its tasks are done (awaited)


def _drop_pool_in_child() -> None:
    # A forked child inherits the pool object but not its threads (and maybe a held lock);
    # a pool thread that forked is the child's main thread, no pool's.
    global _pool, _pool_size, _pool_lock, _pool_users, _worker
    _pool, _pool_size, _pool_lock, _pool_users = None, 0, threading.Lock(), {}
    _worker = threading.local()


os.register_at_fork(after_in_child=_drop_pool_in_child)


def group_by_cost(
    items: Sequence[T], cost: Callable[[T], int], budget: int, parts: int
) -> list[list[T]]:
    """Split items into consecutive groups of about ``budget`` cost, at least ``parts`` groups."""
    total = sum(cost(item) for item in items)
    budget = max(1, min(budget, -(-total // max(parts, 1))))
    groups: list[list[T]] = []
    current: list[T] = []
    acc = 0
    for item in items:
        current.append(item)
        acc += cost(item)
        if acc >= budget:
            groups.append(current)
            current, acc = [], 0
    if current:
        groups.append(current)
    return groups


class ItemSkipped(Exception):
    """An item that had not started when its call stopped: it did not run."""


class TaskTally:
    """The items running now; once :meth:`stop` is called, items not yet started skip.

    For a call that hands items to a pool and must leave none running when it fails.

    The pool's own bookkeeping cannot be trusted for this: an interrupt (Ctrl-C) that
    lands in ``submit`` after the item was queued, while the pool starts a thread for it,
    leaves a thread the pool does not know of (``shutdown`` does not wait for it) running
    an item whose future the caller never got.

    Example:
        >>> tally = TaskTally()
        >>> double = tally.wrap(lambda x: x * 2)
        >>> double(2)
        4
        >>> tally.stop()  # nothing runs: returns at once, and later items skip
        >>> double(3)
        Traceback (most recent call last):
        ...
        torchzarr.core.pool.ItemSkipped
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._running = 0
        self._stopped = False

    def wrap(self, work: Callable[[T], R]) -> Callable[[T], R]:
        """``work``, counted while it runs, skipped (raising) once :meth:`stop` was called."""

        def run(item: T) -> R:
            with self._cond:
                if self._stopped:
                    raise ItemSkipped
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

        An interrupt while it waits (a second Ctrl-C, a ``SystemExit`` from a signal
        handler) ends the wait and goes on in place of the error being handled (chained
        to it): a hung item (a read of a stalled server) cannot hold the caller, and an
        impatient user can force the way out, though an item may then still be running.
        """
        with self._cond:
            self._stopped = True
            while self._running:
                self._cond.wait(0.25)  # a bounded wait: an interrupt gets through


def run_parallel(
    func: Callable[[T], R], items: Sequence[T], cost: Callable[[T], int] | None = None
) -> list[R]:
    """Apply ``func`` to every item on the engine's pool, results in item order.

    Small items are grouped so that each task carries about ``config.task_bytes`` of work;
    a single group runs inline on the calling thread, and so does all the work of a call
    made on one of the pool's own threads (:func:`on_pool_thread`: a codec reading another
    array). The first exception is re-raised.

    Example:
        >>> run_parallel(lambda x: x * 2, [1, 2, 3])
        [2, 4, 6]
    """
    threads = config.threads
    if threads <= 1 or len(items) <= 1 or on_pool_thread():
        return [func(item) for item in items]
    groups = group_by_cost(items, cost or (lambda _: config.task_bytes), config.task_bytes, threads)
    if len(groups) <= 1:
        return [func(item) for item in items]

    def run_group(group: list[T]) -> list[R]:
        return [func(item) for item in group]

    tally = TaskTally()
    run_queued = tally.wrap(run_group)
    results: list[R] = []
    error: BaseException | None = None
    with _leased_pool(threads) as pool:  # ours until all tasks end, whatever config does
        # each group's future, or the group itself where the pool refused it at exit
        tasks: list[Future[list[R]] | list[T]] = []
        try:
            for at, group in enumerate(groups[1:], start=1):
                try:
                    tasks.append(pool.submit(run_queued, group))
                except RuntimeError as exc:
                    if not refused_at_exit(exc):
                        raise
                    tasks.extend(groups[at:])  # run here, on the calling thread
                    break
            results = run_group(groups[0])  # the calling thread works too
            for task in tasks:
                results.extend(task.result() if isinstance(task, Future) else run_group(task))
        except BaseException as exc:  # an item's, or Ctrl-C here while submitting or waiting
            error = exc
            # no queued group starts now, and those running end before the error goes on:
            # none is left writing (a group queued by a submit that Ctrl-C cut short too)
            for task in tasks:
                if isinstance(task, Future):
                    task.cancel()
            tally.stop()
    if error is not None:
        raise error
    return results


def refused_at_exit(exc: BaseException) -> bool:
    """Whether ``exc`` is a thread pool refusing work because the interpreter is exiting.

    From the moment the main thread ends, ``concurrent.futures`` takes no new task, not
    even from a non-daemon thread still working or an ``atexit`` handler; a long-lived
    pool's workers mark it shut down then too ("after shutdown"), which is why both
    messages count (this package never submits to a pool it shut down itself). The work
    refused runs on the calling thread instead.

    Example:
        >>> refused_at_exit(RuntimeError("cannot schedule new futures after interpreter shutdown"))
        True
        >>> refused_at_exit(ValueError("cannot schedule new futures"))
        False
    """
    if not isinstance(exc, RuntimeError):
        return False
    message = str(exc)
    return message.startswith("cannot schedule new futures") or "interpreter shutdown" in message
