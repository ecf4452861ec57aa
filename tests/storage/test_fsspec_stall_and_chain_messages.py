"""Messages of FsspecStore calls that stall, and of chained fsspec URLs (not supported)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from fsspec.asyn import AsyncFileSystem
from fsspec.registry import _registry, known_implementations

import torchzarr as tz
from torchzarr.errors import StoreError, UnknownStoreError
from torchzarr.storage.fsspec_store import FsspecStore

PROTOCOL = "stalltest"


class StalledFileSystem(AsyncFileSystem):
    """A server that never answers a stat or a listing."""

    protocol = PROTOCOL

    async def _info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        await asyncio.Event().wait()
        raise AssertionError("never answered")

    async def _ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        await asyncio.Event().wait()
        raise AssertionError("never answered")


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch) -> FsspecStore:
    monkeypatch.setitem(_registry, PROTOCOL, StalledFileSystem)
    monkeypatch.setitem(known_implementations, PROTOCOL, {"class": "StalledFileSystem"})
    return FsspecStore(f"{PROTOCOL}://bucket/stall", retries=0, timeout=0.2)


def test_a_stalled_stat_names_the_key_and_the_timeout(store: FsspecStore) -> None:
    with pytest.raises(StoreError) as info:
        store.getsize("a/zarr.json")
    assert str(info.value) == (
        "cannot stat 'a/zarr.json' at 'stalltest://bucket/stall': TimeoutError: no answer "
        "within the store's timeout of 0.2 s (FSTimeoutError)"
    )


def test_a_stalled_listing_names_the_timeout(store: FsspecStore) -> None:
    with pytest.raises(StoreError, match=r"cannot list 'a/'.*timeout of 0.2 s \(FSTimeoutError"):
        store.list_dir("a/")


@pytest.mark.parametrize("chain", ["simplecache", "filecache", "blockcache"])
def test_chained_urls_say_chaining_is_not_supported(chain: str) -> None:
    url = f"{chain}::s3://bucket/data.zarr"
    for opening in (lambda: tz.open_array(url, mode="r"), lambda: FsspecStore(url)):
        with pytest.raises(UnknownStoreError) as info:
            opening()
        message = str(info.value)
        assert f"cannot open {url!r}: fsspec URL chaining ('::'" in message
        assert "is not supported" in message and "Array.with_cache()" in message
