"""SQLiteStore across forks: no connection stays open over a fork, so a forked child's writes
are never lost and its reads never go stale when the parent closes or reopens the database."""

from __future__ import annotations

import gc
import multiprocessing
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

import torchzarr as tz
from torchzarr.storage.sqlite import SQLiteStore

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
FORK = multiprocessing.get_context("fork") if hasattr(os, "fork") else None
DEADLINE = 120  # seconds: a deadline for a hang, not a timing


def _run_script(script: str, *args: str, timeout: int = DEADLINE) -> str:
    """The output of ``script`` run in a fresh interpreter with ``args``; it must succeed.

    Forking pytest itself while threads run is best avoided, and a C-level fork or a hang
    must not take the test session with it.
    """
    done = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


VALUES = torch.arange(1.0, 101.0)


def _new_array(tmp_path: Path, size: int = 100) -> tuple[str, Any]:
    url = f"sqlite://{tmp_path}/a.db"
    arr = tz.create_array(url, shape=(size,), dtype="float32", chunks=(1,), compressors=None)
    arr[0] = 0.0  # the parent's connection is open when it forks
    return url, arr


def _write_in_two_halves(arr: Any, url: str, halfway: Any, parent_closed: Any, out: Any) -> None:
    if arr is None:
        arr = tz.open_array(url, mode="a")  # a store of its own, on the same file
    for i in range(50):
        arr[i] = VALUES[i]
    halfway.set()
    parent_closed.wait(DEADLINE)
    for i in range(50, 100):
        arr[i] = VALUES[i]
    out.put(int((arr[:] == VALUES).sum()))


@pytest.mark.parametrize("child_store", ["inherited", "opened-by-url"])
@pytest.mark.parametrize("parent_lets_go", ["close", "garbage-collect"])
def test_forked_child_writes_survive_the_parent_closing_its_store(
    tmp_path: Path, child_store: str, parent_lets_go: str
) -> None:
    url, arr = _new_array(tmp_path)
    assert FORK is not None
    halfway, parent_closed, out = FORK.Event(), FORK.Event(), FORK.Queue()
    inherited = arr if child_store == "inherited" else None
    child = FORK.Process(
        target=_write_in_two_halves, args=(inherited, url, halfway, parent_closed, out)
    )
    child.start()
    del inherited
    assert halfway.wait(DEADLINE)
    if parent_lets_go == "close":
        arr.store.close()
    else:
        del arr
        gc.collect()
    parent_closed.set()
    assert out.get(timeout=DEADLINE) == 100  # the child reads back all it wrote
    child.join(DEADLINE)
    assert child.exitcode == 0
    assert torch.equal(tz.open_array(url, mode="r")[:], VALUES)  # and so does everyone else


def _read_before_and_after(arr: Any, connected: Any, parent_wrote: Any, out: Any) -> None:
    out.put(arr[:].unique().tolist())
    connected.set()
    parent_wrote.wait(DEADLINE)
    out.put(arr[:].unique().tolist())


def test_forked_reader_sees_commits_the_parent_makes_after_reopening(tmp_path: Path) -> None:
    url, arr = _new_array(tmp_path, size=64)
    arr[:] = torch.full((64,), 1.0)
    assert FORK is not None
    connected, parent_wrote, out = FORK.Event(), FORK.Event(), FORK.Queue()
    child = FORK.Process(target=_read_before_and_after, args=(arr, connected, parent_wrote, out))
    child.start()
    assert connected.wait(DEADLINE) and out.get(timeout=DEADLINE) == [1.0]
    arr.store.close()
    writer = tz.open_array(url, mode="a")
    writer[:] = torch.full((64,), 2.0)
    writer.store.close()
    parent_wrote.set()
    assert out.get(timeout=DEADLINE) == [2.0]
    child.join(DEADLINE)
    assert child.exitcode == 0


def _connections_at_start(store: SQLiteStore, out: Any) -> None:
    out.put((len(store._all), store.get("k")))


