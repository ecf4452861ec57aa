"""Datasets over sharded arrays of more shards than the open-file pool holds, with workers."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import torchzarr as tz

_EPOCHS = textwrap.dedent(
    """
    import collections, os, resource, sys
    resource.setrlimit(resource.RLIMIT_NOFILE, (128, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    import numpy as np, torch, torchzarr as tz
    from torchzarr.core.shard_files import open_shards

    root = sys.argv[1]
    src = {"x": tz.open_array(f"{root}/x.zarr", mode="r"), "y": tz.open_array(f"{root}/y.zarr", mode="r")}
    n = src["x"].shape[0]
    expected = np.arange(n * 4, dtype=np.int32).reshape(n, 4)
    ds = tz.ZarrIterableDataset(src, batch_size=64, block_chunks=400, seed=1)
    loader = torch.utils.data.DataLoader(
        ds, batch_size=None, num_workers=2, multiprocessing_context="fork", persistent_workers=True
    )
    held = []
    for epoch in range(2):
        ds.set_epoch(epoch)
        seen = collections.Counter()
        for batch in loader:
            rows = batch["y"].numpy()
            assert (batch["x"].numpy() == expected[rows]).all(), "values"
            seen.update(rows.tolist())
        assert sorted(seen) == list(range(n)) and max(seen.values()) == 1, "once each"
        held.append(len(os.listdir("/proc/self/fd")))
    sampled = tz.ZarrDataset(src)
    rows = np.random.default_rng(0).permutation(n)[:2000]
    assert (sampled.get_batch(rows)["x"].numpy() == expected[rows]).all()
    assert len(open_shards) <= open_shards.limit
    print("ok", held, flush=True)
    """
)


@pytest.mark.skipif(sys.platform != "linux", reason="fork workers and /proc")
def test_epochs_over_more_shards_than_the_descriptor_bound_read_each_sample_once(
    tmp_path: Path,
) -> None:
    rows = 300 * 8  # 300 shards of 8 rows: the pool holds 32 at a 128 descriptor limit
    values = np.arange(rows * 4, dtype=np.int32).reshape(rows, 4)
    x = tz.create_array(
        str(tmp_path / "x.zarr"), shape=(rows, 4), dtype="int32", chunks=(4, 4), shards=(8, 4)
    )
    x[:] = torch.from_numpy(values)
    y = tz.create_array(
        str(tmp_path / "y.zarr"), shape=(rows,), dtype="int64", chunks=(4,), shards=(8,)
    )
    y[:] = torch.arange(rows)
    done = subprocess.run(
        [sys.executable, "-c", _EPOCHS, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    held = [int(n) for n in done.stdout.split("[")[1].split("]")[0].split(",")]
    assert held[1] <= held[0] + 4  # descriptors do not pile up from one epoch to the next
