"""Session fixtures that start real storage servers on free 127.0.0.1 ports and stop them.

Each fixture yields a :class:`Service`: the endpoint and the ``storage_options`` that open
its bucket through fsspec. Missing packages or binaries skip the tests, or fail them when
``CI=true`` (CI installs everything with ``.ci/install-services.sh``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

# Never let a cloud SDK probe instance-metadata addresses off this machine, and keep recent
# gcsfs from probing the bucket type over gRPC (it stalls 60 s per bucket on the emulator).
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
os.environ["NO_GCE_CHECK"] = "True"
os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"

REPO = Path(__file__).resolve().parents[2]
BUCKET = "torchzarr-test"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
_START_TIMEOUT = 60.0
# The emulator serves on one thread from an http.server whose listen backlog is 5: a burst of
# concurrent requests overflows it and each dropped connection waits a 1 s SYN retry.
_GCS_LAUNCH = (
    "import runpy, socketserver; socketserver.TCPServer.request_queue_size = 256; "
    "runpy.run_module('gcp_storage_emulator', run_name='__main__', alter_sys=True)"
)


@dataclass(frozen=True)
class Service:
    """A running server: ``url(path)`` names a fresh location in its bucket."""

    protocol: str
    endpoint: str
    bucket: str
    storage_options: dict[str, Any] = field(default_factory=dict)

    def url(self, name: str = "") -> str:
        """A URL under a unique prefix of the bucket, so tests never see each other's keys."""
        unique = f"{name or 'data'}-{uuid.uuid4().hex[:10]}"
        return f"{self.protocol}://{self.bucket}/{unique}"


def missing(reason: str) -> None:
    """Skip (locally) or fail (with CI=true) a test whose server cannot run."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{reason} (CI=true: run .ci/install-services.sh)")
    pytest.skip(reason)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def launch(cmd: list[str], workdir: str) -> tuple[subprocess.Popen[bytes], Path]:
    """Start a server in ``workdir`` with its output in ``workdir/server.log``.

    Never a pipe: one nobody reads fills up after ~64 KiB of request log, and the server
    then blocks on its next log line, so every later request times out.
    """
    log = Path(workdir) / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=workdir)
    return proc, log


def wait_for_port(
    port: int, proc: subprocess.Popen[bytes] | None, name: str, log: Path | None = None
) -> None:
    """Block until 127.0.0.1:port accepts connections; fail if the process dies first,
    with the end of its ``log``."""
    deadline = time.monotonic() + _START_TIMEOUT
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            out = log.read_bytes().decode(errors="replace") if log is not None else ""
            pytest.fail(f"{name} exited with code {proc.returncode} at start:\n{out[-2000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    pytest.fail(f"{name} did not listen on 127.0.0.1:{port} within {_START_TIMEOUT:.0f} s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate a server process, killing it if it does not stop in time."""
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[Service]:
    """moto's S3 server in this process, with bucket ``torchzarr-test``."""
    try:
        import boto3
        import s3fs  # noqa: F401
        from moto.server import ThreadedMotoServer
    except ImportError as err:
        missing(f"S3 tests need moto[server], boto3 and s3fs: {err}")
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_for_port(port, None, "moto")
        boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        ).create_bucket(Bucket=BUCKET)
        options = {
            "key": "testing",
            "secret": "testing",
            "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"},
        }
        yield Service("s3", endpoint, BUCKET, options)
    finally:
        server.stop()


@pytest.fixture(scope="session")
def gcs_server() -> Iterator[Service]:
    """gcp-storage-emulator in a subprocess, in memory, with bucket ``torchzarr-test``."""
    try:
        import gcp_storage_emulator  # noqa: F401
        import gcsfs  # noqa: F401
    except ImportError as err:
        missing(f"GCS tests need gcp-storage-emulator and gcsfs: {err}")
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="gcs-emulator-")
    cmd = [sys.executable, "-c", _GCS_LAUNCH, "start", "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--in-memory", "--default-bucket", BUCKET]
    proc, log = launch(cmd, workdir)
    try:
        wait_for_port(port, proc, "gcp-storage-emulator", log)
        endpoint = f"http://127.0.0.1:{port}"
        options = {"endpoint_url": endpoint, "token": "anon", "project": "torchzarr-test"}
        yield Service("gs", endpoint, BUCKET, options)
    finally:
        stop(proc)
        shutil.rmtree(workdir, ignore_errors=True)


def azurite_binary() -> str | None:
    """``azurite-blob`` from $AZURITE_BLOB, the repository's .services/node, or the PATH."""
    candidates = [
        os.environ.get("AZURITE_BLOB", ""),
        str(REPO / ".services" / "node" / "node_modules" / ".bin" / "azurite-blob"),
    ]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("azurite-blob")


@pytest.fixture(scope="session")
def azurite_server() -> Iterator[Service]:
    """Azurite's blob service in a subprocess, in memory, with container ``torchzarr-test``."""
    try:
        import adlfs  # noqa: F401
        from azure.storage.blob import BlobServiceClient
    except ImportError as err:
        missing(f"Azure tests need adlfs and azure-storage-blob: {err}")
    binary = azurite_binary()
    if binary is None or shutil.which("node") is None:
        missing("Azure tests need node and azurite-blob (npm install azurite)")
    assert binary is not None
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="azurite-")
    cmd = [binary, "--blobHost", "127.0.0.1", "--blobPort", str(port)]
    cmd += ["--inMemoryPersistence", "--skipApiVersionCheck", "--loose", "--silent"]
    proc, log = launch(cmd, workdir)
    try:
        wait_for_port(port, proc, "azurite-blob", log)
        endpoint = f"http://127.0.0.1:{port}/devstoreaccount1"
        connection_string = (
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
            f"AccountKey={AZURITE_KEY};BlobEndpoint={endpoint};"
        )
        BlobServiceClient.from_connection_string(connection_string).create_container(BUCKET)
        yield Service("az", endpoint, BUCKET, {"connection_string": connection_string})
    finally:
        stop(proc)
        shutil.rmtree(workdir, ignore_errors=True)


@dataclass(frozen=True)
class RedisService:
    """A running redis-server: ``url`` names database 0; ``unique_prefix()`` a fresh key prefix."""

    url: str
    port: int

    def unique_prefix(self, name: str = "data") -> str:
        return f"{name}-{uuid.uuid4().hex[:10]}"


#: the fixtures of the object-store servers, by the name tests are parametrized with
OBJECT_STORE_FIXTURES = {"s3": "s3_server", "gcs": "gcs_server", "azure": "azurite_server"}


@pytest.fixture(params=list(OBJECT_STORE_FIXTURES))
def service(request: pytest.FixtureRequest) -> Service:
    """Each object-store server in turn: S3 (moto), GCS (emulator), Azure (Azurite)."""
    return request.getfixturevalue(OBJECT_STORE_FIXTURES[request.param])


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisService]:
    """redis-server on a free 127.0.0.1 port, without persistence, stopped at the end."""
    try:
        import redis  # noqa: F401
    except ImportError as err:
        missing(f"Redis tests need the redis package: {err}")
    binary = shutil.which("redis-server")
    if binary is None:
        missing("Redis tests need redis-server (apt-get install -y redis-server)")
    assert binary is not None
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="redis-")
    cmd = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc, log = launch(cmd, workdir)
    try:
        wait_for_port(port, proc, "redis-server", log)
        yield RedisService(f"redis://127.0.0.1:{port}/0", port)
    finally:
        stop(proc)
        shutil.rmtree(workdir, ignore_errors=True)