def test_no_connection_stays_open_across_a_fork(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "d.db")
    store.set("k", b"v")
    ready, resume = threading.Barrier(4), threading.Event()

    def hold_a_connection() -> None:
        store.get("k")
        ready.wait()
        resume.wait()
        store.set(f"t/{threading.get_ident()}", b"after the fork")  # reconnects

    threads = [threading.Thread(target=hold_a_connection) for _ in range(3)]
    for thread in threads:
        thread.start()
    ready.wait()
    try:
        before = list(store._all)
        assert len(before) == 4  # this thread's and the three others'
        assert FORK is not None
        out = FORK.Queue()
        child = FORK.Process(target=_connections_at_start, args=(store, out))
        child.start()
        assert out.get(timeout=DEADLINE) == (0, b"v")  # the child connected afresh
        child.join(DEADLINE)
        assert child.exitcode == 0
        assert all(held.closed for held in before)  # closed in the parent before the fork
    finally:
        resume.set()
        for thread in threads:
            thread.join()
    assert len(list(store.list_prefix("t/"))) == 3 and store.get("k") == b"v"


class Rows(Dataset[torch.Tensor]):
    def __init__(self, arr: Any) -> None:
        self.arr = arr

    def __len__(self) -> int:
        return 16

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.arr[index]


def test_dataloader_fork_workers_see_what_the_parent_writes_between_epochs(
    tmp_path: Path,
) -> None:
    url = f"sqlite://{tmp_path}/a.db"
    arr = tz.create_array(url, shape=(16,), dtype="float32", chunks=(2,), compressors=None)
    arr[:] = torch.full((16,), 1.0)
    assert torch.equal(arr[:], torch.full((16,), 1.0))  # the parent is connected
    loader = DataLoader(
        Rows(arr),
        batch_size=4,
        num_workers=2,
        multiprocessing_context="fork",
        persistent_workers=True,
        timeout=DEADLINE,
    )
    first_epoch = []
    for batch in loader:
        first_epoch.append(batch)
        assert torch.equal(arr[:], torch.full((16,), 1.0))  # the parent reads meanwhile
    assert torch.equal(torch.cat(first_epoch), torch.full((16,), 1.0))
    arr.store.close()  # the workers keep their connections
    writer = tz.open_array(url, mode="a")
    writer[:] = torch.full((16,), 2.0)
    writer.store.close()
    assert torch.equal(torch.cat(list(loader)), torch.full((16,), 2.0))
    assert torch.equal(arr[:], torch.full((16,), 2.0))


_WITHOUT_HANDLERS = """
import ctypes, os, sys
from torchzarr.errors import StoreError
from torchzarr.storage.sqlite import SQLiteStore

path, elsewhere = sys.argv[1], sys.argv[2]
store = SQLiteStore(path)
store.set("k", b"parent")
SQLiteStore(elsewhere).set("k", b"closed before the fork")
pid = ctypes.PyDLL(None).fork()  # a fork from C: no Python fork handlers run
if pid == 0:
    code = 0
    try:
        for attempt in (lambda: store.get("k"), lambda: SQLiteStore(path).set("k", b"child")):
            try:
                attempt()
                code |= 1
            except StoreError as err:
                code |= 0 if "forked without" in str(err) and path in str(err) else 2
        if SQLiteStore(elsewhere).get("k") != b"closed before the fork":
            code |= 4
        store.close()  # leaves the parent's connection alone
    finally:
        os._exit(code)
_, status = os.waitpid(pid, 0)
store.set("k2", b"after")
assert (store.get("k"), store.get("k2")) == (b"parent", b"after")
print(os.waitstatus_to_exitcode(status))
"""


def test_child_of_a_fork_without_handlers_refuses_databases_the_parent_had_open(
    tmp_path: Path,
) -> None:
    args = [str(tmp_path / "d.db"), str(tmp_path / "other.db")]
    out = _run_script(_WITHOUT_HANDLERS, *args)
    assert out.strip() == "0"  # 1: the child used the database; 2: another error


_FORKS_RACING_CLOSE = """
import os, sys, threading
from torchzarr.storage.sqlite import SQLiteStore

store = SQLiteStore(sys.argv[1])
store.set("k", b"v")
stop = threading.Event()
wrong = []

def work(worker):
    round_ = 0
    while not stop.is_set():
        store.set_many({f"w/{worker}/{round_ % 20}": bytes([round_ % 256])})
        if store.get(f"w/{worker}/{round_ % 20}") != bytes([round_ % 256]):
            wrong.append((worker, round_))
        if round_ % 7 == 0:
            store.close()
        round_ += 1

workers = [threading.Thread(target=work, args=(n,)) for n in range(3)]
for worker in workers:
    worker.start()
for i in range(20):
    pid = os.fork()
    if pid == 0:
        try:
            store.set(f"child/{i}", b"x")
            os._exit(0 if store.get(f"child/{i}") == b"x" else 1)
        finally:
            os._exit(2)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
stop.set()
for worker in workers:
    worker.join()
store.close()
fresh = SQLiteStore(sys.argv[1], read_only=True)
assert len(list(fresh.list_prefix("child/"))) == 20 and not wrong, wrong[:3]
print("ok")
"""


