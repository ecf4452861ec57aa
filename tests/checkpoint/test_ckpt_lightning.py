"""ZarrCheckpointIO with real Lightning Trainers: fit, top-k, last, resume, async, both packages."""

from __future__ import annotations

import copy
import importlib.util
import os
import pickle
from pathlib import Path
from typing import Any

import pytest
import torch

import torchzarr as tz
import torchzarr.lightning
from torchzarr.checkpoint import load_checkpoint
from torchzarr.checkpoint.lightning import checkpoint_io_class, load_from_checkpoint

L = pytest.importorskip("lightning.pytorch")


def _module_class(pl: Any) -> type:
    class Tiny(pl.LightningModule):
        def __init__(self, hidden: int = 4, lr: float = 0.1) -> None:
            super().__init__()
            self.save_hyperparameters()
            self.net = torch.nn.Sequential(
                torch.nn.Linear(3, hidden), torch.nn.BatchNorm1d(hidden), torch.nn.Linear(hidden, 1)
            )

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.net(x), y)
            self.log("train_loss", loss, on_epoch=True, on_step=False)
            return loss

        def configure_optimizers(self) -> Any:
            return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)

        def train_dataloader(self) -> Any:
            g = torch.Generator().manual_seed(0)
            x = torch.randn(32, 3, generator=g)
            data = torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True))
            return torch.utils.data.DataLoader(data, batch_size=8)

    return Tiny


def _trainer(pl: Any, root: Path, plugin: Any, max_epochs: int) -> Any:
    checkpoint = pl.callbacks.ModelCheckpoint(
        dirpath=root, monitor="train_loss", save_top_k=2, save_last=True
    )
    return pl.Trainer(
        max_epochs=max_epochs,
        plugins=[plugin],
        callbacks=[checkpoint],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        num_sanity_val_steps=0,
    )


def _fit_and_resume(pl: Any, tmp_path: Path, make_plugin: Any, exact_top_k: bool = True) -> None:
    tiny = _module_class(pl)
    torch.manual_seed(0)
    model = tiny(hidden=5)
    trainer = _trainer(pl, tmp_path, make_plugin(), max_epochs=4)
    trainer.fit(model)
    names = sorted(os.listdir(tmp_path))
    assert "last.ckpt" in names
    kept = [n for n in names if n.startswith("epoch=")]
    assert {"epoch=2-step=12.ckpt", "epoch=3-step=16.ckpt"} <= set(kept)  # the best two
    if exact_top_k:
        # AsyncCheckpointIO may run a queued save after ModelCheckpoint removed its path
        # (Lightning's own race, torch.save files too), so only sync mode checks this.
        assert len(kept) == 2
    for name in names:  # every checkpoint is a Zarr group, not a torch.save file
        assert (tmp_path / name / "zarr.json").is_file()
    state = load_checkpoint(tmp_path / "last.ckpt")
    assert state["global_step"] == trainer.global_step == 16
    assert "pytorch-lightning_version" in state
    assert torch.equal(state["state_dict"]["net.0.weight"], model.net[0].weight.detach())
    assert state["hyper_parameters"] == {"hidden": 5, "lr": 0.1}
    assert state["epoch"] == 3 and isinstance(state["loops"]["fit_loop"], dict)

    resumed_model = tiny(hidden=5)
    resumed = _trainer(pl, tmp_path, make_plugin(), max_epochs=5)
    resumed.fit(resumed_model, ckpt_path="last")
    assert resumed.current_epoch == 5
    assert resumed.global_step == 20  # continued from step 16, not restarted

    loaded = load_from_checkpoint(tiny, tmp_path / "last.ckpt")
    assert loaded.hparams.hidden == 5
    for a, b in zip(loaded.parameters(), resumed_model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_lightning_fit_top_k_last_and_resume(tmp_path: Path) -> None:
    _fit_and_resume(L, tmp_path, lambda: tz.lightning.ZarrCheckpointIO())


def test_lightning_inside_async_checkpoint_io(tmp_path: Path) -> None:
    from lightning.pytorch.plugins.io import AsyncCheckpointIO

    _fit_and_resume(
        L, tmp_path, lambda: AsyncCheckpointIO(checkpoint_io_class("lightning")()), False
    )


def test_pytorch_lightning_package(tmp_path: Path) -> None:
    pl = pytest.importorskip("pytorch_lightning")
    plugin_class = tz.lightning.PLZarrCheckpointIO
    assert isinstance(plugin_class(), pl.plugins.io.CheckpointIO)
    assert not isinstance(plugin_class(), L.plugins.io.CheckpointIO)
    _fit_and_resume(pl, tmp_path, plugin_class)


def test_plugin_methods_direct(tmp_path: Path) -> None:
    io = checkpoint_io_class("lightning")()
    path = tmp_path / "x.ckpt"
    io.save_checkpoint({"w": torch.ones(2), "epoch": 1}, path)
    assert io.load_checkpoint(path, weights_only=True)["epoch"] == 1
    io.remove_checkpoint(path)
    assert not path.exists()
    io.teardown()
    with pytest.raises(tz.errors.NodeNotFoundError):
        io.load_checkpoint(path)


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"compressors": "bogus"}, tz.errors.UnknownCodecError, "'bogus'"),
        ({"compressors": 3}, tz.errors.CodecError, "from 3"),
    ],
)
def test_bad_options_are_refused_when_the_plugin_is_built(
    tmp_path: Path, options: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):  # not at the first save, mid-fit
        checkpoint_io_class("lightning")(**options)
    io = checkpoint_io_class("lightning")(compressors="balanced")
    io.save_checkpoint({"w": torch.ones(2)}, tmp_path / "x.ckpt")
    assert torch.equal(io.load_checkpoint(tmp_path / "x.ckpt")["w"], torch.ones(2))


