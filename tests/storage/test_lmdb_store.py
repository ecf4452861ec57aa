"""LMDBStore: the store contract, lmdb:// URLs, shared environments and errors."""

from __future__ import annotations

import builtins
from pathlib import Path
from typing import Any

import pytest
import torch

import torchzarr as tz
from torchzarr.errors import MissingDependencyError, StoreError, UnknownStoreError
from torchzarr.storage.base import Store
from torchzarr.storage.lmdb import LMDBStore
from torchzarr.storage.registry import resolve_store
from torchzarr.testing.store_contract import StoreContract

pytest.importorskip("lmdb")


class TestLMDBStore(StoreContract):
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


def test_full_database_and_long_keys_are_store_errors(tmp_path: Path) -> None:
    store = LMDBStore(tmp_path / "small", map_size=64 << 10)
    with pytest.raises(StoreError, match="map_size"):
        store.set("big", b"x" * (1 << 20))
    with pytest.raises(StoreError, match="511"):
        store.set("k" * 600, b"x")
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
