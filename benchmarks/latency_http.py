"""A loopback HTTP server that answers every request after a fixed delay, in its own process.

It stands in for object storage in the "remote read" scenarios: each request pays one round
trip of ``delay`` seconds however many are in flight, as over a network, and every reader
(torchzarr, zarr-python, tensorstore) reaches the same files through plain HTTP GETs.

Usage (the benchmarks start it with :func:`serving`):
    python benchmarks/latency_http.py DIRECTORY DELAY_SECONDS
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class _DelayedHandler(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: readers reuse their connections
    delay = 0.0

    def send_head(self) -> Any:
        time.sleep(self.delay)  # each request waits, concurrent ones in parallel
        return super().send_head()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # the listen backlog: readers open many connections at once


def serve(directory: str, delay: float) -> None:
    """Serve ``directory`` on a free loopback port; print the port, then serve forever."""
    handler = functools.partial(
        type("Handler", (_DelayedHandler,), {"delay": delay}), directory=directory
    )
    server = _Server(("127.0.0.1", 0), handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


@contextlib.contextmanager
def serving(directory: Path, delay: float) -> Iterator[str]:
    """A server for ``directory`` in a child process while the block runs; yields its URL."""
    proc = subprocess.Popen(
        [sys.executable, __file__, str(directory), str(delay)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


if __name__ == "__main__":
    serve(sys.argv[1], float(sys.argv[2]))
