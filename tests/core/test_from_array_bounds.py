"""from_array: memory bounded on any shape, axis names replaced in v2, bad sources refused
before anything is made, and a failed copy leaves no array."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import torchzarr as tz
from torchzarr.errors import InvalidArgumentError


class _Recording:
    """A source that records the largest slab read from it."""

    def __init__(self, values: torch.Tensor, fail_from: int | None = None) -> None:
        self.values, self.shape, self.dtype = values, values.shape, values.dtype
        self.largest, self.fail_from, self.reads = 0, fail_from, 0

    def __getitem__(self, selection):
        self.reads += 1
        if self.fail_from is not None and selection[0].start >= self.fail_from:
            raise OSError("the source went away")
        out = self.values[selection]
        self.largest = max(self.largest, out.nbytes)
        return out


@pytest.mark.parametrize(
    ("shape", "chunks"),
    [((2, 1 << 16), (1, 1 << 10)), ((4096, 16), (4096, 1)), ((3, 4, 4096), (1, 2, 256))],
)
def test_slabs_stay_within_the_io_batch_whatever_the_shape(shape, chunks, monkeypatch):
    monkeypatch.setattr(tz.config, "io_batch_bytes", 16 << 10)
    values = torch.arange(int(np.prod(shape)), dtype=torch.float32).reshape(shape)
    source = _Recording(values)
    copy = tz.from_array("memory://", data=source, chunks=chunks)
    assert torch.equal(copy[...], values)
    assert source.largest <= 16 << 10  # a whole row of the first axis is 256 KiB


def test_a_source_chunk_past_the_budget_is_read_once_whole(monkeypatch):
    monkeypatch.setattr(tz.config, "io_batch_bytes", 16 << 10)
    values = torch.arange(2 * 8192, dtype=torch.float32).reshape(2, 8192)
    source = _Recording(values)
    source.chunks = (2, 8192)  # one 64 KiB chunk: decoded whole by any read of it
    copy = tz.from_array("memory://", data=source, chunks=(1, 1024))
    assert torch.equal(copy[...], values) and source.reads == 1


def test_a_v2_copy_renames_or_drops_the_axis_names():
    source = tz.create_array(
        "memory://", shape=(2, 3), dtype=torch.int8, zarr_format=2, dimension_names=("a", "b")
    )
    assert tz.from_array("memory://", data=source).dimension_names == ("a", "b")
    renamed = tz.from_array("memory://", data=source, dimension_names=("x", "y"))
    assert renamed.dimension_names == ("x", "y")
    dropped = tz.from_array("memory://", data=source, dimension_names=None)
    assert dropped.dimension_names is None and "_ARRAY_DIMENSIONS" not in dropped.attrs


@pytest.mark.parametrize(
    "source", [torch.eye(3).to_sparse(), torch.empty(3, device="meta"), [[1, 2], [3]]]
)
def test_sources_it_cannot_copy_are_refused_before_anything_is_made(tmp_path, source):
    with pytest.raises(InvalidArgumentError, match="from_array cannot copy"):
        tz.from_array(tmp_path / "a", data=source)
    assert not (tmp_path / "a").exists()


def test_a_copy_that_fails_midway_leaves_no_array(tmp_path, monkeypatch):
    monkeypatch.setattr(tz.config, "io_batch_bytes", 160)  # 40 float32 values a slab
    root = tz.open_group(tmp_path, mode="w")
    tz.consolidate_metadata(tmp_path)
    (tmp_path / "notes.txt").write_text("mine")  # keys that were there before the copy
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "readme.md").write_text("mine")
    with pytest.raises(OSError, match="went away"):
        tz.from_array(tmp_path, path="x", data=_Recording(torch.ones(100), 50), chunks=(10,))
    assert "x" not in tz.open_group(tmp_path, mode="r")  # nor in the consolidated metadata
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "x", "zarr.json"]
    assert [p.name for p in (tmp_path / "x").iterdir()] == ["readme.md"]  # only what it made
    assert list(root) == []
    with pytest.raises(OSError, match="went away"):  # overwrite: the path was cleared first
        tz.from_array(
            tmp_path, path="x", data=_Recording(torch.ones(100), 50), chunks=(10,), overwrite=True
        )
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())


def test_a_tensorstore_array_is_copied_in_slabs():
    ts = pytest.importorskip("tensorstore")
    values = np.arange(6, dtype=np.float32).reshape(2, 3)
    copy = tz.from_array("memory://", data=ts.array(values))
    assert copy.dtype == torch.float32 and copy[:].numpy().tolist() == values.tolist()
