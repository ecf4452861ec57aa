"""FsspecStore settings (retries, retry_backoff, timeout, storage_options) are checked up front."""

from __future__ import annotations

import math
from typing import Any

import pytest

import torchzarr as tz
from torchzarr.config import config
from torchzarr.errors import ArgumentTypeError, InvalidArgumentError
from torchzarr.storage.fsspec_store import FsspecStore

URL = "s3://bucket/x"

BAD_SETTINGS = [
    {"timeout": "5"},
    {"timeout": math.nan},
    {"timeout": 0},
    {"timeout": math.inf},
    {"retries": "3"},
    {"retries": 1.5},
    {"retries": True},
    {"retries": -1},
    {"retry_backoff": "0.1"},
    {"retry_backoff": math.inf},
    {"retry_backoff": -0.5},
]


@pytest.mark.parametrize("setting", BAD_SETTINGS, ids=repr)
def test_bad_settings_are_refused_naming_the_setting_and_the_url(setting: dict[str, Any]) -> None:
    (name,) = setting
    with pytest.raises(InvalidArgumentError) as from_config:
        config.set(**setting)
    message = rf"'{URL}'.*setting '{name}'"
    with pytest.raises(InvalidArgumentError, match=message) as from_store:
        FsspecStore(URL, **setting)
    assert str(from_config.value) in str(from_store.value)  # the checks of tz.config.set
    with pytest.raises(InvalidArgumentError, match=message):
        FsspecStore.from_url(URL, {"anon": True, **setting})
    with pytest.raises(InvalidArgumentError, match=message):  # before any request
        tz.open_array(URL, mode="r", storage_options={"anon": True, **setting})


def test_storage_options_must_be_a_mapping() -> None:
    with pytest.raises(ArgumentTypeError, match=r"storage_options of 's3://bucket/x'.*'anon'"):
        FsspecStore(URL, "anon")  # type: ignore[arg-type]
    with pytest.raises(ArgumentTypeError, match=r"storage_options of 's3://bucket/x'.*list"):
        FsspecStore.from_url(URL, [("anon", True)])  # type: ignore[arg-type]


def test_good_settings_and_defaults() -> None:
    store = FsspecStore.from_url(URL, {"retries": 0, "retry_backoff": 0, "timeout": None})
    assert (store.retries, store.retry_backoff, store.timeout) == (0, 0, None)
    assert store.storage_options == {}
    with config.set(retries=7, timeout=9.5):
        store = FsspecStore(URL, {"anon": True}, retries=None)
    assert (store.retries, store.timeout) == (7, 9.5)
    assert store.storage_options == {"anon": True}


def test_the_constructor_takes_settings_riding_in_storage_options_as_open_does() -> None:
    options = {"anon": True, "retries": 0, "timeout": 5, "read_only": True}
    store = FsspecStore(URL, options)  # as the docs build stores to wrap them
    assert (store.retries, store.timeout, store.read_only) == (0, 5, True)
    assert store.storage_options == {"anon": True}  # nothing of them reaches fsspec
    assert FsspecStore(URL, {"retries": 2}, retries=2).retries == 2
    with pytest.raises(InvalidArgumentError, match="retries given twice"):
        FsspecStore(URL, {"retries": 1}, retries=2)


def test_numpy_numbers_count_as_the_python_numbers() -> None:
    np = pytest.importorskip("numpy")
    store = FsspecStore(
        URL, retries=np.int64(2), retry_backoff=np.float32(0.5), timeout=np.float64(4.5)
    )
    assert (store.retries, store.retry_backoff, store.timeout) == (2, 0.5, 4.5)
    assert type(store.retries) is int and type(store.timeout) is float
    with pytest.raises(InvalidArgumentError, match="retries"):
        FsspecStore(URL, retries=np.float64(1.5))


def test_a_password_in_the_url_is_masked_wherever_the_store_is_shown() -> None:
    import pickle

    pytest.importorskip("aiohttp")
    url = "http://alice:s3cr3t@127.0.0.1:1/data.zarr"  # nothing listens on port 1
    store = FsspecStore(url, retries=0, timeout=5)
    assert repr(store) == "FsspecStore('http://alice:***@127.0.0.1:1/data.zarr', read-only)"
    assert store.identity == "http://alice:***@127.0.0.1:1/data.zarr"
    other = FsspecStore("http://alice:other@127.0.0.1:1/data.zarr")
    assert other.identity == store.identity  # the same data: shared locks and caches
    assert pickle.loads(pickle.dumps(store)).url == url  # workers still sign in
    with pytest.raises(tz.errors.StoreError) as info:
        store.get("zarr.json")
    assert "alice:***@127.0.0.1:1" in str(info.value) and "s3cr3t" not in str(info.value)
    with pytest.raises(InvalidArgumentError) as bad:
        FsspecStore("s3://key:secret@bucket/x", retries=-1)
    assert "s3://key:***@bucket/x" in str(bad.value) and "secret" not in str(bad.value)
    assert "secret" not in repr(FsspecStore("s3://key:secret@bucket/x"))


class _HostFromUrl:
    """An fsspec filesystem that, as FTPFileSystem, needs its host and port from the URL."""

    def __init__(self, host: str, port: int = 21, **options: Any) -> None:
        self.host, self.port, self.options = host, port, options

    @staticmethod
    def _get_kwargs_from_urls(url: str) -> dict[str, Any]:
        from fsspec.utils import infer_storage_options

        found = infer_storage_options(url)
        return {"host": found["host"], "port": found["port"], "user": "from-url"}

    @classmethod
    def _strip_protocol(cls, path: str) -> str:
        return "/" + path.split("://", 1)[-1].split("/", 1)[-1]


def test_the_options_a_url_carries_reach_the_filesystem(monkeypatch: pytest.MonkeyPatch) -> None:
    from fsspec.registry import _registry, known_implementations

    monkeypatch.setitem(_registry, "hostedtest", _HostFromUrl)
    monkeypatch.setitem(known_implementations, "hostedtest", {"class": "_HostFromUrl"})
    store = FsspecStore("hostedtest://127.0.0.1:2121/x.zarr", {"user": "given"})
    fs = store.fs  # was: TypeError, __init__() missing 'host'
    assert (fs.host, fs.port, fs.options["user"]) == ("127.0.0.1", 2121, "given")
    assert store.paths.root == "/x.zarr"


@pytest.mark.parametrize("value", ["false", "True", 0, 1, None], ids=repr)
def test_read_only_must_be_a_bool(value: Any) -> None:
    message = rf"'{URL}'.*read_only must be True or False, got {type(value).__name__}"
    with pytest.raises(ArgumentTypeError, match=message):
        FsspecStore(URL, {"read_only": value})
    with pytest.raises(ArgumentTypeError, match=message):
        FsspecStore(URL, read_only=value)
    assert FsspecStore(URL, {"read_only": False}).read_only is False
