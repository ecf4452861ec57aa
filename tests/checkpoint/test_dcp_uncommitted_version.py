"""A version a save killed before its commit left behind is never loaded by name."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException

import torchzarr as tz
from torchzarr.checkpoint import load_checkpoint, save_checkpoint
from torchzarr.checkpoint.commit import MANIFEST_ATTRIBUTE
from torchzarr.distributed import ZarrStorageReader, ZarrStorageWriter
from torchzarr.errors import NodeNotFoundError

pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled")


def _killed_before_commit(code: str) -> None:
    """Run ``code`` in a process that dies (``os._exit``) where its save would commit."""
    head = (
        "import os, warnings, torch\n"
        "warnings.simplefilter('ignore')\n"
        "import torch.distributed.checkpoint as dcp\n"
        "import torchzarr.checkpoint.commit as commit\n"
        "commit.commit_version = lambda *a, **k: os._exit(3)\n"
    )
    done = subprocess.run([sys.executable, "-c", head + code], capture_output=True, text=True)
    assert done.returncode == 3, done.stderr


def test_dcp_load_of_a_killed_saves_version_is_refused(tmp_path: Path) -> None:
    path = str(tmp_path / "ck")
    dcp.save({"w": torch.ones(4)}, storage_writer=ZarrStorageWriter(path), no_dist=True)
    _killed_before_commit(  # other keys and shapes: the old fallback's message was wrong
        "from torchzarr.distributed import ZarrStorageWriter\n"
        "state = {'w': torch.full((6,), 7.0), 'extra': torch.ones(2)}\n"
        f"dcp.save(state, storage_writer=ZarrStorageWriter({path!r}), no_dist=True)\n"
    )
    assert (tmp_path / "ck" / "v000002").is_dir()
    reader = ZarrStorageReader(path, version="v000002")
    with pytest.raises(NodeNotFoundError, match=r"version 'v000002' .* never committed") as raised:
        reader.read_metadata()
    assert "saved before torchzarr kept it" not in str(raised.value)
    out = {"w": torch.zeros(4)}
    with pytest.raises(CheckpointException, match=r"'v000002' .* never committed"):
        dcp.load(out, storage_reader=ZarrStorageReader(path, version="v000002"), no_dist=True)
    assert torch.equal(out["w"], torch.zeros(4))  # nothing of the killed save read
    dcp.load(out, storage_reader=ZarrStorageReader(path, version="v000001"), no_dist=True)
    assert torch.equal(out["w"], torch.ones(4))  # the committed one, by name too


def test_dcp_load_of_a_leftover_with_the_committed_shapes_is_refused(tmp_path: Path) -> None:
    """The fallback for versions saved before each kept its own metadata matched names and
    shapes only: it read a killed save of the same state dict silently."""
    path = str(tmp_path / "ck")
    dcp.save({"w": torch.ones(4)}, storage_writer=ZarrStorageWriter(path), no_dist=True)
    _killed_before_commit(
        "from torchzarr.distributed import ZarrStorageWriter\n"
        "import torchzarr.checkpoint.dcp as zd\n"
        "zd.ZarrStorageWriter.finish = lambda self, *a, **k: os._exit(3)\n"
        f"dcp.save({{'w': torch.full((4,), 7.0)}}, storage_writer=ZarrStorageWriter({path!r}),"
        " no_dist=True)\n"
    )
    out = {"w": torch.zeros(4)}
    with pytest.raises(CheckpointException, match=r"'v000002' .* never committed"):
        dcp.load(out, storage_reader=ZarrStorageReader(path, version="v000002"), no_dist=True)
    assert torch.equal(out["w"], torch.zeros(4))


def test_load_checkpoint_of_a_killed_saves_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ck"
    save_checkpoint({"w": torch.ones(4), "step": 1}, path)
    _killed_before_commit(
        "from torchzarr.checkpoint import save_checkpoint\n"
        f"save_checkpoint({{'w': torch.full((4,), 7.0), 'step': 2}}, {str(path)!r})\n"
    )
    assert (path / "v000002").is_dir()
    with pytest.raises(NodeNotFoundError, match=r"version 'v000002' .* never committed"):
        load_checkpoint(path, version="v000002")
    assert load_checkpoint(path)["step"] == 1
    assert load_checkpoint(path, version="v000001")["step"] == 1


def test_load_checkpoint_by_name_of_committed_and_older_manifests_versions(tmp_path: Path) -> None:
    path = tmp_path / "ck"
    for step in (1, 2, 3):
        save_checkpoint({"step": step}, path, keep=3)
    tz.checkpoint.prune.wait_pruned()
    assert load_checkpoint(path, version="v000001")["step"] == 1  # kept: listed
    group = tz.open_group(str(path), mode="r+", use_consolidated=False)
    manifest = dict(group.attrs[MANIFEST_ATTRIBUTE])
    manifest.pop("previous")  # as torchzarr wrote it before it listed earlier commits
    group.attrs[MANIFEST_ATTRIBUTE] = manifest
    assert load_checkpoint(path, version="v000002")["step"] == 2  # below: may be one
    _killed_before_commit(
        "from torchzarr.checkpoint import save_checkpoint\n"
        f"save_checkpoint({{'step': 4}}, {str(path)!r}, keep=3)\n"
    )
    with pytest.raises(NodeNotFoundError, match=r"'v000004' .* never committed"):
        load_checkpoint(path, version="v000004")  # above the committed one: never


def test_a_first_save_killed_before_its_commit_loads_by_name_nowhere(tmp_path: Path) -> None:
    path = tmp_path / "ck"
    _killed_before_commit(
        f"from torchzarr.checkpoint import save_checkpoint\nsave_checkpoint({{'step': 1}}, {str(path)!r})\n"
    )
    assert (path / "v000001").is_dir()
    with pytest.raises(NodeNotFoundError, match=r"'v000001' .* holds no manifest"):
        load_checkpoint(path, version="v000001")
