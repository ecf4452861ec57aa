"""A store of one's own, written as docs/storage.md shows, against the store contract."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

import torchzarr as tz
from torchzarr import Store
from torchzarr.storage.base import Buffer, validate_key, validate_prefix
from torchzarr.testing.store_contract import StoreContract

_DATA: dict[str, dict[str, bytes]] = {}  # the "service" behind every URL


class UrlStore(Store):
    """A store reached by URL: every object of one URL sees the same data."""

    def __init__(self, url: str) -> None:
        self.url = url

    @property
    def identity(self) -> str:
        return self.url

    def __getstate__(self) -> dict[str, Any]:
        return {"url": self.url}  # pickles as its spec

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["url"])  # type: ignore[misc]

    @property
    def _data(self) -> dict[str, bytes]:
        return _DATA.setdefault(self.url, {})

    def get(self, key: str) -> bytes | None:
        return self._data.get(validate_key(key))

    def set(self, key: str, value: Buffer) -> None:
        self._check_writable(key)
        self._data[validate_key(key)] = bytes(value)

    def delete(self, key: str) -> None:
        self._check_writable(key)
        self._data.pop(validate_key(key), None)

    def list_prefix(self, prefix: str) -> Iterator[str]:
        validate_prefix(prefix)
        return iter([key for key in list(self._data) if key.startswith(prefix)])


class PerObjectStore(UrlStore):
    """The same store without an identity of its own: each object names only itself."""

    @property
    def identity(self) -> str:
        return Store.identity.fget(self)


class TestUrlStore(StoreContract):
    def make_store(self, tmp_path: Path) -> Store:
        return UrlStore(f"mine://{tmp_path}")


def _docs_store_class() -> type[Store]:
    """The ``MyStore`` of docs/storage.md's "Your own store", as written there."""
    text = (Path(__file__).parents[2] / "docs" / "storage.md").read_text()
    block = next(b for b in text.split("```python")[1:] if "class MyStore" in b)
    code = block.split("```")[0].split('register_store("mine"')[0]
    namespace: dict[str, Any] = {"__name__": __name__}  # its stores pickle by this module
    exec(compile(code, "docs/storage.md", "exec"), namespace)
    return namespace["MyStore"]


MyStore = _docs_store_class()


class TestDocsMyStore(StoreContract):
    """The docs' example store passes the whole contract (keys validated, buffers copied)."""

    def make_store(self, tmp_path: Path) -> Store:
        return MyStore(f"mine://{tmp_path}")


class KeepsTheBuffer(UrlStore):
    """Stores the caller's buffer itself: later changes to it change the stored value."""

    def set(self, key: str, value: Buffer) -> None:
        self._data[validate_key(key)] = value  # type: ignore[assignment]

    def get(self, key: str) -> bytes | None:
        value = self._data.get(validate_key(key))
        return None if value is None else bytes(value)


class MatchesInside(UrlStore):
    """Lists keys that hold the prefix anywhere, not only at their start."""

    def list_prefix(self, prefix: str) -> Iterator[str]:
        validate_prefix(prefix)
        return iter([key for key in list(self._data) if prefix in key])


def test_the_contract_catches_a_store_keeping_the_callers_buffer(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match="kept a reference to the bytearray"):
        TestUrlStore().test_set_copies_the_callers_buffer(KeepsTheBuffer(f"mine://{tmp_path}"))


def test_the_contract_catches_a_list_prefix_matching_inside_keys(tmp_path: Path) -> None:
    contract = TestUrlStore()
    with pytest.raises(AssertionError):
        contract.test_list_prefix(MatchesInside(f"mine://{tmp_path}/1"))
    with pytest.raises(AssertionError):
        contract.test_delete_prefix(MatchesInside(f"mine://{tmp_path}/2"))


def test_the_contract_catches_an_identity_that_names_the_object(tmp_path: Path) -> None:
    contract = TestUrlStore()
    store = PerObjectStore(f"mine://{tmp_path}")
    with pytest.raises(AssertionError, match=r"override Store\.identity to name the data"):
        contract.test_store_objects_over_the_same_data_share_an_identity(store)


def test_threads_with_their_own_store_objects_of_one_url_lose_no_writes(
    tmp_path: Path,
) -> None:
    url, workers, rounds = f"mine://{tmp_path}", 6, 12
    tz.create_array(UrlStore(url), shape=(workers * rounds,), dtype="int32", chunks=(16,))

    def work(worker: int) -> None:
        arr = tz.open_array(UrlStore(url), mode="a")  # every chunk is shared by all workers
        for i in range(rounds):
            arr[worker + i * workers] = worker + 1

    threads = [threading.Thread(target=work, args=(w,)) for w in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    expected = torch.arange(1, workers + 1, dtype=torch.int32).repeat(rounds)
    assert torch.equal(tz.open_array(UrlStore(url))[:], expected)


def test_the_docs_store_reaches_one_data_however_its_scheme_is_spelled(tmp_path: Path) -> None:
    upper, lower = MyStore(f"MINE://{tmp_path}/x"), MyStore(f"mine://{tmp_path}/x")
    upper.set("a", b"1")  # schemes are case-insensitive: the same data, one identity
    assert lower.get("a") == b"1" and upper.identity == lower.identity
    assert MyStore(f"mine://{tmp_path}/X").identity != lower.identity  # the rest is not
