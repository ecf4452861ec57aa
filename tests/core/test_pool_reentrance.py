"""torchzarr I/O started on one of the engine's own pool threads (a codec's decode or
encode reading another array) runs there, inline: it never waits for the pool, whose
threads may all be waiting the same way."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

import torchzarr
from torchzarr.config import config
from torchzarr.core.pool import on_pool_thread, run_parallel

# Run in a child process: on a regression the read hangs for good (the pool's threads
# never end, and the interpreter would wait for them at exit), so the child is killed.
_NESTED = textwrap.dedent(
    """
    import torch
    import torchzarr as tz
    from torchzarr.codecs import BytesBytesCodec, register_codec

    tz.config.threads = 2
    tz.config.task_bytes = 1  # one task per chunk: more tasks than threads
    table = tz.create_array(tz.MemoryStore(), shape=(256,), chunks=(16,), dtype=torch.float32)
    table[:] = torch.arange(256.0)

    class ReadsTable(BytesBytesCodec):
        codec_name = "test.reads_table"
        def __init__(self, on="decode"): self.on = on
        @classmethod
        def from_config(cls, configuration): return cls(**configuration)
        def configuration(self): return {"on": self.on}
        def encode(self, data):
            if self.on == "encode":
                assert table[:].sum().item() == 32640.0
            return bytes(data)
        def decode(self, data):
            if self.on == "decode":
                assert table[:].sum().item() == 32640.0
            return bytes(data)

    register_codec("test.reads_table", ReadsTable)

    for on in ["decode", "encode"]:
        a = tz.create_array(tz.MemoryStore(), shape=(64, 8), chunks=(4, 8),
                            dtype=torch.float32, compressors=[ReadsTable(on)])
        a[:] = torch.ones(64, 8)
        assert a[:].sum().item() == 512.0, on
    print("done")
    """
)


def test_a_codec_reading_another_array_on_a_pool_thread_does_not_hang():
    here = str(Path(torchzarr.__file__).parents[1])  # the torchzarr under test
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([here, os.environ.get("PYTHONPATH", "")])}
    try:
        done = subprocess.run(
            [sys.executable, "-c", _NESTED], capture_output=True, text=True, timeout=120, env=env
        )
    except subprocess.TimeoutExpired:
        pytest.fail("a read nested in a codec's decode or encode on a pool thread hung")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "done"


def test_work_handed_out_on_a_pool_thread_runs_inline_in_order():
    seen: dict[int, set[int]] = {}

    def inner(x: int) -> int:
        seen.setdefault(threading.get_ident(), set()).add(x)
        return x * 10

    def outer(x: int) -> tuple[bool, int, list[int]]:
        here = threading.get_ident()
        return on_pool_thread(), here, run_parallel(inner, list(range(x, x + 8)), lambda _: 1)

    assert not on_pool_thread()
    # Two outer tasks: the calling thread runs the first, a pool thread the second, and
    # free pool threads remain, so the old behaviour (inner tasks to the pool) ends too.
    with config.set(threads=4, task_bytes=1):
        results = run_parallel(outer, [0, 100], lambda _: 1)
    assert [r[2] for r in results] == [[x * 10 for x in range(s, s + 8)] for s in (0, 100)]
    (main_pooled, _, _), (pooled, worker, _) = results
    assert not main_pooled and pooled
    assert seen[worker] >= set(range(100, 108))  # all its inner work ran on that thread


def test_an_error_in_work_handed_out_on_a_pool_thread_propagates():
    def inner(x: int) -> int:
        if x == 103:
            raise ValueError(f"bad item {x}")
        return x

    def outer(x: int) -> list[int]:
        return run_parallel(inner, list(range(x, x + 8)), lambda _: 1)

    with config.set(threads=4, task_bytes=1), pytest.raises(ValueError, match="bad item 103"):
        run_parallel(outer, [0, 100], lambda _: 1)
