"""The examples run as documented (CI runs them here)."""

from __future__ import annotations

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_quickstart_runs(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py"), str(tmp_path / "q.zarr")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "data [G]" in result.stdout and "images [A] (20000, 256)" in result.stdout
    assert "labels[:12] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]" in result.stdout
