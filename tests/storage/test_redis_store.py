"""RedisStore against a real redis-server: the store contract, URLs, prefixes and batching."""

from __future__ import annotations

import builtins
import gc
import pickle
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import torch
from store_values import StoreValueChecks

import torchzarr as tz
from torchzarr.errors import (
    InvalidArgumentError,
    MissingDependencyError,
    StoreError,
    UnknownStoreError,
)
from torchzarr.storage.base import ByteRange, Store
from torchzarr.storage.redis import RedisStore
from torchzarr.storage.registry import resolve_store
from torchzarr.testing.store_contract import StoreContract

if TYPE_CHECKING:
    from services.servers import RedisService

pytestmark = pytest.mark.services


class TestRedisStore(StoreContract, StoreValueChecks):
    @pytest.fixture(autouse=True)
    def _server(self, redis_server: RedisService) -> None:
        self.server = redis_server

    def make_store(self, tmp_path: Path) -> Store:
        return RedisStore(self.server.url, prefix=self.server.unique_prefix("contract"))


def test_url_with_prefix_round_trip(redis_server: RedisService) -> None:
    prefix = redis_server.unique_prefix("url")
    url = f"{redis_server.url}/{prefix}/arrays"
    arr = tz.create_array(url, shape=(3, 4), dtype=torch.uint8, chunks=(2, 2))
    data = torch.arange(12, dtype=torch.uint8).reshape(3, 4)
    arr[:] = data
    assert torch.equal(tz.open_array(url)[:], data)
    store = resolve_store(url, mode="r")
    assert isinstance(store, RedisStore) and store.read_only
    assert store.prefix == f"{prefix}/arrays/"
    # the same data through an explicit prefix, and nothing outside it
    other = RedisStore(redis_server.url, prefix=f"{prefix}/arrays")
    assert other.get("zarr.json") == store.get("zarr.json") is not None
    assert sorted(RedisStore(redis_server.url, prefix=prefix).list_prefix("")) == sorted(
        f"arrays/{k}" for k in store.list_prefix("")
    )


def test_prefixes_with_glob_characters_are_literal(redis_server: RedisService) -> None:
    base = redis_server.unique_prefix("glob")
    star = RedisStore(redis_server.url, prefix=f"{base}/a*")
    plain = RedisStore(redis_server.url, prefix=f"{base}/ab")
    star.set("k", b"1")
    plain.set("k", b"2")
    assert list(star.list_prefix("")) == ["k"] and star.get("k") == b"1"
    star.set("[x]?", b"3")
    assert sorted(star.list_prefix("[")) == ["[x]?"]


