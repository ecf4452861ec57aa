"""Golden stores written by zarr-python and tensorstore (committed) read back exactly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import torchzarr as tz

HERE = Path(__file__).resolve().parent
CASES = json.loads((HERE / "cases.json").read_text())


def _expected(case: dict) -> np.ndarray:
    from make_golden import expected

    if case["numpy_dtype"] == "bfloat16" or case["writer"] == "tensorstore":
        import ml_dtypes

        base = expected({**case, "numpy_dtype": "<f4"})
        dtype = ml_dtypes.bfloat16 if case["numpy_dtype"] == "bfloat16" else case["numpy_dtype"]
        return base.astype(dtype)
    return expected(case)


def test_every_golden_store_is_committed():
    missing = [c["name"] for c in CASES if not (HERE / "data" / c["name"]).is_dir()]
    assert not missing, f"golden stores missing (run tests/golden/make_golden.py): {missing}"


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["name"])
def test_golden_store_reads_back(case, monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))
    path = HERE / "data" / case["name"]
    if not path.is_dir():
        pytest.fail(f"golden store {case['name']} is missing: run tests/golden/make_golden.py")
    arr = tz.open_array(path, mode="r")
    assert arr.zarr_format == case["zarr_format"]
    assert list(arr.shape) == case["shape"]
    got = arr[...]
    want = _expected(case)
    if case["numpy_dtype"] == "bfloat16":
        assert got.dtype == torch.bfloat16
        np.testing.assert_array_equal(got.view(torch.uint16).numpy(), want.view(np.uint16))
    else:
        np.testing.assert_array_equal(got.numpy(), want)
    if "shards" in case:
        assert list(arr.shards) == case["shards"] and list(arr.chunks) == case["chunks"]
