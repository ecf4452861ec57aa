"""MemoryStore against the store contract."""

from __future__ import annotations

from pathlib import Path

from torchzarr.storage.base import Store
from torchzarr.storage.memory import MemoryStore
from torchzarr.testing.store_contract import StoreContract


class TestMemoryStore(StoreContract):
    pickles_by_value = True

    def make_store(self, tmp_path: Path) -> Store:
        return MemoryStore()
