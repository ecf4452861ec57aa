"""Training-input benchmark: a shuffled epoch through ZarrIterableDataset against a sequential
full read of the same array and against a per-sample map-style Dataset over zarr-python with a
RandomSampler, with shuffle-quality figures beside the speeds.

Usage:
    python benchmarks/dataset_bench.py --profile smoke            # a few seconds, CI runs it
    python benchmarks/dataset_bench.py --profile full --json benchmarks/results/dataset.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, RandomSampler, get_worker_info

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import Scenario, bench_parser, environment, work_dir

import torchzarr as tz
from torchzarr.data import ZarrIterableDataset

PROFILES = {
    # rows x 3072 uint8 (32x32x3 images), 256-row chunks, zstd-1: the case of FACTS.md
    "smoke": {"rows": 8192, "rounds": 2, "baseline_batches": 2, "blocks": [16]},
    "full": {"rows": 100_000, "rounds": 5, "baseline_batches": 8, "blocks": [4, 16, 64]},
}
COLS, CHUNK, BATCH = 3072, 256, 256


def make_store(root: Path, rows: int) -> Path:
    """Image-like uint8 rows (compressible about 2x) written by zarr-python, v3, zstd level 1."""
    import zarr
    import zarr.codecs

    path = root / f"images-{rows}.zarr"
    if path.exists():
        return path
    rng = np.random.default_rng(0)
    z = zarr.create_array(
        str(path),
        shape=(rows, COLS),
        chunks=(CHUNK, COLS),
        dtype="uint8",
        compressors=zarr.codecs.ZstdCodec(level=1),
    )
    for start in range(0, rows, 8192):
        stop = min(rows, start + 8192)
        z[start:stop] = rng.integers(0, 16, size=(stop - start, COLS), dtype=np.uint8) * 16
    return path


class ZarrPythonRows(Dataset[Any]):
    """The common baseline: one zarr-python read per sample (array opened lazily per worker)."""

    def __init__(self, path: Path) -> None:
        self.path, self._z = str(path), None

    def __len__(self) -> int:
        import zarr

        return int(zarr.open_array(self.path, mode="r").shape[0])

    def __getitem__(self, i: int) -> torch.Tensor:
        if self._z is None:
            import zarr

            self._z = zarr.open_array(self.path, mode="r")
        return torch.from_numpy(np.asarray(self._z[i]))


class EmptyBatches(IterableDataset[torch.Tensor]):
    """Batches of the right size and no I/O: what a DataLoader's worker transfer alone costs."""

    def __init__(self, rows: int) -> None:
        self.rows = rows

    def __iter__(self) -> Any:
        info = get_worker_info()
        workers, me = (info.num_workers, info.id) if info is not None else (1, 0)
        for start in range(me * BATCH, self.rows, workers * BATCH):
            batch = torch.empty((min(BATCH, self.rows - start), COLS), dtype=torch.uint8)
            batch.fill_(1)
            yield batch


def epoch_ids(path: Path, workers: int, block_chunks: int) -> list[np.ndarray]:
    """Batches of row ids of one shuffled epoch (ids from a side array of row numbers)."""
    ds = ZarrIterableDataset(_id_array(path), batch_size=BATCH, block_chunks=block_chunks, seed=0)
    return [b.numpy() for b in DataLoader(ds, batch_size=None, num_workers=workers)]


def _id_array(path: Path) -> Any:
    rows = tz.open_array(str(path), mode="r").shape[0]
    ids = tz.create_array("memory://", shape=(rows,), dtype=torch.int64, chunks=(CHUNK,))
    ids[:] = torch.arange(rows)
    return ids


