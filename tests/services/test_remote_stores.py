"""FsspecStore and the public API against real servers: S3 (moto), GCS (emulator), Azurite."""

from __future__ import annotations

import asyncio
import os
import pickle
from typing import TYPE_CHECKING, Any

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

import torchzarr as tz
from torchzarr.errors import StoreError
from torchzarr.storage.base import ByteRange
from torchzarr.storage.fsspec_store import FsspecStore
from torchzarr.storage.registry import registered_stores

if TYPE_CHECKING:
    from .servers import Service

pytestmark = pytest.mark.services


@pytest.fixture
def store(service: Service) -> FsspecStore:
    return FsspecStore(service.url(), service.storage_options, retry_backoff=0)


def test_store_protocol(store: FsspecStore) -> None:
    value = bytes(range(256)) * 4
    assert store.get("zarr.json") is None
    store.set("zarr.json", b"{}")
    store.set_many({"a/c/0": value, "a/c/1": b"", "a/zarr.json": b"{}", "b/x*y": b"glob"})
    store.set("zarr.json", b'{"v": 2}')
    assert store.get("zarr.json") == b'{"v": 2}'
    assert store.get_many(["a/c/0", "a/c/1", "a/c/9", "b/x*y"]) == {
        "a/c/0": value,
        "a/c/1": b"",
        "a/c/9": None,
        "b/x*y": b"glob",
    }
    ranges = [ByteRange(5, 10), ByteRange(-7), ByteRange(-5000), ByteRange(1020)]
    ranges += [ByteRange(5000), ByteRange(3, 0), ByteRange(1000, 100), ByteRange(0)]
    got = store.get_ranges([("a/c/0", rng) for rng in ranges] + [("nope", ByteRange(-4))])
    assert got == [rng.slice(value) for rng in ranges] + [None]
    assert store.get_range("a/c/1", ByteRange(-4)) == b""
    assert store.getsize("a/c/0") == 1024 and store.getsize("a/c") is None
    assert store.exists("a/zarr.json") and not store.exists("a")
    assert sorted(store.list_prefix("")) == ["a/c/0", "a/c/1", "a/zarr.json", "b/x*y", "zarr.json"]
    assert sorted(store.list_prefix("a/c")) == ["a/c/0", "a/c/1"]
    assert store.list_dir("") == (["zarr.json"], ["a", "b"])
    assert store.list_dir("a/") == (["zarr.json"], ["c"])
    store.delete_many(["a/c/0", "a/c/1", "never", "b/x*y"])
    store.delete("zarr.json")
    assert sorted(store.list_prefix("")) == ["a/zarr.json"]
    store.delete_prefix("")
    assert list(store.list_prefix("")) == [] and store.list_dir("") == ([], [])


def _track_in_flight(fs: Any, method: str) -> list[int]:
    """Wrap ``fs.<method>`` (a coroutine): [calls, in flight now, most in flight at once]."""
    counts = [0, 0, 0]
    inner = getattr(fs, method)

    async def tracking(*args: Any, **kwargs: Any) -> Any:
        counts[0] += 1
        counts[1] += 1
        counts[2] = max(counts[1:])
        try:
            await asyncio.sleep(0.01)
            return await inner(*args, **kwargs)
        finally:
            counts[1] -= 1

    setattr(fs, method, tracking)
    return counts


def test_get_many_runs_one_request_per_key_concurrently(store: FsspecStore) -> None:
    store.set_many({f"c/{i}": str(i).encode() * 100 for i in range(50)})
    counts = _track_in_flight(store.fs, "_cat_file")
    got = store.get_many([f"c/{i}" for i in range(50)])
    assert got == {f"c/{i}": str(i).encode() * 100 for i in range(50)}
    assert counts[0] == 50  # one request per key, no more
    assert counts[2] > 1  # and the requests overlapped, not one round trip per key in series


def test_set_many_runs_one_request_per_key_concurrently(store: FsspecStore) -> None:
    counts = _track_in_flight(store.fs, "_pipe_file")
    store.set_many({f"k/{i}": b"v" for i in range(30)})
    assert counts[0] == 30 and counts[2] > 1
    assert len(list(store.list_prefix("k/"))) == 30


