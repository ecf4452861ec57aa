"""FsspecStore without servers: fsspec's memory://, file://, a loopback http://, and faults."""

from __future__ import annotations

import functools
import http.server
import os
import pickle
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pytest
import torch
from http_serving import serving
from hypothesis import given, settings
from hypothesis import strategies as st

import torchzarr as tz
from torchzarr.errors import (
    InvalidArgumentError,
    InvalidKeyError,
    MissingDependencyError,
    ReadOnlyError,
    StoreError,
    UnknownStoreError,
)
from torchzarr.storage.base import ByteRange
from torchzarr.storage.fsspec_store import FsspecStore


def memory_url() -> str:
    return f"memory://tz-{uuid.uuid4().hex}/root"


@pytest.fixture(params=["memory", "file"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> FsspecStore:
    if request.param == "memory":
        return FsspecStore(memory_url(), retry_backoff=0)
    return FsspecStore(f"file://{tmp_path}/root", retry_backoff=0)


class CountingCalls:
    """Wraps one method of a filesystem; records each call's first argument."""

    def __init__(self, fs: Any, name: str, fail_first: int = 0, exc: Exception | None = None):
        self.inner = getattr(fs, name)
        self.calls: list[Any] = []
        self.fail_first = fail_first
        self.exc = exc or ConnectionError("connection reset by peer")
        setattr(fs, name, self)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append(args[0] if args else None)
        if len(self.calls) <= self.fail_first:
            raise self.exc
        return self.inner(*args, **kwargs)


# -- the Store protocol ------------------------------------------------------------------------
def test_get_set_overwrite_and_missing(store: FsspecStore) -> None:
    assert store.get("a/b") is None
    store.set("a/b", b"first")
    store.set("a/b", memoryview(b"second"))
    assert store.get("a/b") == b"second"
    assert store.exists("a/b") and not store.exists("a") and not store.exists("zz")
    assert store.getsize("a/b") == 6 and store.getsize("a") is None and store.getsize("q") is None


def test_get_many_missing_and_duplicates(store: FsspecStore) -> None:
    store.set_many({f"c/{i}": bytes([i]) * i for i in range(5)})
    got = store.get_many(["c/3", "c/9", "c/0", "c/3"])
    assert got == {"c/3": b"\x03" * 3, "c/9": None, "c/0": b""}
    assert store.get_many([]) == {}


def test_ranges_follow_byte_range_semantics(store: FsspecStore) -> None:
    value = bytes(range(10))
    store.set("k", value)
    store.set("empty", b"")
    ranges = [ByteRange(2, 3), ByteRange(-3), ByteRange(-30), ByteRange(20), ByteRange(3, 0)]
    ranges += [ByteRange(8, 10), ByteRange(0), ByteRange(10)]
    for rng in ranges:
        assert store.get_range("k", rng) == rng.slice(value), rng
        assert store.get_range("missing", rng) is None, rng
    assert store.get_range("empty", ByteRange(-4)) == b""
    got = store.get_ranges(
        [("k", ByteRange(-2)), ("nope", ByteRange(0, 1)), ("k", ByteRange(1, 2))]
    )
    assert got == [value[-2:], None, value[1:3]]
    assert store.get_ranges([]) == []


def test_a_range_longer_than_the_value_reads_what_there_is(store: FsspecStore) -> None:
    store.set("k", b"0123456789")
    huge = 1 << 40  # a read must not take memory for every byte asked for
    assert store.get_range("k", ByteRange(0, huge)) == b"0123456789"
    assert store.get_range("k", ByteRange(4, huge)) == b"456789"
    assert store.get_range("k", ByteRange(20, huge)) == b""
    assert store.get_ranges([("k", ByteRange(8, huge)), ("missing", ByteRange(0, huge))]) == [
        b"89",
        None,
    ]


def test_listing(store: FsspecStore) -> None:
    keys = ["zarr.json", "a/zarr.json", "a/c/0/0", "a/c/0/1", "ab/x", "b/c/d/e"]
    store.set_many({k: b"1" for k in keys})
    assert sorted(store.list_prefix("")) == sorted(keys)
    assert sorted(store.list_prefix("a/")) == ["a/c/0/0", "a/c/0/1", "a/zarr.json"]
    assert sorted(store.list_prefix("a")) == ["a/c/0/0", "a/c/0/1", "a/zarr.json", "ab/x"]
    assert sorted(store.list_prefix("a/c/0/")) == ["a/c/0/0", "a/c/0/1"]
    assert list(store.list_prefix("nothing/")) == []
    assert store.list_dir("") == (["zarr.json"], ["a", "ab", "b"])
    assert store.list_dir("a/") == (["zarr.json"], ["c"])
    assert store.list_dir("a") == (["zarr.json"], ["c"])
    assert store.list_dir("b/c/") == ([], ["d"])
    assert store.list_dir("none/") == ([], [])


def test_delete_and_delete_many(store: FsspecStore) -> None:
    store.set_many({"d/1": b"1", "d/2": b"2", "d/3": b"3", "e": b"4"})
    store.delete("d/1")
    store.delete("never-there")
    store.delete_many(["d/2", "missing/key", "e"])
    assert sorted(store.list_prefix("")) == ["d/3"]
    store.delete_prefix("d/")
    assert list(store.list_prefix("")) == []
    assert store.list_dir("") == ([], [])


def test_glob_characters_in_keys_are_literal(store: FsspecStore) -> None:
    store.set_many({"g/a*b": b"1", "g/a?b": b"2", "g/axb": b"3"})
    assert store.get_many(["g/a*b", "g/a?b"]) == {"g/a*b": b"1", "g/a?b": b"2"}
    store.delete_many(["g/a*b", "g/a?b"])
    assert sorted(store.list_prefix("g/")) == ["g/axb"]


def test_invalid_keys_are_rejected(store: FsspecStore) -> None:
    for key in ["../x", "/abs", "a//b", ""]:
        with pytest.raises(InvalidKeyError):
            store.get(key)
        with pytest.raises(InvalidKeyError):
            store.set(key, b"")


def test_file_writes_are_atomic_and_leave_no_debris(tmp_path: Path) -> None:
    store = FsspecStore(f"file://{tmp_path}/r")
    store.set("x/y", b"1" * 1000)
    store.set("x/y", b"2")
    names = [p.name for p in (tmp_path / "r" / "x").iterdir()]
    assert names == ["y"] and store.get("x/y") == b"2"
    partial = tmp_path / "r" / "x" / f".y.{uuid.uuid4().hex}.partial"
    partial.write_bytes(b"half")  # a write in flight is no key
    assert list(store.list_prefix("")) == ["x/y"]
    assert store.list_dir("x/") == (["y"], [])
    partial.unlink()
    store.delete("x/y")
    assert not (tmp_path / "r" / "x").exists()  # emptied directories are pruned


def test_file_keys_ending_in_partial_are_listed(tmp_path: Path) -> None:
    store = FsspecStore(f"file://{tmp_path}/r")
    store.set_many({"results/epoch3.partial": b"user data", "results/.x.partial": b"y"})
    assert sorted(store.list_prefix("")) == ["results/.x.partial", "results/epoch3.partial"]
    assert store.list_dir("results/") == ([".x.partial", "epoch3.partial"], [])


@settings(max_examples=25, deadline=None)
@given(
    items=st.dictionaries(
        # keys of one depth: a file system cannot hold both "a" and "a/b"
        st.lists(st.sampled_from("abc"), min_size=2, max_size=2).map("/".join),
        st.binary(max_size=40),
        max_size=8,
    ),
    start=st.integers(-50, 50),
    length=st.none() | st.integers(0, 50),
)
def test_roundtrip_property(items: dict[str, bytes], start: int, length: int | None) -> None:
    store = FsspecStore(memory_url())
    store.set_many(items)
    keys = [*items, "zz"]
    assert store.get_many(keys) == {**items, "zz": None}
    rng = ByteRange(start, None if start < 0 else length)
    assert store.get_ranges([(k, rng) for k in keys]) == [
        *(rng.slice(v) for v in items.values()),
        None,
    ]
    assert sorted(store.list_prefix("")) == sorted(items)


# -- batching, retries, timeouts ---------------------------------------------------------------
def test_get_many_is_one_batched_call() -> None:
    store = FsspecStore(memory_url())
    store.set_many({f"c/{i}": str(i).encode() for i in range(50)})
    cat_ranges = CountingCalls(store.fs, "cat_ranges")
    cat_file = CountingCalls(store.fs, "cat_file")
    got = store.get_many([f"c/{i}" for i in range(50)])
    assert got == {f"c/{i}": str(i).encode() for i in range(50)}
    assert len(cat_ranges.calls) == 1 and len(cat_ranges.calls[0]) == 50
    store.get_ranges([(f"c/{i}", ByteRange(0, 1)) for i in range(50)])
    assert len(cat_ranges.calls) == 2
    assert len(cat_file.calls) == 100  # the memory fs serves a batch key by key, in process


def test_set_many_is_one_batched_call() -> None:
    store = FsspecStore(memory_url())
    pipe = CountingCalls(store.fs, "pipe")
    store.set_many({f"k/{i}": b"v" for i in range(20)})
    assert len(pipe.calls) == 1 and len(pipe.calls[0]) == 20


def test_transient_errors_are_retried() -> None:
    store = FsspecStore(memory_url(), retries=3, retry_backoff=0)
    store.set("k", b"v")
    wrapper = CountingCalls(store.fs, "cat_ranges", fail_first=2)
    assert store.get("k") == b"v"
    assert len(wrapper.calls) == 3


def test_only_failed_keys_are_retried() -> None:
    store = FsspecStore(memory_url(), retries=2, retry_backoff=0)
    store.set_many({"a": b"1", "b": b"2"})
    inner = store.fs.cat_ranges
    seen: list[list[str]] = []

    def flaky(paths: list[str], *args: Any, **kwargs: Any) -> list[Any]:
        seen.append(list(paths))
        out = inner(paths, *args, **kwargs)
        if len(seen) == 1:  # the first attempt drops the connection for "b" only
            out[1] = TimeoutError("read timed out")
        return out

    store.fs.cat_ranges = flaky
    assert store.get_many(["a", "b"]) == {"a": b"1", "b": b"2"}
    assert [len(p) for p in seen] == [2, 1] and seen[1][0].endswith("/b")


def test_retries_give_up_with_a_store_error() -> None:
    store = FsspecStore(memory_url(), retries=1, retry_backoff=0)
    store.set("k", b"v")
    wrapper = CountingCalls(store.fs, "cat_ranges", fail_first=10)
    with pytest.raises(StoreError, match=r"cannot read 'k' at 'memory://.*after 2 attempts"):
        store.get("k")
    assert len(wrapper.calls) == 2
    pipe = CountingCalls(store.fs, "pipe", fail_first=10, exc=TimeoutError("slow"))
    with pytest.raises(StoreError, match=r"cannot write 'x'.*after 2 attempts.*slow"):
        store.set("x", b"1")
    assert len(pipe.calls) == 2


def test_errors_name_the_key_that_failed_not_the_batch() -> None:
    store = FsspecStore(memory_url(), retries=0, retry_backoff=0)
    inner = store.fs.pipe_file

    def refuse_c3(path: str, value: bytes, **kwargs: Any) -> None:
        if path.endswith("/c/3"):
            raise PermissionError("denied")
        inner(path, value, **kwargs)

    store.fs.pipe = lambda paths, **kw: [refuse_c3(p, v) for p, v in paths.items()]
    store.fs.pipe_file = refuse_c3
    one_by_one = CountingCalls(store.fs, "pipe_file")
    with pytest.raises(StoreError, match=r"cannot write 'c/3' at .*denied"):
        store.set_many({f"c/{i}": b"v" for i in range(6)})
    assert len(one_by_one.calls) == 4  # the batch failed, then c/0..c/3 one by one
    CountingCalls(store.fs, "cat_ranges", fail_first=10, exc=ValueError("bad request"))
    with pytest.raises(StoreError, match=r"cannot read 'c/0 \(and 2 more keys sent with it\)'"):
        store.get_many(["c/0", "c/1", "c/2"])


def test_permanent_errors_are_not_retried() -> None:
    store = FsspecStore(memory_url(), retries=5, retry_backoff=0)
    store.set("k", b"v")
    wrapper = CountingCalls(store.fs, "cat_ranges", fail_first=10, exc=ValueError("bad request"))
    with pytest.raises(StoreError, match=r"cannot read 'k' at 'memory://.*ValueError: bad request"):
        store.get("k")
    assert len(wrapper.calls) == 1


def test_no_timeout_argument_for_sync_filesystems() -> None:
    store = FsspecStore(memory_url(), timeout=7.5)
    calls = CountingCalls(store.fs, "cat_ranges")
    inner = calls.inner
    seen: dict[str, Any] = {}

    def record(*args: Any, **kwargs: Any) -> Any:
        seen.update(kwargs)
        return inner(*args, **kwargs)

    calls.inner = record
    store.get("k")
    assert "timeout" not in seen  # the memory fs is synchronous: it takes no timeout


# -- construction, pickling, fork --------------------------------------------------------------
def test_constructor_does_no_io(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the constructor must not create a filesystem")

    monkeypatch.setattr(fsspec, "get_filesystem_class", boom)
    store = FsspecStore("s3://bucket/path", {"anon": True})
    assert store._fs is None and store.read_only is False
    assert pickle.loads(pickle.dumps(store)) == store


def test_pickles_as_its_spec_and_reopens_lazily() -> None:
    store = FsspecStore(memory_url(), retries=1, retry_backoff=0.5)
    store.set("k", b"v")
    clone = pickle.loads(pickle.dumps(store))
    assert clone._fs is None and clone == store
    assert (clone.retries, clone.retry_backoff, clone.timeout) == (1, 0.5, 120.0)
    assert clone.get("k") == b"v" and clone.fs is not store.fs
    assert set(store.__getstate__()) == {
        "url",
        "storage_options",
        "read_only",
        "retries",
        "retry_backoff",
        "timeout",
        "batch_size",
    }


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_opens_its_own_filesystem() -> None:
    store = FsspecStore(memory_url())
    store.set("k", b"parent")
    parent_fs = store.fs
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        try:
            ok = store.fs is not parent_fs and store.get("k") == b"parent"
            os.write(write_fd, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(write_fd)
    answer = os.read(read_fd, 1)
    os.close(read_fd)
    os.waitpid(pid, 0)
    assert answer == b"1"
    assert store.fs is parent_fs


def test_identity_and_equality() -> None:
    a = FsspecStore("s3://b/p", {"key": "x"})
    # credentials say how to reach the data, not which: one identity, so chunk locks and
    # cached chunks are shared; an endpoint tells data apart
    assert a.identity == FsspecStore("s3://b/p", {"key": "y", "secret": "z"}).identity
    assert FsspecStore("s3://b/p").identity == "s3://b/p" == a.identity
    there = FsspecStore("s3://b/p", {"client_kwargs": {"endpoint_url": "http://h"}, "key": "x"})
    assert (
        there.identity.startswith("s3://b/p#")
        and there.identity
        == FsspecStore("s3://b/p", {"client_kwargs": {"endpoint_url": "http://h"}}).identity
    )
    assert there.identity != FsspecStore("s3://b/p", {"client_kwargs": {}}).identity
    # schemes of the same data, and client settings other than the endpoint, are one data
    assert FsspecStore("s3a://b/p").identity == "s3://b/p"
    assert FsspecStore("gcs://b/p").identity == FsspecStore("gs://b/p").identity
    timed = {"client_kwargs": {"endpoint_url": "http://h", "read_timeout": 5}}
    timed["config_kwargs"] = {"read_timeout": 60}
    assert FsspecStore("s3://b/p", timed).identity == there.identity
    china, virginia = ({"client_kwargs": {"region_name": r}} for r in ("cn-north-1", "us-east-1"))
    assert FsspecStore("s3://b/p", china).identity != FsspecStore("s3://b/p", virginia).identity
    # settings of behaviour reach the same data: a write through one store drops the
    # chunks the other cached
    assert FsspecStore("file:///d", {"auto_mkdir": True, "skip_instance_cache": True}).identity == (
        FsspecStore("file:///d").identity
    )
    assert a == FsspecStore("s3://b/p", {"key": "x"}) and a != FsspecStore("s3://b/p")
    assert hash(a) == hash(FsspecStore("s3://b/p", {"key": "x"}))


def test_from_url_takes_settings_from_storage_options() -> None:
    store = FsspecStore.from_url(
        "memory://x", {"retries": 0, "retry_backoff": 1.5, "timeout": None, "read_only": True}
    )
    assert (store.retries, store.retry_backoff, store.timeout, store.read_only) == (
        0,
        1.5,
        None,
        True,
    )
    assert store.storage_options == {}


def test_with_read_only() -> None:
    store = FsspecStore(memory_url())
    store.set("k", b"v")
    view = store.with_read_only()
    assert view.read_only and view.get("k") == b"v"
    with pytest.raises(ReadOnlyError, match="memory://"):
        view.set("k", b"w")
    with pytest.raises(ReadOnlyError):
        view.delete("k")
    assert not view.with_read_only(False).read_only


# -- errors ------------------------------------------------------------------------------------
def test_unknown_protocol_and_bad_urls() -> None:
    store = FsspecStore("nosuchproto://x/y")
    with pytest.raises(UnknownStoreError, match=r"nosuchproto.*nosuchproto://x/y"):
        store.get("k")
    for url in ["s3://", "gs:///", "simplecache::s3://b/k", ""]:
        with pytest.raises(UnknownStoreError):
            FsspecStore(url)
    with pytest.raises(InvalidArgumentError, match=r"'memory://x'.*'retries'.*-1"):
        FsspecStore("memory://x", retries=-1)


def test_missing_package_gives_an_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(protocol: str) -> Any:
        raise ImportError("Install s3fs to access S3")

    monkeypatch.setattr(fsspec, "get_filesystem_class", missing)
    with pytest.raises(MissingDependencyError, match=r"s3://b/p.*pip install 'torchzarr\[s3\]'"):
        FsspecStore("s3://b/p").get("k")
    with pytest.raises(MissingDependencyError, match=r"torchzarr\[azure\]"):
        FsspecStore("abfs://c/p").get("k")
    with pytest.raises(MissingDependencyError, match=r"torchzarr\[http\].*aiohttp"):
        FsspecStore("https://host/p").get("k")


def test_http_urls_are_read_only_without_io() -> None:
    store = FsspecStore("https://example.invalid/data.zarr")
    assert store.read_only and store._fs is None
    with pytest.raises(ReadOnlyError, match=r"https://example.invalid/data.zarr"):
        store.set("zarr.json", b"{}")
    with pytest.raises(ReadOnlyError, match=r"https://example.invalid/data.zarr"):
        store.set_many({"a": b"", "b": b""})
    with pytest.raises(ReadOnlyError):
        store.delete("zarr.json")
    assert store._fs is None


@pytest.fixture(scope="module")
def http_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    root = tmp_path_factory.mktemp("http")
    with serving(functools.partial(_QuietHandler, directory=str(root))) as url:
        yield url, root


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_http_reads_from_a_loopback_server(http_root: tuple[str, Path]) -> None:
    pytest.importorskip("aiohttp")
    base, root = http_root
    local = tz.create_array(tz.LocalStore(root / "a.zarr"), shape=(6, 4), dtype=torch.int32)
    local[:] = torch.arange(24, dtype=torch.int32).reshape(6, 4)
    store = FsspecStore(f"{base}/a.zarr", retry_backoff=0)
    assert store.get("zarr.json") == (root / "a.zarr" / "zarr.json").read_bytes()
    assert store.get("c/9/9") is None
    # python's http.server ignores Range headers: the store still cuts the right bytes
    whole = store.get("zarr.json")
    assert whole is not None
    assert store.get_range("zarr.json", ByteRange(2, 5)) == whole[2:7]
    assert store.get_range("zarr.json", ByteRange(7)) == whole[7:]  # to the end
    assert store.get_range("zarr.json", ByteRange(-4)) == whole[-4:]
    assert store.get_ranges([("zarr.json", ByteRange(len(whole) + 3))]) == [b""]
    arr = tz.open_array(store, mode="r")
    assert torch.equal(arr[:], local[:])


# -- the public API on top ---------------------------------------------------------------------
@pytest.mark.parametrize("zarr_format", [2, 3])
def test_public_api_end_to_end(zarr_format: int) -> None:
    store = FsspecStore(memory_url())
    data = torch.arange(60 * 7, dtype=torch.float32).reshape(60, 7)
    arr = tz.create_array(
        store, shape=(60, 7), dtype=torch.float32, chunks=(8, 4), zarr_format=zarr_format
    )
    arr[:] = data
    again = tz.open_array(pickle.loads(pickle.dumps(store)), mode="r")
    assert torch.equal(again[:], data)
    assert torch.equal(again[5:33, 1:6], data[5:33, 1:6])
    assert np.array_equal(again.oindex[[1, 50], [0, 6]].numpy(), data[[1, 50]][:, [0, 6]].numpy())


def test_urls_of_one_location_have_one_identity_so_caches_stay_fresh():
    import torchzarr as tz

    assert FsspecStore("memory://same").identity == FsspecStore("memory:///same").identity
    assert FsspecStore("memory://same").identity != FsspecStore("memory://other").identity
    group = tz.open_group(FsspecStore("memory://same"), mode="w")
    group.create_array("a", shape=(8,), dtype="int32", chunks=(2,), shards=(4,))[:] = 1
    cached = tz.open_array(FsspecStore("memory:///same"), path="a", mode="r").with_cache()
    assert cached[:3].tolist() == [1, 1, 1]
    tz.open_array(FsspecStore("memory://same"), path="a", mode="r+")[0:3] = 7
    assert cached[:3].tolist() == [7, 7, 7]
