"""omegaconf's DictConfig and ListConfig (Hydra configs) in checkpoints: typed JSON, no pickle."""

from __future__ import annotations

import dataclasses
import enum
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import torchzarr.lightning
from torchzarr.checkpoint import load_checkpoint, save_checkpoint
from torchzarr.checkpoint.class_names import class_spec
from torchzarr.checkpoint.format import NODE_ATTRIBUTE
from torchzarr.errors import MetadataError, MissingDependencyError, UnrepresentableError

omegaconf = pytest.importorskip("omegaconf")
OmegaConf, DictConfig, ListConfig = omegaconf.OmegaConf, omegaconf.DictConfig, omegaconf.ListConfig


def _configs() -> tuple[Any, Any]:
    cfg = OmegaConf.create(
        {
            "lr": 0.1,
            "name": "${model.kind}-${lr}",  # interpolations, stored unresolved
            "model": {"kind": "mlp", "sizes": [4, 8, {"out": "${lr}"}], "bias": None},
            "tags": ["a", "b"],
            "later": "???",
            3: b"\x00\xff",
        }
    )
    return cfg, OmegaConf.create([1, "${0}", {"k": [True, 2.5]}, ["x"]])


def _stored_value(path: Path, key: str) -> Any:
    node = json.loads((path / "v000001" / "zarr.json").read_text())["attributes"]
    entries = node[NODE_ATTRIBUTE]["entries"]
    return next(payload for k, kind, payload in entries if k == key and kind == "value")


def test_dict_and_list_configs_round_trip_as_the_same_class(tmp_path: Path) -> None:
    cfg, listed = _configs()
    path = tmp_path / "ckpt"
    save_checkpoint({"cfg": cfg, "list": listed, "type": DictConfig, "w": torch.ones(2)}, path)
    out = load_checkpoint(path)
    assert type(out["cfg"]) is DictConfig and type(out["list"]) is ListConfig
    assert out["cfg"] == cfg and out["list"] == listed and out["type"] is DictConfig
    assert type(out["cfg"].model.sizes) is ListConfig and type(out["list"][2]) is DictConfig
    # interpolations come back unresolved, and resolve as in the original
    assert OmegaConf.to_container(out["cfg"], resolve=False) == OmegaConf.to_container(
        cfg, resolve=False
    )
    assert out["cfg"].name == "mlp-0.1" and out["cfg"].model.sizes[2].out == 0.1
    assert out["list"][1] == 1 and OmegaConf.is_missing(out["cfg"], "later")
    stored = _stored_value(path, "cfg")
    assert stored["omegaconf"]["class"] == "DictConfig" and "pickle" not in json.dumps(stored)


def test_struct_and_readonly_flags_of_the_root_are_kept() -> None:
    cfg, listed = _configs()
    OmegaConf.set_struct(cfg, True)
    OmegaConf.set_readonly(listed, True)
    save_checkpoint({"cfg": cfg, "list": listed}, "memory://ckpt-omegaconf-flags")
    out = load_checkpoint("memory://ckpt-omegaconf-flags")
    assert OmegaConf.is_struct(out["cfg"]) and not OmegaConf.is_readonly(out["cfg"])
    assert OmegaConf.is_readonly(out["list"]) and not OmegaConf.is_struct(out["list"])


def test_a_config_value_typed_json_cannot_hold_names_its_key_path() -> None:
    class Color(enum.Enum):
        RED = 1

    cfg = OmegaConf.create({"model": {"color": Color.RED}})
    with pytest.raises(UnrepresentableError, match=r"\['cfg'\]\['model'\]\['color'\]"):
        save_checkpoint({"cfg": cfg}, "memory://ckpt-omegaconf-enum")


def test_without_omegaconf_a_load_names_it_and_the_other_keys_still_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "ckpt"
    save_checkpoint({"cfg": _configs()[0], "w": torch.ones(2)}, path)
    monkeypatch.setitem(sys.modules, "omegaconf", None)  # as if not installed
    with pytest.raises(MissingDependencyError, match=r"\['cfg'\].*pip install omegaconf"):
        load_checkpoint(path)
    assert torch.equal(load_checkpoint(path, keys=["w"])["w"], torch.ones(2))


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"class": "Popen", "content": {"dict": []}}, "bad typed JSON"),
        ({"class": "DictConfig", "content": {"list": []}}, "not a dict"),
        ({"class": "DictConfig", "content": {"dict": []}, "flags": {"x": True}}, "bad typed"),
        # an allowed class or a tuple is no plain config content: never handed to omegaconf
        ({"class": "DictConfig", "content": {"dict": [["a", {"class": "builtins:int"}]]}}, "int"),
        ({"class": "ListConfig", "content": {"list": [{"tuple": [1]}]}}, "tuple"),
    ],
)
def test_a_tampered_config_is_refused_naming_its_key(
    tmp_path: Path, body: dict[str, Any], problem: str
) -> None:
    path = tmp_path / "ckpt"
    save_checkpoint({"cfg": _configs()[0]}, path)
    meta_path = path / "v000001" / "zarr.json"
    meta = json.loads(meta_path.read_text())
    (entry,) = meta["attributes"][NODE_ATTRIBUTE]["entries"]
    assert entry[:2] == ["cfg", "value"]
    entry[2] = {"omegaconf": body}
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(MetadataError, match=problem) as caught:
        load_checkpoint(path)
    assert "['cfg']" in str(caught.value)


