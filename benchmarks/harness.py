"""Timing harness: interleaved rounds, medians, ratios, JSON and Markdown reports."""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Scenario:
    """One measured situation: several contenders doing the same work on the same data."""

    name: str
    nbytes: int  # bytes delivered per call, for GB/s
    contenders: dict[str, Callable[[], Any]]
    limit: str | None = None  # name of the contender that is the codec-only limit
    times: dict[str, list[float]] = field(default_factory=dict)

    def run(self, rounds: int, warmup: int = 1) -> None:
        """Interleave contenders round by round so drift hits all of them alike."""
        for _ in range(warmup):
            for fn in self.contenders.values():
                fn()
        for _ in range(rounds):
            for label, fn in self.contenders.items():
                gc.collect()
                start = time.perf_counter()
                fn()
                self.times.setdefault(label, []).append(time.perf_counter() - start)

    def medians(self) -> dict[str, float]:
        return {label: statistics.median(ts) for label, ts in self.times.items()}

    def summary(self) -> dict[str, Any]:
        med = self.medians()
        ours = med.get("torchzarr")
        peers = {k: v for k, v in med.items() if k in ("zarr-python", "tensorstore")}
        out: dict[str, Any] = {
            "scenario": self.name,
            "nbytes": self.nbytes,
            "median_s": med,
            "gb_per_s": {k: self.nbytes / v / 1e9 for k, v in med.items() if v > 0},
        }
        if ours:
            out["speedup_vs"] = {k: v / ours for k, v in peers.items()}
            if peers:
                out["speedup_vs_best_peer"] = min(peers.values()) / ours
            if self.limit and self.limit in med:
                out["fraction_of_limit"] = med[self.limit] / ours
        return out


def environment() -> dict[str, Any]:
    import os

    import numcodecs
    import numpy
    import torch

    info = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": len(os.sched_getaffinity(0)),
        "numpy": numpy.__version__,
        "numcodecs": numcodecs.__version__,
        "torch": torch.__version__,
    }
    try:
        import zarr

        info["zarr"] = zarr.__version__
    except ImportError:
        pass
    return info


def report(scenarios: list[Scenario], json_path: Path | None) -> list[dict[str, Any]]:
    rows = [s.summary() for s in scenarios]
    for row in rows:
        gbs = "  ".join(f"{k}={v:.3f}" for k, v in row["gb_per_s"].items())
        extra = ""
        if "speedup_vs_best_peer" in row:
            extra += f"  x best peer={row['speedup_vs_best_peer']:.2f}"
        if "fraction_of_limit" in row:
            extra += f"  of limit={row['fraction_of_limit']:.2f}"
        print(f"{row['scenario']:<40} GB/s: {gbs}{extra}")
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps({"environment": environment(), "results": rows}, indent=2))
    return rows


def markdown_table(rows: list[dict[str, Any]]) -> str:
    labels: list[str] = []
    for row in rows:
        for k in row["gb_per_s"]:
            if k not in labels:
                labels.append(k)
    head = "| scenario | " + " | ".join(f"{k} GB/s" for k in labels) + " | x best peer | of limit |"
    sep = "|---" * (len(labels) + 3) + "|"
    lines = [head, sep]
    for row in rows:
        cells = [f"{row['gb_per_s'][k]:.3f}" if k in row["gb_per_s"] else "" for k in labels]
        best = row.get("speedup_vs_best_peer")
        lim = row.get("fraction_of_limit")
        cells.append(f"{best:.2f}" if best is not None else "")
        cells.append(f"{lim:.2f}" if lim is not None else "")
        lines.append(f"| {row['scenario']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def bench_parser(doc: str | None, profiles: dict[str, Any]) -> argparse.ArgumentParser:
    """The options every benchmark script shares: --profile, --json, --markdown, --keep."""
    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    parser.add_argument("--profile", choices=sorted(profiles), default="smoke")
    parser.add_argument("--json", type=Path, default=None, help="write results as JSON here")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument("--keep", type=Path, default=None, help="keep the stores in this folder")
    return parser


@contextlib.contextmanager
def work_dir(keep: Path | None, prefix: str) -> Iterator[Path]:
    """``keep`` (made if missing, left in place) or a temporary folder removed afterwards."""
    root = keep or Path(tempfile.mkdtemp(prefix=prefix))
    root.mkdir(parents=True, exist_ok=True)
    try:
        yield root
    finally:
        if keep is None:
            shutil.rmtree(root, ignore_errors=True)


def run_scenarios(
    argv: list[str] | None,
    doc: str | None,
    profiles: dict[str, dict[str, Any]],
    build: Callable[[Path, dict[str, Any]], list[Scenario]],
    prefix: str,
    warmup: int = 1,
) -> int:
    """The ``main`` of a scenario benchmark: parse options, build, run, report."""
    args = bench_parser(doc, profiles).parse_args(argv)
    profile = profiles[args.profile]
    with work_dir(args.keep, prefix) as root:
        scenarios = build(root, profile)
        for scenario in scenarios:
            scenario.run(profile["rounds"], warmup=warmup)
        rows = report(scenarios, args.json)
        if args.markdown:
            print(markdown_table(rows))
    return 0
