"""Python attributes set on tensors and Parameters are saved and set again on load."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
import torch

from torchzarr.checkpoint import (
    AsyncCheckpointer,
    load_checkpoint,
    save_checkpoint,
)
from torchzarr.checkpoint.tensor_attrs import UnsavedAttributeWarning
from torchzarr.errors import MetadataError


def _state() -> dict[str, Any]:
    p = torch.nn.Parameter(torch.ones(2))
    p.tensor_model_parallel = True
    p.partition_dim = 0
    t = torch.zeros(3)
    t.note = "ema"
    t.scales = {"a": (1.5, None)}
    return {"model": {"p": p, "t": t, "plain": torch.ones(1)}, "step": 3}


def _check(out: dict[str, Any]) -> None:
    p, t = out["model"]["p"], out["model"]["t"]
    assert isinstance(p, torch.nn.Parameter)
    assert p.tensor_model_parallel is True and p.partition_dim == 0
    assert t.note == "ema" and t.scales == {"a": (1.5, None)}
    assert vars(out["model"]["plain"]) == {}


@pytest.mark.parametrize("how", ["direct", "lazy", "async"])
def test_tensor_attributes_round_trip(tmp_path: Path, how: str) -> None:
    state = _state()
    if how == "async":
        with AsyncCheckpointer() as saver:
            saver.save(state, tmp_path)
            del state["model"]["t"].note  # after save() returns: the save keeps it
    else:
        save_checkpoint(state, tmp_path)
    _check(load_checkpoint(tmp_path, lazy=how == "lazy"))


def test_an_attribute_typed_json_cannot_hold_is_left_out_with_a_warning(tmp_path: Path) -> None:
    # a loader hook or a lock set on a Parameter: such saves worked before attributes were
    # kept, so the attribute is left out with a warning naming it, not the save refused
    state = _state()
    state["model"]["t"].lock = threading.Lock()
    where = r"tensor at \['model'\]\['t'\]: its attribute 'lock' is not saved"
    with pytest.warns(UnsavedAttributeWarning, match=where):
        save_checkpoint(state, tmp_path / "ck")
    loaded = load_checkpoint(tmp_path / "ck")["model"]["t"]
    assert not hasattr(loaded, "lock") and loaded.note == "ema"  # the others are kept
    with AsyncCheckpointer() as saver, pytest.warns(UnsavedAttributeWarning, match=where):
        saver.save(state, tmp_path / "ck")  # in the caller
    state["model"]["t"].lock = {1, 2}  # a set: pickled with allow_pickle
    save_checkpoint(state, tmp_path / "ck", allow_pickle=True)
    assert load_checkpoint(tmp_path / "ck", allow_pickle=True)["model"]["t"].lock == {1, 2}


def test_tensors_without_attributes_store_none_and_load_as_before(tmp_path: Path) -> None:
    save_checkpoint({"w": torch.ones(2)}, tmp_path)
    meta = json.loads((tmp_path / "v000001" / "w" / "zarr.json").read_text())
    assert "attributes" not in meta["attributes"]["torchzarr_tensor"]  # as older checkpoints
    assert vars(load_checkpoint(tmp_path)["w"]) == {}


def _stored_attributes_replaced(tmp_path: Path, attributes: Any) -> None:
    """Save a tensor with an attribute, then replace what its array records for it (the
    array's and the consolidated copy)."""
    t = torch.ones(2)
    t.note = "x"
    save_checkpoint({"w": t}, tmp_path)
    array_path, group_path = (
        tmp_path / "v000001" / "w" / "zarr.json",
        tmp_path / "v000001" / "zarr.json",
    )
    array, group = json.loads(array_path.read_text()), json.loads(group_path.read_text())
    for meta in (array, group["consolidated_metadata"]["metadata"]["w"]):
        meta["attributes"]["torchzarr_tensor"]["attributes"] = attributes
    array_path.write_text(json.dumps(array))
    group_path.write_text(json.dumps(group))


def test_malformed_stored_attributes_are_a_metadata_error(tmp_path: Path) -> None:
    _stored_attributes_replaced(tmp_path, [1])
    with pytest.raises(MetadataError, match=r"tensor at \['w'\]: its attributes \[1\]"):
        load_checkpoint(tmp_path)


def test_stored_attributes_that_would_hide_tensor_methods_are_refused(tmp_path: Path) -> None:
    """A crafted checkpoint cannot make ``t.tolist()`` or ``t.to(...)`` something else."""
    _stored_attributes_replaced(tmp_path, {"note": "x", "tolist": {"list": []}, "to": 1})
    with pytest.raises(MetadataError, match=r"tensor at \['w'\].*\['to', 'tolist'\]"):
        load_checkpoint(tmp_path)
