"""RedisStore next to names other clients wrote below its prefix, and values over Redis's limit."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import pytest
import torch

import torchzarr as tz
from torchzarr.errors import StoreError
from torchzarr.storage import redis as redis_store
from torchzarr.storage.redis import RedisStore

if TYPE_CHECKING:
    from services.servers import RedisService

pytestmark = pytest.mark.services


def _group_with_foreign_names(server: RedisService, names: list[bytes]) -> tuple[str, RedisStore]:
    """A group with an array under a fresh prefix, and ``names`` set by another client."""
    prefix = server.unique_prefix("foreign")
    store = RedisStore(server.url, prefix=prefix)
    tz.open_group(store, mode="w").create_array("a", data=torch.arange(4))
    for name in names:
        store.client.set(prefix.encode() + b"/" + name, b"written by another client")
    return prefix, store


def _stored(store: RedisStore, prefix: str) -> list[bytes]:
    return sorted(store.client.scan_iter(match=prefix.encode() + b"/*"))


def test_a_name_that_is_not_utf8_is_skipped_with_a_warning(redis_server: RedisService) -> None:
    prefix, store = _group_with_foreign_names(redis_server, [b"junk\xff"])
    with pytest.warns(UserWarning, match=rf"RedisStore skips '{prefix}/junk\\xff'.*not UTF-8"):
        assert sorted(store.list_prefix("")) == ["a/c/0", "a/zarr.json", "zarr.json"]
    assert sorted(tz.open_group(store, mode="r").keys()) == ["a"]
    tz.open_group(store, mode="w")
    assert _stored(store, prefix) == [f"{prefix}/zarr.json".encode()]


def test_names_with_empty_or_dot_components_are_skipped_and_cleared(
    redis_server: RedisService,
) -> None:
    prefix, store = _group_with_foreign_names(redis_server, [b"/x", b"b/../c", b"d/./e", b"f/"])
    with pytest.warns(UserWarning) as caught:
        assert sorted(store.list_prefix("")) == ["a/c/0", "a/zarr.json", "zarr.json"]
    shown = sorted(str(w.message).split("'")[1] for w in caught)
    assert shown == [f"{prefix}//", f"{prefix}/b/..", f"{prefix}/d/.", f"{prefix}/f/"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per name
        assert store.list_dir("") == (["zarr.json"], ["a"])
        assert sorted(tz.open_group(store, mode="r").keys()) == ["a"]
    store.delete_prefix("b/")
    assert f"{prefix}/b/../c".encode() not in _stored(store, prefix)
    tz.open_group(store, mode="w")
    assert _stored(store, prefix) == [f"{prefix}/zarr.json".encode()]


def test_a_value_over_the_limit_is_refused_before_anything_is_sent(
    redis_server: RedisService, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_store, "MAX_VALUE_BYTES", 1000)  # 512 MiB, made small
    prefix = redis_server.unique_prefix("big")
    store = RedisStore(redis_server.url, prefix=prefix)
    match = r"cannot write 'c/1' at 'redis://.*': its value of 1001 bytes is over .* 1000 bytes"
    with pytest.raises(StoreError, match=match):
        store.set("c/1", b"x" * 1001)
    with pytest.raises(StoreError, match=match):
        store.set_many({"c/0": b"small", "c/1": b"x" * 1001})
    assert _stored(store, prefix) == []  # not even the small value went
    store.set_many({"c/0": b"x" * 1000})  # up to the limit is fine
    assert store.get("c/0") == b"x" * 1000


def test_a_failed_write_names_the_key_not_the_redis_name(
    redis_server: RedisService, monkeypatch: pytest.MonkeyPatch
) -> None:
    import redis

    store = RedisStore(redis_server.url, prefix="exp")

    def refused(*args: object) -> None:
        raise redis.ConnectionError("Connection reset by peer")

    monkeypatch.setattr(store.client, "mset", refused)
    with pytest.raises(StoreError, match=r"cannot write 'c/1' at 'redis://") as info:
        store.set_many({"c/1": b"v", "c/2": b"w"})
    assert "exp/c/1" not in str(info.value)
