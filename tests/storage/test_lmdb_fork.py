"""LMDBStore across forks while another thread of the parent is inside a transaction: the
fork waits for it, so the forked child (a DataLoader worker) can open the environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("lmdb")
pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
DEADLINE = 120  # seconds: a deadline for a hang, not a timing


def _run_script(script: str, *args: str) -> str:
    """The output of ``script`` in a fresh interpreter: forking pytest itself while threads
    run is best avoided, and a hang must not take the test session with it."""
    done = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=DEADLINE
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


_FORK_DURING_A_READ = """
import multiprocessing, sys, threading
from torchzarr.storage.lmdb import LMDBStore

store = LMDBStore(sys.argv[1], map_size=1 << 24)
store.set("a", b"1")
inside, release = threading.Event(), threading.Event()

def slow_read(env):
    with env.begin() as txn:
        inside.set()
        release.wait(60)
        return bytes(txn.get(b"a"))

reader = threading.Thread(target=store._call, args=("read", "a", slow_read))
reader.start()
assert inside.wait(60)

def child():
    assert release.is_set()  # forked once the read had ended
    store.set("child", b"2")  # opens the environment anew in the child
    assert store.get("a") == b"1"

timer = threading.Timer(0.3, release.set)
timer.start()
worker = multiprocessing.get_context("fork").Process(target=child)
worker.start()  # waits for the read in flight
worker.join(60)
reader.join(60)
print(worker.exitcode, store.get("child"))
"""


def test_a_fork_waits_for_a_transaction_of_another_thread(tmp_path: Path) -> None:
    out = _run_script(_FORK_DURING_A_READ, str(tmp_path / "db.lmdb"))
    assert out.split() == ["0", "b'2'"]


_WORKERS_WHILE_A_THREAD_WRITES = """
import multiprocessing, sys, threading
import torch
import torchzarr as tz

a = tz.create_array("lmdb://" + sys.argv[1], shape=(60,), dtype="int32", chunks=(10,))
a[50:60] = 9
stop = threading.Event()

def background_writer():  # a thread logging to the same store meanwhile
    while not stop.is_set():
        a[50:60] = 9

def child(k):
    a[k * 10 : (k + 1) * 10] = k + 1
    assert a[50:60].tolist() == [9] * 10

writer = threading.Thread(target=background_writer)
writer.start()
workers = [multiprocessing.get_context("fork").Process(target=child, args=(k,)) for k in range(5)]
for worker in workers:
    worker.start()
for worker in workers:
    worker.join(60)
stop.set()
writer.join(60)
print([worker.exitcode for worker in workers], a[:50].reshape(5, 10)[:, 0].tolist())
"""


def test_forked_workers_write_while_a_parent_thread_writes(tmp_path: Path) -> None:
    out = _run_script(_WORKERS_WHILE_A_THREAD_WRITES, str(tmp_path / "a.lmdb"))
    assert out.strip() == "[0, 0, 0, 0, 0] [1, 2, 3, 4, 5]"


_FORK_HANDLER_USES_THE_STORE = """
import os, sys
holder = {}
# registered before torchzarr's own handler, so it runs after it, with every gate held
os.register_at_fork(before=lambda: holder.get("s") and holder["s"].get("a"))
from torchzarr.storage.lmdb import LMDBStore
holder["s"] = store = LMDBStore(os.path.join(sys.argv[1], "db"), map_size=1 << 24)
store.set("a", b"1")
pid = os.fork()
if pid == 0:
    os._exit(0)
os.waitpid(pid, 0)
print("forked")
"""


def test_a_store_used_in_a_fork_handler_raises_instead_of_waiting_for_itself(
    tmp_path: Path,
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _FORK_HANDLER_USES_THE_STORE, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
    )
    assert done.returncode == 0 and done.stdout.strip() == "forked", done.stderr[-2000:]
    assert "StoreError" in done.stderr and "wait for itself" in done.stderr
