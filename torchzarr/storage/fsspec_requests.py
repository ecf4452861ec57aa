"""Many requests of an async fsspec filesystem at once, bounded by a timeout on stalls.

fsspec's batched calls (``cat_ranges``, ``pipe``) take one ``timeout`` for the whole call:
a batch of a thousand small reads, or of 256 MiB over a slow link, then fails although
no request was slow. Nor can a timeout per coroutine tell a slow request from one that
waits for a free connection of the client's pool (ten for s3fs). These run the same
requests in a sliding window of at most ``IN_FLIGHT`` at once (or the store's
``batch_size``; a request starts as one ends), and time out only when none of those
running finishes for ``timeout`` seconds: one request may take ``timeout`` seconds, and a
batch whose requests keep finishing never fails. (fsspec's own calls start 1280 at once:
the client alone needs seconds to send them, and none may finish within the timeout.)
Requests that share a slow link so thinly that none finishes in ``timeout`` seconds do
fail: give such links a larger ``timeout`` or a smaller ``batch_size``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import threading
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any

from torchzarr.storage.retry import RetryPolicy, is_transient

__all__ = [
    "IN_FLIGHT",
    "STOP_WAIT",
    "call_method",
    "close_connections",
    "read_each",
    "read_ranges",
    "run_concurrently",
    "run_on_loop",
    "set_request_limit",
    "timeout_error",
    "write_all",
    "write_each",
]

#: filesystems whose batched calls read (and, for Azure, write) each object in one stream,
#: as the requests of a batch already run side by side (s3fs would send a HEAD first)
_ONE_STREAM_READS = frozenset({"S3FileSystem", "AzureBlobFileSystem"})
_ONE_STREAM_WRITES = frozenset({"AzureBlobFileSystem"})
#: requests of a batch in flight at once by default: enough to keep a client's pool of
#: connections busy, few enough that the first answers come long before any timeout
IN_FLIGHT = 64
#: the attribute of a filesystem that holds its store's ``batch_size``
_LIMIT = "_torchzarr_batch_size"
#: seconds at most that a thread interrupted while it waits on the event loop (Ctrl-C)
#: gives the requests it began to be cancelled (the store's timeout if smaller)
STOP_WAIT = 5.0


def _stop_wait(timeout: float | None) -> float:
    """How long the requests of a call that was interrupted are given to end."""
    return STOP_WAIT if not timeout else min(STOP_WAIT, timeout)


def run_on_loop(
    fs: Any,
    func: Callable[..., Coroutine[Any, Any, Any]],
    *args: Any,
    timeout: float | None = None,
    **kwargs: Any,
) -> Any:
    """``func(*args, **kwargs)`` run on ``fs``'s event loop until it ends: fsspec's
    ``sync``, but one that leaves nothing running behind it.

    When this thread's wait is interrupted (a KeyboardInterrupt, or any other exception
    raised here) the coroutine is cancelled, and its requests with it, and this thread
    waits (at most ``STOP_WAIT`` seconds, or ``timeout`` if smaller) for it to end before
    the exception goes on: no request it began is sent after the caller's cleanup. With
    ``timeout`` the call fails with fsspec's FSTimeoutError after that many seconds, as
    the filesystem's own blocking methods do.

    Example:
        >>> from fsspec.asyn import AsyncFileSystem
        >>> class Echo(AsyncFileSystem):
        ...     async def _cat_file(self, path, start=None, end=None, **kwargs):
        ...         return path.encode()
        >>> fs = Echo(skip_instance_cache=True)
        >>> run_on_loop(fs, fs._cat_file, "abc", timeout=5)
        b'abc'
    """
    from fsspec.exceptions import FSTimeoutError

    loop = fs.loop
    if loop is None or loop.is_closed():
        raise RuntimeError("Loop is not running")
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:  # no loop runs in this thread: the usual case
        running = None
    if running is loop:  # it would wait for itself
        raise NotImplementedError("Calling sync() from within a running loop")
    timeout = timeout or None
    coro = func(*args, **kwargs)
    if timeout is not None:
        coro = asyncio.wait_for(coro, timeout)
    ended = threading.Event()
    tasks: list[asyncio.Future[Any]] = []

    def finished(task: asyncio.Future[Any]) -> None:
        if not task.cancelled():
            task.exception()  # retrieved: asyncio logs no "never retrieved" error
        ended.set()

    def begin() -> None:  # on the loop
        task = asyncio.ensure_future(coro, loop=loop)
        task.add_done_callback(finished)
        tasks.append(task)

    loop.call_soon_threadsafe(begin)
    try:
        deadline = None if timeout is None else time.monotonic() + timeout + 1
        while not ended.wait(1):  # a wait of a second at a time: Ctrl-C gets through
            if deadline is not None and time.monotonic() > deadline:
                raise FSTimeoutError  # the loop itself is stuck
        error = tasks[0].exception()
    except BaseException:
        if not ended.is_set():  # `begin` ran before this (callbacks run in order)
            loop.call_soon_threadsafe(lambda: [task.cancel() for task in tasks])
            ended.wait(_stop_wait(timeout))
        raise
    if isinstance(error, asyncio.TimeoutError) and not isinstance(error, FSTimeoutError):
        raise FSTimeoutError from error
    if error is not None:
        raise error
    return tasks[0].result()


def call_method(fs: Any, method: str, timeout: float | None, *args: Any, **kwargs: Any) -> Any:
    """``fs.method(*args, **kwargs)`` bounded by ``timeout`` (over an async filesystem); a
    blocking method of an async filesystem runs its coroutine with :func:`run_on_loop`,
    so that an interrupted call leaves no request running.

    Example:
        >>> import fsspec
        >>> fs = fsspec.filesystem("memory", skip_instance_cache=True)
        >>> call_method(fs, "pipe_file", 5, "/doc-call-method/k", b"1")
        >>> call_method(fs, "cat_file", 5, "/doc-call-method/k")
        b'1'
    """
    bound = getattr(fs, method)
    if not getattr(fs, "async_impl", False):
        return bound(*args, **kwargs)
    inner = getattr(bound, "__wrapped__", None)  # fsspec's blocking twin of `_method`
    if inner is not None and asyncio.iscoroutinefunction(inner):
        if inspect.ismethod(bound):  # made on the class (s3fs's `find`): `inner` is unbound
            inner = functools.partial(inner, bound.__self__)
        return run_on_loop(fs, inner, *args, timeout=timeout, **kwargs)
    if timeout is not None:
        kwargs["timeout"] = timeout
    return bound(*args, **kwargs)


def set_request_limit(fs: Any, batch_size: int | None) -> None:
    """Let at most ``batch_size`` requests of a batch on ``fs`` (a filesystem of its own
    store) be in flight at once (None: ``IN_FLIGHT``).

    Example:
        >>> import fsspec
        >>> fs = fsspec.filesystem("memory", skip_instance_cache=True)
        >>> set_request_limit(fs, 2); _in_flight(fs, None, 100)
        2
    """
    setattr(fs, _LIMIT, batch_size)


def _in_flight(fs: Any, limit: int | None, count: int) -> int:
    """How many of ``count`` requests on ``fs`` may be in flight at once: the least of
    ``limit`` and the store's ``batch_size``, else ``IN_FLIGHT``."""
    given = [n for n in (limit, getattr(fs, _LIMIT, None)) if n is not None and n > 0]
    return max(1, min(min(given, default=IN_FLIGHT), count))


