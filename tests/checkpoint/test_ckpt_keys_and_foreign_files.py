"""keys= decodes only the values it picks; loading a path that holds no checkpoint says why."""

from __future__ import annotations

import enum
import os
import pickle
import re
import zipfile
from collections import Counter, OrderedDict, defaultdict
from pathlib import Path
from typing import Any

import pytest
import torch

import torchzarr as tz
from torchzarr.checkpoint import load_checkpoint, save_checkpoint
from torchzarr.errors import (
    GroupNotFoundError,
    MetadataError,
    NodeNotFoundError,
    UnrepresentableError,
)


class Color(enum.Enum):  # pickled at save: typed JSON holds no Enum
    RED = 1


class Bag(dict):  # type: ignore[type-arg]  # a dict subclass: pickled whole
    pass


def _hparams_ckpt(path: Path) -> str:
    state = {
        "state_dict": {"w": torch.ones(1)},
        "hyper_parameters": {"lr": 0.1, "act": torch.nn.GELU, "color": Color.RED},
    }
    save_checkpoint(state, path, allow_pickle=True)
    return str(path)


def test_keys_skip_unresolvable_siblings(tmp_path: Path) -> None:
    path = _hparams_ckpt(tmp_path / "c")
    assert load_checkpoint(path, keys=["hyper_parameters.lr"]) == {"hyper_parameters": {"lr": 0.1}}
    assert load_checkpoint(path, keys=[("hyper_parameters", "lr"), "state_dict.w"]) == {
        "state_dict": {"w": torch.ones(1)},
        "hyper_parameters": {"lr": 0.1},
    }
    # asked for, or its container asked for: the same clear errors as a full load
    with pytest.raises(UnrepresentableError, match=r"\['hyper_parameters'\]\['act'\].*class"):
        load_checkpoint(path, keys=["hyper_parameters.act"])
    with pytest.raises(UnrepresentableError, match=r"\['hyper_parameters'\]\['color'\].*pickled"):
        load_checkpoint(path, keys=["hyper_parameters.color"])
    with pytest.raises(UnrepresentableError, match=r"\['hyper_parameters'\]"):
        load_checkpoint(path, keys=["hyper_parameters"])
    with pytest.raises(UnrepresentableError):
        load_checkpoint(path)
    with pytest.raises(NodeNotFoundError, match=r"hyper_parameters\.nope"):
        load_checkpoint(path, keys=["hyper_parameters.nope"])
    assert load_checkpoint(path, keys=["hyper_parameters.color"], allow_pickle=True) == {
        "hyper_parameters": {"color": Color.RED}
    }


def test_keys_in_values_with_int_tuple_keys_and_containers(tmp_path: Path) -> None:
    sd = torch.nn.ReLU().state_dict()  # an OrderedDict carrying _metadata
    sd["x"] = 1
    value = {
        "state": {0: {"step": 3, "cls": torch.nn.GELU}, (1, "a"): "t"},
        "layers": [1, torch.nn.GELU, (3, torch.nn.GELU)],
        "sd": sd,
        "counts": Counter({"a": 2, "b": torch.nn.GELU}),
        "dd": defaultdict(list, {"a": [1], "b": torch.nn.GELU}),
    }
    save_checkpoint({"w": torch.zeros(2), "v": value}, tmp_path / "c")
    path = str(tmp_path / "c")

    def load(*keys: Any) -> Any:
        return load_checkpoint(path, keys=list(keys))["v"]

    assert load(("v", "state", 0, "step")) == {"state": {0: {"step": 3}}}
    assert load("v.state.0.step") == {"state": {0: {"step": 3}}}
    assert load(("v", "state", (1, "a"))) == {"state": {(1, "a"): "t"}}
    with pytest.raises(NodeNotFoundError):
        load(("v", "state", "0", "step"))  # a tuple key names keys exactly: 0 is no "0"
    assert load("v.layers.0", "v.layers.2.0") == {"layers": {0: 1, 2: {0: 3}}}
    got = load("v.sd.x")["sd"]
    assert type(got) is OrderedDict and got == {"x": 1} and got._metadata == sd._metadata
    counts = load("v.counts.a")["counts"]
    assert type(counts) is Counter and counts == {"a": 2}
    dd = load("v.dd.a")["dd"]
    assert type(dd) is defaultdict and dd.default_factory is list and dd == {"a": [1]}
    with pytest.raises(UnrepresentableError, match=r"\['v'\]\['layers'\]\[2\]\[1\]"):
        load("v.layers.2")


