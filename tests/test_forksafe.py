"""A forked child never inherits a lock held by a thread of its parent."""

from __future__ import annotations

import os
import sys
import threading

import pytest

from torchzarr import telemetry
from torchzarr.forksafe import LockTable, new_lock, new_rlock


@pytest.mark.skipif(sys.platform == "win32", reason="fork")
def test_locks_held_at_fork_are_free_in_the_child():
    import torchzarr.telemetry as telemetry_module

    table = LockTable()
    held = [new_lock(), new_rlock(), telemetry_module._lock, table["a"], LockTable(True)["b"]]
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


def test_a_lock_table_gives_one_lock_per_key_while_it_is_held():
    table = LockTable()
    first = table["a"]
    assert table["a"] is first and table["b"] is not first
    with first:
        assert not table["a"].acquire(blocking=False)  # the same lock: held
        assert table["b"].acquire(blocking=False)  # another key: free
    reentrant = LockTable(reentrant=True)["c"]
    with reentrant, reentrant:
        pass
