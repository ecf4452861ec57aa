"""LocalStore against the store contract."""

from __future__ import annotations

from pathlib import Path

from torchzarr.storage.base import Store
from torchzarr.storage.local import LocalStore
from torchzarr.testing.store_contract import StoreContract


class TestLocalStore(StoreContract):
    def make_store(self, tmp_path: Path) -> Store:
        return LocalStore(tmp_path / "data.zarr")


class TestLocalStoreDirectIO(StoreContract):
    """The same contract with writes past the page cache (fsync on: the batched path too)."""

    def make_store(self, tmp_path: Path) -> Store:
        return LocalStore(tmp_path / "data.zarr", fsync=True, direct_io=True)
