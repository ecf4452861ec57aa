"""The dataset examples run: the single-process training job and the 2-rank DDP job."""

from __future__ import annotations

import pathlib
import subprocess
import sys
from collections import Counter

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_train_example_runs_small():
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "train.py"),
            "--samples",
            "3000",
            "--workers",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "epoch 0: 3000 samples" in result.stdout and "samples/s" in result.stdout


def test_ddp_example_ranks_see_every_sample_once(tmp_path):
    seen_dir = tmp_path / "seen"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            str(ROOT / "examples" / "ddp_train.py"),
            "--samples",
            "2000",
            "--batch-size",
            "64",
            "--store",
            str(tmp_path / "ddp.zarr"),
            "--seen-dir",
            str(seen_dir),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    per_rank = [[int(v) for v in (seen_dir / f"rank{r}.txt").read_text().split()] for r in range(2)]
    assert len(per_rank[0]) == len(per_rank[1]) == 1000
    assert Counter(per_rank[0] + per_rank[1]) == Counter(range(2000))
