"""Advisory ``flock`` locks between processes, where the file system has them.

Local checkpoints lock their directory while a commit checks and writes the manifest, and a
zip's writer locks the zip from its first write until it closes. File systems whose
``flock`` fails (Lustre mounted ``noflock``, some CIFS and 9p mounts) lock nothing: work goes
on unlocked there, with one warning per path, as it did before locks were taken. On NFS a
lock on a regular file holds across machines, one on a directory only within one machine.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import threading
from typing import Any

__all__ = ["lock_exclusive", "unlock"]

_log = logging.getLogger("torchzarr.storage")

_fcntl: Any
try:  # POSIX
    import fcntl as _fcntl
except ImportError:  # pragma: no cover - Windows: nothing is locked
    _fcntl = None

# what flock raises where the file system (or the descriptor's kind there) has no such locks
_UNSUPPORTED = frozenset(
    code
    for code in (errno.ENOSYS, errno.ENOLCK, errno.EINVAL, errno.EBADF, errno.EOPNOTSUPP)
    if code is not None
)
_warned: set[str] = set()
_warned_lock = threading.Lock()


def lock_exclusive(fd: int, path: str, *, wait: bool) -> bool:
    """Take an exclusive ``flock`` on ``fd`` (a file or directory of ``path``): True once
    held, False where the file system has no such locks (warned once per path).

    Raises:
        BlockingIOError: ``wait`` is False and another open file description holds it.

    Example:
        >>> import os, tempfile
        >>> fd = os.open(tempfile.mkdtemp(), os.O_RDONLY)
        >>> isinstance(lock_exclusive(fd, "a directory", wait=False), bool)
        True
        >>> unlock(fd); os.close(fd)
    """
    if _fcntl is None:  # pragma: no cover - Windows
        return False
    try:
        _fcntl.flock(fd, _fcntl.LOCK_EX | (0 if wait else _fcntl.LOCK_NB))
    except BlockingIOError:
        raise
    except OSError as err:
        if err.errno not in _UNSUPPORTED:
            raise
        with _warned_lock:
            first = path not in _warned
            _warned.add(path)
        if first:
            _log.warning(
                "%s: the file system takes no flock locks (%s); other processes are not locked out",
                path,
                err,
            )
        return False
    return True


def unlock(fd: int) -> None:
    """Release ``fd``'s ``flock`` for every copy of the descriptor (a forked child's too).

    Example:
        >>> unlock(-1)  # no descriptor: nothing to release
    """
    if _fcntl is not None and fd >= 0:
        with contextlib.suppress(OSError):
            _fcntl.flock(fd, _fcntl.LOCK_UN)
