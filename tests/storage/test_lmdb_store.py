"""LMDBStore: the store contract, lmdb:// URLs, shared environments and errors."""

from __future__ import annotations

import builtins
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from store_values import StoreValueChecks

import torchzarr as tz
from torchzarr.errors import MissingDependencyError, StoreError, UnknownStoreError
from torchzarr.storage import lmdb as lmdb_module
from torchzarr.storage import lmdb_env
from torchzarr.storage.base import ByteRange, Store
from torchzarr.storage.lmdb import LMDBStore
from torchzarr.storage.registry import resolve_store
from torchzarr.testing.store_contract import StoreContract

pytest.importorskip("lmdb")


class TestLMDBStore(StoreContract, StoreValueChecks):
    def make_store(self, tmp_path: Path) -> Store:
        return LMDBStore(tmp_path / "data.lmdb", map_size=1 << 26)


def test_url_round_trip(tmp_path: Path) -> None:
    url = f"lmdb://{tmp_path}/arrays.lmdb"
    arr = tz.create_array(url, shape=(5, 3), dtype=torch.float64, chunks=(2, 3))
    data = torch.randn(5, 3, dtype=torch.float64)
    arr[:] = data
    node = tz.open(url)
    assert isinstance(node, tz.Array) and torch.equal(node[:], data)
    store = resolve_store(url, mode="r")
    assert isinstance(store, LMDBStore) and store.read_only
    assert store.path == str(tmp_path / "arrays.lmdb")


def test_stores_of_one_path_share_the_environment(tmp_path: Path) -> None:
    writer = LMDBStore(tmp_path / "db")
    reader = LMDBStore(tmp_path / "db", read_only=True)
    assert reader.get("k") is None  # no environment yet: nothing opened
    writer.set("k", b"v")
    assert reader.get("k") == b"v"
    writer.close()
    assert reader.get("k") == b"v"  # reopens lazily, read-only
    writer.set("k", b"w")  # reopens it for writing
    assert reader.get("k") == b"w" and reader.get_many(["k"]) == {"k": b"w"}


@pytest.mark.parametrize("read_only", [True, False])
def test_missing_environment_reads_as_empty(tmp_path: Path, read_only: bool) -> None:
    store = LMDBStore(tmp_path / "none", read_only=read_only)
    assert store.get("a") is None and list(store.list_prefix("")) == []
    assert not store.exists("a")
    if not read_only:
        store.delete("a")  # nothing to delete: still no environment
    assert not (tmp_path / "none").exists()


@pytest.mark.parametrize("read_only", [True, False])
def test_an_empty_folder_reads_as_an_empty_environment_and_reads_create_nothing(
    tmp_path: Path, read_only: bool
) -> None:
    folder = tmp_path / "empty.lmdb"
    folder.mkdir()
    store = LMDBStore(folder, read_only=read_only)
    assert store.get("zarr.json") is None and store.get_range("a", ByteRange(0, 1)) is None
    assert store.get_many(["a"]) == {"a": None} and list(store.list_prefix("")) == []
    if not read_only:
        store.delete("a")
        store.delete_prefix("")
    assert list(folder.iterdir()) == []  # no data.mdb nor lock.mdb made by reads
    with pytest.raises(tz.errors.GroupNotFoundError):
        tz.open_group(f"lmdb://{folder}", mode="r")
    assert list(folder.iterdir()) == []
    if not read_only:
        store.set("a", b"1")  # a write makes it
        assert store.get("a") == b"1" and (folder / "data.mdb").exists()
        store.close()


def test_full_database_and_long_keys_are_store_errors(tmp_path: Path) -> None:
    store = LMDBStore(tmp_path / "small", map_size=64 << 10)
    with pytest.raises(StoreError, match="map_size"):
        store.set("big", b"x" * (1 << 20))
    with pytest.raises(StoreError, match="511"):
        store.set("k" * 600, b"x")
    store.close()


def test_a_failed_batch_names_the_key_at_fault_or_every_key(tmp_path: Path) -> None:
    store = LMDBStore(tmp_path / "small", map_size=64 << 10)
    with pytest.raises(StoreError) as caught:  # checked before the transaction
        store.set_many({"a/zarr.json": b"{}", "k" * 600: b"1"})
    assert "'kkkk" in str(caught.value) and "a/zarr.json" not in str(caught.value)
    assert "600 bytes" in str(caught.value) and "511" in str(caught.value)
    with pytest.raises(StoreError, match=r"'a/0', 'a/1' in .*map_size"):  # the batch is at fault
        store.set_many({"a/0": b"x" * (1 << 20), "a/1": b"y"})
    assert store.get("a/zarr.json") is None and store.get("a/1") is None
    store.close()


