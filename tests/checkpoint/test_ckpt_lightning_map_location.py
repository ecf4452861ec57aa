"""Where Lightning loads put tensors saved on a GPU: the defaults of Lightning's own loaders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import torchzarr.lightning
from torchzarr.checkpoint import save as save_module
from torchzarr.checkpoint.format import TENSOR_ATTRIBUTE

L = pytest.importorskip("lightning.pytorch")


class WithBuffer(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("w", torch.zeros(3))


def save_as_if_from(device: str, path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Save a Lightning checkpoint whose tensors are recorded as saved on ``device``."""
    encode_tree = save_module.encode_tree

    def recorded_on_device(state: Any, **options: Any) -> Any:
        plan = encode_tree(state, **options)
        for item in plan.tensors:
            item.attributes[TENSOR_ATTRIBUTE]["device"] = device
        return plan

    with monkeypatch.context() as patch:
        patch.setattr(save_module, "encode_tree", recorded_on_device)
        torchzarr.lightning.ZarrCheckpointIO().save_checkpoint(
            {"state_dict": {"w": torch.arange(3.0)}, "epoch": 0, "global_step": 1}, path
        )


def without_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lightning sees no CUDA device, whatever this machine has."""
    from lightning.pytorch.accelerators import CUDAAccelerator

    monkeypatch.setattr(CUDAAccelerator, "is_available", staticmethod(lambda: False))


def test_checkpoint_io_loads_tensors_saved_on_a_gpu_onto_the_cpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_as_if_from("cuda:0", tmp_path / "gpu.ckpt", monkeypatch)
    loaded = torchzarr.lightning.ZarrCheckpointIO().load_checkpoint(tmp_path / "gpu.ckpt")
    w = loaded["state_dict"]["w"]
    assert w.device.type == "cpu" and torch.equal(w, torch.arange(3.0))


def test_checkpoint_io_keeps_the_saved_device_when_map_location_is_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_as_if_from("meta", tmp_path / "meta.ckpt", monkeypatch)  # a device every build has
    io = torchzarr.lightning.ZarrCheckpointIO()
    assert io.load_checkpoint(tmp_path / "meta.ckpt", map_location=None)["state_dict"]["w"].is_meta


def test_load_from_checkpoint_puts_gpu_tensors_on_the_cpu_without_cuda(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_as_if_from("cuda:0", tmp_path / "gpu.ckpt", monkeypatch)
    without_cuda(monkeypatch)
    model = torchzarr.lightning.load_from_checkpoint(WithBuffer, tmp_path / "gpu.ckpt")
    assert model.w.device.type == "cpu" and torch.equal(model.w, torch.arange(3.0))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_load_from_checkpoint_keeps_a_gpu_checkpoint_on_the_gpu(tmp_path: Path) -> None:
    path = tmp_path / "cuda.ckpt"
    state = {"state_dict": {"w": torch.arange(3.0, device="cuda")}, "epoch": 0}
    torchzarr.lightning.ZarrCheckpointIO().save_checkpoint(state, path)
    model = torchzarr.lightning.load_from_checkpoint(WithBuffer, path)
    assert model.w.device.type == "cuda"  # as LightningModule.load_from_checkpoint does
    loaded = torchzarr.lightning.ZarrCheckpointIO().load_checkpoint(path)
    assert loaded["state_dict"]["w"].device.type == "cpu"  # as TorchCheckpointIO does


def test_the_plugin_and_load_from_checkpoint_take_verify_chunks(tmp_path: Path) -> None:
    import pickle

    from torchzarr.errors import ChunkDecodeError

    path = tmp_path / "edited.ckpt"
    w = torch.ones(3)
    torchzarr.lightning.ZarrCheckpointIO().save_checkpoint(
        {"state_dict": {"w": w}, "epoch": 0, "global_step": 1}, path
    )
    torchzarr.open_array(str(path), path="v000001/state_dict/w", mode="r+")[:] = 0
    with pytest.raises(ChunkDecodeError, match="verify_chunks=False"):
        torchzarr.lightning.ZarrCheckpointIO().load_checkpoint(path)
    io = pickle.loads(pickle.dumps(torchzarr.lightning.ZarrCheckpointIO(verify_chunks=False)))
    assert torch.equal(io.load_checkpoint(path)["state_dict"]["w"], torch.zeros(3))
    model = torchzarr.lightning.load_from_checkpoint(WithBuffer, path, verify_chunks=False)
    assert torch.equal(model.w, torch.zeros(3))
    with pytest.raises(ChunkDecodeError, match="verify_chunks=False"):
        torchzarr.lightning.load_from_checkpoint(WithBuffer, path)
