"""examples/lightning_checkpoint.py runs as documented."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_lightning_example_runs(tmp_path: pathlib.Path) -> None:
    pytest.importorskip("lightning")
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "lightning_checkpoint.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "finished at step 40" in result.stdout
    assert "last: epoch 4, weight (16, 4)" in result.stdout