def timeout_error(exc: BaseException, timeout: float) -> BaseException:
    """A TimeoutError for ``exc``, a call that ran past the store's ``timeout``, saying the
    bound (fsspec's ``FSTimeoutError()`` has no message).

    Example:
        >>> from fsspec.exceptions import FSTimeoutError
        >>> timeout_error(FSTimeoutError(), 2.5)
        TimeoutError("no answer within the store's timeout of 2.5 s (FSTimeoutError)")
    """
    return TimeoutError(
        f"no answer within the store's timeout of {timeout:g} s ({type(exc).__name__})"
    )


def _run_each(
    fs: Any,
    start: Callable[[int], Coroutine[Any, Any, Any]],
    count: int,
    timeout: float | None,
    limit: int | None = None,
) -> list[Any]:
    """``start(i)`` for ``i < count`` on ``fs``'s event loop, at most ``_in_flight`` at a
    time (one starts as one ends); results in order, each failure in place. When none of
    the requests running finishes for ``timeout`` seconds, they and those not yet started
    fail with a TimeoutError (a transient error: retried). When the calling thread is
    interrupted (Ctrl-C), none starts any more and those running are cancelled before the
    KeyboardInterrupt goes on (:func:`run_on_loop`)."""
    most = _in_flight(fs, limit, count)

    async def run_all() -> list[Any]:
        results: list[Any] = [None] * count
        running: dict[asyncio.Future[Any], int] = {}
        started = 0
        try:
            while running or started < count:
                while len(running) < most and started < count:
                    running[asyncio.ensure_future(start(started))] = started
                    started += 1
                done, _ = await asyncio.wait(
                    running, timeout=timeout, return_when="FIRST_COMPLETED"
                )
                for task in done:
                    index = running.pop(task)
                    error = task.exception()
                    results[index] = task.result() if error is None else error
                if not done:  # none finished for `timeout` seconds: what runs is stalled
                    stalled = TimeoutError(
                        f"no request finished within the store's timeout of {timeout:g} s "
                        f"({len(running)} in flight)"
                    )
                    for index in [*running.values(), *range(started, count)]:
                        results[index] = stalled
                    break
        finally:  # stalled, or cancelled (the waiting thread was interrupted): none goes on
            await _cancel(list(running), _stop_wait(timeout))
        return results

    return list(run_on_loop(fs, run_all))


