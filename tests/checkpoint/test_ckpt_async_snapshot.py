"""AsyncCheckpointer saves what the state was when save() returned, recorded as a direct save
records it: the tensors' devices, shared numpy arrays, views."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from torchzarr.checkpoint import AsyncCheckpointer, load_checkpoint, save_checkpoint, snapshot
from torchzarr.checkpoint import save as save_module
from torchzarr.checkpoint.format import TENSOR_ATTRIBUTE


def _tensor_info(path: Path, name: str) -> dict[str, Any]:
    meta = json.loads((path / "v000001" / name / "zarr.json").read_text())
    return meta["attributes"][TENSOR_ATTRIBUTE]


def test_async_saves_record_what_the_encoder_takes_from_the_original_tensors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No CUDA here: the encoder is told that the original tensor is on "cuda:0" (as it
    # finds for a GPU tensor); the save must record that, not the device of its CPU copy.
    w = torch.ones(3)
    real = save_module.encode_tree

    def encode_tree(state: Any, **options: Any) -> Any:
        plan = real(state, **options)
        for item in plan.tensors:
            if item.tensor is w:
                item.attributes[TENSOR_ATTRIBUTE]["device"] = "cuda:0"
        return plan

    monkeypatch.setattr(save_module, "encode_tree", encode_tree)
    with AsyncCheckpointer() as saver:
        saver.save({"w": w}, tmp_path)
    assert _tensor_info(tmp_path, "w")["device"] == "cuda:0"
    assert torch.equal(load_checkpoint(tmp_path, map_location="cpu")["w"], w)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_async_saves_of_cuda_tensors_load_on_cuda(tmp_path: Path) -> None:
    w = torch.arange(4.0, device="cuda")
    with AsyncCheckpointer() as saver:
        saver.save({"w": w, "p": torch.nn.Parameter(w * 2)}, tmp_path / "a")
    save_checkpoint({"w": w}, tmp_path / "d")
    out = load_checkpoint(tmp_path / "a")
    assert out["w"].device == w.device == load_checkpoint(tmp_path / "d")["w"].device
    assert out["p"].device == w.device and isinstance(out["p"], torch.nn.Parameter)
    assert torch.equal(out["w"], w)


def test_one_numpy_array_under_two_keys_loads_as_one_array(tmp_path: Path) -> None:
    a = np.arange(4.0)
    state = {"x": a, "y": a, "nested": [a]}
    with AsyncCheckpointer() as saver:
        saver.save(state, tmp_path)
        a += 1  # after save() returns: not saved
    out = load_checkpoint(tmp_path)
    assert out["x"] is out["y"] is out["nested"][0]
    assert np.array_equal(out["x"], np.arange(4.0))
    copy = snapshot(state)
    assert copy["x"] is copy["y"] is copy["nested"][0] and copy["x"] is not a


def test_async_saves_of_conjugate_and_strided_views_load_as_saved(tmp_path: Path) -> None:
    z = torch.complex(torch.arange(4.0), torch.ones(4))
    m = torch.arange(6.0).reshape(2, 3)
    with AsyncCheckpointer() as saver:
        saver.save({"conj": z.conj(), "neg": z.conj().imag, "t": m.T, "z": z}, tmp_path)
    out = load_checkpoint(tmp_path)
    assert torch.equal(out["conj"], z.conj()) and torch.equal(out["neg"], -torch.ones(4))
    assert torch.equal(out["t"], m.T) and torch.equal(out["z"], z)
