"""FsspecStore listings over http(s): a server that answers directory URLs with 404 is
refused where a directory is known to exist (never read as an empty listing), a prefix
with nothing below it lists as empty, and each directory of a recursive listing is
retried on its own."""

from __future__ import annotations

import contextlib
import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from http_serving import serving

import torchzarr as tz
from torchzarr.errors import StoreError
from torchzarr.storage import FsspecStore

pytest.importorskip("aiohttp")


class _Quiet(http.server.SimpleHTTPRequestHandler):
    """python's http.server (directory URLs answered with a page of links), logging each
    request path in ``seen``."""

    seen: list[str]

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def send_head(self) -> Any:
        self.seen.append(self.path)
        return super().send_head()


class _NoListings(_Quiet):
    """Answers every directory URL with 404, as GitHub Pages, S3 website endpoints and
    many CDNs do; files are served."""

    def send_head(self) -> Any:
        if self.path.endswith("/"):
            self.seen.append(self.path)
            self.send_error(404)
            return None
        return super().send_head()


class _Flaky(_Quiet):
    """Answers each directory URL with 503 the first time it is asked for."""

    lock = threading.Lock()

    def send_head(self) -> Any:
        with self.lock:
            first = self.path.endswith("/") and self.path not in self.seen
            self.seen.append(self.path)
        if first:
            self.send_error(503)
            return None
        return http.server.SimpleHTTPRequestHandler.send_head(self)


@contextlib.contextmanager
def _serving(handler_class: type, root: Path) -> Iterator[tuple[str, list[str]]]:
    """The base URL of an http.server serving ``root``, and the paths it was asked for."""
    seen: list[str] = []
    handler = functools.partial(type("H", (handler_class,), {"seen": seen}), directory=str(root))
    with serving(handler) as url:
        yield url, seen


def _hierarchy(root: Path) -> None:
    group = tz.create_group(root / "g.zarr")
    group.create_array("x", shape=(20, 4), dtype=torch.float32, chunks=(10, 4))[:] = 1.0
    tz.create_array(root / "empty.zarr", shape=(4,), dtype=torch.int8, chunks=(2,))


def test_a_server_without_listings_is_refused_where_a_node_exists(tmp_path: Path) -> None:
    _hierarchy(tmp_path)
    with _serving(_NoListings, tmp_path) as (base, seen):
        group = tz.open_group(f"{base}/g.zarr", mode="r")
        with pytest.raises(StoreError, match="does not list directories") as info:
            sorted(group.keys())
        message = str(info.value)
        assert f"'{base}/g.zarr'" in message and "which holds zarr.json" in message
        assert "tz.consolidate_metadata" in message
        arr = tz.open_array(f"{base}/g.zarr/x", mode="r")
        assert arr[0, 0].item() == 1.0  # reads work
        with pytest.raises(StoreError, match="does not list directories"):
            arr.nchunks_initialized  # noqa: B018 - was 0
        # below the root: its listing answers 404 too while it holds zarr.json
        store = FsspecStore(f"{base}/g.zarr", retries=0)
        with pytest.raises(StoreError, match=r"below the store's root .*holds zarr.json"):
            list(store.list_prefix("x/c/"))
        asked = len(seen)
        with pytest.raises(StoreError, match="as it did before"):  # known now: no more checks
            store.list_dir("x")
        assert [path for path in seen[asked:] if path.endswith("/")] == ["/g.zarr/x/"]
        assert not [path for path in seen[asked:] if path.endswith(("json", "zgroup", "zarray"))]
        # nothing of Zarr there: an empty listing, as before
        assert list(FsspecStore(f"{base}/absent", retries=0).list_prefix("")) == []


def test_a_password_in_the_url_is_masked_in_listing_errors(tmp_path: Path) -> None:
    _hierarchy(tmp_path)
    with _serving(_NoListings, tmp_path) as (base, _):
        url = base.replace("http://", "http://alice:s3cr3t@") + "/g.zarr"
        with pytest.raises(StoreError) as info:
            FsspecStore(url, retries=0).list_dir("")
        assert "s3cr3t" not in str(info.value) and "alice:***@127.0.0.1" in str(info.value)


def test_absent_prefixes_of_a_server_that_lists_are_empty(tmp_path: Path) -> None:
    _hierarchy(tmp_path)
    with _serving(_Quiet, tmp_path) as (base, _):
        arr = tz.open_array(f"{base}/empty.zarr", mode="r")
        assert arr.nchunks_initialized == 0  # no c/ directory: genuinely empty
        store = FsspecStore(f"{base}/g.zarr", retries=0)
        assert list(store.list_prefix("nothing/")) == []
        assert store.list_dir("nothing") == ([], [])
        assert sorted(store.list_prefix("x/c/")) == ["x/c/0/0", "x/c/1/0"]


def test_a_directory_linked_from_a_listing_that_answers_404_is_refused(tmp_path: Path) -> None:
    _hierarchy(tmp_path)

    class ChunksHidden(_Quiet):
        def send_head(self) -> Any:
            if self.path.endswith("/c/"):
                self.send_error(404)
                return None
            return super().send_head()

    with _serving(ChunksHidden, tmp_path) as (base, _):
        store = FsspecStore(f"{base}/g.zarr", retries=0)
        with pytest.raises(StoreError, match=r"g.zarr/x/c'.*which the listing above it links"):
            list(store.list_prefix(""))


def test_each_directory_of_a_listing_is_retried_on_its_own(tmp_path: Path) -> None:
    tz.create_array(tmp_path / "x.zarr", shape=(60, 4), dtype=torch.float32, chunks=(10, 4))[:] = 1
    with _serving(_Flaky, tmp_path) as (base, seen):
        store = FsspecStore(f"{base}/x.zarr", retries=2, retry_backoff=0)
        keys = sorted(store.list_prefix(""))
        assert keys == [*(f"c/{i}/0" for i in range(6)), "zarr.json"]
        directories = [path for path in seen if path.endswith("/")]
        assert len(set(directories)) == 8  # x.zarr/, c/, c/0/ ... c/5/: each asked twice
        assert all(directories.count(path) == 2 for path in directories)
        assert tz.open_array(store, mode="r").nchunks_initialized == 6


@contextlib.contextmanager
def _aiohttp_static(root: Path) -> Iterator[str]:
    """aiohttp's static handler serving ``root`` with index pages, whose links to
    directories have no trailing "/" in the href (only in the text: ``arr/``)."""
    import asyncio

    from aiohttp import web

    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_static("/", str(root), show_index=True)
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = runner.addresses[0][1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_a_server_marking_directories_only_in_link_texts_lists_them(tmp_path: Path) -> None:
    _hierarchy(tmp_path)
    with _aiohttp_static(tmp_path) as base:
        group = tz.open_group(f"{base}/g.zarr", mode="r")
        assert sorted(group.keys()) == ["x"]  # was []: "x" read as a file
        assert group["x"].nchunks_initialized == 2  # was 0
        store = FsspecStore(f"{base}/g.zarr", retries=0)
        assert sorted(store.list_prefix("")) == ["x/c/0/0", "x/c/1/0", "x/zarr.json", "zarr.json"]
        assert store.list_dir("x") == (["zarr.json"], ["c"])
