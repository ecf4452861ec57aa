"""Classes named in typed JSON load only from an allowlist (as torch's weights-only unpickler)."""

from __future__ import annotations

import argparse
import subprocess
import time
from collections import Counter, OrderedDict, defaultdict, deque
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from torchzarr.checkpoint import load_checkpoint, save_checkpoint
from torchzarr.checkpoint.class_names import class_allowed, class_spec
from torchzarr.checkpoint.lightning import checkpoint_io_class, load_from_checkpoint
from torchzarr.checkpoint.values import decode_value, encode_value
from torchzarr.errors import UnrepresentableError


class UserMapping(Mapping[str, Any]):
    """A mapping that is no dict, as omegaconf's DictConfig (what Lightning writes as
    ``hparams_type`` for a module whose hyper-parameters are one)."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self._values = dict(values)

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


class UserConfig(dict):  # type: ignore[type-arg]
    """A user's hyper-parameter class: a dict subclass, so not allowed by default."""


@pytest.fixture
def restore_safe_globals() -> Iterator[None]:
    before = torch.serialization.get_safe_globals()
    yield
    torch.serialization.clear_safe_globals()
    torch.serialization.add_safe_globals(before)


_DEFAULTS: list[type] = [
    *(int, float, complex, bool, str, bytes, list, tuple, dict, set, frozenset),
    *(OrderedDict, Counter, defaultdict, deque, argparse.Namespace),
    *(torch.Size, torch.dtype, torch.device, torch.Tensor, torch.nn.Parameter),
    *(np.float32, np.int8, np.bool_, np.dtype, type(np.dtype("f4"))),
]


@pytest.mark.parametrize("cls", _DEFAULTS, ids=lambda c: c.__qualname__)
def test_the_default_allowlist_loads(tmp_path: Path, cls: type) -> None:
    save_checkpoint({"w": torch.ones(1), "c": {"k": cls}}, tmp_path)
    assert load_checkpoint(tmp_path)["c"]["k"] is cls


def test_lightning_attribute_dicts_are_allowed() -> None:
    pytest.importorskip("lightning.pytorch")
    from lightning.fabric.utilities.data import AttributeDict as FabricDict
    from lightning.pytorch.utilities.parsing import AttributeDict

    for cls in (AttributeDict, FabricDict):
        assert decode_value(encode_value(cls)) is cls


def _evil(tmp_path: Path) -> Path:
    path = tmp_path / "evil"
    state = {"w": torch.ones(4), "cfg": {"factory": subprocess.Popen}}
    save_checkpoint(state, path)  # saving is unchanged: Popen is found by name
    return path


@pytest.mark.parametrize(
    "how",
    [{}, {"lazy": True}, {"keys": ["cfg"]}, {"keys": [("cfg", "factory")]}, {"version": "v000001"}],
    ids=str,
)
def test_a_class_outside_the_allowlist_is_refused_on_load(tmp_path: Path, how: Any) -> None:
    path = _evil(tmp_path)
    with pytest.raises(UnrepresentableError) as info:
        load_checkpoint(path, **how)
    message = str(info.value)
    assert "['cfg']['factory']" in message and "'subprocess:Popen'" in message
    assert "torch.serialization.add_safe_globals([subprocess.Popen])" in message
    assert "allow_pickle=True" in message
    loaded = load_checkpoint(path, allow_pickle=True, **how)  # trusted: any imported class
    assert loaded["cfg"]["factory"] is subprocess.Popen


def test_the_lightning_plugin_refuses_it_unless_it_allows_pickles(tmp_path: Path) -> None:
    pytest.importorskip("lightning.pytorch")
    path = _evil(tmp_path)
    plugin = checkpoint_io_class("lightning")
    with pytest.raises(UnrepresentableError, match=r"\['cfg'\]\['factory'\]"):
        plugin().load_checkpoint(path)
    with pytest.raises(UnrepresentableError, match=r"\['cfg'\]\['factory'\]"):
        plugin(allow_pickle=True).load_checkpoint(path, weights_only=True)
    loaded = plugin(allow_pickle=True).load_checkpoint(path)
    assert loaded["cfg"]["factory"] is subprocess.Popen


def test_subclasses_of_allowed_classes_are_not_allowed() -> None:
    assert class_allowed(dict) and not class_allowed(UserConfig)
    with pytest.raises(UnrepresentableError, match="add_safe_globals"):
        decode_value(encode_value(UserConfig), ("c",))


@pytest.mark.usefixtures("restore_safe_globals")
def test_classes_allowed_for_torch_load_are_allowed(tmp_path: Path) -> None:
    save_checkpoint({"w": torch.ones(1), "c": UserConfig}, tmp_path)
    with pytest.raises(UnrepresentableError, match=r"\['c'\].*UserConfig"):
        load_checkpoint(tmp_path)
    with torch.serialization.safe_globals([UserConfig]):
        assert load_checkpoint(tmp_path)["c"] is UserConfig
    with pytest.raises(UnrepresentableError):
        load_checkpoint(tmp_path)  # the context manager's allowance ended with it
    torch.serialization.add_safe_globals([(UserConfig, f"{__name__}.UserConfig")])
    assert load_checkpoint(tmp_path)["c"] is UserConfig  # the (class, name) form too


