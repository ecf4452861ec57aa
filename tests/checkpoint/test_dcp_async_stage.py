"""dcp.async_save through ZarrStorageWriter: what it stages is what the tensors read."""

from __future__ import annotations

import pathlib

import pytest
import torch
import torch.distributed.checkpoint as dcp
from ranks import run_ranks

from torchzarr.distributed import ZarrStorageReader, ZarrStorageWriter

pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled")


def test_async_save_stages_conj_neg_views_and_slices_as_they_read(tmp_path: pathlib.Path) -> None:
    big = torch.arange(1000.0)
    state = {
        "conj": torch.tensor([1 + 2j, 3 + 4j]).conj(),
        "neg": torch._neg_view(torch.tensor([1.0, 2.0])),
        "slice": big[10:13],
        "cols": torch.arange(12.0).reshape(3, 4)[:, 1],  # strided
        "step": 7,
    }
    writer = ZarrStorageWriter(str(tmp_path))
    dcp.async_save(state, storage_writer=writer, no_dist=True).result()
    out = {
        "conj": torch.zeros(2, dtype=torch.complex64),
        "neg": torch.zeros(2),
        "slice": torch.zeros(3),
        "cols": torch.zeros(3),
        "step": 0,
    }
    dcp.load(out, storage_reader=ZarrStorageReader(str(tmp_path)), no_dist=True)
    assert torch.equal(out["conj"], torch.tensor([1 - 2j, 3 - 4j], dtype=torch.complex64))
    assert torch.equal(out["neg"], torch.tensor([-1.0, -2.0]))
    assert torch.equal(out["slice"], torch.tensor([10.0, 11.0, 12.0]))
    assert torch.equal(out["cols"], torch.tensor([1.0, 5.0, 9.0]))
    assert out["step"] == 7

    staged = writer.stage(state)
    assert not staged["conj"].is_conj() and not staged["neg"].is_neg()
    assert staged["slice"].data_ptr() != big[10:13].data_ptr()  # a copy, taken now


def test_async_save_keeps_what_torchs_default_staging_keeps(tmp_path: pathlib.Path) -> None:
    """Tied tensors staged once, BytesIO values copied at the call, tuple types kept."""
    import collections
    import io

    Point = collections.namedtuple("Point", "x y")
    tied = torch.arange(6.0)
    blob = io.BytesIO(b"original")
    state = {"a": tied, "b": tied, "blob": blob}
    kinds = {**state, "shape": torch.Size([2, 3]), "pt": Point(1, 2)}
    staged = ZarrStorageWriter(str(tmp_path)).stage(kinds)
    assert staged["a"].data_ptr() == staged["b"].data_ptr() != tied.data_ptr()
    assert type(staged["shape"]) is torch.Size and type(staged["pt"]) is Point
    future = dcp.async_save(state, storage_writer=ZarrStorageWriter(str(tmp_path)), no_dist=True)
    blob.seek(0)
    blob.write(b"EDITED!!")  # after the call: not saved
    future.result()
    out = {"a": torch.zeros(6), "b": torch.zeros(6), "blob": io.BytesIO()}
    reader = ZarrStorageReader(str(tmp_path), weights_only=False)
    dcp.load(out, storage_reader=reader, no_dist=True)
    assert out["blob"].getvalue() == b"original" and torch.equal(out["b"], tied)


def test_async_save_stages_before_it_returns(tmp_path: pathlib.Path) -> None:
    state = {"w": torch.arange(4.0), "nested": {"b": torch.ones(2)}}
    future = dcp.async_save(state, storage_writer=ZarrStorageWriter(str(tmp_path)), no_dist=True)
    state["w"].fill_(-1.0)  # after staging: not saved
    state["nested"]["b"].fill_(-1.0)
    future.result()
    out = {"w": torch.zeros(4), "nested": {"b": torch.zeros(2)}}
    dcp.load(out, storage_reader=ZarrStorageReader(str(tmp_path)), no_dist=True)
    assert torch.equal(out["w"], torch.arange(4.0)) and torch.equal(
        out["nested"]["b"], torch.ones(2)
    )


def test_async_save_resolves_conjugate_dtensor_views(tmp_path: pathlib.Path) -> None:
    args = [str(tmp_path / "pg-init"), str(tmp_path / "ckpt")]
    run_ranks(str(pathlib.Path(__file__).parent / "dcp_async_worker.py"), 2, args, timeout=120)
