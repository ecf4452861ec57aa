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


def _bits(t: torch.Tensor) -> bytes:
    return t.contiguous().view(torch.uint8).numpy().tobytes()


def _stored_dtype(path: str, key: str) -> torch.dtype:
    version = _committed(path)
    manifest = read_manifest(tz.storage.resolve_store(path))
    assert manifest is not None
    assert manifest["dcp"]["state_dict_metadata"][key]["dtype"] == str(
        tz.open_array(path, path=f"{version}/{key}", mode="r").dtype
    ).removeprefix("torch.")
    return tz.open_array(path, path=f"{version}/{key}", mode="r").dtype


@pytest.mark.parametrize("kind", ["dir", "zip"])
def test_plan_caching_across_a_dtype_change_stores_the_values_exactly(
    tmp_path: pathlib.Path, kind: str, caching_planner: type[DefaultSavePlanner]
) -> None:
    """Same keys and shapes, another dtype: DCP's caching reuses the bf16 plans (it
    compares no dtypes); the float64 values must be stored as float64, not rounded."""
    exact = torch.tensor([1.0 + 2**-20, 3.14159265, 1e-30], dtype=torch.float64)
    planner = caching_planner()
    suffix = ".zip" if kind == "zip" else ""
    first, second = str(tmp_path / f"a{suffix}"), str(tmp_path / f"b{suffix}")
    dcp.save(
        {"w": exact.to(torch.bfloat16)}, storage_writer=ZarrStorageWriter(first), planner=planner
    )
    dcp.save({"w": exact}, storage_writer=ZarrStorageWriter(second), planner=planner)
    loaded = {"w": torch.zeros(3, dtype=torch.float64)}
    dcp.load(loaded, storage_reader=ZarrStorageReader(second))
    assert _bits(loaded["w"]) == _bits(exact)
    assert _stored_dtype(second, "w") == torch.float64  # array and metadata alike
    assert _stored_dtype(first, "w") == torch.bfloat16


def test_two_caching_planners_of_one_class_save_a_bf16_model_and_its_fp32_ema_exactly(
    tmp_path: pathlib.Path, caching_planner: type[DefaultSavePlanner]
) -> None:
    ema = {"w": torch.tensor([1.0 + 2**-20, 3.14159265, 1e-3]), "b": torch.arange(3.0) / 3}
    model = {k: v.to(torch.bfloat16) for k, v in ema.items()}
    model_planner, ema_planner = caching_planner(), caching_planner()
    for step in (1, 2):  # the second round: every plan comes from DCP's cache
        for name, state, planner in (("model", model, model_planner), ("ema", ema, ema_planner)):
            path = str(tmp_path / name)
            dcp.save(state, storage_writer=ZarrStorageWriter(path), planner=planner)
            assert _committed(path) == f"v{step:06d}"
            loaded = {k: torch.zeros_like(v) for k, v in state.items()}
            dcp.load(loaded, storage_reader=ZarrStorageReader(path))
            for key, value in state.items():
                assert _bits(loaded[key]) == _bits(value), (step, name, key)
                assert _stored_dtype(path, key) == value.dtype


def test_data_of_another_dtype_for_an_array_other_ranks_write_is_refused_before_commit(
    tmp_path: pathlib.Path,
    caching_planner: type[DefaultSavePlanner],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from torchzarr.checkpoint import dcp as dcp_module

    # as if other ranks wrote boxes of "w" too: one rank cannot lay its array out again
    monkeypatch.setattr(dcp_module, "shared_keys", lambda plans: {"w"})
    path = tmp_path / "ckpt"
    planner = caching_planner()
    dcp.save(
        {"w": torch.ones(3, dtype=torch.bfloat16)},
        storage_writer=ZarrStorageWriter(str(path)),
        planner=planner,
    )
    with pytest.raises(CheckpointException, match=r"'w' holds torch\.float32 data") as info:
        dcp.save(
            {"w": torch.full((3,), 1.5)},
            storage_writer=ZarrStorageWriter(str(path)),
            planner=planner,
        )
    err = info.value.failures[0][0]
    assert isinstance(err, InvalidArgumentError) and "other ranks write too" in str(err)
    assert _committed(str(path)) == "v000001"
    loaded = {"w": torch.zeros(3, dtype=torch.bfloat16)}
    dcp.load(loaded, storage_reader=ZarrStorageReader(str(path)))
    assert torch.equal(loaded["w"], torch.ones(3, dtype=torch.bfloat16))


def test_metadata_of_a_save_under_plan_caching_names_the_dtypes_stored(
    tmp_path: pathlib.Path, caching_planner: type[DefaultSavePlanner]
) -> None:
    # DCP's cached metadata says bfloat16 (its last caching save); the writer's last
    # plans, of a save without caching in between, say float32, as the data is
    x = torch.tensor([1.0 + 2**-20, 2.0])
    first = str(tmp_path / "a")
    dcp.save(
        {"w": x.bfloat16()}, storage_writer=ZarrStorageWriter(first), planner=caching_planner()
    )
    dcp.save({"w": x}, storage_writer=ZarrStorageWriter(str(tmp_path / "b")))
    path = str(tmp_path / "c")
    metadata = dcp.save({"w": x}, storage_writer=ZarrStorageWriter(path), planner=caching_planner())
    assert metadata.state_dict_metadata["w"].properties.dtype == torch.float32
    assert _stored_dtype(path, "w") == torch.float32
    loaded = {"w": torch.zeros(2)}
    dcp.load(loaded, storage_reader=ZarrStorageReader(path))
    assert _bits(loaded["w"]) == _bits(x)


def test_an_array_other_ranks_write_takes_widened_data_only():
    """A planner's resolve_data may hand float16 for a float32 plan (torch's FP16Planner
    example): exact in the float32 array several ranks write; a narrowing is refused."""
    from torchzarr.checkpoint.dcp_dtypes import KeyArrays, widens

    root = tz.create_group("memory://")
    root.create_array("w", shape=(4,), dtype=torch.float32)
    arrays = KeyArrays(root, [], {"w"}, lambda *a: {}, "ckpt")
    assert arrays.array("w", "w", torch.float16).dtype == torch.float32
    with pytest.raises(tz.errors.InvalidArgumentError, match="only widening"):
        arrays.array("w", "w", torch.float64)
    assert [widens(a, b) for a, b in WIDENINGS] == [True] * 5
    assert not any(widens(a, b) for a, b in NARROWINGS)


WIDENINGS = [
    (torch.bfloat16, torch.float32),
    (torch.float32, torch.float64),
    (torch.int8, torch.int64),
    (torch.uint8, torch.int16),
    (torch.uint16, torch.uint32),
]
NARROWINGS = [
    (torch.float32, torch.bfloat16),
    (torch.float16, torch.bfloat16),
    (torch.int64, torch.float64),
    (torch.uint8, torch.int8),
    (torch.int16, torch.uint32),
    (torch.float32, torch.complex64),
    (torch.bool, torch.int8),
]
