"""Reads, writes and from_array copies handle at most ``engine.BATCH_CHUNKS`` chunks a batch,
however small the chunks (``io_batch_bytes`` alone would let a batch hold millions)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import torchzarr as tz
from torchzarr.core import engine, tiles

CAP = 8


@pytest.fixture
def small_cap(monkeypatch):
    """A cap of 8 chunks a batch (raising=False: so the tests run, and fail, without one)."""
    monkeypatch.setattr(engine, "BATCH_CHUNKS", CAP, raising=False)


def _recording(monkeypatch, module, name, size):
    """Wrap ``module.name`` to record ``size(args)`` of each call."""
    seen: list[int] = []
    original = getattr(module, name)

    def wrapper(*args, **kwargs):
        seen.append(size(*args))
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)
    return seen


def _tiny_chunks(store="memory://", shape=(100,)):
    arr = tz.create_array(store, shape=shape, dtype="int8", chunks=(1,) * len(shape))
    values = torch.arange(int(np.prod(shape)), dtype=torch.int8).reshape(shape)
    arr[...] = values
    return arr, values


def test_chunks_per_batch_is_capped_whatever_the_byte_budget():
    assert engine.chunks_per_batch(1) == engine.BATCH_CHUNKS == 65536
    assert engine.chunks_per_batch(tz.config.io_batch_bytes // 4) == 4  # the budget: below
    assert engine.chunks_per_batch(tz.config.io_batch_bytes * 2) == 1  # one, if larger


def test_a_read_of_many_tiny_chunks_goes_in_batches_of_the_cap(small_cap, monkeypatch):
    arr, values = _tiny_chunks()
    batches = _recording(monkeypatch, engine, "_read_batch", lambda _s, batch, *_: len(batch))
    assert torch.equal(arr[:], values)
    assert sum(batches) == 100 and max(batches) <= CAP


def test_a_write_of_many_tiny_chunks_goes_in_batches_of_the_cap(small_cap, monkeypatch):
    arr = tz.create_array("memory://", shape=(100,), dtype="int8", chunks=(1,))
    batches = _recording(monkeypatch, engine, "_write_batch", lambda _s, batch, *_: len(batch))
    values = torch.arange(100, dtype=torch.int8)
    arr[:] = values
    assert sum(batches) == 100 and max(batches) <= CAP
    assert torch.equal(arr[:], values)


def test_a_tiled_local_read_reads_at_most_the_cap_in_one_go(small_cap, monkeypatch, tmp_path):
    arr, values = _tiny_chunks(tmp_path / "a", shape=(8, 40))
    boxes = _recording(
        monkeypatch, tiles, "read_tiles", lambda _r, box, *_: int(np.prod([b - a for a, b in box]))
    )
    assert torch.equal(arr[:, 1:], values[:, 1:])  # 8 x 39 whole chunks, read in tiles
    assert sum(boxes) == 8 * 39 and max(boxes) <= CAP


@pytest.mark.parametrize("source_chunks", [None, (64,)], ids=["tensor", "big-source-chunks"])
def test_from_array_writes_at_most_the_cap_of_blocks_a_batch(small_cap, monkeypatch, source_chunks):
    values = torch.arange(100, dtype=torch.int8)
    source = values
    if source_chunks is not None:  # whole source chunks would hold 64 blocks of the copy
        monkeypatch.setattr(tz.config, "io_batch_bytes", 16)
        source = tz.create_array("memory://", data=values, chunks=source_chunks)
    batches = _recording(monkeypatch, engine, "_write_batch", lambda _s, batch, *_: len(batch))
    copy = tz.from_array("memory://", data=source, chunks=(1,))
    assert sum(batches) == 100 and max(batches) <= CAP
    assert torch.equal(copy[:], values)


def test_a_write_takes_its_chunks_from_the_selection_a_batch_at_a_time(small_cap, monkeypatch):
    # The projections of a write come from the selection as batches need them: a list of
    # every chunk's projection made up front grows with the chunks a write covers.
    from torchzarr.core import array as array_module

    made: list[int] = []

    class Counting:
        def __init__(self, indexer):
            self.shape, self._indexer = indexer.shape, indexer

        def __iter__(self):
            for projection in self._indexer:
                made.append(1)
                yield projection

    make = array_module.make_indexer
    monkeypatch.setattr(array_module, "make_indexer", lambda *a: Counting(make(*a)))
    ahead: list[int] = []
    real_batch = engine._write_batch

    def batch(source, chunks, *rest):
        ahead.append(len(made) - sum(map(len, written)))
        written.append(chunks)
        return real_batch(source, chunks, *rest)

    written: list[list] = []
    monkeypatch.setattr(engine, "_write_batch", batch)
    arr = tz.create_array("memory://", shape=(100,), dtype="int8", chunks=(1,))
    arr[:] = torch.arange(100, dtype=torch.int8)
    assert len(made) == 100 and max(ahead) <= CAP  # never more than the batch in hand
    monkeypatch.undo()
    assert torch.equal(arr[:], torch.arange(100, dtype=torch.int8))
