"""MemoryStore against the store contract."""

from __future__ import annotations

from pathlib import Path

import pytest
from store_values import StoreValueChecks

from torchzarr.errors import ArgumentTypeError
from torchzarr.storage.base import Store
from torchzarr.storage.memory import MemoryStore, named_memory_store
from torchzarr.testing.store_contract import StoreContract


class TestMemoryStore(StoreContract, StoreValueChecks):
    pickles_by_value = True

    def make_store(self, tmp_path: Path) -> Store:
        return MemoryStore()


class TestMemoryStoreBelowAPath(StoreContract, StoreValueChecks):
    """``memory://name/path``: the named store seen from a path, as a subdirectory."""

    pickles_by_value = True

    def make_store(self, tmp_path: Path) -> Store:
        root = named_memory_store(f"contract-{tmp_path.name}")
        root.set("outside/zarr.json", b"{}")  # keys beside the view's are never its own
        return named_memory_store(f"contract-{tmp_path.name}/runs//a/")


def test_a_path_in_a_memory_url_is_a_node_of_the_named_store() -> None:
    import pickle

    import torch

    import torchzarr as tz

    root = tz.open_group("memory://shared-below", mode="w")
    root.create_array("sub/x", data=torch.arange(3))
    assert tz.open("memory://shared-below/sub/x", mode="r")[:].tolist() == [0, 1, 2]
    tz.create_array("memory://shared-below/sub/y", data=torch.arange(2))  # as in zarr-python
    names = [name for name, _ in tz.open_group("memory://shared-below").members(max_depth=None)]
    assert names == ["sub", "sub/x", "sub/y"]
    hot = tz.open_array("memory://shared-below/sub/x", mode="r").with_cache()
    hot[:]
    also = root["sub/x"].with_cache()
    hits = also.cache.hits
    also[:]  # the same location: one cache entry
    assert also.cache.hits == hits + 1
    root["sub/x"][:] = torch.tensor([7, 8, 9])  # a write through the root reaches the view
    assert hot[:].tolist() == [7, 8, 9]
    view = named_memory_store("shared-below/sub")
    assert view.with_read_only().identity == view.identity
    copy = pickle.loads(pickle.dumps(view))  # by value: the keys below the path only
    assert sorted(copy.list_prefix("x/")) == ["x/c/0", "x/zarr.json"]
    assert copy.get("zarr.json") == view.get("zarr.json") and copy.identity != view.identity


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


@pytest.mark.parametrize("value", [3, [1, 2], "abc", None])
def test_values_that_are_no_buffer_are_refused_naming_the_key(value) -> None:
    with pytest.raises(ArgumentTypeError, match="key 'k' must be bytes"):
        MemoryStore({"k": value})  # bytes(3) would store three zero bytes
    store = MemoryStore()
    with pytest.raises(ArgumentTypeError, match="key 'k' must be bytes"):
        store.set("k", value)
    assert store.get("k") is None
    assert MemoryStore({"k": bytearray(b"ab")}).get("k") == b"ab"


def test_fsspecs_memory_filesystem_is_shared_with_zarr_python_through_fsspec_store() -> None:
    # docs/storage.md: torchzarr's memory://name is its own; FsspecStore opens fsspec's.
    import uuid

    import numpy as np
    import zarr

    import torchzarr as tz
    from torchzarr.errors import GroupNotFoundError

    url = f"memory://shared-{uuid.uuid4().hex[:8]}"
    zarr.create_array(url, shape=(4,), dtype="int16")[:] = np.arange(4)
    with pytest.raises(GroupNotFoundError):
        tz.open_group(url, mode="r")  # not the same store
    shared = tz.open_array(tz.FsspecStore(url), mode="r")
    assert shared[:].tolist() == [0, 1, 2, 3]
