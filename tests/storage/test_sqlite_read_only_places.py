"""SQLiteStore and WAL mode: close() leaves it, and reading a WAL database from a read-only place.

A database in WAL mode needs a ``-shm`` file beside it even to be read, which SQLite cannot
make in a directory this process may not write: opening one there raises ``StoreError``
naming the cause and the remedies, and ``immutable=True`` reads it. The read-only place is
a directory the reading process cannot write: ``chmod 555`` for a user, and for root (whom
the mode bits do not restrict) a read-only bind mount in a mount namespace of its own
(``unshare -m``).
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

_NO_MOUNT = 97  # the exit status of the root's helper when it cannot mount the view

# reads each database as tz.open_array(mode="r") does; argv: the folder, the symlink
_READER = """
import json, os, sys
import torchzarr as tz
folder, link = sys.argv[1], sys.argv[2]
out = {"writable": os.access(folder, os.W_OK)}
reads = {
    "finished": (f"{folder}/finished.db", {}),
    "finished, immutable": (f"{folder}/finished.db", {"immutable": True}),
    "with_wal_file": (f"{folder}/with_wal_file.db", {}),
    "link": (link, {}),
    "link, immutable": (link, {"immutable": True}),
}
for name, (path, options) in reads.items():
    try:
        arr = tz.open_array(f"sqlite://{path}", mode="r", storage_options=options)
        out[name] = arr[:].tolist()
    except Exception as err:
        out[name] = f"{type(err).__name__}: {err}"
