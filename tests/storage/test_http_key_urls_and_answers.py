"""FsspecStore over http(s): keys percent-encoded in URLs, listings decoded, answers that
ignore Range cut to the range asked for, directories that read as missing keys (but not
other redirects), and the user's own ``raise_for_status`` kept."""

from __future__ import annotations

import contextlib
import functools
import http.server
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from http_serving import serving

import torchzarr as tz
from torchzarr.storage import ByteRange, FsspecStore

pytest.importorskip("aiohttp")

_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


def _send_part(handler: Any, data: bytes, start: int, end: int) -> None:
    """Answer ``206 Partial Content`` with ``data[start:end]``."""
    handler.send_response(206)
    handler.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
    handler.send_header("Content-Length", str(end - start))
    handler.end_headers()
    handler.wfile.write(data[start:end])


class _IgnoresRange(http.server.SimpleHTTPRequestHandler):
    """python's http.server: every GET of a file is answered 200 with the whole file."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _HonoursRange(_IgnoresRange):
    """Answers a single ``bytes=a-b`` / ``bytes=a-`` / ``bytes=-n`` range 206 (416 past the end)."""

    def send_head(self) -> Any:
        match = _RANGE.fullmatch(self.headers.get("Range", ""))
        path = Path(self.translate_path(self.path))
        if match is None or not path.is_file():
            return super().send_head()
        data = path.read_bytes()
        first, last = match.groups()
        if not first:
            start, end = max(len(data) - int(last), 0), len(data)
        else:
            start, end = int(first), min(int(last) + 1 if last else len(data), len(data))
        if start >= len(data):
            self.send_error(416)
            return None
        _send_part(self, data, start, end)
        return None


class _RedirectsToDownloads(_IgnoresRange):
    """Sends ``/data/<name>`` on to ``/get/?id=<name>``, a download URL whose path ends in
    ``/``, which answers with the file ``blobs/<name>``."""

    def send_head(self) -> Any:
        if self.path.startswith("/data/"):
            self.send_response(302)
            self.send_header("Location", "/get/?id=" + self.path[len("/data/") :])
            self.end_headers()
            return None
        if self.path.startswith("/get/?id="):
            self.path = "/blobs/" + self.path.partition("=")[2]
        return super().send_head()


@contextlib.contextmanager
def _serving(handler_class: type, root: Path) -> Iterator[str]:
    """The base URL of an http.server serving ``root`` with ``handler_class``."""
    with serving(functools.partial(handler_class, directory=str(root))) as url:
        yield url


@pytest.fixture(scope="module", params=[_IgnoresRange, _HonoursRange], ids=lambda c: c.__name__)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    root = tmp_path_factory.mktemp("http")
    with _serving(request.param, root) as base:
        yield base, root


def _stores(server: tuple[str, Path], name: str) -> tuple[tz.LocalStore, FsspecStore]:
    """A writer on the served directory ``name`` and the http store that reads it."""
    base, root = server
    return tz.LocalStore(root / name), FsspecStore(f"{base}/{name}", retries=0)


def test_keys_with_url_characters_read_their_own_values(server: tuple[str, Path]) -> None:
    writer, store = _stores(server, "quoting")
    keys = ["hash/#frag", "q/what?x=1", "pct/%41", "sp ace/k", "ü/k", "plus+/a:b@c"]
    for key in keys:
        writer.set(key, key.encode())
    assert store.get_many(keys) == {key: key.encode() for key in keys}
    # "%41" and "%20" in a key are no escapes, "?" starts no query: these are missing
    assert store.get_many(["pct/A", "sp%20ace/k", "q/what"]) == {
        "pct/A": None,
        "sp%20ace/k": None,
        "q/what": None,
    }
    assert store.exists("q/what?x=1") and store.getsize("hash/#frag") == len(b"hash/#frag")
    assert not store.exists("pct/A") and store.getsize("sp%20ace/k") is None
    assert store.get_range("sp ace/k", ByteRange(3, 3)) == b"ace"


def test_listings_give_decoded_names(server: tuple[str, Path]) -> None:
    base, root = server
    group = tz.open_group(root / "listing.zarr", mode="w")
    group.create_group("grp one")
    group.create_group("ü")
    group.create_group("50%")
    store = FsspecStore(f"{base}/listing.zarr", retries=0)
    assert sorted(store.list_prefix("")) == [
        "50%/zarr.json",
        "grp one/zarr.json",
        "zarr.json",
        "ü/zarr.json",
    ]
    assert sorted(store.list_prefix("grp ")) == ["grp one/zarr.json"]
    assert store.list_dir("") == (["zarr.json"], ["50%", "grp one", "ü"])
    assert store.list_dir("grp one/") == (["zarr.json"], [])
    opened = tz.open_group(f"{base}/listing.zarr", mode="r", use_consolidated=False)
    assert sorted(opened.keys()) == ["50%", "grp one", "ü"]


@pytest.mark.parametrize(
    ("value", "rng", "expected"),
    [
        (b"0123456789", ByteRange(8, 100), b"89"),  # past the end
        (b"0123456789", ByteRange(3, 10), b"3456789"),  # as long as the whole value
        (b"0123456789", ByteRange(20, 5), b""),
        (b"0123456789", ByteRange(3, 4), b"3456"),
        (b"0123456789", ByteRange(0, 100), b"0123456789"),
        (b"0123456789", ByteRange(7), b"789"),
        (b"0123456789", ByteRange(100), b""),
        (b"0123456789", ByteRange(-3), b"789"),
        (b"0123456789", ByteRange(-100), b"0123456789"),
        (b"x", ByteRange(3, 4), b""),
        (b"x", ByteRange(0, 4), b"x"),
    ],
)
def test_ranges_are_cut_whatever_the_server_does_with_range(
    server: tuple[str, Path], value: bytes, rng: ByteRange, expected: bytes
) -> None:
    writer, store = _stores(server, "ranges")
    writer.set("k", value)
    assert store.get_range("k", rng) == expected
    assert store.get_ranges([("k", rng), ("missing", rng), ("k", ByteRange(0, 1))]) == [
        expected,
        None,
        value[:1],
    ]


def test_a_directory_is_no_key(server: tuple[str, Path]) -> None:
    writer, store = _stores(server, "dirs")
    writer.set("c/0", b"chunk")
    assert store.get("c") is None
    assert not store.exists("c") and store.getsize("c") is None
    assert store.get_range("c", ByteRange(0, 4)) is None
    assert store.get_many(["c", "c/0"]) == {"c": None, "c/0": b"chunk"}
    assert store.list_dir("") == ([], ["c"])


def test_a_redirect_to_a_download_url_ending_in_slash_reads_the_value(tmp_path: Path) -> None:
    # only a redirect to the key's own URL plus "/" leads to a directory
    tz.LocalStore(tmp_path / "blobs").set("k", b"hello")
    with _serving(_RedirectsToDownloads, tmp_path) as base:
        store = FsspecStore(f"{base}/data", retries=0)
        assert store.get("k") == b"hello"
        assert store.exists("k") and store.getsize("k") == 5
        assert store.get_range("k", ByteRange(1, 3)) == b"ell"
        assert store.get_many(["k", "missing"]) == {"k": b"hello", "missing": None}


@pytest.mark.parametrize("where", ["storage_options", "client_kwargs"])
def test_a_users_raise_for_status_runs_after_the_stores_checks(
    server: tuple[str, Path], where: str
) -> None:
    base, root = server
    writer = tz.LocalStore(root / "own-check")
    writer.set("k", b"hello")
    writer.set("c/0", b"chunk")
    seen: list[str] = []

    async def record(response: Any) -> None:
        seen.append(response.url.path)
        response.raise_for_status()

    def options(hook: Any) -> dict[str, Any]:
        return (
            {"raise_for_status": hook}
            if where == "storage_options"
            else {"client_kwargs": {"raise_for_status": hook}}
        )

    store = FsspecStore(f"{base}/own-check", options(record), retries=0)
    assert store.exists("k") and store.getsize("k") == 5  # not a keyword passed twice
    assert store.get_many(["k", "missing", "c"]) == {"k": b"hello", "missing": None, "c": None}
    assert store.get_range("k", ByteRange(1, 3)) == b"ell"
    assert store.list_dir("") == (["k"], ["c"])
    assert "/own-check/k" in seen and "/own-check/missing" in seen  # its 404: a missing key
    assert "/own-check/" in seen  # listings call it too
    assert store.storage_options == options(record)  # what pickles and names the store

    async def refuse(response: Any) -> None:
        raise PermissionError(f"no access to {response.url.path}")

    refusing = FsspecStore(f"{base}/own-check", options(refuse), retries=0)
    with pytest.raises(tz.errors.StoreError, match="no access to /own-check/k"):
        refusing.get("k")
    plain = FsspecStore(f"{base}/own-check", options(True), retries=0)
    assert plain.get_many(["k", "missing"]) == {"k": b"hello", "missing": None}
    assert plain.exists("k") and not plain.exists("missing") and not plain.exists("c")


class _SendsNoLength(_IgnoresRange):
    """Answers without Content-Length (the body ends when the connection closes)."""

    protocol_version = "HTTP/1.0"

    def send_header(self, keyword: str, value: str) -> None:
        if keyword.lower() != "content-length":
            super().send_header(keyword, value)


def test_a_server_that_sends_no_length_still_gives_sizes_and_loads(tmp_path: Path) -> None:
    import torch

    tz.LocalStore(tmp_path / "plain").set("k", b"hello")
    tz.save_checkpoint({"w": torch.arange(4.0), "n": 3}, tmp_path / "ckpt")
    with _serving(_SendsNoLength, tmp_path) as base:
        store = FsspecStore(f"{base}/plain", retries=0)
        assert store.exists("k") and store.getsize("k") == 5
        assert not store.exists("missing") and store.getsize("missing") is None
        loaded = tz.load_checkpoint(f"{base}/ckpt")
        assert torch.equal(loaded["w"], torch.arange(4.0)) and loaded["n"] == 3


class _SendsBlocks(_IgnoresRange):
    """Answers ``bytes=a-b`` with status 206 and more than asked for: the 4-byte aligned
    block around it (``bytes 4-7/16`` for ``bytes=5-6``), or with ``whole`` set, all of
    the file, each with a correct Content-Range."""

    whole = False

    def send_head(self) -> Any:
        match = _RANGE.fullmatch(self.headers.get("Range", ""))
        path = Path(self.translate_path(self.path))
        if match is None or not match.group(1) or not path.is_file():
            return super().send_head()
        data = path.read_bytes()
        first, last = int(match.group(1)), int(match.group(2) or len(data) - 1)
        start, end = (0, len(data)) if self.whole else (first // 4 * 4, (last // 4 + 1) * 4)
        end = min(end, len(data))
        _send_part(self, data, start, end)
        return None


class _SendsWholeAs206(_SendsBlocks):
    whole = True


def test_an_answer_longer_than_the_range_is_never_cut_at_the_wrong_offset(
    tmp_path: Path,
) -> None:
    tz.LocalStore(tmp_path / "kv").set("k", b"0123456789abcdef")
    with _serving(_SendsWholeAs206, tmp_path) as base:  # as long as the object: cut from it
        store = FsspecStore(f"{base}/kv", retries=0)
        assert store.get_range("k", ByteRange(5, 2)) == b"56"
        assert store.get_ranges([("k", ByteRange(6, 5)), ("k", ByteRange(0, 1))]) == [
            b"6789a",
            b"0",
        ]
    with _serving(_SendsBlocks, tmp_path) as base:  # an aligned block: cannot be placed
        store = FsspecStore(f"{base}/kv", retries=0)
        with pytest.raises(tz.errors.StoreError) as info:
            store.get_range("k", ByteRange(5, 2))  # the block 4-7: b"4567", not b"56"
        assert str(info.value) == (
            f"cannot read 'k' at '{base}/kv': asked for bytes 5-6 (2 bytes), the server "
            "sent 4 bytes, neither that range nor the whole object of 16 bytes"
        )
        assert store.get_range("k", ByteRange(4, 4)) == b"4567"  # exactly a block: fine
