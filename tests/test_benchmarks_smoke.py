"""The benchmark scripts run end to end on their smoke profile (times are printed, never asserted)."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_read_benchmark_smoke_profile(tmp_path):
    out = tmp_path / "read.json"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "read_bench.py"),
            "--profile",
            "smoke",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads(out.read_text())["results"]
    names = {row["scenario"] for row in rows}
    assert "full read, zstd, 1 MiB chunks" in names
    for row in rows:
        assert {"torchzarr", "zarr-python", "tensorstore"} <= set(row["median_s"])
        assert row["speedup_vs_best_peer"] > 0
