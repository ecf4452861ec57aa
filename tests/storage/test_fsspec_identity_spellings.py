"""An FsspecStore's identity names its data, not how its options spell it: one endpoint
written two ways (top-level or in ``client_kwargs``, with a trailing "/", a default port, in
upper case), with or without a region, or one Azure account given by name or by
connection string, is one identity, so chunk locks and caches are shared; other buckets,
endpoints, regions and accounts stay apart."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import pytest
import torch

import torchzarr as tz
from torchzarr.storage import FsspecStore

if TYPE_CHECKING:
    from tests.services.servers import Service

E = "http://127.0.0.1:9000"
_SAME_ENDPOINT: list[dict[str, Any]] = [
    {"endpoint_url": E},
    {"endpoint_url": E + "/"},
    {"endpoint_url": "HTTP://127.0.0.1:9000/", "key": "k", "secret": "s"},
    {"client_kwargs": {"endpoint_url": E}},
    {"client_kwargs": {"endpoint_url": E + "/", "region_name": "us-east-1"}},
    {"client_kwargs": {"endpoint_url": E}, "config_kwargs": {"region_name": "eu-west-1"}},
    {"endpoint_url": E, "client_kwargs": {"region_name": "us-east-1", "read_timeout": 5}},
]


def _identity(options: dict[str, Any], url: str = "s3://bkt/x") -> str:
    return FsspecStore(url, options).identity


def test_spellings_of_one_endpoint_are_one_identity() -> None:
    identities = {_identity(options) for options in _SAME_ENDPOINT}
    assert len(identities) == 1, identities
    assert _identity({"endpoint_url": "https://h:443/"}) == _identity({"endpoint_url": "https://h"})
    assert _identity({"endpoint_url": "http://h:80"}) == _identity({"endpoint_url": "http://H"})
    # gcsfs spells its endpoint the same way
    gcs = {"endpoint_url": E + "/", "token": "anon", "project": "p"}
    assert _identity(gcs, "gs://bkt/x") == _identity({"endpoint_url": E}, "gcs://bkt/x")


def test_other_data_keeps_other_identities() -> None:
    one = _identity({"endpoint_url": E})
    assert one != _identity({"endpoint_url": E}, "s3://other/x")  # another bucket
    assert one != _identity({"endpoint_url": "http://127.0.0.1:9001"})  # another port
    assert one != _identity({"endpoint_url": "https://127.0.0.1:9000"})  # another scheme
    assert one != _identity({"endpoint_url": E + "/tenant"})  # a path-style tenant
    assert one != _identity({})
    # without an endpoint, the region selects the AWS partition (other buckets)
    china, virginia = ({"client_kwargs": {"region_name": r}} for r in ("cn-north-1", "us-east-1"))
    assert _identity(china) != _identity(virginia) != _identity({})
    assert _identity(china) == _identity({"config_kwargs": {"region_name": "cn-north-1"}})


def test_spellings_of_one_azure_account_are_one_identity() -> None:
    name = {"account_name": "acc", "account_key": "k1"}
    assert _identity(name, "az://c/x") == _identity(
        {"connection_string": "DefaultEndpointsProtocol=https;AccountName=acc;AccountKey=k2"},
        "az://c/x",
    )
    assert _identity(name, "az://c/x") == _identity(
        {"account_name": "acc", "account_host": "acc.blob.core.windows.net", "sas_token": "t"},
        "az://c/x",
    )
    blob = "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1/;AccountName=devstoreaccount1"
    azurite = _identity({"connection_string": f"{blob};AccountKey=a"}, "az://c/x")
    assert azurite == _identity({"connection_string": f"AccountKey=b;{blob}"}, "az://c/x")
    # other accounts, other hosts: other data
    assert _identity(name, "az://c/x") != _identity({"account_name": "other"}, "az://c/x")
    assert azurite != _identity(name, "az://c/x")
    assert azurite != _identity({"connection_string": blob.replace("10000", "10001")}, "az://c/x")


def test_an_account_named_in_the_url_tells_data_apart_as_in_the_options() -> None:
    pytest.importorskip("adlfs")
    acc1 = FsspecStore("abfs://c@acc1.dfs.core.windows.net/x").identity
    assert acc1 != FsspecStore("abfs://c@acc2.dfs.core.windows.net/x").identity
    assert acc1 == FsspecStore("az://c/x", {"account_name": "acc1"}).identity


def test_concurrent_writes_through_two_spellings_lose_nothing(s3_server: Service) -> None:
    endpoint = s3_server.endpoint
    a = s3_server.storage_options  # the endpoint in client_kwargs, with a region
    b = {"key": a["key"], "secret": a["secret"], "endpoint_url": endpoint + "/"}
    url = s3_server.url("spellings")
    tz.from_array(url, data=torch.zeros(32, dtype=torch.int32), chunks=(32,), storage_options=a)
    xa = tz.open(url, mode="r+", storage_options=a)
    xb = tz.open(url, mode="r+", storage_options=b)

    def write(arr: Any, indices: range) -> None:
        for i in indices:
            arr[i] = i + 1

    threads = [
        threading.Thread(target=write, args=(xa, range(0, 32, 2))),
        threading.Thread(target=write, args=(xb, range(1, 32, 2))),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    got = tz.open(url, mode="r", storage_options=a)[:]
    assert torch.equal(got, torch.arange(1, 33, dtype=torch.int32)), got  # lost writes read 0
    assert FsspecStore(url, a).identity == FsspecStore(url, b).identity


@pytest.mark.parametrize("options", _SAME_ENDPOINT[:2])
def test_a_canonical_spelling_keeps_its_identity(options: dict[str, Any]) -> None:
    # identities of the top-level spelling are those made before spellings were unified
    assert _identity(options) == "s3://bkt/x#" + _OLD_TOP_LEVEL


_OLD_TOP_LEVEL = "6238d12db54d6308"
