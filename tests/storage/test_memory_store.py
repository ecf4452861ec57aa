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


def test_copies_by_value_are_other_data_and_read_only_views_the_same() -> None:
    import gc
    import pickle

    store = MemoryStore()
    assert store.with_read_only().identity == store.identity  # the same dict
    blob = pickle.dumps(store)
    seen = {store.identity}
    for _ in range(30):  # a freed copy's id() goes to the next one: identities must not
        copy = pickle.loads(blob)
        assert copy.identity not in seen
        seen.add(copy.identity)
        del copy
        gc.collect()