def test_forks_while_other_threads_write_and_close_lose_nothing(tmp_path: Path) -> None:
    # in a subprocess: forking pytest itself while threads run is best avoided
    out = _run_script(_FORKS_RACING_CLOSE, str(tmp_path / "d.db"), timeout=600)
    assert out.strip() == "ok"


_HOOK_REGISTERED_FIRST = """
import os, signal, sys
hook, path = sys.argv[1], sys.argv[2]
stores, seen = [], []

def write_in_the_fork():
    try:
        stores[0].set("hook", b"x")
        seen.append("written")
    except Exception as err:
        seen.append(f"{type(err).__name__}: {err}")

def read_in_the_child():
    seen.append(stores[0].get("k"))

# registered before torchzarr's handlers: they run inside the fork, around torchzarr's
if hook == "child":
    os.register_at_fork(after_in_child=read_in_the_child)
else:
    os.register_at_fork(**{hook: write_in_the_fork})
from torchzarr.storage.sqlite import SQLiteStore

stores.append(SQLiteStore(path))
stores[0].set("k", b"v")
signal.alarm(60)  # a hang ends the test instead of blocking it
pid = os.fork()
if pid == 0:
    try:
        print(seen, stores[0].get("k"), flush=True)
    finally:
        os._exit(0)
os.waitpid(pid, 0)
if hook != "child":
    print(seen, stores[0].get("k"))
"""


def test_a_fork_handler_registered_first_reads_a_store_in_the_child(tmp_path: Path) -> None:
    out = _run_script(_HOOK_REGISTERED_FIRST, "child", str(tmp_path / "d.db"))
    assert out.strip() == "[b'v'] b'v'"


@pytest.mark.parametrize("hook", ["before", "after_in_parent"])
def test_a_fork_handler_registered_first_is_refused_the_store_instead_of_hanging(
    tmp_path: Path, hook: str
) -> None:
    out = _run_script(_HOOK_REGISTERED_FIRST, hook, str(tmp_path / "d.db"))
    lines = out.splitlines()
    assert len(lines) == 2 and all(line.endswith("] b'v'") for line in lines), lines
    refusal = lines[1]  # the parent's
    assert "StoreError: cannot use SQLiteStore(" in refusal and "fork handler" in refusal
    assert str(tmp_path / "d.db") in refusal
    assert SQLiteStore(tmp_path / "d.db").get("hook") is None


_C_CHILD_FORKS = """
import ctypes, os, signal, sys, threading
from torchzarr.errors import StoreError
from torchzarr.storage import sqlite as sqlite_module
from torchzarr.storage.sqlite import SQLiteStore

path, link = sys.argv[1], sys.argv[2]
store = SQLiteStore(path)
store.set("k", b"parent")
inherited = list(store._all)
busy = SQLiteStore(os.path.join(os.path.dirname(path), "busy.db"))
busy._lock.acquire()  # held by a parent thread (opening a connection) at the fork
pid = ctypes.PyDLL(None).fork()  # a fork from C: no Python fork handlers run
if pid == 0:
    code = 0
    try:
        signal.alarm(60)  # a hang ends the test instead of blocking it
        grandchild = os.fork()  # a DataLoader started in the child
        if grandchild == 0:
            os._exit(0)
        code |= os.waitstatus_to_exitcode(os.waitpid(grandchild, 0)[1])
        if any(held.closed for held in inherited):
            code |= 2  # closed the parent's connection
        try:
            SQLiteStore(link).get("k")  # the same database through a symlink
            code |= 4
        except StoreError as err:
            code |= 0 if "forked without" in str(err) and link in str(err) else 8
    finally:
        os._exit(code)
busy._lock.release()
print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), store.get("k"))
"""


def test_a_child_forked_from_c_code_forks_again_and_leaves_the_parents_connections(
    tmp_path: Path,
) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    args = [str(tmp_path / "real" / "d.db"), str(tmp_path / "link" / "d.db")]
    out = _run_script(_C_CHILD_FORKS, *args)
    assert out.strip() == "0 b'parent'"  # 2, 4, 8: see the script; -14: it hung
