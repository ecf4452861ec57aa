"""Lazy (memory-mapped) checkpoint loading, and partial loads that read only chosen tensors."""

from __future__ import annotations

import gc
import pathlib
from collections.abc import Sequence
from typing import Any

import pytest
import torch

from torchzarr.checkpoint import save_checkpoint
from torchzarr.checkpoint.load import load_checkpoint
from torchzarr.checkpoint.rawio import map_array
from torchzarr.storage import LocalStore


class CountingStore(LocalStore):
    """A read-only local store that records every key whose bytes it returns."""

    def __init__(self, root: Any) -> None:
        super().__init__(root, read_only=True)
        self.reads: list[str] = []

    def get(self, key: str) -> bytes | None:
        self.reads.append(key)
        return super().get(key)

    def get_range(self, key: str, byte_range: Any) -> bytes | None:
        self.reads.append(key)
        return super().get_range(key, byte_range)

    def get_many(self, keys: Sequence[str]) -> dict[str, bytes | None]:
        self.reads.extend(keys)
        return super().get_many(keys)

    def get_ranges(self, requests: Sequence[tuple[str, Any]]) -> list[bytes | None]:
        self.reads.extend(key for key, _ in requests)
        return super().get_ranges(requests)

    def chunk_reads(self) -> list[str]:
        # chunk keys: c.0.0 (save_checkpoint's "." separator), c/0/0, or c for 0-d arrays
        return [k for k in self.reads if "/c/" in k or k.rsplit("/", 1)[-1].split(".")[0] == "c"]


def _state() -> dict[str, Any]:
    torch.manual_seed(0)
    return {
        "model": {
            "big": torch.randn(1000, 256),  # 4 chunks of 256 rows, the last one padded
            "small": torch.randn(3, 5),
            "half": torch.randn(7, 3).to(torch.bfloat16),
            "flag": torch.tensor([True, False]),
            "scalar": torch.tensor(2.5),
            "empty": torch.zeros(0, 4),
        },
        "packed": torch.randn(64, 64),
        "step": 9,
    }


@pytest.fixture
def saved(tmp_path: pathlib.Path) -> tuple[pathlib.Path, dict[str, Any]]:
    state = _state()
    save_checkpoint(state, str(tmp_path / "ckpt"), chunk_bytes=2**18)
    return tmp_path / "ckpt", state


def _equal(a: Any, b: Any) -> None:
    assert type(a) is type(b)
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for key in a:
            _equal(a[key], b[key])
    else:
        assert a == b


def test_lazy_load_equals_eager(saved: tuple[pathlib.Path, dict[str, Any]]) -> None:
    path, state = saved
    _equal(load_checkpoint(str(path), lazy=True), state)
    _equal(load_checkpoint(str(path), lazy=True), load_checkpoint(str(path)))


def test_lazy_load_reads_no_chunk(saved: tuple[pathlib.Path, dict[str, Any]]) -> None:
    path, state = saved
    eager, lazy = CountingStore(path), CountingStore(path)
    load_checkpoint(eager)
    assert len(eager.chunk_reads()) >= 9  # raw chunks: read into the tensors
    loaded = load_checkpoint(lazy, lazy=True)
    assert lazy.chunk_reads() == []  # every tensor here is mapped
    assert torch.equal(loaded["model"]["big"], state["model"]["big"])  # paged in on touch


@pytest.mark.parametrize("compressors", [None, "balanced"])
def test_keys_read_only_the_chosen_tensors(tmp_path: pathlib.Path, compressors: Any) -> None:
    state = _state()
    save_checkpoint(state, str(tmp_path), compressors=compressors, chunk_bytes=2**18)
    store = CountingStore(tmp_path)
    part = load_checkpoint(store, keys=["model.small", "step"])
    assert list(part) == ["model", "step"] and list(part["model"]) == ["small"]
    assert torch.equal(part["model"]["small"], state["model"]["small"])
    reads = store.chunk_reads()
    assert reads and all("/model/small/" in key for key in reads), reads


def test_writes_to_a_mapped_tensor_stay_in_memory(
    saved: tuple[pathlib.Path, dict[str, Any]],
) -> None:
    path, state = saved
    loaded = load_checkpoint(str(path), lazy=True)
    view = loaded["model"]["big"][500:]
    loaded["model"]["big"] += 1  # copy-on-write pages: the files are untouched
    assert torch.equal(view, state["model"]["big"][500:] + 1)
    del loaded
    gc.collect()
    assert torch.equal(view, state["model"]["big"][500:] + 1)  # the view keeps the mapping
    _equal(load_checkpoint(str(path), lazy=True), state)


def test_lazy_falls_back_where_it_cannot_map(tmp_path: pathlib.Path) -> None:
    state = _state()
    save_checkpoint(state, str(tmp_path / "zstd"), compressors="balanced")
    store = CountingStore(tmp_path / "zstd")
    _equal(load_checkpoint(store, lazy=True), state)
    assert store.chunk_reads()  # compressed chunks are read and decoded as usual
    save_checkpoint(state, f"memory://lazy-{tmp_path.name}")
    _equal(load_checkpoint(f"memory://lazy-{tmp_path.name}", lazy=True), state)
    # 1000 rows of 3 float32 in 256-row chunks: 3072-byte chunks are not whole pages
    save_checkpoint(
        {"w": state["model"]["big"][:, :3].clone()}, str(tmp_path / "odd"), chunk_bytes=3072
    )
    _equal(load_checkpoint(str(tmp_path / "odd"), lazy=True)["w"], state["model"]["big"][:, :3])


def test_map_location_with_lazy(saved: tuple[pathlib.Path, dict[str, Any]]) -> None:
    path, state = saved
    loaded = load_checkpoint(str(path), map_location="cpu", lazy=True, keys=["packed"])
    assert torch.equal(loaded["packed"], state["packed"])


def test_map_array_on_a_memory_store_reads() -> None:
    import torchzarr as tz

    arr = tz.create_array("memory://", shape=(4,), dtype=torch.int16, compressors=None)
    arr[:] = torch.arange(4, dtype=torch.int16)
    assert torch.equal(map_array(arr), torch.arange(4, dtype=torch.int16))
