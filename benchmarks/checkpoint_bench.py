"""Checkpoint save and load: torchzarr (``save_checkpoint`` and DCP storage) against
``torch.save``/``torch.load`` and DCP's ``FileSystemWriter``/``FileSystemReader``.

Same state dict for all (float32 matrices plus biases), same directory, warm page cache
on load. Saves: torchzarr fsyncs before its commit, DCP's writer fsyncs too, torch.save
does not (``torch.save+fsync`` shows what durability costs it). Peak memory on load is the
growth of the peak RSS of a fresh process loading the checkpoint, over the tensor bytes.

Usage:
    python benchmarks/checkpoint_bench.py                     # 256 MiB, about a minute
    python benchmarks/checkpoint_bench.py --mib 1024 --markdown --json benchmarks/results/ckpt.json
    python benchmarks/checkpoint_bench.py --mib 1024 --settle 3   # + saves on an idle disk
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import Scenario, markdown_table, report

from torchzarr.checkpoint import save_checkpoint
from torchzarr.checkpoint.load import load_checkpoint
from torchzarr.checkpoint.prune import wait_pruned
from torchzarr.distributed import ZarrStorageReader, ZarrStorageWriter

warnings.filterwarnings("ignore", message="torch.distributed is disabled")
warnings.filterwarnings("ignore", message="Detected an existing checkpoint")


def shapes(mib: int) -> dict[str, tuple[int, ...]]:
    """Layers of 2048x2048 float32 (16 MiB each) and their biases, ``mib`` MiB in all."""
    out: dict[str, tuple[int, ...]] = {}
    for i in range(max(1, mib // 16)):
        out[f"layers.{i}.weight"] = (2048, 2048)
        out[f"layers.{i}.bias"] = (2048,)
    return out


def make_state(mib: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {k: torch.randn(shape) for k, shape in shapes(mib).items()}


def _nbytes(state: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in state.values())


def _torch_save(state: Any, path: Path, fsync: bool) -> None:
    with open(path, "wb") as f:
        torch.save(state, f)
        if fsync:
            f.flush()
            os.fsync(f.fileno())


def _empty_like(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: torch.empty_like(v) for k, v in state.items()}


def _touch(tree: dict[str, torch.Tensor]) -> float:
    return float(sum(t.sum() for t in tree.values()))


def save_scenario(state: dict[str, torch.Tensor], root: Path) -> Scenario:
    return Scenario(
        "save (torchzarr fsyncs)",
        _nbytes(state),
        {
            "torchzarr": lambda: save_checkpoint(state, str(root / "tz")),
            "torchzarr-dcp": lambda: dcp.save(
                state, storage_writer=ZarrStorageWriter(str(root / "tzdcp")), no_dist=True
            ),
            "torch.save": lambda: _torch_save(state, root / "ts.pt", fsync=False),
            "torch.save+fsync": lambda: _torch_save(state, root / "ts.pt", fsync=True),
            "dcp-filesystem": lambda: dcp.save(
                state, storage_writer=dcp.FileSystemWriter(str(root / "dcp")), no_dist=True
            ),
        },
    )


def load_scenario(state: dict[str, torch.Tensor], root: Path) -> Scenario:
    def tz_dcp() -> None:
        dcp.load(_empty_like(state), storage_reader=ZarrStorageReader(str(root / "tzdcp")))

    def fs_dcp() -> None:
        dcp.load(_empty_like(state), storage_reader=dcp.FileSystemReader(str(root / "dcp")))

    return Scenario(
        "load (warm page cache)",
        _nbytes(state),
        {
            "torchzarr": lambda: load_checkpoint(str(root / "tz")),
            "torchzarr-huge": lambda: load_checkpoint(str(root / "tz"), huge_pages=True),
            "torchzarr-lazy+touch": lambda: _touch(load_checkpoint(str(root / "tz"), lazy=True)),
            "torchzarr-dcp": tz_dcp,
            "torch.load": lambda: torch.load(root / "ts.pt", weights_only=True),
            "torch.load-mmap+touch": lambda: _touch(
                torch.load(root / "ts.pt", weights_only=True, mmap=True)
            ),
            "dcp-filesystem": fs_dcp,
        },
    )


_PEAK = """
import re, sys, time, torch, torch.distributed.checkpoint as dcp, warnings
warnings.simplefilter("ignore")
sys.path.insert(0, {here!r})
from checkpoint_bench import shapes
from torchzarr.checkpoint.load import load_checkpoint
from torchzarr.distributed import ZarrStorageReader
def status(field):
    text = open("/proc/self/status").read()
    return int(re.search(field + r":\\s+(\\d+)", text).group(1)) * 1024