def test_get_many_is_one_mget_per_batch(
    redis_server: RedisService, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = RedisStore(redis_server.url, prefix=redis_server.unique_prefix("mget"))
    store.set_many({f"k/{i}": b"v" for i in range(2500)})
    calls: list[int] = []
    real_mget = store.client.mget
    monkeypatch.setattr(
        store.client, "mget", lambda names: calls.append(len(names)) or real_mget(names)
    )
    got = store.get_many([f"k/{i}" for i in range(2500)] + ["nope"])
    assert calls == [1000, 1000, 501]
    assert got["nope"] is None and sum(v == b"v" for v in got.values()) == 2500
    assert store.get_range("k/7", ByteRange(0, 0)) == b""
    assert store.get_range("nope", ByteRange(0, 0)) is None


def test_pickle_and_password_redaction(redis_server: RedisService) -> None:
    store = RedisStore(
        f"redis://user:secret@127.0.0.1:{redis_server.port}/0", prefix="p", socket_timeout=2
    )
    assert "secret" not in repr(store) and "secret" not in store.identity
    clone = pickle.loads(pickle.dumps(store))
    assert clone == store and clone.client_options == {"socket_timeout": 2}
    with pytest.raises(StoreError) as info:
        clone.get("k")  # the server has no such user
    assert "secret" not in str(info.value) and "127.0.0.1" in str(info.value)


def test_options_redis_does_not_take_are_refused_when_the_store_is_made() -> None:
    with pytest.raises(UnknownStoreError, match=r"invalid storage_options \['sockettimeout'\]"):
        tz.open_group("redis://127.0.0.1:1/0/x", mode="a", storage_options={"sockettimeout": 5})
    RedisStore("redis://127.0.0.1:1/0", socket_timeout=1)  # real ones: no server needed
    RedisStore("redis://127.0.0.1:1/0", single_connection_client=True)  # Redis.from_url's own


@pytest.mark.parametrize(
    ("url", "options"),
    [
        ("redis://127.0.0.1:1/0", {"decode_responses": True}),
        ("redis://127.0.0.1:1/0?decode_responses=False", {}),  # redis-py decodes: any value
    ],
)
def test_decoded_responses_are_refused_when_the_store_is_made(url: str, options: Any) -> None:
    with pytest.raises(InvalidArgumentError, match="needs bytes responses"):
        RedisStore(url, **options)  # get() would raise a raw TypeError later
    with pytest.raises(InvalidArgumentError, match="decode_responses"):
        tz.open_group("redis://127.0.0.1:1/0/x", mode="a", storage_options={"decode_responses": 1})
    RedisStore("redis://127.0.0.1:1/0", decode_responses=False)  # bytes: taken


def test_unreachable_server_names_the_url() -> None:
    store = RedisStore("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    with pytest.raises(StoreError, match=r"redis://127\.0\.0\.1:1/0"):
        store.get("k")


def test_bad_urls() -> None:
    with pytest.raises(UnknownStoreError, match="redis"):
        RedisStore("http://example.com")
    with pytest.raises(UnknownStoreError, match="prefix"):
        resolve_store("redis://h:1/0/p", mode="r", storage_options={"prefix": "q"})
    with pytest.raises(UnknownStoreError, match="invalid storage_options"):
        resolve_store("redis://h:1/0", mode="r", storage_options={"prefix": "q", "url": "x"})


def test_a_database_that_is_no_number_is_refused(redis_server: RedisService) -> None:
    # redis-py would read redis://host:port/exp1 as the whole of database 0: mode="w" wiped it
    prefix = redis_server.unique_prefix("keep")
    RedisStore(redis_server.url, prefix=prefix).set("k", b"kept")
    url = f"redis://127.0.0.1:{redis_server.port}/{prefix}"
    for bad in (url, url + "/exp", url.replace("redis://", "redis://user:secret@")):
        with pytest.raises(UnknownStoreError, match="must be a number") as info:
            tz.open_group(bad, mode="w")
        assert prefix in str(info.value) and "secret" not in str(info.value)
    assert RedisStore(redis_server.url, prefix=prefix).get("k") == b"kept"
    for bad in (url, f"{redis_server.url}/{prefix}", "redis://h:1/\u0662"):
        with pytest.raises(UnknownStoreError, match="redis://"):
            RedisStore(bad)  # the prefix goes in prefix=; redis-py would use database 0
    assert RedisStore.from_url("redis://h:1").url == "redis://h:1"  # no number: database 0


def test_missing_package_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def fake_import(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "redis":
            raise ImportError("No module named 'redis'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(MissingDependencyError, match="pip install redis"):
        RedisStore("redis://127.0.0.1:1/0").get("k")


def test_the_identity_names_the_database_whichever_way_it_is_given() -> None:
    def identity(url: str, **options: Any) -> str:
        return RedisStore(url, prefix="exp", **options).identity

    same = {
        identity("redis://Cache:6379"),
        identity("redis://cache"),
        identity("redis://cache:6379/0"),
        identity("redis://user:secret@cache:6379/0"),  # credentials reach the same data
        identity("redis://cache:6379", db=0),
    }
    assert same == {"redis://cache:6379/0/exp/"}
    other = [
        identity("redis://cache:6379", db=1),
        identity("redis://cache:6379/1"),
        identity("redis://cache:6379?db=1"),
    ]
    assert set(other) == {"redis://cache:6379/1/exp/"}
    assert identity("redis://cache:6379/2", db=1) == "redis://cache:6379/2/exp/"  # the URL wins
    assert identity("redis://cache:6380") != identity("redis://cache:6379")
    assert identity("unix:///run/redis.sock", db=3) == "unix:///run/redis.sock?db=3/exp/"


def test_a_store_rooted_at_an_array_shares_its_groups_cached_chunks(
    redis_server: RedisService,
) -> None:
    # the root of a database of its own (no prefix: "x" is a key's first component)
    database = f"redis://127.0.0.1:{redis_server.port}/7"
    whole = RedisStore(database)
    whole.delete_prefix("")
    root = tz.open_group(whole, mode="w")
    root.create_array("x", shape=(4,), dtype=torch.int32, chunks=(2,))[:] = 1
    direct = RedisStore(database, prefix="x")
    cached = tz.open_array(direct, mode="r").with_cache()
    assert cached[:].tolist() == [1] * 4
    root["x"][:] = 2  # the write through the group's store drops the other's chunks
    assert cached[:].tolist() == [2] * 4
    via_root = root["x"].with_cache()
    assert via_root[:].tolist() == [2] * 4
    tz.open_array(RedisStore(database, prefix="x"), mode="r+")[:] = 3
    assert via_root[:].tolist() == [3] * 4
    whole.delete_prefix("")


def _clients(redis_server: RedisService, name: str) -> list[dict[str, Any]]:
    """The connections of clients named ``name`` that the server holds now."""
    import redis

    with redis.Redis(port=redis_server.port) as admin:
        return [c for c in admin.client_list() if c.get("name") == name]


@pytest.mark.parametrize("single", [False, True])
def test_close_lets_a_call_in_flight_finish_and_releases_its_connection(
    redis_server: RedisService, single: bool
) -> None:
    name = redis_server.unique_prefix("closing")
    options: dict[str, Any] = {"client_name": name, "single_connection_client": single}
    store = RedisStore(redis_server.url, prefix=name, **options)
    store.set("k", b"1")
    results: list[Any] = []
    waiting = threading.Thread(  # a call that takes a while on the server: 1 s
        target=lambda: results.append(store._run("read", "k", store.client.blpop, ["no"], 1))
    )
    waiting.start()
    deadline = time.monotonic() + 30
    while not any(c["cmd"] == "blpop" for c in _clients(redis_server, name)):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    store.close()  # another thread releasing connections meanwhile
    waiting.join(30)
    assert results == [None]  # the call ran to its end, no error
    assert store.get("k") == b"1"  # a new client
    store.close()
    gc.collect()
    assert _clients(redis_server, name) == []  # the old client's connections closed too


def test_closing_while_threads_read_and_write_fails_none_of_them(
    redis_server: RedisService,
) -> None:
    name = redis_server.unique_prefix("churn")
    arr = tz.create_array(
        RedisStore(redis_server.url, prefix=name, client_name=name),
        shape=(2000,),
        dtype="int32",
        chunks=(10,),
    )
    errors: list[str] = []
    stop = threading.Event()

    def work() -> None:
        while not stop.is_set():
            try:
                arr[:] = 1
                assert int(arr[:].sum()) == 2000
            except Exception as err:  # collected: the assertion below names it
                errors.append(f"{type(err).__name__}: {err}")
                return

    threads = [threading.Thread(target=work) for _ in range(3)]
    for thread in threads:
        thread.start()
    for _ in range(30):
        arr.store.close()
        time.sleep(0.01)
    stop.set()
    for thread in threads:
        thread.join(60)
    assert errors == []
    arr.store.close()
    gc.collect()
    assert _clients(redis_server, name) == []
