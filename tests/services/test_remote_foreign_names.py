"""Object stores holding names no key can spell, folder markers, and URLs with a doubled '/'."""

from __future__ import annotations

import contextlib
import gc
import os
import warnings
from typing import TYPE_CHECKING, Any

import pytest
import torch

import torchzarr as tz
from torchzarr.errors import InvalidKeyError
from torchzarr.storage.copy import copy_keys
from torchzarr.storage.fsspec_store import FsspecStore

if TYPE_CHECKING:
    from .servers import Service

pytestmark = pytest.mark.services


def _s3_client(service: Service) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=service.endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def _s3_objects(service: Service, prefix: str) -> list[str]:
    listed = _s3_client(service).list_objects_v2(Bucket=service.bucket, Prefix=prefix + "/")
    return sorted(item["Key"] for item in listed.get("Contents", []))


def test_an_object_with_an_empty_component_is_skipped_and_mode_w_removes_it(
    service: Service,
) -> None:
    url = service.url("doubled")
    store = FsspecStore(url, service.storage_options, retry_backoff=0)
    tz.open_group(store, mode="w").create_array("a", data=torch.arange(4))
    root = str(store.fs._strip_protocol(url))
    store.fs.pipe_file(f"{root}//x", b"written by another tool")
    with pytest.warns(UserWarning, match=rf"FsspecStore skips '{root}//'"):
        assert sorted(store.list_prefix("")) == ["a/c/0", "a/zarr.json", "zarr.json"]
    assert sorted(tz.open_group(url, mode="r", storage_options=service.storage_options)) == ["a"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tz.open_group(url, mode="w", storage_options=service.storage_options)
    store.fs.invalidate_cache()
    assert sorted(store.fs.find(root)) == [f"{root}/zarr.json"]


def test_s3_objects_of_other_tools_are_skipped_copied_around_and_cleared(
    s3_server: Service,
) -> None:
    url = s3_server.url("odd")
    prefix = url.split("/", 3)[3]
    options = s3_server.storage_options
    tz.open_group(url, mode="w", storage_options=options).create_array("a", data=torch.arange(4))
    client = _s3_client(s3_server)
    for name in ("//x", "/b/../c", "/d/./e"):
        client.put_object(Bucket=s3_server.bucket, Key=prefix + name, Body=b"1")
    store = FsspecStore(url, options)
    with pytest.warns(UserWarning):
        assert sorted(store.list_prefix("")) == ["a/c/0", "a/zarr.json", "zarr.json"]
    copied = tz.MemoryStore()
    copy_keys(store, copied)
    assert sorted(copied.list_prefix("")) == ["a/c/0", "a/zarr.json", "zarr.json"]
    tz.open_group(url, mode="w", storage_options=options)
    assert _s3_objects(s3_server, prefix) == [f"{prefix}/zarr.json"]


def test_s3_folder_markers_are_not_keys(s3_server: Service) -> None:
    url = s3_server.url("marker")
    prefix = url.split("/", 3)[3]
    client = _s3_client(s3_server)
    for marker in (f"{prefix}/", f"{prefix}/data/"):  # as "Create folder" of the console
        client.put_object(Bucket=s3_server.bucket, Key=marker, Body=b"")
    tz.create_array(
        url + "/data/arr", data=torch.arange(4), storage_options=s3_server.storage_options
    )
    store = FsspecStore(url, s3_server.storage_options)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # skipped silently
        assert sorted(store.list_prefix("")) == ["data/arr/c/0", "data/arr/zarr.json"]
    assert store.get("data") is None


def test_an_array_url_with_a_doubled_slash_is_refused_before_writing(s3_server: Service) -> None:
    root = s3_server.url("root") + "/"  # a root URL written with a trailing "/"
    prefix = root.split("/", 3)[3].rstrip("/")
    options = s3_server.storage_options
    tz.open_group(root, mode="w", storage_options=options)
    with pytest.raises(InvalidKeyError, match=r"cannot write 'zarr.json' at 's3://.*//arr'"):
        tz.create_array(root + "/arr", data=torch.arange(4), storage_options=options)
    assert _s3_objects(s3_server, prefix) == [f"{prefix}/zarr.json"]


def _open_sockets() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # closed meanwhile
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
    return count


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts sockets in /proc")
def test_closing_an_azure_store_closes_its_connections(azurite_server: Service) -> None:
    url, options = azurite_server.url("close"), azurite_server.storage_options
    keys = [f"k{i}" for i in range(8)]
    FsspecStore(url, options).set_many(dict.fromkeys(keys, b"x"))
    before = _open_sockets()
    for _ in range(5):
        store = FsspecStore(url, options)
        assert store.get_many(keys) == dict.fromkeys(keys, b"x")  # 8 requests at once
        store.close()
    del store
    gc.collect()
    assert _open_sockets() - before < 8  # not 8 more for each store
