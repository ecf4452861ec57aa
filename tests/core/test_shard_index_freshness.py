"""Read-only handles of sharded arrays read the shards as stored now, whoever rewrote them."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import zarr

import torchzarr as tz
from torchzarr.core.row_gather import gather_rows

SHAPE = (64, 8)


def _create(path, compressors):
    """One shard of sixteen inner chunks of four rows, holding 0..511."""
    arr = tz.create_array(
        str(path),
        shape=SHAPE,
        dtype=torch.float32,
        chunks=(4, 8),
        shards=SHAPE,
        compressors=compressors,
    )
    arr[:] = torch.arange(512, dtype=torch.float32).reshape(SHAPE)


def _new_values() -> np.ndarray:
    """A second version whose first half is the fill value: its inner chunks are not
    stored, so every stored inner chunk moves to another offset in the shard."""
    values = np.arange(512, dtype=np.float32).reshape(SHAPE) + 1000
    values[:32] = 0
    return values


def _read_only(path, store_kind: str) -> tz.Array:
    if store_kind == "local":
        return tz.open_array(str(path), mode="r")
    return tz.open_array(tz.FsspecStore(f"file://{path}", read_only=True), mode="r")


def _shard_file(path) -> str:
    return os.path.join(path, "c", "0", "0")


@pytest.mark.parametrize("compressors", [None, "zstd"])
@pytest.mark.parametrize("store_kind", ["local", "fsspec"])
def test_a_shard_rewritten_by_zarr_python_reads_back_new_values_on_the_same_handle(
    tmp_path, store_kind, compressors
):
    path = tmp_path / "a.zarr"
    _create(path, compressors)
    reader = _read_only(path, store_kind)
    assert reader[10, :3].tolist() == [80.0, 81.0, 82.0]  # the shard's index read here
    new = _new_values()
    zarr.open_array(str(path), mode="r+")[:] = new
    np.testing.assert_array_equal(reader[10, :3].numpy(), new[10, :3])
    np.testing.assert_array_equal(reader[40:44, 2:5].numpy(), new[40:44, 2:5])
    np.testing.assert_array_equal(reader[:].numpy(), new)  # whole shard: agrees


@pytest.mark.parametrize("store_kind", ["local", "fsspec"])
def test_a_shard_file_replaced_by_a_copy_reads_back_new_values_on_the_same_handle(
    tmp_path, store_kind
):
    path, other = tmp_path / "a.zarr", tmp_path / "b.zarr"
    _create(path, "zstd")
    _create(other, "zstd")
    new = _new_values()
    tz.open_array(str(other), mode="r+")[:] = torch.from_numpy(new)
    reader = _read_only(path, store_kind)
    assert reader[50, 0].item() == 400.0
    incoming = _shard_file(path) + ".incoming"
    with open(_shard_file(other), "rb") as src, open(incoming, "wb") as dst:
        dst.write(src.read())
    os.replace(incoming, _shard_file(path))  # as a writer in another process does
    np.testing.assert_array_equal(reader[48:52].numpy(), new[48:52])
    assert reader[5, 0].item() == 0.0  # an inner chunk the new version does not store


def test_a_shard_rewritten_in_place_is_read_again_on_the_same_handle(tmp_path):
    path, other = tmp_path / "a.zarr", tmp_path / "b.zarr"
    _create(path, None)
    _create(other, None)
    new = _new_values()
    tz.open_array(str(other), mode="r+")[:] = torch.from_numpy(new)
    reader = tz.open_array(str(path), mode="r")
    assert reader[50, 0].item() == 400.0
    with open(_shard_file(other), "rb") as src:
        newer = src.read()
    with open(_shard_file(path), "r+b") as dst:  # the same file, truncated and rewritten
        dst.truncate(0)
        dst.write(newer)
    np.testing.assert_array_equal(reader[48:52].numpy(), new[48:52])


def test_row_gathers_and_datasets_of_read_only_arrays_see_a_rewritten_shard(tmp_path):
    path = tmp_path / "a.zarr"
    _create(path, None)
    reader = tz.open_array(str(path), mode="r")
    dataset = tz.ZarrDataset(str(path))
    out = np.empty((2, 8), np.float32)
    assert gather_rows(reader, np.array([40, 3]), out) and out[0, 0] == 320.0
    assert dataset[41][0].item() == 328.0
    new = _new_values()
    zarr.open_array(str(path), mode="r+")[:] = new
    assert gather_rows(reader, np.array([40, 3]), out)
    np.testing.assert_array_equal(out, new[[40, 3]])
    np.testing.assert_array_equal(dataset[41].numpy(), new[41])


def test_a_removed_shard_reads_as_fill_on_the_same_handle(tmp_path):
    path = tmp_path / "a.zarr"
    _create(path, None)
    reader = tz.open_array(str(path), mode="r")
    assert reader[7, 1].item() == 57.0
    os.remove(_shard_file(path))
    assert reader[7, 1].item() == 0.0