def test_bad_url_and_options(tmp_path: Path) -> None:
    with pytest.raises(UnknownStoreError, match="lmdb://"):
        resolve_store("lmdb://", mode="a")
    with pytest.raises(UnknownStoreError, match=r"lmdb://.*unknown LMDB options \['x'\]"):
        resolve_store(f"lmdb://{tmp_path}/x", mode="a", storage_options={"map_size": 1, "x": 2})
    with pytest.raises(StoreError, match="cannot open LMDB"):
        LMDBStore(tmp_path / "x", max_readers="many").set("a", b"1")  # creating it
    writer = LMDBStore(tmp_path / "y")
    writer.set("a", b"1")
    writer.close()  # environments are shared per path: let the next store open its own
    with pytest.raises(StoreError, match="cannot open LMDB"):
        LMDBStore(tmp_path / "y", max_readers="many", read_only=True).get("a")  # opening it


def test_missing_package_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def fake_import(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "lmdb":
            raise ImportError("No module named 'lmdb'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(MissingDependencyError, match="pip install lmdb"):
        LMDBStore(tmp_path / "y").set("a", b"1")


def test_a_larger_map_size_grows_the_shared_environment(tmp_path: Path) -> None:
    small = LMDBStore(tmp_path / "db", map_size=64 << 10)
    small.set("a", b"1")
    with pytest.raises(StoreError, match="map_size"):
        small.set("big", b"x" * (1 << 20))
    LMDBStore(tmp_path / "db", map_size=1 << 24).set("big", b"x" * (1 << 20))
    assert small.get("big") == b"x" * (1 << 20) and small.get("a") == b"1"  # one environment
    small.close()


_GROW = """
import sys, lmdb
env = lmdb.open(sys.argv[1], map_size=1 << 26)
with env.begin(write=True) as txn:
    for i in range(40):
        txn.put(b"big/%d" % i, b"x" * 100_000)
env.close()
"""


@pytest.mark.parametrize(
    "operation", ["get", "get_many", "get_range", "list_prefix", "set", "delete", "delete_prefix"]
)
def test_a_map_grown_by_another_process_is_adopted(tmp_path: Path, operation: str) -> None:
    store = LMDBStore(tmp_path / "db", map_size=1 << 20)
    store.set("a", b"12")
    subprocess.run([sys.executable, "-c", _GROW, str(tmp_path / "db")], check=True, timeout=60)
    calls = {
        "get": lambda: store.get("a") == b"12",
        "get_many": lambda: store.get_many(["a", "big/39"])["big/39"] == b"x" * 100_000,
        "get_range": lambda: store.get_range("a", ByteRange(1)) == b"2",
        "list_prefix": lambda: len(list(store.list_prefix("big/"))) == 40,
        "set": lambda: store.set("b", b"3") is None and store.get("b") == b"3",
        "delete": lambda: store.delete("a") is None and store.get("a") is None,
        "delete_prefix": lambda: (
            store.delete_prefix("big/") is None and list(store.list_prefix("")) == ["a"]
        ),
    }
    assert calls[operation]()
    store.close()


class _LoggingEnv:
    """An lmdb environment that logs when its map is resized."""

    def __init__(self, env: Any, log: list[str]) -> None:
        self._env, self._log = env, log

    def __getattr__(self, name: str) -> Any:
        return getattr(self._env, name)

    def set_mapsize(self, size: int) -> None:
        self._log.append("resize")
        self._env.set_mapsize(size)


def test_a_resize_waits_for_the_transactions_in_flight(tmp_path: Path) -> None:
    # remapping while another thread reads would pull the map from under its pointers
    store = LMDBStore(tmp_path / "db", map_size=1 << 20)
    store.set("k", b"v")
    shared = lmdb_env.envs[store.identity]
    log: list[str] = []
    shared.env = _LoggingEnv(shared.env, log)
    inside, release = threading.Event(), threading.Event()

    def slow_read(env: Any) -> None:
        with env.begin() as txn:
            log.append("begin")
            inside.set()
            release.wait(10)
            log.append("end " + bytes(txn.get(b"k")).decode())

    reader = threading.Thread(target=store._call, args=("read", "k", slow_read))
    reader.start()
    inside.wait(10)
    bigger = LMDBStore(tmp_path / "db", map_size=1 << 24)
    grower = threading.Thread(target=bigger.get, args=("k",))
    grower.start()
    while not shared.blocked and grower.is_alive():  # the resize waits for the reader
        time.sleep(0.001)
    release.set()
    reader.join(10)
    grower.join(10)
    assert log == ["begin", "end v", "resize"]
    assert bigger.get("k") == b"v"
    store.close()


def test_closing_one_environment_does_not_hold_up_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow = LMDBStore(tmp_path / "slow.lmdb", map_size=1 << 22)
    slow.set("a", b"1")
    entered, release = threading.Event(), threading.Event()
    real_close = lmdb_env.SharedEnv.close

    def stalling_close(self: Any) -> None:  # waits as for a long read of this environment
        entered.set()
        assert release.wait(30)
        real_close(self)

    monkeypatch.setattr(lmdb_env.SharedEnv, "close", stalling_close)
    closing = threading.Thread(target=slow.close)
    closing.start()
    try:
        assert entered.wait(30)
        done = threading.Event()
        other = LMDBStore(tmp_path / "other.lmdb", map_size=1 << 22)
        threading.Thread(target=lambda: (other.set("b", b"2"), done.set()), daemon=True).start()
        finished = done.wait(30)  # a deadline, not a timing: it hangs if the test fails
    finally:
        release.set()
        closing.join()
    assert finished and other.get("b") == b"2" and slow.get("a") == b"1"
    other.close()
    slow.close()


def test_an_environment_through_a_symlink_has_the_identity_of_its_file(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    direct = LMDBStore(tmp_path / "real" / "d.lmdb", map_size=1 << 26)
    linked = LMDBStore(tmp_path / "link" / "d.lmdb", map_size=1 << 26)
    assert direct.identity == linked.identity
    assert linked.path == str(tmp_path / "link" / "d.lmdb")  # errors name the path given
    assert LMDBStore(tmp_path / "real" / "e.lmdb", map_size=1 << 26).identity != direct.identity


def test_stores_of_one_environment_through_a_link_and_its_path_share_it(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    direct = LMDBStore(tmp_path / "real" / "d.lmdb", map_size=1 << 26)
    linked = LMDBStore(tmp_path / "link" / "d.lmdb", map_size=1 << 26)
    direct.set("a", b"1")
    linked.set("b", b"2")  # LMDB forbids a second open of one environment in a process
    assert direct._env() is linked._env()
    assert sorted(direct.list_prefix("")) == ["a", "b"] and linked.get("a") == b"1"
    linked.close()  # closes the one environment: the other store reopens it
    assert direct.get("b") == b"2"
    direct.close()


def test_an_environment_deleted_on_disk_is_not_written_to_any_more(tmp_path: Path) -> None:
    import shutil

    path = tmp_path / "a.lmdb"
    tz.create_array(f"lmdb://{path}", shape=(4,), dtype=torch.float32)[:] = 7.0
    shutil.rmtree(path)  # another tool (or process) removed the database
    fresh = tz.create_array(f"lmdb://{path}", shape=(4,), dtype=torch.float32, overwrite=True)
    fresh[:] = 1.0
    assert (path / "data.mdb").exists()  # written to the file at the path, not the old one
    code = f"import torchzarr as tz; print(tz.open_array('lmdb://{path}', mode='r')[:].tolist())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[1.0, 1.0, 1.0, 1.0]"


@pytest.mark.parametrize("subdir", [True, False])
def test_a_write_creates_missing_parent_folders(tmp_path: Path, subdir: bool) -> None:
    path = tmp_path / "no" / "such" / "a.lmdb"
    reader = LMDBStore(path, read_only=True, subdir=subdir)
    assert reader.get("a") is None and not (tmp_path / "no").exists()  # reads create nothing
    LMDBStore(path, subdir=subdir).set("a", b"1")  # as zip, SQLite and local stores do
    assert (path / "data.mdb" if subdir else path).is_file() and reader.get("a") == b"1"
    arr = tz.create_array(f"lmdb://{tmp_path}/x/y/b.lmdb", shape=(2,), dtype=torch.float32)
    arr[:] = 1.0
    assert (tmp_path / "x" / "y" / "b.lmdb" / "data.mdb").is_file()
    reader.close()
    arr.store.close()


def test_a_parent_that_is_a_file_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(StoreError, match=r"cannot open LMDB environment.*file/a\.lmdb"):
        tz.create_array(f"lmdb://{tmp_path}/file/a.lmdb", shape=(2,), dtype=torch.float32)


@pytest.mark.parametrize("existing", [False, True])
def test_a_mode_that_is_not_permission_bits_is_refused(tmp_path: Path, existing: bool) -> None:
    url = f"lmdb://{tmp_path}/a.lmdb"
    if existing:  # its environment open in this process: the option must not go unnoticed
        tz.create_array(url, data=torch.arange(3))
    match = r"mode='r' for .*a\.lmdb.*file permission bits.*mode='r' to tz\.open_array.*read_only"
    with pytest.raises(tz.errors.InvalidArgumentError, match=match):
        tz.open_array(url, mode="a", storage_options={"mode": "r"})
    with pytest.raises(tz.errors.InvalidArgumentError, match="permission bits"):
        LMDBStore(tmp_path / "b.lmdb", mode=True)
    assert not (tmp_path / "b.lmdb").exists()
    store = LMDBStore(tmp_path / "c.lmdb", mode=0o700)
    store.set("k", b"v")
    assert (tmp_path / "c.lmdb" / "data.mdb").stat().st_mode & 0o777 == 0o600  # lmdb's own
    store.close()
    if existing:
        assert tz.open_array(url, mode="r")[:].tolist() == [0, 1, 2]
        LMDBStore(tmp_path / "a.lmdb").close()


def test_stores_of_an_open_environment_share_it_whatever_their_options(tmp_path: Path) -> None:
    # LMDB drops writemap from a read-only environment and takes max_readers from another
    # holder's lock file: options cannot be compared, and reading with the options a
    # store was written with must work
    path = tmp_path / "a.lmdb"
    options = {"writemap": True, "map_size": 1 << 24}
    tz.create_array(f"lmdb://{path}", data=torch.arange(4), storage_options=options).store.close()
    reader = tz.open_array(f"lmdb://{path}", mode="r", storage_options=options)
    assert reader[:].tolist() == [0, 1, 2, 3]
    other = LMDBStore(path, map_size=1 << 24, readahead=False, max_readers=7)
    assert other.get("zarr.json") is not None  # the open environment, shared
    reader.store.close()
    other.close()


def test_reads_notice_an_environment_deleted_on_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    path = tmp_path / "a.lmdb"
    tz.create_array(f"lmdb://{path}", shape=(4,), dtype=torch.float32)[:] = 7.0
    monkeypatch.setattr(lmdb_module, "_RECHECK", 0.0)  # reads check at once, not a second on
    shutil.rmtree(path)
    assert list(LMDBStore(str(path), read_only=True).list_prefix("")) == []


@pytest.mark.parametrize(
    ("map_size", "error", "match"),
    [
        (-1, tz.errors.InvalidArgumentError, "map_size must be >= 0"),
        (2**70, tz.errors.InvalidArgumentError, f"map_size must be <= {sys.maxsize}"),
        (float("nan"), tz.errors.ArgumentTypeError, "map_size must be an int"),
        (float("inf"), tz.errors.ArgumentTypeError, "map_size must be an int"),
        ("1G", tz.errors.ArgumentTypeError, "map_size must be an int"),
    ],
)
def test_map_size_is_an_int_lmdb_takes_checked_when_made(
    tmp_path: Path, map_size: Any, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        LMDBStore(tmp_path / "m.lmdb", map_size=map_size)
    assert not (tmp_path / "m.lmdb").exists()


@pytest.mark.parametrize("map_size", [-1, 2**70])
def test_a_bad_map_size_names_the_store_path_and_the_url(tmp_path: Path, map_size: int) -> None:
    path = str(tmp_path / "m.lmdb")
    with pytest.raises(tz.errors.InvalidArgumentError, match="map_size must be") as made:
        LMDBStore(path, map_size=map_size)
    assert f"LMDBStore({path!r})" in str(made.value)
    url = f"lmdb://{path}"
    with pytest.raises(tz.errors.InvalidArgumentError, match="map_size must be") as opened:
        tz.open_group(url, mode="a", storage_options={"map_size": map_size})
    assert str(opened.value).startswith(f"cannot open {url!r}: ") and path in str(opened.value)
    assert not Path(path).exists()
