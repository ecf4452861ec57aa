"""Train a tiny Lightning model with Zarr checkpoints, resume from "last", reload the best.

Run: python examples/lightning_checkpoint.py [CHECKPOINT_DIR]
"""

from __future__ import annotations

import argparse
import tempfile
from typing import Any

import lightning.pytorch as pl
import torch

import torchzarr.lightning
from torchzarr.checkpoint import load_checkpoint


class Regressor(pl.LightningModule):
    """y = x.sum() with a two-layer MLP."""

    def __init__(self, hidden: int = 16, lr: float = 0.05) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(4, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1)
        )

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.log("train_loss", loss, on_epoch=True, on_step=False)
        return loss

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)

    def train_dataloader(self) -> Any:
        x = torch.randn(256, 4, generator=torch.Generator().manual_seed(0))
        data = torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True))
        return torch.utils.data.DataLoader(data, batch_size=32)


def trainer(dirpath: str, max_epochs: int) -> pl.Trainer:
    checkpoints = pl.callbacks.ModelCheckpoint(
        dirpath=dirpath, monitor="train_loss", save_top_k=2, save_last=True
    )
    return pl.Trainer(
        max_epochs=max_epochs,
        plugins=[torchzarr.lightning.ZarrCheckpointIO()],  # every .ckpt is a Zarr group
        callbacks=[checkpoints],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )


def main(dirpath: str) -> None:
    first = trainer(dirpath, max_epochs=3)
    first.fit(Regressor())
    second = trainer(dirpath, max_epochs=5)
    second.fit(Regressor(), ckpt_path="last")  # resumes at epoch 3, step 24
    print(f"resumed at step 24, finished at step {second.global_step}")
    best = second.checkpoint_callback.best_model_path  # type: ignore[union-attr]

    # Lightning's Model.load_from_checkpoint calls torch.load; this reads the Zarr group.
    model = torchzarr.lightning.load_from_checkpoint(Regressor, best)
    print(f"best checkpoint {best.rsplit('/', 1)[-1]}: hidden={model.hparams.hidden}")

    # Any part of a checkpoint loads alone, without the rest.
    part = load_checkpoint(f"{dirpath}/last.ckpt", keys=["state_dict.net.0.weight", "epoch"])
    print(f"last: epoch {part['epoch']}, weight {tuple(part['state_dict']['net.0.weight'].shape)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dirpath", nargs="?", help="checkpoint directory (default: a new one)")
    main(parser.parse_args().dirpath or tempfile.mkdtemp(suffix="-ckpts"))
