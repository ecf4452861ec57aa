"""The snippet of docs/checkpoints.md that turns a torchzarr DCP checkpoint into a torch.save file."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp

from torchzarr.distributed import ZarrStorageWriter

pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled")

DOC = Path(__file__).resolve().parents[2] / "docs" / "checkpoints.md"


def _snippet() -> str:
    blocks = DOC.read_text(encoding="utf-8").split("```python")[1:]
    block = next(b for b in blocks if "_EmptyStateDictLoadPlanner" in b)
    return textwrap.dedent(block.split("```")[0])


def test_the_documented_conversion_to_a_torch_save_file_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = torch.nn.Linear(3, 2)
    saved = {"model": model.state_dict(), "extra": {"step": 7, "scale": torch.tensor(0.5)}}
    os.makedirs(tmp_path / "ckpts")
    writer = ZarrStorageWriter(str(tmp_path / "ckpts" / "step1000"))
    dcp.save(saved, storage_writer=writer, no_dist=True)
    monkeypatch.chdir(tmp_path)  # the snippet's relative paths
    exec(compile(_snippet(), str(DOC), "exec"), {})
    out = torch.load(tmp_path / "step1000.pt", weights_only=True)
    assert sorted(out) == ["extra", "model"] and out["extra"]["step"] == 7
    assert torch.equal(out["extra"]["scale"], torch.tensor(0.5))
    for name, value in model.state_dict().items():
        assert torch.equal(out["model"][name], value)