def test_keys_select_in_a_pickled_mapping(tmp_path: Path) -> None:
    save_checkpoint({"v": {"bag": Bag(a=1, b=2)}}, tmp_path / "c", allow_pickle=True)
    got = load_checkpoint(tmp_path / "c", keys=["v.bag.a"], allow_pickle=True)
    assert got == {"v": {"bag": {"a": 1}}} and type(got["v"]["bag"]) is Bag
    with pytest.raises(UnrepresentableError, match="pickled"):
        load_checkpoint(tmp_path / "c", keys=["v.bag.a"])


_TORCH_SAVE = r"written by torch\.save; load it with torch\.load \(TorchCheckpointIO\)"


@pytest.mark.parametrize("name", ["missing", "missing.zip", "missing.ckpt"])
def test_missing_path_is_file_not_found(tmp_path: Path, name: str) -> None:
    path = str(tmp_path / name)
    for version in (None, "v000001"):
        with pytest.raises(GroupNotFoundError, match=f"{re.escape(path)}.*does not exist") as err:
            tz.load_checkpoint(path, version=version)
        assert isinstance(err.value, FileNotFoundError)
    assert not os.path.exists(path)  # a load creates nothing


@pytest.mark.parametrize("name", ["plain.pt", "plain.zip", "legacy.pt"])
def test_torch_save_file_says_use_torch_load(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    new_format = not name.startswith("legacy")
    torch.save({"a": torch.ones(2)}, path, _use_new_zipfile_serialization=new_format)
    with pytest.raises(MetadataError, match=f"{re.escape(str(path))}.*{_TORCH_SAVE}"):
        tz.load_checkpoint(path)


class _Marks:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (open, (self.marker, "w"))  # unpickling it creates the file


def test_foreign_files_are_never_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    with zipfile.ZipFile(tmp_path / "evil.pt", "w") as archive:
        archive.writestr("evil/data.pkl", pickle.dumps(_Marks(str(marker)), protocol=2))
        archive.writestr("evil/version", "3\n")
    with pytest.raises(MetadataError, match=_TORCH_SAVE):
        tz.load_checkpoint(tmp_path / "evil.pt")
    magic = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)[:-1]  # what torch.save pickles first
    (tmp_path / "evil_legacy.pt").write_bytes(magic + pickle.dumps(_Marks(str(marker)))[2:])
    with pytest.raises(MetadataError, match=_TORCH_SAVE):
        tz.load_checkpoint(tmp_path / "evil_legacy.pt")
    assert not marker.exists()


def test_other_files_and_directories(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(MetadataError, match=r"notes\.txt.*not a directory or zip holding"):
        tz.load_checkpoint(tmp_path / "notes.txt")
    with zipfile.ZipFile(tmp_path / "data.bin", "w") as archive:
        archive.writestr("readme", "x")
    with pytest.raises(MetadataError, match=r"data\.bin.*path ending in \.zip"):
        tz.load_checkpoint(tmp_path / "data.bin")
    fs_writer = tmp_path / "dcp"  # torch's FileSystemWriter output
    fs_writer.mkdir()
    (fs_writer / ".metadata").write_bytes(b"\x80\x04.")
    with pytest.raises(MetadataError, match="FileSystemReader"):
        tz.load_checkpoint(fs_writer)
    (tmp_path / "empty").mkdir()  # as before: nothing committed there
    with pytest.raises(NodeNotFoundError, match="no committed checkpoint"):
        tz.load_checkpoint(tmp_path / "empty")
    with pytest.raises(NodeNotFoundError, match="no committed checkpoint"):
        tz.load_checkpoint("memory://nothing-here")


def test_lightning_resume_from_torch_save_checkpoint(tmp_path: Path) -> None:
    pl = pytest.importorskip("lightning.pytorch")
    from torchzarr.lightning import ZarrCheckpointIO

    class Tiny(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Linear(2, 1)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            return self.net(batch[0]).pow(2).mean()

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.1)

        def train_dataloader(self) -> Any:
            data = torch.utils.data.TensorDataset(torch.randn(4, 2))
            return torch.utils.data.DataLoader(data, batch_size=2)

    options: dict[str, Any] = {
        "logger": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "enable_checkpointing": False,
        "max_epochs": 1,
    }
    trainer = pl.Trainer(**options)
    trainer.fit(Tiny())
    old = tmp_path / "old.ckpt"
    trainer.save_checkpoint(old)  # TorchCheckpointIO: torch.save
    with pytest.raises(MetadataError, match=f"{re.escape(str(old))}.*{_TORCH_SAVE}"):
        pl.Trainer(**{**options, "max_epochs": 2}, plugins=[ZarrCheckpointIO()]).fit(
            Tiny(), ckpt_path=old
        )
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ZarrCheckpointIO().load_checkpoint(tmp_path / "missing.ckpt")
