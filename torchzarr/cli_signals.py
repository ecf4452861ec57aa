"""SIGTERM and SIGHUP stop a command as Ctrl-C does, so that its cleanup runs; after the
first of these signals, more (a held Ctrl-C, a process group's) wait until it is done."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

__all__ = ["Stopped", "stop_signals_interrupt"]


class Stopped(KeyboardInterrupt):
    """A stop signal (``kill``, ``timeout``, a batch scheduler's cancel, a closed terminal)
    received while a command ran; ``signum`` is the signal's number."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _stop_signals() -> list[signal.Signals]:
    names = ("SIGTERM", "SIGHUP")  # SIGHUP: not on Windows
    return [getattr(signal, name) for name in names if hasattr(signal, name)]


def _takes_over(signum: int, handler: object) -> bool:
    """Whether the block handles ``signum``, whose handler before it is ``handler``: not
    one ignored (``nohup``; a shell's background job ignores SIGINT), nor a SIGINT handler
    of the caller's own (only Python's, which raises KeyboardInterrupt)."""
    if signum == signal.SIGINT:
        return handler is signal.default_int_handler
    return handler is not signal.SIG_IGN


@contextlib.contextmanager
def stop_signals_interrupt(*, keep_ignored: bool = False) -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP raise :class:`Stopped` in the main thread (as
    SIGINT raises ``KeyboardInterrupt``), once: after the first of these three signals,
    later ones are ignored while the command cleans up (a held Ctrl-C key sends one every
    few milliseconds), which would else cut its cleanup short. One ignored before
    (``nohup``) stays ignored, and a SIGINT handler of the caller's own is left alone. The
    handlers before the block are put back after it; with ``keep_ignored``, not after a
    signal stopped it: a process that exits then (the command line's) ends as the first
    signal says (status 130, 143), not killed midway through its exit by the next one.
    Elsewhere than in the main thread (where Python takes no handlers) it does nothing.

    Example:
        >>> with stop_signals_interrupt():
        ...     signal.getsignal(signal.SIGTERM).__name__
        '_raise_stopped'
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {signum: signal.getsignal(signum) for signum in [signal.SIGINT, *_stop_signals()]}
    ours = [signum for signum, handler in before.items() if _takes_over(signum, handler)]
    for signum in ours:
        signal.signal(signum, _raise_stopped)
    try:
        yield
    finally:
        stopped = any(signal.getsignal(signum) is signal.SIG_IGN for signum in ours)
        if not (stopped and keep_ignored):
            for signum in ours:
                handler = before[signum]
                signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


def _raise_stopped(signum: int, frame: FrameType | None) -> None:
    for other in [signal.SIGINT, *_stop_signals()]:  # a second signal must not cut the
        if signal.getsignal(other) is _raise_stopped:  # cleanup short: the block's exit
            signal.signal(other, signal.SIG_IGN)  # restores them
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Stopped(signum)
