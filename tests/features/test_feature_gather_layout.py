"""Gathers on the sharded layout: partial shard reads match whole reads, misses and overrides."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

import torchzarr as tz
from torchzarr.core.engine import run_parallel
from torchzarr.features import FeatureStore


def _store(path: Path, **kwargs: object) -> FeatureStore:
    fs = FeatureStore(str(path), mode="w", chunk_bytes=64, shard_bytes=512, **kwargs)  # type: ignore[arg-type]
    ids = torch.arange(1000, 1300)
    emb = torch.arange(300 * 8, dtype=torch.float32).reshape(300, 8)
    fs.write(ids, {"emb": emb, "label": torch.arange(300)})
    return fs


def _inner_codecs(path: Path) -> list[str]:
    meta = json.loads((path / "emb" / "zarr.json").read_text())
    (sharding,) = meta["codecs"]
    return [c["name"] for c in sharding["configuration"]["codecs"]]


def test_v3_features_are_sharded_with_raw_inner_chunks(tmp_path: Path) -> None:
    fs = _store(tmp_path / "s.zarr")
    arr = fs.array("emb")
    assert arr.chunks == (2, 8) and arr.shards == (16, 8)  # 64-byte inner, 512-byte shards
    assert _inner_codecs(tmp_path / "s.zarr") == ["bytes"]


def test_sharded_gather_matches_whole_reads_with_duplicates_and_misses(tmp_path: Path) -> None:
    fs = _store(tmp_path / "s.zarr")
    fs.write([5000], {"label": torch.tensor([7])})  # emb of the new id: fill, no inner chunk
    rng = np.random.default_rng(0)
    query = np.concatenate([rng.integers(1000, 1300, 50), [5000, 1299, 1000, 1000]])
    reader = FeatureStore(str(tmp_path / "s.zarr"), mode="r")
    batch = reader.read(query)
    whole_emb = reader.array("emb")[:].numpy()
    rows = np.where(query == 5000, 300, query - 1000)
    assert np.array_equal(batch["emb"].numpy(), whole_emb[rows])
    assert np.array_equal(batch["emb"].numpy()[-4], np.zeros(8))  # 5000 reads fill
    got = reader.read([4, 1001], missing="fill")
    assert got.mask.tolist() == [False, True] and got["emb"][0].tolist() == [0.0] * 8


def test_reader_caches_shard_indexes_and_refresh_sees_rewritten_shards(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    writer = _store(path)
    reader = FeatureStore(str(path), mode="r")
    assert reader.read([1003])["label"].tolist() == [3]
    shard_reader = reader._state().cached["emb"]._source.shard_reader
    assert shard_reader is not None and shard_reader._cache  # indexes kept between reads
    writer.write([1003, 9999], {"label": torch.tensor([42, 43])})
    assert reader.read([9999])["label"].tolist() == [43]  # unknown id: refresh
    assert reader.read([1003])["label"].tolist() == [42]


def test_compressors_override_reads_the_same(tmp_path: Path) -> None:
    fs = _store(tmp_path / "z.zarr", compressors="fast")
    assert fs.array("emb").shards is not None
    assert _inner_codecs(tmp_path / "z.zarr") == ["bytes", "blosc"]
    batch = FeatureStore(str(tmp_path / "z.zarr"), mode="r").read([1299, 1000, 1150])
    assert batch["emb"][:, 0].tolist() == [299 * 8.0, 0.0, 150 * 8.0]


def test_shard_reader_gather_rows_declines_shards_split_across_columns(tmp_path: Path) -> None:
    arr = tz.create_array(
        str(tmp_path / "a.zarr"),
        shape=(8, 4),
        dtype=torch.int32,
        chunks=(2, 2),
        shards=(4, 4),
        fill_value=0,
    )
    arr[:] = torch.arange(32, dtype=torch.int32).reshape(8, 4)
    out = np.empty((2, 4), dtype=np.int32)
    reader = arr._source.shard_reader
    assert reader is not None
    assert reader.gather_rows(np.array([1, 6]), out, run_parallel) is False
    whole = tz.create_array(
        str(tmp_path / "b.zarr"), shape=(8, 4), dtype=torch.int32, chunks=(2, 4), shards=(4, 4)
    )
    whole[:] = torch.arange(32, dtype=torch.int32).reshape(8, 4)
    reader = whole._source.shard_reader
    assert reader is not None and reader.gather_rows(np.array([1, 6]), out, run_parallel)
    assert out.tolist() == [[4, 5, 6, 7], [24, 25, 26, 27]]
    assert whole.oindex[np.array([6, 1, 6])].tolist() == [[24, 25, 26, 27], [4, 5, 6, 7]] * 1 + [
        [24, 25, 26, 27]
    ]


def test_writable_instance_caches_indexes_and_reads_its_own_writes(tmp_path: Path) -> None:
    fs = _store(tmp_path / "w.zarr")
    assert fs.read([1010])["label"].tolist() == [10]
    shard_reader = fs._state().cached["label"]._source.shard_reader
    assert shard_reader is not None and shard_reader._cache
    fs.write([1010, 1011], {"label": torch.tensor([-1, -2])})  # rewrites the shard
    assert fs.read([1011, 1010, 1012])["label"].tolist() == [-2, -1, 12]