@pytest.mark.parametrize("shards", [None, (16, 8)])
def test_public_api_end_to_end(store: FsspecStore, shards: tuple[int, int] | None) -> None:
    data = torch.arange(64 * 8, dtype=torch.float32).reshape(64, 8)
    arr = tz.create_array(
        store, shape=(64, 8), dtype=torch.float32, chunks=(8, 4), shards=shards, fill_value=0
    )
    arr[:] = data
    again = tz.open_array(pickle.loads(pickle.dumps(store)), mode="r")
    assert torch.equal(again[:], data)
    assert torch.equal(again[3:41, 1:7], data[3:41, 1:7])
    arr[10:12] = torch.zeros(2, 8)  # a partial rewrite: read, modify, write back
    fresh = tz.open_array(store, mode="r")  # (an Array caches shard indexes of its own)
    assert torch.equal(fresh[8:16], torch.cat([data[8:10], torch.zeros(2, 8), data[12:16]]))


def test_public_api_with_urls(service: Service) -> None:
    scheme = service.protocol
    if scheme not in registered_stores():
        pytest.skip(f"{scheme}:// is not registered (the integrator adds register_store lines)")
    url = service.url("url") + ".zarr"
    options = {**service.storage_options, "retry_backoff": 0}
    arr = tz.create_array(url, shape=(10, 3), dtype="int64", chunks=(4, 3), storage_options=options)
    arr[:] = torch.arange(30).reshape(10, 3)
    again = tz.open_array(url, mode="r", storage_options=options)
    assert torch.equal(again[:], torch.arange(30).reshape(10, 3))


def test_missing_bucket_names_the_url(service: Service) -> None:
    url = f"{service.protocol}://no-such-bucket-tz/data.zarr"
    store = FsspecStore(url, service.storage_options, retry_backoff=0)
    with pytest.raises(
        StoreError, match=r"'no-such-bucket-tz' of .*no-such-bucket-tz/data.zarr.*does not exist"
    ):
        store.get("zarr.json")
    store = FsspecStore(url, service.storage_options, retry_backoff=0)
    with pytest.raises(StoreError, match=r"no-such-bucket-tz.*does not exist"):
        store.set("zarr.json", b"{}")