def _saved(io: Any, path: Path) -> Path:
    io.save_checkpoint({"w": torch.arange(3.0), "epoch": 7}, path)
    return path


@pytest.mark.parametrize(
    ("target_name", "link_form"),
    [
        ("epoch=0.ckpt", "path"),
        ("epoch=0.ckpt", "file_url"),
        ("epoch=0.ckpt", "trailing_slash"),
        ("epoch=0.zip", "path"),
    ],
)
def test_remove_checkpoint_of_a_link_keeps_its_target(
    tmp_path: Path, target_name: str, link_form: str
) -> None:
    io = tz.lightning.ZarrCheckpointIO()
    target = _saved(io, tmp_path / target_name)
    link = tmp_path / f"last{target.suffix}"
    link.symlink_to(target.name)  # relative, as ModelCheckpoint(save_last="link") makes it
    forms = {"path": str(link), "file_url": f"file://{link}", "trailing_slash": f"{link}/"}
    io.remove_checkpoint(forms[link_form])
    assert not os.path.lexists(link)
    assert sorted(os.listdir(tmp_path)) == [target.name]
    assert io.load_checkpoint(target)["epoch"] == 7


def test_remove_checkpoint_of_a_dangling_link(tmp_path: Path) -> None:
    link = tmp_path / "last.ckpt"
    link.symlink_to("gone.ckpt")
    tz.lightning.ZarrCheckpointIO().remove_checkpoint(link)
    assert os.listdir(tmp_path) == []


def test_remove_checkpoint_of_a_zip_deletes_the_file(tmp_path: Path) -> None:
    io = tz.lightning.ZarrCheckpointIO()
    path = _saved(io, tmp_path / "epoch=0.zip")
    io.remove_checkpoint(path)
    assert os.listdir(tmp_path) == []
    io.save_checkpoint({"w": torch.ones(1), "epoch": 8}, path)  # the path is reusable
    assert io.load_checkpoint(path)["epoch"] == 8


