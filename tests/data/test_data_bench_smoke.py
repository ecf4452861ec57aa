"""The dataset benchmark runs end to end on its smoke profile (times printed, never asserted)."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_dataset_benchmark_smoke_profile(tmp_path):
    out = tmp_path / "dataset.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "dataset_bench.py"), "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(out.read_text())
    labels = {row["contender"] for row in report["results"]}
    assert "sequential full read" in labels
    assert "zarr-python Dataset + RandomSampler, workers=2" in labels
    shuffled = [row for row in report["results"] if row["contender"].startswith("shuffled")]
    assert shuffled and all(row["rows_per_s"] > 0 for row in shuffled)
    assert all(0 <= row["quality"]["abs_spearman"] < 0.5 for row in shuffled)
