"""Remote stores from the command line and under Ctrl-C: a copy to S3 interrupted leaves no
chunk write of it landing after its cleanup (a new array created at the URL would show
them); the command's advice names the environment variables it reads."""

from __future__ import annotations

import _thread
import threading
import time
from typing import TYPE_CHECKING

import pytest
import torch

import torchzarr as tz

if TYPE_CHECKING:
    from .servers import Service

pytestmark = pytest.mark.services


@pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread(), reason="needs the main thread"
)
def test_an_interrupted_from_array_leaves_no_chunk_behind(s3_server: Service) -> None:
    import s3fs

    url = s3_server.url("interrupted")
    src = tz.create_array("memory://interrupted-src", data=torch.ones(2000, 4096), overwrite=True)
    timer = threading.Timer(1.0, _thread.interrupt_main)  # part way through the chunks
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            tz.from_array(
                url, data=src, chunks=(4, 4096), storage_options=s3_server.storage_options
            )
    finally:
        timer.cancel()
    time.sleep(1.0)  # writes left running would land meanwhile
    fs = s3fs.S3FileSystem(**s3_server.storage_options, skip_instance_cache=True)
    assert fs.find(url.removeprefix("s3://"), refresh=True) == []


def test_the_command_names_the_environment_not_storage_options(
    s3_server: Service, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from torchzarr.cli import main

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    assert main(["info", "s3://no-such-bucket-here/a.zarr"]) == 1
    said = capsys.readouterr().err
    assert "does not exist" in said and "AWS_ENDPOINT_URL" in said, said
    assert "storage_options" not in said, said
