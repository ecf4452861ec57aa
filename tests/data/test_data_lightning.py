"""ZarrIterableDataset under a real Lightning Trainer: epochs, persistent workers, resume."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader

import torchzarr as tz
from torchzarr.data import ZarrIterableDataset

pl = pytest.importorskip("lightning.pytorch")
stateful = pytest.importorskip("torchdata.stateful_dataloader")

SAMPLES, BATCH = 300, 25  # 12 steps an epoch


def _dataset(path: Path) -> ZarrIterableDataset:
    return ZarrIterableDataset(
        tz.open_array(path, mode="r"), batch_size=BATCH, block_chunks=2, seed=3
    )


def _module(path: Path, seen: list[tuple[int, int, list[int]]], persistent: bool) -> Any:
    """The pattern docs/datasets.md gives: a StatefulDataLoader, set_epoch in the hook."""

    class Recorder(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))
            self.dataset = _dataset(path)

        def train_dataloader(self) -> Any:
            return stateful.StatefulDataLoader(
                self.dataset,
                batch_size=None,
                num_workers=2,
                persistent_workers=persistent,
                multiprocessing_context="fork",
            )

        def on_train_epoch_start(self) -> None:
            self.dataset.set_epoch(self.current_epoch)

        def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
            seen.append((self.current_epoch, self.global_step, batch.tolist()))
            return self.weight * batch.float().mean()

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.0)

    return Recorder()


def _fit(root: Path, module: Any, epochs: int, resume: Path | None = None) -> None:
    save_every = pl.callbacks.ModelCheckpoint(
        dirpath=root / "checkpoints", every_n_train_steps=17, save_top_k=-1, filename="{step}"
    )
    trainer = pl.Trainer(
        max_epochs=epochs,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
        callbacks=[save_every],
    )
    trainer.fit(module, ckpt_path=resume)


def _order_of(path: Path, epoch: int) -> list[int]:
    dataset = _dataset(path)
    dataset.set_epoch(epoch)
    loader = DataLoader(dataset, batch_size=None, num_workers=2, multiprocessing_context="fork")
    return torch.cat(list(loader)).tolist()


@pytest.mark.parametrize("persistent", [False, True])
def test_a_fit_resumed_mid_epoch_sees_every_sample_once_in_each_epoch(tmp_path, persistent):
    path = tmp_path / "ids.zarr"
    tz.create_array(path, shape=(SAMPLES,), dtype=torch.int64, chunks=(50,))[:] = torch.arange(
        SAMPLES
    )
    interrupted: list[tuple[int, int, list[int]]] = []
    _fit(tmp_path, _module(path, interrupted, persistent), epochs=2)
    resumed: list[tuple[int, int, list[int]]] = []
    checkpoint = tmp_path / "checkpoints" / "step=17.ckpt"  # 5 steps into epoch 1
    _fit(tmp_path, _module(path, resumed, persistent), epochs=3, resume=checkpoint)

    trained = defaultdict(list)
    for epoch, step, ids in interrupted:
        if step < 17:
            trained[epoch].extend(ids)
    assert {epoch for epoch, _, _ in resumed} == {1, 2}
    for epoch, _, ids in resumed:
        trained[epoch].extend(ids)
    for epoch in (0, 1, 2):
        # each epoch once, in the order an uninterrupted run deals (epoch 1 across the resume)
        assert trained[epoch] == _order_of(path, epoch), epoch
    assert sorted(trained[1]) == list(range(SAMPLES))
    assert trained[1] != trained[2]


def _sampler_module(
    path: Path, seen: list[tuple[int, int, list[int]]], hook: bool = True, loader: Any = None
) -> Any:
    """The module of :func:`_module`, reading a map-style dataset through a
    ChunkBlockSampler, as docs/datasets.md gives (``hook=False``: no ``set_epoch`` in
    ``on_train_epoch_start``, left to Lightning)."""

    class SamplerRecorder(type(_module(path, seen, persistent=False))):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.dataset = tz.ZarrDataset(tz.open_array(path, mode="r"))
            self.sampler = tz.ChunkBlockSampler(self.dataset, BATCH, block_chunks=2, seed=3)

        def train_dataloader(self) -> Any:
            make = loader or stateful.StatefulDataLoader
            return make(self.dataset, batch_sampler=self.sampler)

        def on_train_epoch_start(self) -> None:
            if hook:
                self.sampler.set_epoch(self.current_epoch)

    return SamplerRecorder()


def _sampler_order(path: Path, epoch: int) -> list[int]:
    sampler = tz.ChunkBlockSampler(
        tz.ZarrDataset(tz.open_array(path, mode="r")), BATCH, block_chunks=2, seed=3
    )
    sampler.set_epoch(epoch)
    return [i for batch in sampler for i in batch]


@pytest.mark.parametrize("loader", [DataLoader, None], ids=["DataLoader", "StatefulDataLoader"])
def test_lightning_moves_a_sampler_to_each_epoch_without_a_hook(tmp_path, loader):
    """Lightning calls set_epoch on ``loader.batch_sampler.sampler``: each epoch of a fit
    deals its own order, with nothing in ``on_train_epoch_start``."""
    path = tmp_path / "ids.zarr"
    tz.create_array(path, shape=(SAMPLES,), dtype=torch.int64, chunks=(50,))[:] = torch.arange(
        SAMPLES
    )
    seen: list[tuple[int, int, list[int]]] = []
    _fit(tmp_path, _sampler_module(path, seen, hook=False, loader=loader), epochs=3)
    trained = defaultdict(list)
    for epoch, _, ids in seen:
        trained[epoch].extend(ids)
    for epoch in (0, 1, 2):
        assert trained[epoch] == _sampler_order(path, epoch), epoch
    assert trained[1] != trained[0]


@pytest.mark.parametrize("hook", [True, False], ids=["set_epoch-in-hook", "no-hook"])
def test_a_sampler_resumed_mid_epoch_keeps_every_later_epoch_whole(tmp_path, hook):
    """Lightning takes the loader's length once, after restoring the sampler: a length of
    the resumed pass only cut every later epoch short. Lightning's own set_epoch (same
    epoch, after the resumed pass began) keeps the pass's position."""
    path = tmp_path / "ids.zarr"
    tz.create_array(path, shape=(SAMPLES,), dtype=torch.int64, chunks=(50,))[:] = torch.arange(
        SAMPLES
    )
    interrupted: list[tuple[int, int, list[int]]] = []
    _fit(tmp_path, _sampler_module(path, interrupted, hook), epochs=2)
    resumed: list[tuple[int, int, list[int]]] = []
    checkpoint = tmp_path / "checkpoints" / "step=17.ckpt"  # 5 steps into epoch 1
    _fit(tmp_path, _sampler_module(path, resumed, hook), epochs=3, resume=checkpoint)
    trained = defaultdict(list)
    for epoch, step, ids in interrupted:
        if step < 17:
            trained[epoch].extend(ids)
    for epoch, _, ids in resumed:
        trained[epoch].extend(ids)
    for epoch in (0, 1, 2):
        assert sorted(trained[epoch]) == list(range(SAMPLES)), epoch
    assert trained[1] != trained[2]
