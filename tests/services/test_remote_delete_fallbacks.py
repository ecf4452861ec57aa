"""Deletes on real object stores whose bulk request fails: S3 keys XML cannot carry, S3
batches refused as a whole, and GCS batches that time out after deleting part."""

from __future__ import annotations

import errno
import re
from typing import TYPE_CHECKING, Any

import pytest

from torchzarr.errors import StoreError
from torchzarr.storage.fsspec_store import FsspecStore

if TYPE_CHECKING:
    from .servers import Service

pytestmark = pytest.mark.services


def _s3(s3_server: Service, name: str) -> FsspecStore:
    return FsspecStore(s3_server.url(name), s3_server.storage_options, retry_backoff=0)


def test_s3_keys_xml_cannot_carry_are_deleted(s3_server: Service) -> None:
    store = _s3(s3_server, "xml-keys")
    store.set_many({"a\x01b": b"x", "c\rd": b"y", "ok/0": b"z", "ok/1": b"w"})
    store.delete_many(["a\x01b", "ok/0"])
    assert sorted(store.list_prefix("")) == ["c\rd", "ok/1"]
    store.delete("c\rd")
    store.set("e\x1f", b"v")
    store.delete_prefix("")
    assert list(store.list_prefix("")) == []


def _counting(store: FsspecStore, refuse: Any) -> dict[str, int]:
    """Count the S3 requests by method; ``refuse(method, kwargs)``: an error to raise."""
    fs, calls = store.fs, {}
    inner = fs._call_s3

    async def call_s3(method: str, *args: Any, **kwargs: Any) -> Any:
        calls[method] = calls.get(method, 0) + 1
        error = refuse(method, kwargs)
        if error is not None:
            raise error
        return await inner(method, *args, **kwargs)

    fs._call_s3 = call_s3
    return calls


def test_s3_a_batch_refused_as_a_whole_falls_back_to_single_deletes(s3_server: Service) -> None:
    store = _s3(s3_server, "refused-batch")
    store.set_many({f"c/{i}": b"x" for i in range(5)} | {"keep": b"k"})

    def malformed(method: str, kwargs: dict[str, Any]) -> BaseException | None:
        return OSError(errno.EINVAL, "MalformedXML") if method == "delete_objects" else None

    calls = _counting(store, malformed)
    store.delete_many([f"c/{i}" for i in range(5)] + ["never"])
    assert calls == {"delete_objects": 1, "delete_object": 6}  # one try, then one by one
    assert sorted(store.list_prefix("")) == ["keep"]

    store.set("c/\x01", b"x")

    def refused(method: str, kwargs: dict[str, Any]) -> BaseException | None:
        return PermissionError("Access Denied") if method == "delete_object" else None

    _counting(store, refused)  # the single deletes fail too: the key is named
    with pytest.raises(StoreError, match=r"cannot delete 'c/\\x01' at 's3://.*Access Denied"):
        store.delete_prefix("c/")
    assert store.get("c/\x01") == b"x"


def test_s3_a_batch_denied_as_a_whole_is_not_resent_key_by_key(s3_server: Service) -> None:
    store = _s3(s3_server, "denied-batch")
    store.set_many({f"c/{i}": b"x" for i in range(5)})

    def denied(method: str, kwargs: dict[str, Any]) -> BaseException | None:
        return PermissionError("Access Denied") if method == "delete_objects" else None

    calls = _counting(store, denied)  # each key's own request would be denied too
    with pytest.raises(StoreError, match="Access Denied"):
        store.delete_many([f"c/{i}" for i in range(5)])
    assert calls.get("delete_object", 0) == 0, calls
    assert len(list(store.list_prefix(""))) == 5


def test_gcs_a_bulk_delete_that_times_out_names_only_the_keys_left(gcs_server: Service) -> None:
    store = FsspecStore(gcs_server.url("stalled"), gcs_server.storage_options, retry_backoff=0)
    keys = [f"c/{i}" for i in range(300)]
    store.set_many(dict.fromkeys(keys, b"x"))
    # the emulator deletes a few dozen objects a second: 0.5 s cuts the delete short
    hasty = FsspecStore(store.url, gcs_server.storage_options, retries=0, timeout=0.5)
    with pytest.raises(StoreError, match=r"TimeoutError") as caught:
        hasty.delete_many(keys)
    left = len(list(store.list_prefix("")))
    reported = re.search(r": (\d+) keys remain", str(caught.value))
    assert reported is not None and int(reported.group(1)) == left < 300, str(caught.value)
    store.delete_prefix("")


def test_s3_a_torch_save_object_is_told_apart_from_a_checkpoint(s3_server: Service) -> None:
    torch = pytest.importorskip("torch")
    import io

    import torchzarr as tz

    buffer = io.BytesIO()
    torch.save({"w": torch.zeros(2)}, buffer)
    store = _s3(s3_server, "saved")
    store.set("model.pt", buffer.getvalue())
    url = f"{store.url}/model.pt"
    with pytest.raises(
        tz.errors.MetadataError, match=r"model\.pt' holds no torchzarr .*torch\.load"
    ):
        tz.load_checkpoint(url, storage_options=s3_server.storage_options)


def test_s3_a_large_torch_save_object_is_told_from_a_few_bytes(
    s3_server: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch = pytest.importorskip("torch")
    import io

    import s3fs.core

    import torchzarr as tz

    buffer = io.BytesIO()
    torch.save({"w": torch.zeros(3 << 20)}, buffer)  # 12 MiB
    store = _s3(s3_server, "saved-large")
    store.set("big.pt", buffer.getvalue())
    fetched: list[int] = []
    real = s3fs.core._fetch_range

    def fetch_range(fs: Any, bucket: str, key: str, version_id: Any, start: int, end: int, **kw):
        fetched.append(end - start)
        return real(fs, bucket, key, version_id, start, end, **kw)

    monkeypatch.setattr(s3fs.core, "_fetch_range", fetch_range)
    with pytest.raises(tz.errors.MetadataError, match=r"torch\.load"):
        tz.load_checkpoint(f"{store.url}/big.pt", storage_options=s3_server.storage_options)
    assert 0 < sum(fetched) < 1 << 20, fetched  # its head and zip directory, not the file
