"""SIGTERM and SIGHUP stop a command as Ctrl-C does, so that its cleanup runs."""

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


@contextlib.contextmanager
def stop_signals_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP raise :class:`Stopped` in the main thread (as
    SIGINT raises ``KeyboardInterrupt``), once: later ones are ignored while the command
    cleans up; one ignored before (``nohup``) stays ignored. The handlers before the block
    are put back after it.
    Elsewhere than in the main thread (where Python takes no handlers) it does nothing.

    Example:
        >>> with stop_signals_interrupt():
        ...     signal.getsignal(signal.SIGTERM).__name__
        '_raise_stopped'
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {signum: signal.getsignal(signum) for signum in _stop_signals()}
    for signum, handler in before.items():
        if handler is not signal.SIG_IGN:  # ignored (nohup): it stays ignored
            signal.signal(signum, _raise_stopped)
    try:
        yield
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


def _raise_stopped(signum: int, frame: FrameType | None) -> None:
    for other in _stop_signals():  # a second signal (a process group's) must not cut the
        signal.signal(other, signal.SIG_IGN)  # cleanup short: the block's exit restores them
    raise Stopped(signum)
