"""``iter_chunks`` holds no chunk it has handed over: once the consumer drops a chunk, the
stream's read-ahead runs without it, so at most ``parallel + 1`` chunks are held."""

from __future__ import annotations

import weakref
from typing import Any

import pytest
import torch

import torchzarr as tz
from torchzarr.core.streaming import iter_chunks


class _WatchedArray:
    """An array whose reads, at the moment each is started, count the chunks already
    handed to the consumer that are still alive."""

    def __init__(self, array: tz.Array) -> None:
        self._array = array
        self.shape, self.chunks, self.name = array.shape, array.chunks, array.name
        self.handed_over: list[weakref.ref[torch.Tensor]] = []
        self.alive_at_read_start: list[int] = []

    @property
    def read(self) -> Any:
        self.alive_at_read_start.append(sum(ref() is not None for ref in self.handed_over))
        return self._array.read


@pytest.mark.parametrize("parallel", [1, 2, 4])
def test_a_dropped_chunk_is_released_before_the_next_read_starts(parallel):
    arr = tz.create_array("memory://", shape=(12, 3), dtype=torch.int32, chunks=(1, 3))
    arr[:] = torch.arange(36, dtype=torch.int32).reshape(12, 3)
    watched = _WatchedArray(arr)
    rows = []
    for _, region, chunk in iter_chunks(watched, parallel=parallel):
        rows.append((region[0].start, chunk[0, 0].item()))
        watched.handed_over.append(weakref.ref(chunk))
        del chunk
    assert rows == [(i, 3 * i) for i in range(12)]
    assert len(watched.alive_at_read_start) == 12
    assert max(watched.alive_at_read_start) == 0


def test_chunks_are_counted_off_one_at_a_time_however_many_there_are():
    """The grid's positions are not listed first: an array of 2**62 chunks streams its
    first ones (a list of them would not fit in any memory)."""
    huge = tz.create_array("memory://", shape=(2**62,), dtype=torch.int8, chunks=(1,))
    chunks = huge.iter_chunks(parallel=1)
    assert [next(chunks)[0] for _ in range(3)] == [(0,), (1,), (2,)]
    chunks.close()
