"""torch.distributed.checkpoint saves under DCP's plan caching (``DefaultSavePlanner(
enable_plan_caching=True)``): each save writes its own new version in full, on every rank.

The planner's caches are class attributes keyed by the planner's class name, so each test
uses a planner class of its own and drops its cache entries afterwards.
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterator
from typing import Any

import pytest
import torch
import torch.distributed.checkpoint as dcp
from ranks import run_ranks
from torch.distributed.checkpoint import DefaultSavePlanner
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.planner import SavePlanner

import torchzarr as tz
from torchzarr.checkpoint.commit import read_manifest
from torchzarr.checkpoint.prune import wait_pruned
from torchzarr.distributed import ZarrStorageReader, ZarrStorageWriter
from torchzarr.errors import InvalidArgumentError

HERE = pathlib.Path(__file__).resolve().parent

pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled")

_CACHES = ("_cached_save_plan", "_cached_final_save_plan", "_cached_all_plans")
_CACHES += ("_cached_global_plan", "_cached_metadata")


@pytest.fixture
def caching_planner(request: pytest.FixtureRequest) -> Iterator[type[DefaultSavePlanner]]:
    """A planner class with plan caching on, its cache its own (named after the test)."""

    def init(self: DefaultSavePlanner) -> None:
        DefaultSavePlanner.__init__(self, enable_plan_caching=True)

    name = f"Caching_{request.node.name}"
    planner = type(name, (DefaultSavePlanner,), {"__init__": init})
    yield planner
    for cache in _CACHES:
        getattr(SavePlanner, cache).pop(name, None)


def _state(step: int) -> dict[str, Any]:
    return {"w": torch.full((8, 4), float(step)), "b": torch.arange(3) + step, "step": step}


def _load(path: Any) -> dict[str, Any]:
    loaded = {"w": torch.zeros(8, 4), "b": torch.zeros(3, dtype=torch.int64), "step": 0}
    dcp.load(loaded, storage_reader=ZarrStorageReader(path))
    return loaded


def _assert_holds(loaded: dict[str, Any], step: int) -> None:
    expected = _state(step)
    assert loaded["step"] == step
    assert torch.equal(loaded["w"], expected["w"]) and torch.equal(loaded["b"], expected["b"])


def _committed(path: Any) -> str:
    manifest = read_manifest(tz.storage.resolve_store(path))
    assert manifest is not None
    return str(manifest["version"])


@pytest.mark.parametrize("kind", ["dir", "zip"])
def test_each_save_under_plan_caching_writes_and_commits_a_new_version(
    tmp_path: pathlib.Path, kind: str, caching_planner: type[DefaultSavePlanner]
) -> None:
    path = str(tmp_path / ("ckpt.zip" if kind == "zip" else "ckpt"))
    for step in (1, 2, 3):  # 2 and 3: every plan comes from DCP's cache
        dcp.save(_state(step), storage_writer=ZarrStorageWriter(path), planner=caching_planner())
        assert _committed(path) == f"v{step:06d}"
        _assert_holds(_load(path), step)
    wait_pruned()
    root = tz.open_group(path, mode="r")
    assert sorted(root.group_keys()) == ["v000003"]  # the older versions pruned
    version = tz.open_group(path, mode="r", path="v000003")
    assert torch.equal(version["w"][...], torch.full((8, 4), 3.0))


def test_plan_caching_with_plans_this_writer_never_saw_refuses_before_writing(
    tmp_path: pathlib.Path,
    caching_planner: type[DefaultSavePlanner],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = tmp_path / "ckpt"
    dcp.save(_state(1), storage_writer=ZarrStorageWriter(str(path)), planner=caching_planner())
    # as if another storage writer had saved with the planner's cached plans
    monkeypatch.setattr(ZarrStorageWriter, "_last_plans", None)
    with pytest.raises(CheckpointException, match="plan caching") as info:
        dcp.save(_state(2), storage_writer=ZarrStorageWriter(str(path)), planner=caching_planner())
    assert isinstance(info.value.failures[0][0], InvalidArgumentError)
    assert sorted(p.name for p in path.iterdir()) == ["v000001", "zarr.json"]  # nothing written
    _assert_holds(_load(str(path)), 1)


def test_plan_caching_that_reuses_another_state_dicts_plans_commits_nothing(
    tmp_path: pathlib.Path, caching_planner: type[DefaultSavePlanner]
) -> None:
    path = tmp_path / "ckpt"
    dcp.save(_state(1), storage_writer=ZarrStorageWriter(str(path)), planner=caching_planner())
    # a save without caching in between: the writer's last plans are now of another state
    dcp.save({"w": torch.ones(8, 4)}, storage_writer=ZarrStorageWriter(str(tmp_path / "other")))
    with pytest.raises(CheckpointException, match="do not match") as info:
        dcp.save(_state(2), storage_writer=ZarrStorageWriter(str(path)), planner=caching_planner())
    assert isinstance(info.value.failures[0][0], InvalidArgumentError)
    assert _committed(str(path)) == "v000001"
    assert not (path / "v000002").exists()  # the uncommitted version deleted
    _assert_holds(_load(str(path)), 1)


def test_two_ranks_save_repeatedly_under_plan_caching(tmp_path: pathlib.Path) -> None:
    """2 gloo ranks: plans all cached, then one rank's changed, then all cached again."""
    init = tmp_path / "pg-init"
    run_ranks(
        str(HERE / "dcp_cache_worker.py"), 2, [str(init), str(tmp_path / "ckpt")], timeout=180
    )
