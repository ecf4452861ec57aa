"""Checkpoints on every kind of store: zip, the embedded databases and S3 (moto)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import torchzarr as tz
from torchzarr.checkpoint import load_checkpoint, read_manifest, save_checkpoint

STATE = {
    "model": {"w": torch.randn(64, 8), "b": torch.arange(8, dtype=torch.bfloat16)},
    "step": 12,
    "names": ("a", "b"),
}


def _check_round_trip(store: Any) -> None:
    save_checkpoint(STATE, store)
    second = {**STATE, "step": 13}
    save_checkpoint(second, store)
    loaded = load_checkpoint(store)
    assert loaded["step"] == 13 and loaded["names"] == ("a", "b")
    assert torch.equal(loaded["model"]["w"], STATE["model"]["w"])
    assert torch.equal(loaded["model"]["b"], STATE["model"]["b"])
    part = load_checkpoint(store, keys=["model.b"])
    assert list(part) == ["model"] and list(part["model"]) == ["b"]
    assert torch.equal(part["model"]["b"], STATE["model"]["b"])
    assert read_manifest(store) is not None


@pytest.mark.parametrize("kind", ["zip", "sqlite", "lmdb"])
def test_checkpoint_on_embedded_stores(tmp_path, kind: str) -> None:
    if kind == "zip":
        store: Any = tz.ZipStore(tmp_path / "ckpt.zip", mode="w")
        _check_round_trip(store)
        store.close()
        reopened = load_checkpoint(str(tmp_path / "ckpt.zip"))  # a path ending in .zip
        assert reopened["step"] == 13
        return
    if kind == "lmdb":
        pytest.importorskip("lmdb")
    _check_round_trip(f"{kind}://{tmp_path / 'ckpt.db'}")


@pytest.mark.services
def test_checkpoint_on_s3(s3_server: Any) -> None:
    store = tz.FsspecStore(s3_server.url("ckpt"), s3_server.storage_options, retry_backoff=0)
    _check_round_trip(store)