def test_a_bucket_deleted_after_use_raises_instead_of_reading_fill(
    s3_server: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = f"gone-{os.getpid()}"
    store = FsspecStore(f"s3://{bucket}/a.zarr", s3_server.storage_options, retry_backoff=0)
    client = pytest.importorskip("boto3").client(
        "s3",
        endpoint_url=s3_server.endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    client.create_bucket(Bucket=bucket)
    arr = tz.create_array(store, shape=(8,), dtype="int32", chunks=(2,))
    arr[:6] = 7  # the last chunk stays missing: reading it checks the bucket, once
    assert arr[:].tolist() == [7] * 6 + [0, 0]
    store.fs.rm(bucket, recursive=True)
    store.fs.invalidate_cache()
    with pytest.raises(StoreError, match=f"'{bucket}' of .*does not exist"):
        arr[:]  # not eight fill values
    from torchzarr.storage import fsspec_errors

    # the error's own NoSuchBucket is trusted: a probe refused (or failing) changes nothing
    monkeypatch.setattr(fsspec_errors, "bucket_exists", lambda *args, **kwargs: True)
    with pytest.raises(StoreError, match=f"'{bucket}' of .*does not exist"):
        arr[:]


def test_missing_s3_credentials_are_reported(
    s3_server: Service, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    options = {"client_kwargs": s3_server.storage_options["client_kwargs"]}
    store = FsspecStore(s3_server.url(), options, retry_backoff=0)
    with pytest.raises(StoreError, match=r"cannot read 'zarr.json' at 's3://.*[Cc]redentials"):
        store.get("zarr.json")


def test_timeout_bounds_a_stalled_request(s3_server: Service) -> None:
    store = FsspecStore(
        s3_server.url(), s3_server.storage_options, retries=1, retry_backoff=0, timeout=0.3
    )
    store.set("k", b"v")
    attempts = []

    async def stalled(*args: Any, **kwargs: Any) -> bytes:
        attempts.append(1)
        await asyncio.sleep(30)
        return b""

    store.fs._cat_file = stalled
    with pytest.raises(StoreError, match=r"cannot read 'k'.*after 2 attempts.*Timeout"):
        store.get("k")
    assert len(attempts) == 2


class RowsDataset(Dataset[tuple[torch.Tensor, int]]):
    """Rows of a remote array; the array is opened on first use in each process."""

    def __init__(self, store: FsspecStore, rows: int) -> None:
        self.store = store
        self.rows = rows
        self.array: Any = None

    def __len__(self) -> int:
        return self.rows

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if self.array is None:
            self.array = tz.open_array(self.store, mode="r")
        return self.array[index], os.getpid()


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_dataloader_workers_read_after_the_parent(s3_server: Service, context: str) -> None:
    store = FsspecStore(s3_server.url("loader"), s3_server.storage_options, retry_backoff=0)
    data = torch.arange(32 * 5, dtype=torch.int32).reshape(32, 5)
    tz.create_array(store, shape=(32, 5), dtype=torch.int32, chunks=(4, 5))[:] = data
    dataset = RowsDataset(store, 32)
    row, _ = dataset[3]  # the parent reads first: its event loop and session are running
    assert torch.equal(row, data[3])
    loader = DataLoader(
        dataset, batch_size=4, num_workers=2, multiprocessing_context=context, timeout=120
    )
    rows, pids = zip(*loader, strict=True)
    assert torch.equal(torch.cat(rows), data)
    workers = set(torch.cat(pids).tolist())
    assert len(workers) == 2 and os.getpid() not in workers
    assert torch.equal(dataset[31][0], data[31])  # the parent's store still works


def test_azure_scheme_alias(azurite_server: Service) -> None:
    url = azurite_server.url("alias")
    FsspecStore(url, azurite_server.storage_options).set("k", b"v")
    alias = FsspecStore(url.replace("az://", "azure://"), azurite_server.storage_options)
    assert alias.get("k") == b"v" and list(alias.list_prefix("")) == ["k"]


def test_copy_keys_moves_a_hierarchy_to_object_storage_and_back(
    store: FsspecStore, tmp_path: Any
) -> None:
    from torchzarr.storage.copy import copy_keys

    root = tz.open_group(tmp_path / "src.zarr", mode="w")
    data = torch.arange(40 * 6, dtype=torch.int32).reshape(40, 6)
    root.create_array("x", shape=(40, 6), dtype=torch.int32, chunks=(4, 6))[:] = data
    root.attrs["kind"] = "copied"
    local = tz.LocalStore(tmp_path / "src.zarr")
    up = copy_keys(local, store, dest_path="tree", jobs=4)
    assert up.keys == 12  # two metadata documents and ten chunks
    remote = tz.open_group(store, path="tree", mode="r")
    assert remote.attrs["kind"] == "copied" and torch.equal(remote["x"][:], data)
    down = copy_keys(store, tz.LocalStore(tmp_path / "back.zarr"), "tree", dest_path="")
    assert (down.keys, down.nbytes) == (up.keys, up.nbytes)
    assert torch.equal(tz.open_array(tmp_path / "back.zarr", path="x")[:], data)


def _refusing(
    store: FsspecStore, code: str, times: int = 10**6, every: bool = False
) -> dict[str, int]:
    """Make the first key (``every`` key) of each S3 DeleteObjects, the first ``times`` of
    them, come back under ``Errors`` with ``code`` inside the HTTP 200, as S3 reports the
    keys it refused; count the requests made, by method."""
    fs, calls = store.fs, {"refused": 0}
    inner = fs._call_s3

    async def call_s3(method: str, *args: Any, **kwargs: Any) -> Any:
        calls[method] = calls.get(method, 0) + 1
        if method != "delete_objects" or calls["refused"] >= times:
            return await inner(method, *args, **kwargs)
        calls["refused"] += 1
        delete = kwargs["Delete"]
        cut = len(delete["Objects"]) if every else 1
        refused, rest = delete["Objects"][:cut], delete["Objects"][cut:]
        answer = {"Deleted": []}
        if rest:
            kwargs = {**kwargs, "Delete": {**delete, "Objects": rest}}
            answer = dict(await inner(method, *args, **kwargs))
        answer["Errors"] = [
            {"Key": x["Key"], "Code": code, "Message": "(simulated)"} for x in refused
        ]
        return answer

    fs._call_s3 = call_s3
    return calls


def test_s3_keys_a_delete_refused_are_reported_not_left_behind(s3_server: Service) -> None:
    store = FsspecStore(s3_server.url(), s3_server.storage_options, retry_backoff=0)
    arr = tz.create_array(store, shape=(6,), dtype="int32", chunks=(2,))
    arr[:] = torch.arange(1, 7, dtype=torch.int32)
    calls = _refusing(store, "AccessDenied")
    with pytest.raises(StoreError, match=r"cannot delete 'c/0' at 's3://.*AccessDenied"):
        tz.create_array(store, shape=(6,), dtype="int32", chunks=(2,), overwrite=True)
    assert calls["delete_objects"] == 1  # a refusal is not retried
    assert store.get("c/0") is not None  # the old chunk is still there: reported
    store.set_many({"c/1": b"x", "c/2": b"y"})
    _refusing(store, "AccessDenied", every=True)
    with pytest.raises(StoreError, match=r"cannot delete 'c/1' \(and 'c/2': 2 keys remain; "):
        store.delete_many(["c/1", "c/2"])
    assert store.get("c/1") == b"x" and store.get("c/2") == b"y"


def test_s3_deletes_retry_keys_refused_transiently_with_few_requests(s3_server: Service) -> None:
    store = FsspecStore(s3_server.url(), s3_server.storage_options, retry_backoff=0)
    store.set_many({f"c/{i}": b"x" for i in range(6)} | {"zarr.json": b"{}"})
    calls = _refusing(store, "AccessDenied", times=0)  # counts only
    store.delete_many(["c/0", "c/1", "never"])
    assert calls == {"refused": 0, "delete_objects": 1}  # no request to check the answer
    calls = _refusing(store, "InternalError", times=1)
    store.delete_prefix("c/")  # c/2 refused once: deleted again
    assert calls == {"refused": 1, "list_objects_v2": 1, "delete_objects": 2}
    assert sorted(store.list_prefix("")) == ["zarr.json"]


def test_s3_keys_a_delete_says_nothing_of_are_looked_for(s3_server: Service) -> None:
    store = FsspecStore(s3_server.url(), s3_server.storage_options, retry_backoff=0)
    store.set_many({"c/0": b"x", "c/1": b"y"})
    fs, calls = store.fs, []
    inner = fs._call_s3

    async def silent(method: str, *args: Any, **kwargs: Any) -> Any:
        calls.append(method)
        if method == "delete_objects" and calls.count(method) == 1:  # c/0 kept, unreported
            delete = kwargs["Delete"]
            kwargs = {**kwargs, "Delete": {**delete, "Objects": delete["Objects"][1:]}}
        return await inner(method, *args, **kwargs)

    fs._call_s3 = silent
    store.delete_many(["c/0", "c/1"])
    assert calls.count("delete_objects") == 2 and calls.count("head_object") == 1
    assert list(store.list_prefix("")) == []


def test_s3_fill_values_written_while_deletes_fail_name_the_key(s3_server: Service) -> None:
    store = FsspecStore(s3_server.url(), s3_server.storage_options, retries=1, retry_backoff=0)
    arr = tz.create_array(store, shape=(4,), dtype="int32", chunks=(2,))
    arr[:] = torch.arange(1, 5, dtype=torch.int32)

    async def down(method: str, *args: Any, **kwargs: Any) -> Any:
        raise ConnectionRefusedError(f"cannot connect to {s3_server.endpoint}")

    store.fs._call_s3 = down
    message = r"cannot delete 'c/0' \(a chunk written with only fill values is deleted, not stored\) at 's3://[^']*' after 2 attempts: ConnectionRefusedError"
    with pytest.raises(StoreError, match=message):
        arr[:2] = 0


def test_s3_a_refused_bucket_probe_is_no_missing_bucket(
    s3_server: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, options = s3_server.url("probe"), {**s3_server.storage_options, "retry_backoff": 0}
    tz.create_array(url, shape=(4,), dtype="int8", chunks=(2,), storage_options=options)[:2] = 3
    s3fs = pytest.importorskip("s3fs")
    inner, probes = s3fs.S3FileSystem._call_s3, []

    async def reader(fs: Any, method: str, *args: Any, **kwargs: Any) -> Any:
        if method in ("head_bucket", "get_bucket_location", "list_objects_v2"):
            probes.append(method)  # credentials that may GetObject only
            raise PermissionError("Access Denied")
        return await inner(fs, method, *args, **kwargs)

    monkeypatch.setattr(s3fs.S3FileSystem, "_call_s3", reader)
    arr = tz.open_array(url, mode="r", storage_options=options)  # .zarray, .zgroup: missing
    assert arr[:].tolist() == [3, 3, 0, 0]
    assert probes == ["head_bucket"]  # asked once; refused: the bucket may well exist


def test_azure_container_deleted_under_an_open_array_raises(azurite_server: Service) -> None:
    from azure.storage.blob import BlobServiceClient

    options = azurite_server.storage_options
    service = BlobServiceClient.from_connection_string(options["connection_string"])
    container = f"gone-{os.getpid()}"
    service.create_container(container)
    arr = tz.create_array(
        f"az://{container}/a.zarr", shape=(8,), dtype="int32", chunks=(2,), storage_options=options
    )
    arr[:6] = 7  # the last chunk stays missing: reading it checks the container, once
    assert arr[:].tolist() == [7] * 6 + [0, 0]
    service.delete_container(container)
    with pytest.raises(StoreError, match=f"'{container}' of .*does not exist"):
        arr[:]  # not eight fill values