async def _cancel(tasks: list[asyncio.Future[Any]], timeout: float | None) -> None:
    """Cancel ``tasks`` and let them end (a bounded wait); their errors are dropped."""
    if not tasks:
        return
    for task in tasks:
        task.cancel()
    await asyncio.wait(tasks, timeout=timeout)
    for task in tasks:
        if task.done() and not task.cancelled():
            task.exception()  # retrieved: asyncio logs no "never retrieved" error


def run_concurrently(
    fs: Any,
    calls: Sequence[Callable[[], Coroutine[Any, Any, Any]]],
    timeout: float | None,
    limit: int | None = None,
) -> list[Any]:
    """Run the coroutines ``calls`` make (``functools.partial(fs._ls, url)``) on ``fs``'s
    event loop, at most ``limit`` (and the store's ``batch_size``) at a time: a result or
    the exception raised per call, in order; they fail only when none finishes for
    ``timeout`` seconds.

    Example:
        >>> import functools
        >>> from fsspec.asyn import AsyncFileSystem
        >>> class Sizes(AsyncFileSystem):
        ...     async def _info(self, path, **kwargs):
        ...         if path == "no":
        ...             raise FileNotFoundError(path)
        ...         return {"name": path, "size": len(path), "type": "file"}
        >>> fs = Sizes(skip_instance_cache=True)
        >>> got = run_concurrently(fs, [functools.partial(fs._info, p) for p in ["ab", "no"]], 5)
        >>> got[0]["size"], got[1]
        (2, FileNotFoundError('no'))
    """
    return _run_each(fs, lambda i: calls[i](), len(calls), timeout, limit)


def read_each(
    fs: Any,
    paths: Sequence[str],
    starts: Sequence[int | None],
    ends: Sequence[int | None],
    timeout: float | None,
    **kwargs: Any,
) -> list[Any]:
    """What ``fs.cat_ranges(paths, starts, ends, on_error="return")`` gives (bytes or an
    exception per range), failing the requests only when they stall for ``timeout`` s.

    Example:
        >>> from fsspec.asyn import AsyncFileSystem
        >>> class Slow(AsyncFileSystem):  # a path says how many seconds its answer takes
        ...     async def _cat_file(self, path, start=None, end=None, **kwargs):
        ...         await asyncio.sleep(float(path))
        ...         return path.encode()
        >>> got = read_each(Slow(skip_instance_cache=True), ["0", "60"], [None] * 2, [None] * 2, 1)
        >>> got[0], str(got[1])
        (b'0', "no request finished within the store's timeout of 1 s (1 in flight)")
    """
    if type(fs).__name__ in _ONE_STREAM_READS:
        kwargs.setdefault("max_concurrency", 1)

    def start(i: int) -> Coroutine[Any, Any, Any]:
        return fs._cat_file(paths[i], start=starts[i], end=ends[i], **kwargs)

    return _run_each(fs, start, len(paths), timeout)