what, root, mib = sys.argv[1], sys.argv[2], int(sys.argv[3])
# untouched destination pages: they count in the growth, as the others' results do
target = {{k: torch.empty(s) for k, s in shapes(mib).items()}}
open("/proc/self/clear_refs", "w").write("5")  # reset the peak RSS (VmHWM)
before = status("VmRSS")
start = time.perf_counter()
if what == "torchzarr":
    out = load_checkpoint(root + "/tz")
elif what == "torchzarr-huge":
    out = load_checkpoint(root + "/tz", huge_pages=True)
elif what == "torch.load":
    out = torch.load(root + "/ts.pt", weights_only=True)
elif what == "torchzarr-dcp":
    dcp.load(target, storage_reader=ZarrStorageReader(root + "/tzdcp"), no_dist=True)
else:
    dcp.load(target, storage_reader=dcp.FileSystemReader(root + "/dcp"), no_dist=True)
print(status("VmHWM") - before, time.perf_counter() - start)
"""


def fresh_loads(root: Path, mib: int, nbytes: int, repeats: int = 2) -> dict[str, Any]:
    """Each checkpoint loaded by a fresh process, as a real restart does: GB/s and peak.

    Peak is the growth of the peak RSS over the tensor bytes: 1.0 means no memory beyond
    the loaded tensors (DCP loads fill tensors allocated, untouched, before the baseline,
    so they count the same way). Times include allocating the tensors' memory anew.
    """
    code = _PEAK.format(here=str(Path(__file__).resolve().parent))
    out: dict[str, Any] = {}
    for what in ("torchzarr", "torchzarr-huge", "torch.load", "torchzarr-dcp", "dcp-filesystem"):
        runs = []
        for _ in range(repeats):
            result = subprocess.run(
                [sys.executable, "-c", code, what, str(root), str(mib)],
                capture_output=True,
                text=True,
                check=True,
            )
            peak, seconds = result.stdout.strip().splitlines()[-1].split()
            runs.append((float(seconds), int(peak) / nbytes))
        seconds, peak = min(runs)
        out[what] = {"gb_per_s": nbytes / seconds / 1e9, "peak": peak}
    return out


def settled_saves(scenario: Scenario, rounds: int, settle: float) -> dict[str, float]:
    """GB/s of each save when the disk is idle first: a real run saves minutes apart.

    Before each timed save: torchzarr's background deletion of old versions finishes,
    ``os.sync()``, then ``settle`` seconds for the file system's deferred work (the
    ``discard`` mount option trims deleted or truncated files' blocks after the journal
    commit, slowing whichever save comes next). Contenders interleaved, medians.
    """
    times: dict[str, list[float]] = {}
    for _ in range(rounds):
        for label, fn in scenario.contenders.items():
            wait_pruned()
            os.sync()
            time.sleep(settle)
            start = time.perf_counter()
            fn()
            times.setdefault(label, []).append(time.perf_counter() - start)
    return {k: scenario.nbytes / statistics.median(v) / 1e9 for k, v in times.items()}


def ratios(rows: list[dict[str, Any]]) -> list[str]:
    lines = []
    for row, base in zip(rows, ("torch.save", "torch.load"), strict=True):
        med = row["median_s"]
        for label in ("torchzarr", "torchzarr-dcp"):
            vs = {b: med[b] / med[label] for b in (base, "dcp-filesystem")}
            text = ", ".join(f"{v:.2f}x {b}" for b, v in vs.items())
            lines.append(f"{row['scenario']}: {label} is {text}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256, help="state dict size (1024: ~1 GB)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: tmp)")
    parser.add_argument("--json", type=Path, default=None, help="write results as JSON here")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument("--no-peak", action="store_true", help="skip the peak-memory runs")
    parser.add_argument(
        "--settle", type=float, default=0.0, help="also time saves on an idle disk (seconds)"
    )
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="torchzarr-ckpt-bench-", dir=args.dir))
    try:
        state = make_state(args.mib)
        scenarios = [save_scenario(state, root), load_scenario(state, root)]
        for scenario in scenarios:
            scenario.run(args.rounds, warmup=1)
        rows = report(scenarios, args.json)
        for line in ratios(rows):
            print(line)
        if args.settle > 0:
            settled = settled_saves(scenarios[0], args.rounds, args.settle)
            print(
                "save, idle disk first, GB/s: "
                + "  ".join(f"{k}={v:.3f}" for k, v in settled.items())
            )
        if not args.no_peak:
            fresh = fresh_loads(root, args.mib, _nbytes(state))
            for label, row in fresh.items():
                print(
                    f"fresh-process load {label:<16} {row['gb_per_s']:.3f} GB/s, "
                    f"peak memory {row['peak']:.2f}x the tensors"
                )
            if args.json is not None:
                doc = json.loads(args.json.read_text())
                doc["fresh_process_loads"] = fresh
                args.json.write_text(json.dumps(doc, indent=2))
        if args.markdown:
            print(markdown_table(rows))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
