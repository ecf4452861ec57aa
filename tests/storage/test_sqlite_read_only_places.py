"""SQLiteStore and WAL mode: a closed database leaves it, and reads from a read-only place.

A database in WAL mode needs a ``-shm`` file beside it even to be read, which SQLite cannot
make in a directory this process may not write. The read-only place is a directory the
reading process cannot write: ``chmod 555`` for a user, and for root (whom the mode bits do
not restrict) a read-only bind mount in a mount namespace of its own (``unshare -m``).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

import torchzarr as tz
from torchzarr.storage.sqlite import SQLiteStore
from torchzarr.storage.sqlite_wal import in_wal_mode

_NO_MOUNT = 97  # the exit status of the root's helper when it cannot mount the view

# reads each database of the folder (argv[1]) as tz.open_array(mode="r") does
_READER = """
import json, os, sys
import torchzarr as tz
folder = sys.argv[1]
out = {"writable": os.access(folder, os.W_OK)}
for name in ("closed.db", "left_in_wal.db", "with_wal_file.db"):
    try:
        out[name] = tz.open_array(f"sqlite://{folder}/{name}", mode="r")[:].tolist()
    except Exception as err:
        out[name] = f"{type(err).__name__}: {err}"
print(json.dumps(out))
"""


def _run_where_it_cannot_write(folder: Path, view: Path, code: str) -> dict[str, Any]:
    """The JSON that ``code`` prints, run with ``folder`` as a directory it cannot write."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            argv = [sys.executable, "-c", code, str(folder)]
            done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        finally:
            folder.chmod(0o755)
    else:
        if shutil.which("unshare") is None or shutil.which("mount") is None:
            pytest.skip("running as root, without unshare and mount for a read-only bind mount")
        script = f'mount --bind -o ro "$1" "$2" || exit {_NO_MOUNT}; exec "$3" -c "$4" "$2"'
        argv = ["unshare", "-m", "sh", "-c", script, "sh", str(folder), str(view)]
        done = subprocess.run(
            [*argv, sys.executable, code], capture_output=True, text=True, timeout=120
        )
        if done.returncode == _NO_MOUNT or "unshare failed" in done.stderr:
            pytest.skip(f"running as root, and no read-only bind mount here: {done.stderr}")
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@pytest.fixture(scope="module")
def read_in_a_read_only_place(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """What a process that cannot write the folder reads of three databases there."""
    base = tmp_path_factory.mktemp("places")
    folder, view = base / "data", base / "view"
    view.mkdir()
    for name in ("closed.db", "left_in_wal.db"):
        arr = tz.create_array(f"sqlite://{folder}/{name}", shape=(3,), dtype=torch.int8)
        arr[:] = torch.tensor([1, 2, 3], dtype=torch.int8)
        arr.store.close()
    # a writer that ended without close(): WAL mode, its -wal checkpointed and removed
    with sqlite3.connect(folder / "left_in_wal.db") as conn:
        conn.execute("PRAGMA journal_mode=WAL")
    conn.close()
    # a copy taken while a writer had commits in its -wal: no -shm beside them
    source = base / "live.db"
    arr = tz.create_array(f"sqlite://{source}", shape=(3,), dtype=torch.int8)
    held = sqlite3.connect(source)
    held.execute("SELECT count(*) FROM zarr").fetchone()  # keeps the WAL in place
    arr[:] = torch.tensor([1, 2, 3], dtype=torch.int8)
    shutil.copyfile(source, folder / "with_wal_file.db")
    shutil.copyfile(f"{source}-wal", folder / "with_wal_file.db-wal")
    held.close()
    arr.store.close()
    assert sorted(os.listdir(folder)) == [
        "closed.db",
        "left_in_wal.db",
        "with_wal_file.db",
        "with_wal_file.db-wal",
    ]
    result = _run_where_it_cannot_write(folder, view, _READER)
    result["folder"] = str(view if os.geteuid() == 0 else folder)
    return result


def test_the_reader_runs_where_it_cannot_write(read_in_a_read_only_place: dict[str, Any]) -> None:
    assert read_in_a_read_only_place["writable"] is False


def test_a_closed_database_reads_from_a_read_only_place(
    read_in_a_read_only_place: dict[str, Any],
) -> None:
    assert read_in_a_read_only_place["closed.db"] == [1, 2, 3]


def test_a_database_left_in_wal_mode_without_a_wal_file_reads_from_a_read_only_place(
    read_in_a_read_only_place: dict[str, Any],
) -> None:
    assert read_in_a_read_only_place["left_in_wal.db"] == [1, 2, 3]


def test_a_wal_file_in_a_read_only_place_raises_naming_path_cause_and_remedy(
    read_in_a_read_only_place: dict[str, Any],
) -> None:
    message = read_in_a_read_only_place["with_wal_file.db"]
    path = os.path.join(read_in_a_read_only_place["folder"], "with_wal_file.db")
    assert message.startswith(f"StoreError: cannot open SQLite database {path!r} read-only")
    assert "WAL mode" in message and "directory this process cannot write" in message
    assert "-wal file" in message and "close" in message
    assert "where this process may write" in message


def test_close_takes_the_database_out_of_wal_mode_unless_another_connection_uses_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "data.db"
    store = SQLiteStore(path)
    store.set("a", b"1")
    assert in_wal_mode(str(path))  # while it is open: readers never block the writer
    other = sqlite3.connect(path)  # another client (or process) reading it
    assert other.execute("SELECT value FROM zarr").fetchall() == [(b"1",)]
    store.close()
    assert in_wal_mode(str(path))  # left as it is: nothing waits, nothing is lost
    other.execute("INSERT INTO zarr VALUES ('b', x'32')")
    other.commit()
    other.close()
    reader = SQLiteStore(path, read_only=True)
    assert reader.get("b") == b"2"
    reader.close()  # the writable store of this process put it in WAL mode
    assert not in_wal_mode(str(path)) and sorted(os.listdir(tmp_path)) == ["data.db"]
    assert SQLiteStore(path, read_only=True).get_many(["a", "b"]) == {"a": b"1", "b": b"2"}
    again = SQLiteStore(path)
    again.set("c", b"3")  # a writable store puts it back in WAL mode
    assert in_wal_mode(str(path))
    again.close()
    assert not in_wal_mode(str(path))


def test_a_read_only_store_leaves_a_database_another_process_put_in_wal_mode(
    tmp_path: Path,
) -> None:
    path = tmp_path / "data.db"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE zarr (key TEXT PRIMARY KEY NOT NULL, value BLOB NOT NULL)")
    conn.close()
    reader = SQLiteStore(path, read_only=True)
    assert reader.get("a") is None
    reader.close()
    assert in_wal_mode(str(path))  # a read-only store changes no database it did not write
