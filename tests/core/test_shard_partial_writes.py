"""Writes to part of a shard: only the inner chunks the write reaches are built and encoded."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numcodecs.checksum32 import CRC32C

import torchzarr as tz
from torchzarr.codecs.pipeline import V3Pipeline
from torchzarr.core.selection import make_indexer
from torchzarr.errors import ChunkDecodeError, InvalidArgumentError


def test_one_element_into_a_shard_larger_than_memory_builds_one_inner_chunk():
    # a 1 TiB shard of 65,536 inner chunks: the write used to build the whole shard (refused
    # here as larger than this machine's memory); now it builds the one inner chunk it reaches
    arr = tz.create_array(
        "memory://", shape=(2**41,), dtype="uint8", chunks=(2**24,), shards=(2**40,)
    )
    arr[5] = 7
    arr[2**40 + 3] = 9  # the second shard
    assert arr[3:7].tolist() == [0, 0, 7, 0] and arr[2**40 + 3].item() == 9
    assert arr.nchunks_initialized == 2


def test_untouched_inner_chunks_are_neither_decoded_nor_encoded(monkeypatch):
    arr = tz.create_array(
        "memory://",
        shape=(16, 16),
        dtype="int32",
        chunks=(4, 4),
        shards=(16, 16),
        compressors=None,
    )
    arr[:] = torch.arange(256, dtype=torch.int32).reshape(16, 16)
    calls = {"decode": 0, "encode": 0}
    for name in calls:
        original = getattr(V3Pipeline, name)

        def counted(self, *args, _original=original, _name=name, **kwargs):
            calls[_name] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(V3Pipeline, name, counted)
    arr[5, 6] = -1  # one inner chunk of 16, written in part: decoded and encoded
    # the shard's index and the inner chunk; the inner chunk and the new index
    assert calls == {"decode": 2, "encode": 2}
    calls.update(decode=0, encode=0)
    arr[4:8, 8:12] = 1  # one inner chunk written whole: encoded, not decoded
    assert calls == {"decode": 1, "encode": 2}  # only the index decoded
    expected = np.arange(256, dtype=np.int32).reshape(16, 16)
    expected[5, 6] = -1
    expected[4:8, 8:12] = 1
    np.testing.assert_array_equal(arr[:].numpy(), expected)


@pytest.mark.parametrize("index_location", ["start", "end"])
def test_partial_shard_writes_read_back_in_zarr_python(tmp_path, index_location):
    arr = tz.create_array(
        tmp_path / "a.zarr",
        shape=(10, 9),
        dtype="float32",
        chunks=(2, 3),
        shards={"shape": (4, 9), "index_location": index_location},
        fill_value=-1.0,
    )
    expected = np.full((10, 9), -1.0, np.float32)
    arr[1:7, 2] = torch.arange(6.0)
    expected[1:7, 2] = np.arange(6.0)
    arr.vindex[[0, 9], [8, 0]] = torch.tensor([5.0, 6.0])
    expected[[0, 9], [8, 0]] = [5.0, 6.0]
    arr[0:2, 0:3] = -1.0  # an inner chunk back to the fill value: dropped from its shard
    expected[0:2, 0:3] = -1.0
    arr[8:10, :] = -1.0  # the last shard's stored chunks all back to fill: shard deleted
    expected[8:10, :] = -1.0
    np.testing.assert_array_equal(arr[:].numpy(), expected)
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "a.zarr", mode="r")[:], expected)
    assert sorted(arr.store.list_prefix("c/")) == ["c/0/0", "c/1/0"]


def test_a_partial_write_of_fill_values_keeps_an_empty_shard_when_asked():
    arr = tz.create_array(
        "memory://", shape=(8,), dtype="uint8", chunks=(2,), shards=(4,), compressors=None
    )
    arr._write(
        make_indexer(slice(1, 2), arr.shape, arr._grid, "basic"),
        np.zeros(1, np.uint8),
        write_empty_chunks=True,
    )
    assert arr.store.get("c/0") is not None and arr.nchunks_initialized == 0
    arr[1] = 0  # by default a shard left with no inner chunk is deleted
    assert arr.store.get("c/0") is None


_SELECTIONS = st.sampled_from(["basic", "orthogonal", "vectorized"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    shape=st.lists(st.integers(1, 9), min_size=1, max_size=3),
    data=st.data(),
    kind=_SELECTIONS,
)
def test_partial_shard_writes_match_numpy(shape, data, kind):
    chunks = [data.draw(st.integers(1, n)) for n in shape]
    shards = [c * data.draw(st.integers(1, 3)) for c in chunks]
    arr = tz.create_array(
        "memory://",
        shape=tuple(shape),
        dtype="int16",
        chunks=tuple(chunks),
        shards=tuple(shards),
        fill_value=3,
    )
    expected = np.full(shape, 3, np.int16)
    for _ in range(4):
        value = data.draw(st.integers(0, 6))
        if kind == "basic":
            selection = tuple(
                slice(a, a + data.draw(st.integers(0, n - a)), data.draw(st.integers(1, 3)))
                for n in shape
                for a in [data.draw(st.integers(0, n - 1))]
            )
            arr[selection] = value
            expected[selection] = value
        elif kind == "orthogonal":
            picks = [
                sorted(set(data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=4))))
                for n in shape
            ]
            arr.oindex[tuple(picks)] = value
            expected[np.ix_(*picks)] = value
        else:
            count = data.draw(st.integers(1, 5))
            points = tuple(
                data.draw(st.lists(st.integers(0, n - 1), min_size=count, max_size=count))
                for n in shape
            )
            arr.vindex[points] = value
            expected[points] = value
        np.testing.assert_array_equal(arr[...].numpy(), expected)


@pytest.mark.parametrize("index_location", ["start", "end"])
def test_a_partial_write_into_a_damaged_shard_raises_naming_it_and_writes_nothing(
    tmp_path, index_location
):
    arr = tz.create_array(
        tmp_path / "a.zarr",
        shape=(8,),
        dtype="uint8",
        chunks=(2,),
        compressors=None,
        shards={"shape": (8,), "index_location": index_location},
    )
    arr[:] = torch.arange(1, 9, dtype=torch.uint8)
    shard = tmp_path / "a.zarr" / "c" / "0"
    whole = shard.read_bytes()
    # the index: 4 entries of (offset, nbytes) as little-endian uint64, then its crc32c
    start = 0 if index_location == "start" else len(whole) - (4 * 16 + 4)
    entries = bytearray(whole[start : start + 64])
    # inner chunk (3,) said to lie past the end: a stored chunk the write does not reach,
    # whose bytes would be kept as they are
    kept = bytearray(entries)
    kept[3 * 16 : 3 * 16 + 8] = (10**6).to_bytes(8, "little")
    # inner chunk (0,), which the write decodes, said to reach past the end
    decoded = bytearray(entries)
    decoded[8:16] = (10**6).to_bytes(8, "little")
    damaged_shards = [whole[:-3] if index_location == "start" else whole[3:]]  # truncated
    for bad in (kept, decoded):
        index = bytes(CRC32C().encode(bytes(bad)))
        damaged_shards.append(whole[:start] + index + whole[start + len(index) :])
    for damaged in damaged_shards:
        shard.write_bytes(damaged)
        with pytest.raises(ChunkDecodeError, match="c/0"):
            arr[0] = 100
        assert shard.read_bytes() == damaged  # left as it was


def test_a_write_reaching_across_a_block_larger_than_memory_is_refused():
    arr = tz.create_array(
        "memory://", shape=(2**41,), dtype="uint8", chunks=(2**24,), shards=(2**40,)
    )
    with pytest.raises(InvalidArgumentError, match=r"shard 'c/0'.*larger than this machine"):
        arr.vindex[[0, 2**40 - 1]] = torch.tensor([1, 2], dtype=torch.uint8)
    assert arr.nchunks_initialized == 0