FACTORY_CALLS: list[int] = []


@dataclasses.dataclass
class AllowedDataclass:  # omegaconf builds a structured config of one, calling its factories
    x: int = dataclasses.field(default_factory=lambda: FACTORY_CALLS.append(1) or 3)


def test_a_config_naming_an_allowed_dataclass_is_refused_without_calling_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ckpt"
    save_checkpoint({"cfg": OmegaConf.create({"a": 1})}, path)
    meta_path = path / "v000001" / "zarr.json"
    meta = json.loads(meta_path.read_text())
    spec = class_spec(AllowedDataclass)
    assert spec is not None
    content = {"dict": [["a", {"class": spec}]]}
    meta["attributes"][NODE_ATTRIBUTE]["entries"][0][2] = {
        "omegaconf": {"class": "DictConfig", "content": content}
    }
    meta_path.write_text(json.dumps(meta))
    with (
        torch.serialization.safe_globals([AllowedDataclass]),  # the class itself allowed
        pytest.raises(MetadataError, match=r"\['cfg'\].*AllowedDataclass"),
    ):
        load_checkpoint(path)
    assert FACTORY_CALLS == []


L = pytest.importorskip("lightning.pytorch")


class HydraModule(L.LightningModule):
    def __init__(self, cfg: Any) -> None:
        super().__init__()
        self.save_hyperparameters(cfg)  # a DictConfig: Lightning stores it and its class
        self.net = torch.nn.Linear(3, self.hparams.model.hidden)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        self.steps_run = getattr(self, "steps_run", 0) + 1
        return self.net(batch[0]).pow(2).mean()

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def _fit(root: Path, model: Any, max_epochs: int, ckpt_path: Any = None) -> None:
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(8, 3)), 4)
    trainer = L.Trainer(
        max_epochs=max_epochs,
        plugins=[torchzarr.lightning.ZarrCheckpointIO()],
        default_root_dir=root,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.fit(model, data, ckpt_path=ckpt_path)


def test_lightning_save_hyperparameters_of_a_dict_config_saves_resumes_and_loads(
    tmp_path: Path,
) -> None:
    cfg = OmegaConf.create({"lr": 0.1, "model": {"hidden": 2, "width": "${model.hidden}"}})
    _fit(tmp_path, HydraModule(cfg), max_epochs=1)
    first = tmp_path / "checkpoints" / "epoch=0-step=2.ckpt"
    saved = load_checkpoint(first)
    assert saved["hparams_type"] is DictConfig and saved["hyper_parameters"] == cfg
    resumed = HydraModule(cfg)
    _fit(tmp_path, resumed, max_epochs=2, ckpt_path=first)
    assert resumed.steps_run == 2  # the second epoch only: resumed from the first's end
    last = tmp_path / "checkpoints" / "epoch=1-step=4.ckpt"
    model = torchzarr.lightning.load_from_checkpoint(HydraModule, last)
    assert type(model.hparams) is DictConfig and model.hparams == cfg
    assert model.hparams.model.width == 2


@pytest.mark.parametrize(
    "make",
    [
        lambda: DictConfig(None),
        lambda: DictConfig("???"),
        lambda: ListConfig(None),
        lambda: _objects_config(),
    ],
    ids=["dict-none", "dict-missing", "list-none", "allow-objects"],
)
def test_a_config_no_load_could_rebuild_is_refused_at_save_or_pickled_whole(tmp_path, make):
    # saved, such a config made every load of the checkpoint fail
    with pytest.raises(UnrepresentableError, match=r"\['cfg'\]"):
        save_checkpoint({"cfg": make(), "w": torch.ones(1)}, tmp_path / "c")
    save_checkpoint({"cfg": make(), "w": torch.ones(1)}, tmp_path / "p", allow_pickle=True)
    loaded = load_checkpoint(tmp_path / "p", allow_pickle=True)["cfg"]
    assert type(loaded) is type(make()) and repr(loaded) == repr(make())


def _objects_config():
    config = OmegaConf.create({"x": 1}, flags={"allow_objects": True})
    config.x = np.int64(3)
    return config