def write_each(fs: Any, values: Mapping[str, bytes], timeout: float | None) -> list[Any]:
    """What ``fs.pipe(values)`` does, with a result per path (None, or the exception it
    raised), failing the requests only when they stall for ``timeout`` seconds.

    Example:
        >>> from fsspec.asyn import AsyncFileSystem
        >>> class Objects(AsyncFileSystem):
        ...     async def _pipe_file(self, path, value, **kwargs):
        ...         if path.startswith("/"):
        ...             raise PermissionError(path)
        >>> write_each(Objects(skip_instance_cache=True), {"a": b"1", "/b": b"2"}, timeout=5)
        [None, PermissionError('/b')]
    """
    paths = list(values)
    kwargs = {"max_concurrency": 1} if type(fs).__name__ in _ONE_STREAM_WRITES else {}

    def start(i: int) -> Coroutine[Any, Any, Any]:
        return fs._pipe_file(paths[i], values[paths[i]], **kwargs)

    return _run_each(fs, start, len(paths), timeout)


def read_ranges(
    fs: Any,
    paths: list[str],
    starts: list[Any],
    ends: list[Any],
    timeout: float | None,
    **kwargs: Any,
) -> list[Any]:
    """Bytes or an exception per range: :func:`read_each` over an async filesystem (its
    ``cat_ranges`` would bound the whole batch by the timeout), else ``fs.cat_ranges``.

    Example:
        >>> import fsspec
        >>> fs = fsspec.filesystem("memory")
        >>> fs.pipe_file("/doc-read-ranges/k", b"abc")
        >>> read_ranges(fs, ["/doc-read-ranges/k", "/doc-read-ranges/no"], [1, 0], [None, 1], 5)
        [b'bc', FileNotFoundError('/doc-read-ranges/no')]
    """
    if getattr(fs, "async_impl", False):
        return read_each(fs, paths, starts, ends, timeout, **kwargs)
    return list(fs.cat_ranges(paths, starts, ends, on_error="return", **kwargs))


def write_all(
    fs: Any, values: Mapping[str, bytes], timeout: float | None, policy: RetryPolicy
) -> tuple[dict[str, BaseException], int]:
    """Write ``values`` (path -> bytes) with :func:`write_each`; those that fail
    transiently are sent again, as ``policy`` allows. Returns the failures left, by path,
    and the attempts made.

    Example:
        >>> from fsspec.asyn import AsyncFileSystem
        >>> class Flaky(AsyncFileSystem):  # each path fails once, then is written
        ...     tried = set()
        ...     async def _pipe_file(self, path, value, **kwargs):
        ...         if path not in self.tried:
        ...             self.tried.add(path)
        ...             raise ConnectionResetError(path)
        >>> write_all(Flaky(skip_instance_cache=True), {"a": b"1"}, 5, RetryPolicy(backoff=0))
        ({}, 2)
    """
    failures: dict[str, BaseException] = {}
    pending, made = list(values), 0
    for attempt in policy.attempts():
        made = attempt + 1
        try:
            out = write_each(fs, {path: values[path] for path in pending}, timeout)
        except Exception as exc:  # the whole batch failed
            out = [exc] * len(pending)
        for path, result in zip(pending, out, strict=True):
            if isinstance(result, BaseException):
                failures[path] = result
            else:
                failures.pop(path, None)
        pending = [path for path in pending if is_transient(failures.get(path))]
        if not pending:
            break
    return failures, made


def close_connections(fs: Any) -> None:
    """Close the connections of an adlfs filesystem now, rather than at exit.

    adlfs closes its service client in a ``weakref.finalize`` that holds the filesystem
    itself, so the filesystem is never collected and every store opened and closed kept
    its pooled sockets. Other filesystems close theirs once they are dropped. Errors are
    ignored: the connections are being let go.

    Example:
        >>> import fsspec
        >>> close_connections(fsspec.filesystem("memory"))  # nothing to close
    """
    if type(fs).__name__ != "AzureBlobFileSystem" or fs.loop is None:
        return
    client = getattr(fs, "service_client", None)
    if client is None:
        return
    with contextlib.suppress(Exception):
        run_on_loop(fs, client.close)