def test_model_checkpoint_save_last_link_keeps_every_checkpoint(tmp_path: Path) -> None:
    checkpoint = L.callbacks.ModelCheckpoint(dirpath=tmp_path, save_top_k=-1, save_last="link")
    checkpoint.CHECKPOINT_NAME_LAST = "last-{epoch}"  # a new link each epoch, the old one removed
    trainer = L.Trainer(
        max_epochs=3,
        plugins=[tz.lightning.ZarrCheckpointIO()],
        callbacks=[checkpoint],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.fit(_module_class(L)())
    names = os.listdir(tmp_path)
    links = {n: os.readlink(tmp_path / n) for n in names if (tmp_path / n).is_symlink()}
    assert links == {"last-epoch=2.ckpt": "epoch=2-step=12.ckpt"}
    saved = sorted(set(names) - set(links))
    assert saved == ["epoch=0-step=4.ckpt", "epoch=1-step=8.ckpt", "epoch=2-step=12.ckpt"]
    for step, name in zip((4, 8, 12), saved, strict=True):
        assert load_checkpoint(tmp_path / name)["global_step"] == step


def _plugin_classes() -> list[type]:
    classes = [tz.lightning.ZarrCheckpointIO]
    if importlib.util.find_spec("pytorch_lightning") is not None:
        classes.append(tz.lightning.PLZarrCheckpointIO)
    return classes


@pytest.mark.parametrize("plugin_class", _plugin_classes(), ids=lambda cls: cls.__name__)
@pytest.mark.parametrize("how", ["pickle", "deepcopy"])
def test_plugin_pickles_and_copies_with_its_settings(
    tmp_path: Path, plugin_class: type, how: str
) -> None:
    io = plugin_class(allow_pickle=True, fsync=False, storage_options={"direct_io": False})
    with io._busy:  # a copy taken during a save is free to save at once
        clone = pickle.loads(pickle.dumps(io)) if how == "pickle" else copy.deepcopy(io)
    assert type(clone) is plugin_class
    assert getattr(tz.lightning, plugin_class.__name__) is plugin_class
    settings = ("compressors", "allow_pickle", "fsync", "direct_io", "storage_options")
    assert {k: getattr(clone, k) for k in settings} == {k: getattr(io, k) for k in settings}
    path = _saved(clone, tmp_path / "x.ckpt")
    clone.remove_checkpoint(path)
    assert not path.exists()


class _SpawnedModule(L.LightningModule):  # module level: ddp_spawn pickles it to each process
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Linear(3, 1)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return (self.net(batch[0]) - batch[0].sum(1, keepdim=True)).pow(2).mean()

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self) -> Any:
        x = torch.randn(16, 3, generator=torch.Generator().manual_seed(0))
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=4)


@pytest.mark.slow
def test_ddp_spawn_fit_saves_zarr_checkpoints(tmp_path: Path) -> None:
    checkpoint = L.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True)
    trainer = L.Trainer(
        max_epochs=1,
        strategy="ddp_spawn",
        devices=2,
        accelerator="cpu",
        plugins=[tz.lightning.ZarrCheckpointIO()],
        callbacks=[checkpoint],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    model = _SpawnedModule()
    trainer.fit(model)
    state = load_checkpoint(tmp_path / "last.ckpt")
    assert state["global_step"] == 2  # 16 samples, batches of 4, split over 2 processes
    assert torch.equal(state["state_dict"]["net.weight"], model.net.weight.detach())


@pytest.mark.parametrize(
    ("hidden", "hint"),
    [
        (["lightning", "pytorch_lightning"], "pip install 'torchzarr[lightning]'"),
        (["lightning"], None),  # pytorch_lightning alone: the plugin is built on it
    ],
)
def test_the_plugin_without_lightning_names_the_extra_to_install(hidden, hint) -> None:
    import subprocess
    import sys

    script = (
        "import sys\n"
        f"for name in {hidden!r}:\n"
        "    for m in [k for k in sys.modules if k == name or k.startswith(name + '.')]:\n"
        "        del sys.modules[m]\n"
        "    sys.modules[name] = None\n"
        "import torchzarr.lightning as L\n"
        "try:\n"
        "    print(L.ZarrCheckpointIO.__name__)\n"
        "except Exception as err:\n"
        "    print(type(err).__name__, err)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    if hint is None:
        assert out.startswith("PLZarrCheckpointIO")
    else:
        assert out.startswith("MissingDependencyError lightning is not installed") and hint in out