def shuffle_quality(batches: list[np.ndarray], rows: int) -> dict[str, float]:
    """|Spearman rho| of position vs row (0 = no trace of the stored order, 1 = sequential) and
    the mean number of distinct chunks per batch (the more, the more mixed a batch is)."""
    order = np.concatenate(batches)
    rho = float(np.corrcoef(np.arange(len(order)), order)[0, 1])  # ranks: order is a permutation
    distinct = float(np.mean([len(np.unique(b // CHUNK)) for b in batches]))
    return {"abs_spearman": abs(rho), "chunks_per_batch": distinct, "rows": rows}


def run(profile: dict[str, Any], root: Path) -> dict[str, Any]:
    path = make_store(root, profile["rows"])
    arr = tz.open_array(str(path), mode="r")
    rows, nbytes = arr.shape[0], arr.nbytes

    def sequential() -> None:
        arr[:]

    def sequential_slabs() -> None:  # in order, 16 chunks at a time: bounded memory
        for start in range(0, rows, CHUNK * 16):
            arr[start : start + CHUNK * 16]

    def epoch(workers: int, block_chunks: int):
        def go() -> None:
            ds = ZarrIterableDataset(arr, batch_size=BATCH, block_chunks=block_chunks, seed=0)
            for _ in DataLoader(ds, batch_size=None, num_workers=workers):
                pass

        return go

    def persistent_epoch(block_chunks: int):
        """Workers started once (``persistent_workers=True``): each call is one more epoch."""
        ds = ZarrIterableDataset(arr, batch_size=BATCH, block_chunks=block_chunks, seed=0)
        loader = DataLoader(ds, batch_size=None, num_workers=2, persistent_workers=True)

        def go() -> None:
            for _ in loader:
                pass

        return go

    baseline_rows = profile["baseline_batches"] * BATCH

    def zarr_python_random() -> None:
        ds = ZarrPythonRows(path)
        sampler = RandomSampler(ds, generator=torch.Generator().manual_seed(0))
        loader = DataLoader(ds, batch_size=BATCH, sampler=sampler, num_workers=2)
        for i, _ in enumerate(loader, 1):
            if i == profile["baseline_batches"]:
                break

    def transfer_only() -> None:
        for _ in DataLoader(EmptyBatches(rows), batch_size=None, num_workers=2):
            pass

    contenders = {
        "sequential full read": sequential,
        "sequential read in 16-chunk slabs": sequential_slabs,
    }
    for k in profile["blocks"]:
        for workers in (0, 2):
            contenders[f"shuffled epoch, K={k}, workers={workers}"] = epoch(workers, k)
        contenders[f"shuffled epoch, K={k}, workers=2, persistent"] = persistent_epoch(k)
    contenders["DataLoader transfer alone (no I/O), workers=2"] = transfer_only
    scenario = Scenario("dataset epoch", nbytes, contenders)
    scenario.run(profile["rounds"])
    slow = Scenario("zarr-python map-style", baseline_rows * COLS, {"zp": zarr_python_random})
    slow.run(1, warmup=0)
    med = scenario.medians()
    rate = {label: rows / t for label, t in med.items()}
    rate["zarr-python Dataset + RandomSampler, workers=2"] = baseline_rows / slow.medians()["zp"]
    seq = rate["sequential full read"]
    slabs = rate["sequential read in 16-chunk slabs"]
    ceiling = rate["DataLoader transfer alone (no I/O), workers=2"]
    zp = rate["zarr-python Dataset + RandomSampler, workers=2"]
    results = []
    for label, r in rate.items():
        row: dict[str, Any] = {"contender": label, "rows_per_s": r, "gb_per_s": r * COLS / 1e9}
        if label.startswith("shuffled"):
            k = int(label.split("K=")[1].split(",")[0])
            row["of_sequential"] = r / seq
            row["of_sequential_slabs"] = r / slabs
            row["x_zarr_python_random"] = r / zp
            if "workers=2" in label:
                row["of_transfer_ceiling"] = r / ceiling
            row["quality"] = shuffle_quality(epoch_ids(path, 0, k), rows)
        results.append(row)
    reference = [
        np.random.default_rng(0).permutation(rows)[i : i + BATCH] for i in range(0, rows, BATCH)
    ]
    return {
        "rows": rows,
        "cols": COLS,
        "chunk_rows": CHUNK,
        "batch_size": BATCH,
        "results": results,
        "full_shuffle_quality": shuffle_quality(reference, rows),
    }


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "| contender | rows/s | GB/s | of full read | of slab read | of DataLoader transfer "
        "| x zarr-python random | abs(Spearman) | chunks/batch |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report["results"]:
        q = row.get("quality", {})
        cells = [
            row["contender"],
            f"{row['rows_per_s']:,.0f}",
            f"{row['gb_per_s']:.3f}",
            f"{row['of_sequential']:.2f}" if "of_sequential" in row else "",
            f"{row['of_sequential_slabs']:.2f}" if "of_sequential" in row else "",
            f"{row['of_transfer_ceiling']:.2f}" if "of_transfer_ceiling" in row else "",
            f"{row['x_zarr_python_random']:.0f}" if "x_zarr_python_random" in row else "",
            f"{q['abs_spearman']:.3f}" if q else "",
            f"{q['chunks_per_batch']:.1f}" if q else "",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    ref = report["full_shuffle_quality"]
    lines.append(
        f"| (a full random permutation) | | | | | | | {ref['abs_spearman']:.3f} | {ref['chunks_per_batch']:.1f} |"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = bench_parser(__doc__, PROFILES).parse_args(argv)
    with work_dir(args.keep, "tz-dataset-bench-") as root:
        report = run(PROFILES[args.profile], root)
    for row in report["results"]:
        extra = ""
        if "of_sequential" in row:
            extra = (
                f"  of sequential={row['of_sequential']:.2f}"
                f" (slabs {row['of_sequential_slabs']:.2f})"
                f"  x zarr-python random={row['x_zarr_python_random']:.0f}"
                f"  |rho|={row['quality']['abs_spearman']:.3f}"
                f"  chunks/batch={row['quality']['chunks_per_batch']:.1f}"
            )
        print(f"{row['contender']:<50} {row['rows_per_s']:>12,.0f} rows/s{extra}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"environment": environment(), **report}, indent=2))
    if args.markdown:
        print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
