"""What FsspecStore errors say: the reason an SDK gives after its first line, and never
the password of the store's URL (in the message or in the causes a traceback prints)."""

from __future__ import annotations

import os
import traceback

import pytest

from torchzarr.errors import StoreError
from torchzarr.storage.fsspec_store import FsspecStore

pytest.importorskip("s3fs")
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"

# nothing listens there: botocore refuses the bucket names below before any request
OPTIONS = {
    "key": "k",
    "secret": "s",
    "client_kwargs": {"endpoint_url": "http://127.0.0.1:9", "region_name": "us-east-1"},
}


def test_an_invalid_bucket_name_says_why() -> None:
    store = FsspecStore("s3://Bad_Bucket!/x", OPTIONS, retries=0)
    with pytest.raises(StoreError) as info:
        store.get("zarr.json")
    message = str(info.value)
    assert "ParamValidationError: Parameter validation failed: Invalid bucket name" in message
    assert len(message) < 400  # the reason is kept, in bounds


def test_no_error_of_a_url_with_a_password_shows_it() -> None:
    store = FsspecStore("s3://AKEY:TOPSECRET@bkt/a", OPTIONS, retries=0)
    for call in (lambda: store.get("zarr.json"), lambda: list(store.list_prefix(""))):
        with pytest.raises(StoreError) as info:
            call()
        shown = "".join(traceback.format_exception(info.value))
        assert "TOPSECRET" not in shown, shown
        assert 'Invalid bucket name "AKEY:***@bkt"' in str(info.value)  # the cause, masked


def test_a_reason_cut_to_length_shows_no_part_of_a_secret() -> None:
    from torchzarr.storage.fsspec_errors import describe

    for cut in range(285, 300):  # the secret across the cut, in a URL and alone
        for text in ("x" * cut + " TOPSECRET", "x" * cut + " s3://k:TOPSECRET@b/x"):
            shown = describe(ValueError(f"failed:\n{text}"), ("TOPSECRET",))
            assert "TOP" not in shown, shown
