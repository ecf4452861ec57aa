"""The server fixtures of tests/services/servers.py keep serving after a long request log."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from services.servers import Service, launch, stop, wait_for_port

from torchzarr.storage import FsspecStore


def test_gcs_emulator_serves_past_64_kib_of_request_log(gcs_server: Service) -> None:
    # ~140 bytes of log a request: 1200 requests fill a 64 KiB pipe about three times over
    store = FsspecStore(gcs_server.url("log"), gcs_server.storage_options, retries=0, timeout=30)
    for batch in range(12):
        keys = [f"missing/{batch}/{i}" for i in range(100)]
        assert store.get_many(keys) == dict.fromkeys(keys)


def test_launch_writes_output_to_a_log_file(tmp_path: Path) -> None:
    chatter = "import sys; sys.stdout.write('x' * (1 << 20)); sys.stdout.flush()"
    proc, log = launch([sys.executable, "-c", chatter], str(tmp_path))
    try:
        assert proc.wait(60) == 0  # a pipe nobody reads would block it at 64 KiB
    finally:
        stop(proc)
    assert log.read_bytes() == b"x" * (1 << 20)


def test_a_server_that_dies_at_start_fails_with_its_log(tmp_path: Path) -> None:
    failing = "import sys; print('no port for you'); sys.exit(3)"
    proc, log = launch([sys.executable, "-c", failing], str(tmp_path))
    proc.wait(60)
    with pytest.raises(pytest.fail.Exception, match=r"(?s)code 3 at start.*no port for you"):
        wait_for_port(1, proc, "failing-server", log)
