"""Consolidated metadata is written as compact JSON (encoded in C: indenting a document
that holds every member's costs more than the rest of writing it); node documents stay
indented as zarr-python writes them, and zarr-python and tensorstore read both."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import torchzarr as tz
from torchzarr.checkpoint import load_checkpoint, save_checkpoint


def _compact(raw: bytes) -> bytes:
    doc = json.loads(raw)
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _state() -> dict[str, object]:
    torch.manual_seed(0)
    return {
        "model": {f"layer{i}.weight": torch.randn(4, 3) for i in range(5)},
        "optimizer": {"state": {0: {"exp_avg": torch.randn(4, 3), "step": 3}}, "lr": 0.1},
        "name": "é\u2028",
    }


def test_version_consolidated_metadata_is_compact(tmp_path: Path) -> None:
    state = _state()
    save_checkpoint(state, tmp_path)
    raw = (tmp_path / "v000001" / "zarr.json").read_bytes()
    assert b"\n" not in raw and raw == _compact(raw)
    members = json.loads(raw)["consolidated_metadata"]["metadata"]
    assert len([m for m in members if "layer" in m]) == 5  # every member's document
    array_doc = next((tmp_path / "v000001").rglob("*/zarr.json")).read_bytes()
    assert array_doc.startswith(b'{\n  "') and array_doc == json.dumps(
        json.loads(array_doc), indent=2, ensure_ascii=False
    ).encode("utf-8")  # node documents: indented, as before
    loaded = load_checkpoint(tmp_path)
    assert torch.equal(loaded["model"]["layer3.weight"], state["model"]["layer3.weight"])  # type: ignore[index]


@pytest.mark.interop
def test_zarr_python_opens_the_compact_consolidated_version(tmp_path: Path) -> None:
    zarr = pytest.importorskip("zarr")
    ts = pytest.importorskip("tensorstore")
    state = {"w": torch.randn(5, 3), "opt": {"b": torch.arange(4, dtype=torch.int32)}}
    save_checkpoint(state, tmp_path)
    group = zarr.open_group(str(tmp_path / "v000001"), mode="r")  # from the consolidated JSON
    assert group.metadata.consolidated_metadata is not None
    assert sorted(name for name, _ in group.members(max_depth=None)) == ["opt", "opt/b", "w"]
    assert np.array_equal(group["w"][...], state["w"].numpy())
    assert np.array_equal(group["opt/b"][...], state["opt"]["b"].numpy())  # type: ignore[index]
    spec = {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(tmp_path / "v000001/w")}}
    assert np.array_equal(ts.open(spec).result().read().result(), state["w"].numpy())


@pytest.mark.interop
@pytest.mark.parametrize("zarr_format", [2, 3])
def test_consolidate_metadata_and_its_refresh_are_compact(tmp_path: Path, zarr_format: int) -> None:
    zarr = pytest.importorskip("zarr")
    root = tz.open_group(str(tmp_path), mode="w", zarr_format=zarr_format)
    root.create_array("a", shape=(3,), dtype="int16")[...] = torch.arange(3, dtype=torch.int16)
    tz.consolidate_metadata(str(tmp_path))
    key = "zarr.json" if zarr_format == 3 else ".zmetadata"
    raw = (tmp_path / key).read_bytes()
    assert b"\n" not in raw and raw == _compact(raw)
    # a new member refreshes the consolidated document: compact again
    tz.open_group(str(tmp_path), mode="r+").create_group("g", attributes={"x": 1})
    raw = (tmp_path / key).read_bytes()
    assert b"\n" not in raw and raw == _compact(raw) and b'"x":1' in raw  # g's entry
    opened = zarr.open_group(str(tmp_path), mode="r", zarr_format=zarr_format)
    assert sorted(name for name, _ in opened.members()) == ["a", "g"]
    assert opened["a"][...].tolist() == [0, 1, 2]
