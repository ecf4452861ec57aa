"""Keys that are not UTF-8 text (lone surrogates, as non-UTF-8 file names read) in every store."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from torchzarr.errors import InvalidKeyError
from torchzarr.storage import copy_keys
from torchzarr.storage.base import ByteRange, Store
from torchzarr.storage.local import LocalStore
from torchzarr.storage.memory import MemoryStore
from torchzarr.storage.sqlite import SQLiteStore
from torchzarr.storage.zip import ZipStore

SURROGATE_KEY = "g/caf\udce9"  # what os.listdir gives for the file name b"caf\xe9"


def _lmdb(path: Path) -> Store:
    pytest.importorskip("lmdb")
    from torchzarr.storage.lmdb import LMDBStore

    return LMDBStore(path / "d.lmdb", map_size=1 << 24)


STORES: dict[str, Callable[[Path], Store]] = {
    "memory": lambda path: MemoryStore(),
    "local": lambda path: LocalStore(path / "d"),
    "zip": lambda path: ZipStore(path / "d.zip", "w"),
    "sqlite": lambda path: SQLiteStore(path / "d.db"),
    "lmdb": _lmdb,
}


@pytest.fixture(params=sorted(STORES))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    store = STORES[request.param](tmp_path)
    try:
        yield store
    finally:
        store.close()


def _non_utf8_tree(root: Path) -> Path:
    """A directory with ``zarr.json``, a file and a directory named in Latin-1 bytes."""
    root.mkdir()
    (root / "zarr.json").write_bytes(b"{}")
    try:
        with open(os.fsencode(root) + b"/caf\xe9", "wb") as f:
            f.write(b"latin-1 name")
        os.makedirs(os.fsencode(root) + b"/d\xe9j\xe0")
        with open(os.fsencode(root) + b"/d\xe9j\xe0/c", "wb") as f:
            f.write(b"below a latin-1 name")
    except OSError:  # file systems that insist on UTF-8 names (macOS)
        pytest.skip("this file system takes only UTF-8 file names")
    return root


def _skipped(caught: pytest.WarningsRecorder) -> set[str]:
    """The names (their bytes escaped) that the warnings say a listing skipped."""
    return {str(w.message).split("'")[1].rpartition("/")[2] for w in caught}


def test_every_operation_refuses_a_key_that_is_not_utf8(store: Store) -> None:
    store.set("g/ok", b"1")
    name = r"'g/caf\\udce9'"  # the key as repr() spells it
    calls: list[Callable[[], object]] = [
        lambda: store.get(SURROGATE_KEY),
        lambda: store.get_many(["g/ok", SURROGATE_KEY]),
        lambda: store.get_range(SURROGATE_KEY, ByteRange(0, 1)),
        lambda: store.exists(SURROGATE_KEY),
        lambda: store.getsize(SURROGATE_KEY),
        lambda: store.set(SURROGATE_KEY, b"x"),
        lambda: store.set_many({SURROGATE_KEY: b"x", "g/new": b"2"}),
        lambda: store.delete(SURROGATE_KEY),
        lambda: list(store.list_prefix(SURROGATE_KEY)),
    ]
    for call in calls:
        with pytest.raises(InvalidKeyError, match=name):
            call()
    assert sorted(store.list_prefix("")) == ["g/ok"]  # nothing written by a refused call


def test_copying_a_directory_with_a_non_utf8_name_skips_it_with_a_warning(
    store: Store, tmp_path: Path
) -> None:
    source = LocalStore(_non_utf8_tree(tmp_path / "src"))
    with pytest.warns(UserWarning, match="not UTF-8") as caught:
        result = copy_keys(source, store)
    assert _skipped(caught) == {"caf\\xe9", "d\\xe9j\\xe0"}
    assert result.keys == 1 and sorted(store.list_prefix("")) == ["zarr.json"]


def test_local_listings_skip_non_utf8_names_with_a_warning(tmp_path: Path) -> None:
    root = _non_utf8_tree(tmp_path / "s")
    store = LocalStore(root)
    with pytest.warns(UserWarning, match="not UTF-8") as caught:
        assert sorted(store.list_prefix("")) == ["zarr.json"]
    assert _skipped(caught) == {"caf\\xe9", "d\\xe9j\\xe0"}
    assert store.list_dir("") == (["zarr.json"], [])
    store.delete_prefix("")  # what no key can name stays, as temporary files do
    assert sorted(os.listdir(os.fsencode(root))) == [b"caf\xe9", b"d\xe9j\xe0"]


def test_a_non_utf8_name_is_warned_about_once_however_often_it_is_listed(
    tmp_path: Path,
) -> None:
    root = _non_utf8_tree(tmp_path / "once")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # as if the registry had been reset before each
        for _ in range(3):
            assert sorted(LocalStore(root).list_prefix("")) == ["zarr.json"]
            assert LocalStore(root).list_dir("")[0] == ["zarr.json"]
    assert sorted(str(w.message).split("'")[1] for w in caught) == [
        os.fsencode(root / name).decode("utf-8", "backslashreplace")
        for name in ("caf\udce9", "d\udce9j\udce0")
    ]


def test_fsspec_listings_of_local_files_skip_non_utf8_names(tmp_path: Path) -> None:
    pytest.importorskip("fsspec")
    from torchzarr.storage.fsspec_store import FsspecStore

    root = _non_utf8_tree(tmp_path / "f")
    store = FsspecStore(f"file://{root}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert sorted(store.list_prefix("")) == ["zarr.json"]
        assert store.list_dir("") == (["zarr.json"], [])
    # one warning for the file and one for the directory, not one for each file below it
    assert _skipped(caught) == {"caf\\xe9", "d\\xe9j\\xe0"} and len(caught) == 2
    destination = MemoryStore()
    assert copy_keys(store, destination).keys == 1
    store.delete_prefix("")
    assert sorted(os.listdir(os.fsencode(root))) == [b"caf\xe9", b"d\xe9j\xe0"]
