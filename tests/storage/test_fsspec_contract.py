"""FsspecStore over fsspec's memory:// filesystem against the store contract."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from store_values import StoreValueChecks

from torchzarr.storage.base import Store
from torchzarr.storage.fsspec_store import FsspecStore
from torchzarr.testing.store_contract import StoreContract


class TestFsspecMemoryStore(StoreContract, StoreValueChecks):
    def make_store(self, tmp_path: Path) -> Store:
        return FsspecStore(f"memory://contract-{uuid.uuid4().hex}/root")

    def store_label(self, store: Store) -> str:
        assert isinstance(store, FsspecStore)
        return store.url


class TestFsspecFileStoreValues(StoreValueChecks):
    """The value and long-name checks over ``file://`` (whose writes go through LocalStore)."""

    @pytest.fixture
    def store(self, tmp_path: Path) -> Store:
        return FsspecStore(f"file://{tmp_path}/root")
