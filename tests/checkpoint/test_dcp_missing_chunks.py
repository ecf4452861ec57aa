"""A torch.distributed.checkpoint save stores every chunk of its tensors, all-zero ones too,
so a chunk lost later (a partial copy, a bad disk) makes ``dcp.load`` raise instead of
returning zeros in its place; ``ZarrStorageReader(verify_chunks=False)`` reads it as zeros."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException

import torchzarr as tz
from torchzarr.distributed import ZarrStorageReader, ZarrStorageWriter
from torchzarr.errors import ChunkDecodeError
from torchzarr.storage import MemoryStore

pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled")

KINDS = ["local-raw", "local-zstd", "memory", "zip"]
# 8 rows of 8 float32 per chunk: "w" and "z" have 8 chunks each
CHUNK_BYTES = 256


def _state() -> dict[str, Any]:
    torch.manual_seed(0)
    return {
        "w": torch.randn(64, 8),
        "z": torch.zeros(64, 8),
        "scale": torch.tensor(0.0),  # 0-d and zero
        "step": 3,
    }


def _empty() -> dict[str, Any]:
    return {"w": torch.ones(64, 8), "z": torch.ones(64, 8), "scale": torch.tensor(1.0), "step": 0}


def _save(kind: str, tmp_path: Path) -> tuple[Any, str]:
    if kind == "memory":
        store: Any = MemoryStore()
    elif kind == "zip":
        store = tz.ZipStore(tmp_path / "ckpt.zip", mode="a")
    else:
        store = tz.storage.LocalStore(tmp_path / "ckpt")
    compressors = "balanced" if kind == "local-zstd" else None
    writer = ZarrStorageWriter(store, compressors=compressors, chunk_bytes=CHUNK_BYTES)
    dcp.save(_state(), storage_writer=writer)
    manifest = tz.open_group(store, mode="r").attrs["torchzarr_checkpoint"]
    return store, str(manifest["version"])


def _lose(store: Any, key: str) -> None:
    """Delete one stored object, as a partial copy or a bad disk would lose it."""
    assert store.exists(key)
    store.delete(key)
    if isinstance(store, tz.ZipStore):
        store.close()


def _load(store: Any, **options: Any) -> dict[str, Any]:
    state = _empty()
    dcp.load(state, storage_reader=ZarrStorageReader(store, **options))
    return state


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("lost", "key"), [("w/c.2.0", "w"), ("z/c.5.0", "z"), ("scale/c", "scale")]
)
def test_dcp_load_of_a_checkpoint_that_lost_a_chunk_raises_naming_key_and_chunk(
    tmp_path: Path, kind: str, lost: str, key: str
) -> None:
    store, version = _save(kind, tmp_path)
    _lose(store, f"{version}/{lost}")
    with pytest.raises(CheckpointException, match="damaged") as raised:
        _load(store)
    failure = raised.value.failures[0][0]
    assert isinstance(failure, ChunkDecodeError)
    assert f"['{key}']" in str(failure) and f"{version}/{lost}" in str(failure)


@pytest.mark.parametrize("kind", ["local-raw", "memory"])
def test_dcp_load_of_a_checkpoint_that_lost_an_array_directory_raises_naming_the_key(
    tmp_path: Path, kind: str
) -> None:
    store, version = _save(kind, tmp_path)
    for key in list(store.list_prefix(f"{version}/w/")):
        store.delete(key)  # the array is still in the version's consolidated metadata
    with pytest.raises(CheckpointException, match="damaged") as raised:
        _load(store)
    failure = raised.value.failures[0][0]
    assert isinstance(failure, ChunkDecodeError)
    assert "['w']" in str(failure) and f"{version}/w/zarr.json" in str(failure)


@pytest.mark.parametrize("kind", KINDS)
def test_dcp_save_stores_every_chunk_of_all_zero_and_0d_tensors(tmp_path: Path, kind: str) -> None:
    store, version = _save(kind, tmp_path)
    keys = set(store.list_prefix(f"{version}/"))
    assert {f"{version}/z/c.{i}.0" for i in range(8)} <= keys
    assert f"{version}/scale/c" in keys
    loaded = _load(store)
    assert torch.equal(loaded["z"], torch.zeros(64, 8))
    assert torch.equal(loaded["scale"], torch.tensor(0.0))
    assert torch.equal(loaded["w"], _state()["w"]) and loaded["step"] == 3


def test_verify_chunks_false_reads_a_lost_chunk_as_zeros(tmp_path: Path) -> None:
    store, version = _save("local-raw", tmp_path)
    _lose(store, f"{version}/w/c.2.0")
    loaded = _load(store, verify_chunks=False)
    expected = _state()["w"].clone()
    expected[16:24] = 0
    assert torch.equal(loaded["w"], expected)


def test_partial_dcp_load_of_intact_tensors_works_beside_a_damaged_one(tmp_path: Path) -> None:
    store, version = _save("local-zstd", tmp_path)
    _lose(store, f"{version}/w/c.0.0")
    part = {"z": torch.ones(64, 8), "step": 0}
    dcp.load(part, storage_reader=ZarrStorageReader(store))
    assert torch.equal(part["z"], torch.zeros(64, 8)) and part["step"] == 3
    with pytest.raises(CheckpointException, match=r"\['w'\]"):
        dcp.load({"w": torch.ones(64, 8)}, storage_reader=ZarrStorageReader(store))


def _drop_marks(document: Any) -> Any:
    if isinstance(document, dict):
        return {k: _drop_marks(v) for k, v in document.items() if k != "every_chunk"}
    if isinstance(document, list):
        return [_drop_marks(v) for v in document]
    return document


def test_dcp_checkpoint_saved_without_the_mark_loads_missing_chunks_as_zeros(
    tmp_path: Path,
) -> None:
    """Checkpoints written before the mark keep loading as they did."""
    store, version = _save("local-raw", tmp_path)
    for key in list(store.list_prefix(f"{version}/")):
        if key.endswith("zarr.json"):
            document = json.loads(bytes(store.get(key)))
            store.set(key, json.dumps(_drop_marks(document)).encode())
    store.delete(f"{version}/w/c.2.0")
    store.delete(f"{version}/scale/c")
    loaded = _load(store)
    expected = _state()["w"].clone()
    expected[16:24] = 0
    assert torch.equal(loaded["w"], expected)
    assert torch.equal(loaded["scale"], torch.tensor(0.0))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("weights_only", [True, False])
def test_a_non_tensor_value_that_lost_its_chunk_raises_naming_key_and_chunk(
    tmp_path: Path, kind: str, weights_only: bool
) -> None:
    store, version = _save(kind, tmp_path)
    _lose(store, f"{version}/step/c/0")
    with pytest.raises(CheckpointException, match="damaged") as raised:
        _load(store, weights_only=weights_only)
    failure = raised.value.failures[0][0]
    assert isinstance(failure, ChunkDecodeError)
    assert "value ['step']" in str(failure) and f"{version}/step/c/0" in str(failure)


@pytest.mark.parametrize("weights_only", [True, False])
def test_a_lost_value_chunk_is_reported_lost_with_verify_chunks_false(
    tmp_path: Path, weights_only: bool
) -> None:
    """Not as a value needing the full unpickler: verify_chunks=False skips the check up
    front, and the value is checked once it fails to load."""
    store, version = _save("local-raw", tmp_path)
    _lose(store, f"{version}/step/c/0")
    with pytest.raises(CheckpointException, match="damaged") as raised:
        _load(store, verify_chunks=False, weights_only=weights_only)
    failure = raised.value.failures[0][0]
    assert isinstance(failure, ChunkDecodeError), failure
    assert f"{version}/step/c/0" in str(failure) and "full unpickler" not in str(failure)


def test_a_value_saved_before_the_mark_that_lost_its_chunk_raises_when_it_fails_to_load(
    tmp_path: Path,
) -> None:
    """Checked once the value fails to unpickle: no cost for those that load."""
    store, version = _save("local-raw", tmp_path)
    key = f"{version}/step/zarr.json"
    store.set(key, json.dumps(_drop_marks(json.loads(bytes(store.get(key))))).encode())
    assert _load(store)["step"] == 3  # intact: loads as before
    store.delete(f"{version}/step/c/0")
    for weights_only in (True, False):
        with pytest.raises(CheckpointException, match="damaged") as raised:
            _load(store, weights_only=weights_only)
        failure = raised.value.failures[0][0]
        assert isinstance(failure, ChunkDecodeError) and f"{version}/step/c/0" in str(failure)


def test_an_all_zero_non_tensor_value_is_stored_and_loads() -> None:
    """Raw bytes a custom planner hands over: its one chunk stored though all zeros."""
    from torch.distributed.checkpoint.metadata import MetadataIndex
    from torch.distributed.checkpoint.planner import SavePlan, WriteItem, WriteItemType

    store = MemoryStore()
    writer = ZarrStorageWriter(store)
    writer.set_up_storage_writer(True)
    item = WriteItem(MetadataIndex("blob"), WriteItemType.BYTE_IO)
    (plan,) = writer.prepare_global_plan([SavePlan([item])])

    class Planner:
        def resolve_data(self, _: Any) -> Any:
            return io.BytesIO(bytes(16))

    writer.write_data(plan, Planner()).wait()  # type: ignore[arg-type]
    version = plan.storage_data["version"]
    assert store.get(f"{version}/blob/c/0") is not None


def test_dcp_save_marks_each_tensor_with_its_chunk_shape(tmp_path: Path) -> None:
    store, version = _save("memory", tmp_path)
    root = tz.open_group(store, mode="r", path=version)
    assert root["w"].attrs["torchzarr_dcp_key"]["every_chunk"] == [8, 8]
    assert root["scale"].attrs["torchzarr_dcp_key"]["every_chunk"] == []
    step = root["step"]  # a non-tensor value: its bytes, one chunk
    assert step.attrs["torchzarr_dcp_key"]["every_chunk"] == [step.shape[0]]


def _shard_item(fqn: str, offsets: tuple[int, ...], sizes: tuple[int, ...]) -> Any:
    from torch.distributed.checkpoint.metadata import (
        ChunkStorageMetadata,
        MetadataIndex,
        TensorProperties,
    )
    from torch.distributed.checkpoint.planner import TensorWriteData, WriteItem, WriteItemType

    chunk = ChunkStorageMetadata(offsets=torch.Size(offsets), sizes=torch.Size(sizes))
    data = TensorWriteData(chunk, TensorProperties(dtype=torch.float32), torch.Size((8, 4)))
    index = MetadataIndex(fqn, torch.Size(offsets))
    return WriteItem(index, WriteItemType.SHARD, tensor_data=data)


def test_a_tensor_whose_shards_do_not_cover_it_is_not_marked() -> None:
    """Only a tensor whose every chunk some rank writes may claim to store every chunk."""
    from torch.distributed.checkpoint.planner import SavePlan

    store = MemoryStore()
    writer = ZarrStorageWriter(store)
    writer.set_up_storage_writer(True)
    plans = [
        SavePlan([_shard_item("whole", (0, 0), (4, 4)), _shard_item("gap", (0, 0), (4, 4))]),
        SavePlan([_shard_item("whole", (4, 0), (4, 4))]),
    ]
    version = writer.prepare_global_plan(plans)[0].storage_data["version"]
    root = tz.open_group(store, mode="r", path=version, use_consolidated=False)
    assert root["whole"].attrs["torchzarr_dcp_key"]["every_chunk"] == [4, 4]
    assert "every_chunk" not in root["gap"].attrs["torchzarr_dcp_key"]


def test_a_tensor_whose_shards_overlap_is_not_marked_though_their_sizes_add_up() -> None:
    """Rows [0, 4) and [2, 6) of 8: as many elements as the tensor, rows 6 and 7 unwritten."""
    from torch.distributed.checkpoint.planner import SavePlan

    store = MemoryStore()
    writer = ZarrStorageWriter(store)
    writer.set_up_storage_writer(True)
    plans = [
        SavePlan([_shard_item("x", (0, 0), (4, 4))]),
        SavePlan([_shard_item("x", (2, 0), (4, 4))]),
    ]
    version = writer.prepare_global_plan(plans)[0].storage_data["version"]
    root = tz.open_group(store, mode="r", path=version, use_consolidated=False)
    assert "every_chunk" not in root["x"].attrs["torchzarr_dcp_key"]


def test_boxes_tile_only_shapes_covered_exactly_once() -> None:
    from torchzarr.checkpoint.dcp_metadata import boxes_tile

    mesh = [((r, c), (2, 3)) for r in (0, 2, 4) for c in (0, 3)]  # a 3 x 2 mesh of (6, 6)
    assert boxes_tile((6, 6), mesh)
    assert not boxes_tile((6, 6), mesh[:-1])  # a gap
    assert not boxes_tile((6, 6), [*mesh[:-1], ((3, 3), (2, 3))])  # a gap and an overlap
    assert not boxes_tile((6, 6), [((0, 0), (6, 6)), ((0, 0), (0, 6)), ((0, 0), (1, 1))])
    assert not boxes_tile((4,), [((0,), (2,)), ((3,), (2,))])  # past the end
    assert boxes_tile((), [((), ())]) and not boxes_tile((), [((), ()), ((), ())])
    assert boxes_tile((0, 3), [])  # nothing to cover
    # an L of two boxes beside a third: the grid of their boundaries is finer than the boxes
    assert boxes_tile((4, 4), [((0, 0), (4, 1)), ((0, 1), (1, 3)), ((1, 1), (3, 3))])
