"""The raw local fast paths: chunk files written from tensor memory, huge-page reads."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import pytest
import torch

from torchzarr.checkpoint import load_checkpoint, rawio, save_checkpoint
from torchzarr.checkpoint import save as save_module
from torchzarr.errors import StoreError

DTYPES = [torch.float32, torch.bfloat16, torch.bool, torch.complex64, torch.float8_e4m3fn]


def _big(dtype: torch.dtype, rows: int = 1300) -> torch.Tensor:
    t = torch.randn(rows, 1024)  # 5 MiB of float32: past the huge-page threshold
    if dtype == torch.bool:
        return t > 0
    if dtype.is_complex:
        return torch.complex(t, -t).to(dtype)
    return t.to(dtype)


def test_save_writes_local_chunks_from_tensor_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[int, int, bool]] = []
    original = save_module.write_rows

    def spy(array: Any, start: int, stop: int, data: torch.Tensor, **kw: Any) -> bool:
        done = original(array, start, stop, data, **kw)
        calls.append((start, stop, done))
        return done

    monkeypatch.setattr(save_module, "write_rows", spy)
    w = torch.arange(40000, dtype=torch.float32).reshape(1000, 40)
    save_checkpoint({"w": w, "t": w.T, "empty": torch.ones(0, 3)}, tmp_path, chunk_bytes=64_000)
    # 400 rows per chunk: each chunk one unit, written raw; w.T (non-contiguous) as well
    assert sorted(c for c in calls if c[1] - c[0] in (400, 200)) == sorted(
        [(0, 400, True), (400, 800, True), (800, 1000, True)]
    )
    assert all(done for *_, done in calls)
    out = load_checkpoint(tmp_path)
    assert torch.equal(out["w"], w) and torch.equal(out["t"], w.T) and out["empty"].shape == (0, 3)


def test_compressed_local_chunks_written_once_each(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torchzarr as tz

    keys: list[str] = []
    original = tz.LocalStore.set

    def set_(self: Any, key: str, value: Any) -> None:
        keys.append(key)
        original(self, key, value)

    monkeypatch.setattr(tz.LocalStore, "set", set_)
    w = torch.arange(40000, dtype=torch.int64).reshape(1000, 40)
    save_checkpoint({"w": w}, tmp_path, compressors="balanced", chunk_bytes=64_000)
    chunks = [k for k in keys if "/w/c" in k]
    assert sorted(chunks) == sorted(set(chunks)) and len(chunks) == 5  # 200-row chunks
    assert torch.equal(load_checkpoint(tmp_path)["w"], w)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_big_tensors_round_trip_on_huge_pages(tmp_path: Path, dtype: torch.dtype) -> None:
    state = {"big": _big(dtype), "edge": _big(dtype, rows=1025)[:, :1000].contiguous()}
    save_checkpoint(state, tmp_path, chunk_bytes=2**20)  # several chunks, a padded edge one
    for options in ({}, {"huge_pages": True}, {"lazy": True}):
        out = load_checkpoint(tmp_path, **options)
        for key, value in state.items():
            assert out[key].dtype == dtype and out[key].shape == value.shape
            assert torch.equal(out[key].view(torch.uint8), value.view(torch.uint8))


def test_empty_huge_is_a_plain_writable_tensor() -> None:
    small = rawio.empty_huge((3,), torch.float32)
    assert small.shape == (3,)
    big = rawio.empty_huge((1024, 2048), torch.float32)
    assert big.shape == (1024, 2048) and big.is_contiguous() and big.dtype == torch.float32
    big.fill_(2.0)
    view = big[10:20]
    del big
    gc.collect()
    assert float(view.sum()) == 2.0 * 10 * 2048  # the memory lives as long as a view does
    assert rawio.empty_huge((0, 5), torch.int64).shape == (0, 5)


def test_sync_local_raises_when_a_flush_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torchzarr as tz

    (tmp_path / "a").write_bytes(b"1")

    def fail(fd: int) -> None:
        raise OSError(5, "injected")

    monkeypatch.setattr(rawio.os, "fsync", fail)
    with pytest.raises(StoreError, match="injected") as caught:
        rawio.sync_local(tz.LocalStore(tmp_path))
    # names the file (or directory) whose flush failed; the OSError is its cause
    assert str(tmp_path) in str(caught.value) and "fsync" in str(caught.value)
    assert isinstance(caught.value.__cause__, OSError) and caught.value.__cause__.errno == 5


def test_a_failed_flush_in_a_save_names_the_file_and_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_checkpoint({"step": 1, "w": torch.ones(10)}, tmp_path)

    def fail(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(rawio.os, "fsync", fail)
    with pytest.raises(StoreError, match=r"cannot flush '.*v000002.*' to disk") as caught:
        save_checkpoint({"step": 2, "w": torch.ones(10)}, tmp_path)
    assert isinstance(caught.value.__cause__, OSError)
    monkeypatch.undo()
    assert load_checkpoint(tmp_path)["step"] == 1


@pytest.mark.parametrize("direct", [True, False])
def test_save_writes_large_chunks_past_the_page_cache_unless_told_not_to(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, direct: bool
) -> None:
    from torchzarr.storage import direct_io

    opened: list[bool] = []
    real_open = direct_io.open_new
    monkeypatch.setattr(
        direct_io,
        "open_new",
        lambda p, direct: (opened.append(direct), real_open(p, direct=direct))[1],
    )
    state = {"w": _big(torch.float32, rows=600), "b": torch.arange(5)}  # 2.3 MiB and 40 B
    save_checkpoint(state, str(tmp_path / "ck"), chunk_bytes=2**20, direct_io=direct)
    assert opened.count(True) == (3 if direct else 0)  # the three 1 MiB-or-more chunks
    out = load_checkpoint(str(tmp_path / "ck"))
    assert torch.equal(out["w"], state["w"]) and torch.equal(out["b"], state["b"])
