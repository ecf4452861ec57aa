"""Version names past v999999 (v1000000, ...) are ordered by number, not as strings."""

from __future__ import annotations

from pathlib import Path

import torch

import torchzarr as tz
from torchzarr.checkpoint import commit, prune
from torchzarr.checkpoint.commit import checkpoint_store
from torchzarr.checkpoint.format import NODE_ATTRIBUTE
from torchzarr.checkpoint.prune import wait_pruned
from torchzarr.core.api import create_group


def at_version(path: Path, version: str) -> None:
    """A checkpoint at ``path`` whose committed version is ``version`` (as after many saves)."""
    tz.save_checkpoint({"i": 0, "w": torch.zeros(2)}, str(path))
    wait_pruned()
    (path / "v000001").rename(path / version)
    commit.commit_version(checkpoint_store(str(path)), version)


def versions(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.name.startswith("v"))


def test_saves_past_v999999_prune_the_older_versions(tmp_path: Path) -> None:
    path = tmp_path / "c"
    at_version(path, "v999999")
    for i in (1, 2):
        version = tz.save_checkpoint({"i": i, "w": torch.full((2,), float(i))}, str(path))
        wait_pruned()
        assert versions(path) == [version]
        assert tz.load_checkpoint(str(path))["i"] == i
    assert version == "v1000001"


def test_keep_2_keeps_the_newest_previous_version_past_v999999(tmp_path: Path) -> None:
    path = tmp_path / "c"
    at_version(path, "v999998")
    for i in (1, 2, 3):  # v999999, v1000000, v1000001
        tz.save_checkpoint({"i": i, "w": torch.ones(2)}, str(path), keep=2)
        wait_pruned()
    assert versions(path) == ["v1000000", "v1000001"]
    assert tz.load_checkpoint(str(path), version="v1000000")["i"] == 2


def test_a_higher_version_in_progress_is_not_pruned_as_older(tmp_path: Path) -> None:
    path = tmp_path / "c"
    at_version(path, "v999999")
    store = checkpoint_store(str(path))
    saved = {NODE_ATTRIBUTE: {"type": "dict", "entries": []}}  # how a save marks its group
    create_group(store, path="v1000000", attributes=saved)  # another's save, not committed yet
    create_group(store, path="v999998", attributes=saved)  # a leftover of a killed save
    assert prune.prune_versions(store) == ["v999998"]
    assert versions(path) == ["v1000000", "v999999"]
