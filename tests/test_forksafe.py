"""A forked child never inherits a lock held by a thread of its parent."""

from __future__ import annotations

import os
import sys
import threading

import pytest

from torchzarr import telemetry
from torchzarr.forksafe import new_lock, new_rlock


@pytest.mark.skipif(sys.platform == "win32", reason="fork")
def test_locks_held_at_fork_are_free_in_the_child():
    import torchzarr.telemetry as telemetry_module

    held = [new_lock(), new_rlock(), telemetry_module._lock]
    acquired, release = threading.Event(), threading.Event()

    def hold() -> None:
        for lock in held:
            lock.acquire()
        acquired.set()
        release.wait()
        for lock in held:
            lock.release()

    thread = threading.Thread(target=hold)
    thread.start()
    acquired.wait()
    try:
        pid = os.fork()
        if pid == 0:  # the child: every lock must be free, telemetry must work
            code = 1
            try:
                if all(lock.acquire(timeout=5) for lock in held):
                    for lock in held:
                        lock.release()
                    telemetry.add(reads=1)
                    code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
    finally:
        release.set()
        thread.join()
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