print(json.dumps(out))
"""


def _wal_mode(path: Path) -> bool:
    """Bytes 18 and 19 of the header are 2 (call it with no connection open to the file)."""
    return path.read_bytes()[18:20] == b"\x02\x02"


def _run_where_it_cannot_write(folder: Path, view: Path, link: Path, code: str) -> dict[str, Any]:
    """The JSON that ``code`` prints, run with ``folder`` as a directory it cannot write."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            argv = [sys.executable, "-c", code, str(folder), str(link)]
            done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        finally:
            folder.chmod(0o755)
    else:
        if shutil.which("unshare") is None or shutil.which("mount") is None:
            pytest.skip("running as root, without unshare and mount for a read-only bind mount")
        script = f'mount --bind -o ro "$1" "$2" || exit {_NO_MOUNT}; exec "$3" -c "$4" "$2" "$5"'
        argv = ["unshare", "-m", "sh", "-c", script, "sh", str(folder), str(view)]
        done = subprocess.run(
            [*argv, sys.executable, code, str(link)], capture_output=True, text=True, timeout=120
        )
        if done.returncode == _NO_MOUNT or "unshare failed" in done.stderr:
            pytest.skip(f"running as root, and no read-only bind mount here: {done.stderr}")
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@pytest.fixture(scope="module")
def read_in_a_read_only_place(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """What a process that cannot write the folder reads of the databases there."""
    base = tmp_path_factory.mktemp("places")
    folder, view = base / "data", base / "view"
    view.mkdir()
    # a finished database, as SQLiteStore leaves one: WAL mode, no -wal, no -shm
    arr = tz.create_array(f"sqlite://{folder}/finished.db", shape=(3,), dtype=torch.int8)
    arr[:] = torch.tensor([1, 2, 3], dtype=torch.int8)
    arr.store.close()
    assert _wal_mode(folder / "finished.db") and os.listdir(folder) == ["finished.db"]
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
    # a link in a writable directory to the finished database, as the reader sees it
    place = view if os.geteuid() == 0 else folder
    link = base / "link.db"
    link.symlink_to(place / "finished.db")
    result = _run_where_it_cannot_write(folder, view, link, _READER)
    result["folder"], result["link_path"] = str(place), str(link)
    return result


def _says_wal_needs_a_shm_in_a_read_only_place(message: str, path: str) -> None:
    assert isinstance(message, str), f"read {message} instead of raising"
    assert message.startswith(f"StoreError: cannot open SQLite database {path!r}"), message
    assert "WAL mode" in message and "-shm file beside the database even to be read" in message
    assert "a directory this process cannot write" in message
    assert "PRAGMA journal_mode=DELETE" in message


def test_the_reader_runs_where_it_cannot_write(read_in_a_read_only_place: dict[str, Any]) -> None:
    assert read_in_a_read_only_place["writable"] is False


def test_a_finished_wal_database_in_a_read_only_place_raises_naming_cause_and_remedies(
    read_in_a_read_only_place: dict[str, Any],
) -> None:
    message = read_in_a_read_only_place["finished"]
    path = os.path.join(read_in_a_read_only_place["folder"], "finished.db")
    _says_wal_needs_a_shm_in_a_read_only_place(message, path)
    assert repr(read_in_a_read_only_place["folder"]) in message
    assert "immutable=True" in message and "if nothing writes it while it is open" in message
    assert "copy it" in message


def test_immutable_reads_a_finished_wal_database_in_a_read_only_place(
    read_in_a_read_only_place: dict[str, Any],
) -> None:
    assert read_in_a_read_only_place["finished, immutable"] == [1, 2, 3]
    assert read_in_a_read_only_place["link, immutable"] == [1, 2, 3]


def test_a_wal_file_in_a_read_only_place_says_immutable_would_miss_its_commits(
    read_in_a_read_only_place: dict[str, Any],
) -> None:
    message = read_in_a_read_only_place["with_wal_file"]
    path = os.path.join(read_in_a_read_only_place["folder"], "with_wal_file.db")
    _says_wal_needs_a_shm_in_a_read_only_place(message, path)
    assert "-wal file beside it may hold commits" in message
    assert "immutable=True would not see" in message and "with its -wal file" in message


def test_a_symlink_into_a_read_only_place_raises_the_same_error(
    read_in_a_read_only_place: dict[str, Any],
) -> None:
    # the link's own directory is writable; SQLite keeps -shm beside the file it leads to
    message = read_in_a_read_only_place["link"]
    _says_wal_needs_a_shm_in_a_read_only_place(message, read_in_a_read_only_place["link_path"])
    real = os.path.join(read_in_a_read_only_place["folder"], "finished.db")
    assert f"(the file {real!r} its symlink leads to)" in message
    assert "immutable=True" in message


def test_close_leaves_the_database_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "data.db"
    store = SQLiteStore(path)
    store.set("a", b"1")
    store.close()
    assert _wal_mode(path) and os.listdir(tmp_path) == ["data.db"]  # checkpointed, no -wal
    reader = SQLiteStore(path, read_only=True)
    assert reader.get("a") == b"1"
    reader.close()
    assert _wal_mode(path)


def test_a_reader_in_a_transaction_does_not_block_a_writer_opening_after_a_close(
    tmp_path: Path,
) -> None:
    path = tmp_path / "data.db"
    first = SQLiteStore(path)
    first.set("a", b"1")
    first.close()
    reader = sqlite3.connect(path, isolation_level=None)
    reader.execute("BEGIN")
    assert reader.execute("SELECT value FROM zarr").fetchall() == [(b"1",)]
    writer = SQLiteStore(path, timeout=0.2)  # opening it needs no lock the reader holds
    writer.set("b", b"2")
    assert reader.execute("SELECT count(*) FROM zarr").fetchone() == (1,)  # its snapshot
    reader.execute("COMMIT")
    reader.close()
    writer.close()
    assert SQLiteStore(path, read_only=True).get_many(["a", "b"]) == {"a": b"1", "b": b"2"}


def test_a_wal_database_reads_read_only_where_its_directory_is_writable(tmp_path: Path) -> None:
    path = tmp_path / "data.db"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE zarr (key TEXT PRIMARY KEY NOT NULL, value BLOB NOT NULL)")
        conn.execute("INSERT INTO zarr VALUES ('a', x'31')")
    conn.close()
    reader = SQLiteStore(path, read_only=True)
    assert reader.get("a") == b"1"
    reader.close()
    assert _wal_mode(path)  # a read-only store changes no journal mode