def test_class_spec_is_not_limited_by_the_allowlist() -> None:
    assert class_spec(subprocess.Popen) == "subprocess:Popen"
    assert class_spec(UserConfig) == f"{__name__}:UserConfig"


def _lightning_checkpoint(tmp_path: Path, **entries: Any) -> Path:
    L = pytest.importorskip("lightning.pytorch")
    state = {
        "state_dict": {"l.weight": torch.zeros(1, 1), "l.bias": torch.zeros(1)},
        "pytorch-lightning_version": L.__version__,
        **entries,
    }
    path = tmp_path / "ck.ckpt"
    save_checkpoint(state, path)
    return path


def _one_layer() -> type:
    L = pytest.importorskip("lightning.pytorch")

    class OneLayer(L.LightningModule):
        def __init__(self, **hparams: Any) -> None:
            super().__init__()
            self.save_hyperparameters()
            self.l = torch.nn.Linear(1, 1)

    return OneLayer


def test_a_checkpoint_naming_popen_as_hparams_type_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    path = _lightning_checkpoint(
        tmp_path,
        hyper_parameters={"/bin/sh": 0, "-c": 0, f"touch {marker}": 0},
        hparams_type=subprocess.Popen,
    )
    model = _one_layer()
    with pytest.raises(UnrepresentableError, match=r"\['hparams_type'\].*subprocess:Popen"):
        load_from_checkpoint(model, path)
    # trusting the file still does not hand Lightning a class it never writes there
    with pytest.raises(UnrepresentableError, match=r"\['hparams_type'\].*not written by"):
        load_from_checkpoint(model, path, allow_pickle=True)
    time.sleep(0.3)  # a Popen would have run the command by now
    assert not marker.exists()


@pytest.mark.parametrize("key", ["hparams_type", "datamodule_hparams_type"])
def test_hparams_types_lightning_never_writes_are_refused(tmp_path: Path, key: str) -> None:
    path = _lightning_checkpoint(tmp_path, hyper_parameters={"a": 1}, **{key: int})
    with pytest.raises(UnrepresentableError, match=rf"\['{key}'\] is <class 'int'>"):
        load_from_checkpoint(_one_layer(), path)


@pytest.mark.parametrize("hparams_type", [None, "AttributeDict", "class", dict])
def test_hparams_types_lightning_writes_load(tmp_path: Path, hparams_type: Any) -> None:
    if hparams_type == "class":  # what Lightning writes: type(model.hparams)
        hparams_type = type(_one_layer()().hparams)
    path = _lightning_checkpoint(tmp_path, hyper_parameters={"a": 1}, hparams_type=hparams_type)
    assert load_from_checkpoint(_one_layer(), path).hparams.a == 1


@pytest.mark.usefixtures("restore_safe_globals")
def test_a_mapping_hparams_type_loads_once_allowed(tmp_path: Path) -> None:
    path = _lightning_checkpoint(tmp_path, hyper_parameters={"a": 1}, hparams_type=UserMapping)
    with pytest.raises(UnrepresentableError, match=r"\['hparams_type'\].*UserMapping"):
        load_from_checkpoint(_one_layer(), path)
    torch.serialization.add_safe_globals([UserMapping])
    assert load_from_checkpoint(_one_layer(), path).hparams.a == 1


def test_weights_only_false_trusts_the_checkpoint_as_torch_load_does(tmp_path: Path) -> None:
    path = _lightning_checkpoint(tmp_path, hyper_parameters={"act": torch.nn.GELU})
    with pytest.raises(UnrepresentableError, match=r"\['act'\].*GELU"):
        load_from_checkpoint(_one_layer(), path)
    assert load_from_checkpoint(_one_layer(), path, weights_only=False).hparams.act is torch.nn.GELU
    plugin = checkpoint_io_class()()
    with pytest.raises(UnrepresentableError, match="GELU"):
        plugin.load_checkpoint(path)
    loaded = plugin.load_checkpoint(path, weights_only=False)  # trainer.fit(weights_only=False)
    assert loaded["hyper_parameters"]["act"] is torch.nn.GELU
    with pytest.raises(UnrepresentableError, match="GELU"):
        checkpoint_io_class()(allow_pickle=True).load_checkpoint(path, weights_only=True)


def test_a_class_claiming_a_safe_module_is_not_taken_for_it() -> None:
    """Allowed by what the modules hold, not by the names a class gives itself."""

    class Float(np.float32):
        pass

    Float.__module__, Float.__qualname__ = "numpy", "float32"
    assert not class_allowed(Float)
    Float.__module__, Float.__qualname__ = "argparse", "Namespace"
    assert not class_allowed(Float)
