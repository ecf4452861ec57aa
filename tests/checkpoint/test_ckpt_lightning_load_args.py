"""load_from_checkpoint takes hparams_file and keyword overrides exactly as Lightning's does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from torchzarr.checkpoint import load_checkpoint
from torchzarr.checkpoint.lightning import checkpoint_io_class, load_from_checkpoint
from torchzarr.errors import InvalidArgumentError

L = pytest.importorskip("lightning.pytorch")


class _Tiny(L.LightningModule):
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self.l(batch[0]).sum()

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


class WithConfig(_Tiny):
    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.save_hyperparameters(config)  # hparams_name "config"
        self.l = torch.nn.Linear(2, 1)


class WithKwargs(_Tiny):
    def __init__(self, hidden: int = 2, lr: float = 0.1) -> None:
        super().__init__()
        self.save_hyperparameters()  # hparams_name "kwargs"
        self.l = torch.nn.Linear(2, 1)


def _checkpoints(tmp_path: Path, model: Any) -> tuple[Path, Path]:
    """The same Lightning checkpoint as a torch.save file and as a Zarr checkpoint."""
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(4, 2)))
    trainer = L.Trainer(
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.fit(model, data)
    checkpoint = trainer._checkpoint_connector.dump_checkpoint()
    torch_path, zarr_path = tmp_path / "ck.pt", tmp_path / "ck.ckpt"
    torch.save(checkpoint, torch_path)
    checkpoint_io_class("lightning")().save_checkpoint(checkpoint, zarr_path)
    return torch_path, zarr_path


def _hparams(model: Any) -> Any:
    hparams = dict(model.hparams)
    return {k: dict(v) if isinstance(v, dict) else v for k, v in hparams.items()}


@pytest.mark.parametrize("cls", [WithConfig, WithKwargs], ids=lambda c: c.__name__)
def test_overrides_and_hparams_files_win_as_in_lightning(tmp_path: Path, cls: type) -> None:
    model = cls({"lr": 0.1}) if cls is WithConfig else cls()
    torch_path, zarr_path = _checkpoints(tmp_path, model)
    saved = load_checkpoint(zarr_path)
    assert saved["hparams_name"] == ("config" if cls is WithConfig else "kwargs")
    yaml_file, csv_file = tmp_path / "h.yaml", tmp_path / "h.csv"
    yaml_file.write_text("lr: 0.3\nhidden: 3\n")
    csv_file.write_text("key,value\nlr,0.25\n")
    cases: list[dict[str, Any]] = [
        {},
        {"lr": 0.5},
        {"hparams_file": yaml_file},
        {"hparams_file": csv_file},
        {"hparams_file": yaml_file, "lr": 0.5},  # the keyword wins over the file
    ]
    for kwargs in cases:
        theirs = cls.load_from_checkpoint(torch_path, weights_only=False, **kwargs)
        ours = load_from_checkpoint(cls, zarr_path, **kwargs)
        assert _hparams(ours) == _hparams(theirs), kwargs
        assert ours.hparams.lr == theirs.hparams.lr
        assert ours.configure_optimizers().defaults["lr"] == theirs.hparams.lr
        assert torch.equal(ours.l.weight, theirs.l.weight)
    assert load_from_checkpoint(cls, zarr_path, lr=0.5).hparams.lr == 0.5
    assert load_from_checkpoint(cls, zarr_path, hparams_file=yaml_file).hparams.lr == 0.3


def test_an_hparams_file_of_another_kind_is_refused(tmp_path: Path) -> None:
    _, zarr_path = _checkpoints(tmp_path, WithKwargs())
    with pytest.raises(InvalidArgumentError, match=r"\.csv, \.yml or \.yaml.*h\.json"):
        load_from_checkpoint(WithKwargs, zarr_path, hparams_file=tmp_path / "h.json")
