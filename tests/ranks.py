"""Run a worker script as several ranks at once and collect what each printed; ranks still
running at the timeout are killed, so no test leaves processes behind."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence


def run_ranks(script: str, world: int, args: Sequence[str], timeout: float) -> list[str]:
    """Start ``python script <rank> <world> *args`` for each rank, wait up to ``timeout``
    seconds for all, and return each rank's output (stdout and stderr), asserting each
    exited 0 and printed ``rank <n> ok``."""
    procs = [
        subprocess.Popen(
            [sys.executable, script, str(rank), str(world), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in range(world)
    ]
    try:
        outputs = [p.communicate(timeout=timeout)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    for rank, (p, out) in enumerate(zip(procs, outputs, strict=True)):
        assert p.returncode == 0 and f"rank {rank} ok" in out, out
    return outputs
