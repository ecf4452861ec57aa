"""What ``retries`` counts over s3://: torchzarr's attempts, each of which botocore retries
as its configuration says (docs/storage.md): with botocore's attempts set to 1, a key read
from an endpoint that answers 500 is asked for ``retries + 1`` times."""

from __future__ import annotations

import contextlib
import http.server
import os
from collections.abc import Iterator
from typing import Any

import pytest
from http_serving import serving

from torchzarr.errors import StoreError
from torchzarr.storage import FsspecStore

pytest.importorskip("s3fs")
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"


@contextlib.contextmanager
def _failing_s3() -> Iterator[tuple[str, list[str]]]:
    """An endpoint answering every request with S3's 500 InternalError; the paths asked."""
    seen: list[str] = []

    class Failing(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            seen.append(self.path)
            body = b"<Error><Code>InternalError</Code><Message>boom</Message></Error>"
            self.send_response(500)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_HEAD = do_GET

    with serving(Failing) as url:
        yield url, seen


@pytest.mark.parametrize("retries", [0, 2])
def test_with_botocore_attempts_set_to_one_a_failing_key_is_asked_retries_plus_one_times(
    retries: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_MAX_ATTEMPTS", raising=False)
    with _failing_s3() as (endpoint, seen):
        options: dict[str, Any] = {"key": "k", "secret": "s", "endpoint_url": endpoint}
        options["config_kwargs"] = {"retries": {"total_max_attempts": 1}}
        store = FsspecStore("s3://bkt/a.zarr", options, retries=retries, retry_backoff=0)
        with pytest.raises(StoreError, match=r"zarr\.json"):
            store.get("zarr.json")
        assert seen.count("/bkt/a.zarr/zarr.json") == retries + 1, seen


def test_botocore_retries_multiply_torchzarrs(monkeypatch: pytest.MonkeyPatch) -> None:
    """torchzarr leaves botocore's setting as given (its default rides out throttling)."""
    monkeypatch.delenv("AWS_MAX_ATTEMPTS", raising=False)
    with _failing_s3() as (endpoint, seen):
        options = {"endpoint_url": endpoint, "key": "k", "secret": "s"}
        options["config_kwargs"] = {"retries": {"total_max_attempts": 2, "mode": "standard"}}
        store = FsspecStore("s3://bkt/a.zarr", options, retries=1, retry_backoff=0)
        with pytest.raises(StoreError):
            store.get("zarr.json")
        assert seen.count("/bkt/a.zarr/zarr.json") == 4, seen
