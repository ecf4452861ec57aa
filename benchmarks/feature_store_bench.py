"""Feature store gathers: 1,024 random ids read by id through ``tz.FeatureStore``, against
zarr-python ``oindex`` and tensorstore on the same arrays (given row numbers, not ids), in
the layout the feature store writes (v3: raw inner chunks of 4 KiB in 1 MiB shards).

Usage:
    python benchmarks/feature_store_bench.py --profile smoke     # well under a minute
    python benchmarks/feature_store_bench.py --profile full --json benchmarks/results/features.json
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import Scenario, run_scenarios

import torchzarr as tz
from torchzarr.features import FeatureStore

PROFILES = {
    # rows x dim float32 features; full: 1M x 128 = 512 MiB, larger than a modest cache
    "smoke": {"rows": 100_000, "dim": 64, "rounds": 5, "batch": 1024},
    "full": {"rows": 1_000_000, "dim": 128, "rounds": 7, "batch": 1024},
}
ID_OFFSET = 10_000_000  # ids are not row numbers: the store must map them


def _build(root: Path, rows: int, dim: int) -> Path:
    path = root / f"features-{rows}x{dim}"
    if path.exists():
        return path
    fs = FeatureStore(str(path), mode="w")
    rng = np.random.default_rng(0)
    step = 1 << 16
    for start in range(0, rows, step):
        n = min(step, rows - start)
        emb = np.cumsum(rng.standard_normal((n, dim)), axis=1).astype(np.float32) / 8
        fs.write(
            torch.arange(ID_OFFSET + start, ID_OFFSET + start + n),
            {"emb": torch.from_numpy(emb), "label": torch.from_numpy(rng.integers(0, 10, n))},
        )
    return path


def _batches(rows: int, batch: int) -> Callable[[], np.ndarray]:
    """Each contender draws the same sequence of random batches (same seed)."""
    rng = np.random.default_rng(1)
    return lambda: rng.integers(0, rows, batch)


def _contenders(path: Path, rows: int, batch: int) -> dict[str, Any]:
    import tensorstore as ts
    import zarr

    hot = FeatureStore(str(path), mode="r")
    cold = FeatureStore(str(path), mode="r", cache=tz.ChunkCache(max_bytes=0))
    theirs = zarr.open_array(str(path / "emb"), mode="r")
    # tensorstore with its default settings (default context: no cache pool, its own threads)
    spec = {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(path / "emb")}}
    tstore = ts.open(spec, read=True).result()
    draws = {name: _batches(rows, batch) for name in ("tz", "cold", "zarr", "ts")}
    return {
        "torchzarr": lambda: hot.read(draws["tz"]() + ID_OFFSET, ["emb"]),
        "torchzarr-nocache": lambda: cold.read(draws["cold"]() + ID_OFFSET, ["emb"]),
        "zarr-python": lambda: theirs.oindex[draws["zarr"]()],
        "tensorstore": lambda: tstore.oindex[draws["ts"]()].read().result(),
    }


def build(root: Path, profile: dict[str, int]) -> list[Scenario]:
    rows, dim, batch = profile["rows"], profile["dim"], profile["batch"]
    path = _build(root, rows, dim)
    return [
        Scenario(
            f"gather {batch} random ids, {rows}x{dim} float32",
            batch * dim * 4,
            _contenders(path, rows, batch),
        )
    ]


def main(argv: list[str] | None = None) -> int:
    return run_scenarios(argv, __doc__, PROFILES, build, "torchzarr-features-bench-", warmup=2)


if __name__ == "__main__":
    raise SystemExit(main())
