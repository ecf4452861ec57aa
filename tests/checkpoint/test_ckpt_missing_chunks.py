"""A checkpoint stores every chunk of its tensors, all-zero ones too, so a chunk lost later
(a partial copy, a bad disk) makes a load raise instead of returning zeros in its place."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

import torchzarr as tz
import torchzarr.checkpoint.decode as decode_module
from torchzarr.checkpoint import load_checkpoint, save_checkpoint
from torchzarr.checkpoint.prune import wait_pruned
from torchzarr.errors import ChunkDecodeError
from torchzarr.storage import MemoryStore

KINDS = ["local-raw", "local-zstd", "memory", "zip"]
# 8 rows of 8 float32 per chunk: "w" and "z" have 8 chunks each
CHUNK_BYTES = 256


def _state() -> dict[str, Any]:
    torch.manual_seed(0)
    return {
        "model": {"w": torch.randn(64, 8), "z": torch.zeros(64, 8)},
        "scale": torch.tensor(0.0),  # 0-d and zero
        "step": 3,
    }


def _store(kind: str, tmp_path: Path) -> Any:
    if kind == "memory":
        return MemoryStore()
    if kind == "zip":
        return tz.ZipStore(tmp_path / "ckpt.zip", mode="a")
    return tz.storage.LocalStore(tmp_path / "ckpt")


def _save(kind: str, tmp_path: Path, state: dict[str, Any] | None = None) -> tuple[Any, str]:
    store = _store(kind, tmp_path)
    compressors = "balanced" if kind == "local-zstd" else None
    version = save_checkpoint(
        _state() if state is None else state,
        store,
        compressors=compressors,
        chunk_bytes=CHUNK_BYTES,
    )
    return store, version


def _lose(store: Any, key: str) -> None:
    """Delete one stored object, as a partial copy or a bad disk would lose it."""
    assert store.exists(key)
    store.delete(key)
    if isinstance(store, tz.ZipStore):
        store.close()


@pytest.mark.parametrize("lazy", [False, True])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("lost", "key_path"),
    [
        ("model/w/c.2.0", "['model']['w']"),
        ("model/z/c.5.0", "['model']['z']"),
        ("scale/c", "['scale']"),
    ],
)
def test_load_of_a_checkpoint_that_lost_a_chunk_raises_naming_tensor_and_chunk(
    tmp_path: Path, kind: str, lazy: bool, lost: str, key_path: str
) -> None:
    store, version = _save(kind, tmp_path)
    _lose(store, f"{version}/{lost}")
    with pytest.raises(ChunkDecodeError, match="damaged") as raised:
        load_checkpoint(store, lazy=lazy)
    assert key_path in str(raised.value)
    assert f"{version}/{lost}" in str(raised.value)


@pytest.mark.parametrize("lazy", [False, True])
@pytest.mark.parametrize("kind", ["local-raw", "memory"])
def test_a_checkpoint_that_lost_a_whole_array_directory_raises_naming_the_tensor(
    tmp_path: Path, kind: str, lazy: bool
) -> None:
    store, version = _save(kind, tmp_path)
    for key in list(store.list_prefix(f"{version}/model/w/")):
        store.delete(key)  # the array is still in the version's consolidated metadata
    for keys in (None, ["model.w"]):
        with pytest.raises(ChunkDecodeError, match="damaged") as raised:
            load_checkpoint(store, keys=keys, lazy=lazy)
        assert "['model']['w']" in str(raised.value)
        assert f"{version}/model/w/zarr.json" in str(raised.value)
    part = load_checkpoint(store, keys=["model.z"], lazy=lazy)
    assert torch.equal(part["model"]["z"], torch.zeros(64, 8))


@pytest.mark.parametrize("kind", KINDS)
def test_all_zero_and_0d_tensors_store_every_chunk(tmp_path: Path, kind: str) -> None:
    store, version = _save(kind, tmp_path)
    keys = set(store.list_prefix(f"{version}/"))
    assert {f"{version}/model/z/c.{i}.0" for i in range(8)} <= keys
    assert f"{version}/scale/c" in keys
    for lazy in (False, True):
        loaded = load_checkpoint(store, lazy=lazy)
        assert torch.equal(loaded["model"]["z"], torch.zeros(64, 8))
        assert torch.equal(loaded["scale"], torch.tensor(0.0))
        assert torch.equal(loaded["model"]["w"], _state()["model"]["w"])


@pytest.mark.parametrize("lazy", [False, True])
@pytest.mark.parametrize("kind", KINDS)
def test_partial_load_of_intact_tensors_works_beside_a_damaged_one(
    tmp_path: Path, kind: str, lazy: bool
) -> None:
    store, version = _save(kind, tmp_path)
    _lose(store, f"{version}/model/w/c.0.0")
    part = load_checkpoint(store, keys=["model.z", "scale", "step"], lazy=lazy)
    assert torch.equal(part["model"]["z"], torch.zeros(64, 8))
    assert part["step"] == 3
    with pytest.raises(ChunkDecodeError, match=r"\['model'\]\['w'\]"):
        load_checkpoint(store, keys=["model.w"], lazy=lazy)


def _drop_marks(document: Any) -> Any:
    if isinstance(document, dict):
        return {k: _drop_marks(v) for k, v in document.items() if k != "every_chunk"}
    if isinstance(document, list):
        return [_drop_marks(v) for v in document]
    return document


def _as_saved_before_marks(store: Any, version: str) -> None:
    """Rewrite the metadata of ``version`` as checkpoints saved without the mark have it."""
    for key in list(store.list_prefix(f"{version}/")):
        if key.endswith("zarr.json"):
            document = json.loads(bytes(store.get(key)))
            store.set(key, json.dumps(_drop_marks(document)).encode())


@pytest.mark.parametrize("lazy", [False, True])
def test_checkpoint_saved_without_the_mark_loads_missing_chunks_as_zeros(
    tmp_path: Path, lazy: bool
) -> None:
    store, version = _save("local-raw", tmp_path)
    _as_saved_before_marks(store, version)
    store.delete(f"{version}/model/w/c.2.0")
    store.delete(f"{version}/scale/c")
    loaded = load_checkpoint(store, lazy=lazy)
    expected = _state()["model"]["w"].clone()
    expected[16:24] = 0
    assert torch.equal(loaded["model"]["w"], expected)
    assert torch.equal(loaded["scale"], torch.tensor(0.0))


class _PartlyListingStore(MemoryStore):
    """A read-only store whose listing holds only keys ending in ``listed`` (nothing when
    it is None), as an HTTP server without a full directory index gives."""

    def __init__(self, data: dict[str, Any], listed: str | None) -> None:
        super().__init__(data, read_only=True)
        self.listed = listed

    def list_prefix(self, prefix: str) -> Iterator[str]:
        if self.listed is None:
            return iter(())
        return (key for key in super().list_prefix(prefix) if key.endswith(self.listed))


@pytest.mark.parametrize("listed", [None, "zarr.json"])
def test_store_that_lists_no_chunks_loads_intact_checkpoints(listed: str | None) -> None:
    saved = MemoryStore()
    version = save_checkpoint(_state(), saved, chunk_bytes=CHUNK_BYTES)
    copy = {key: saved.get(key) for key in saved.list_prefix("")}
    loaded = load_checkpoint(_PartlyListingStore(copy, listed), lazy=True)
    assert torch.equal(loaded["model"]["w"], _state()["model"]["w"])
    assert torch.equal(loaded["model"]["z"], torch.zeros(64, 8))
    del copy[f"{version}/model/z/c.0.0"]
    damaged = _PartlyListingStore(copy, listed)
    if listed is None:  # nothing to compare with: loaded as before the check
        assert torch.equal(load_checkpoint(damaged)["model"]["z"], torch.zeros(64, 8))
    else:  # a chunk the listing lacks is looked up before it is reported
        with pytest.raises(ChunkDecodeError, match=r"\['model'\]\['z'\]"):
            load_checkpoint(damaged)


def test_chunk_missing_because_a_newer_save_pruned_the_version_loads_the_newer_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "ckpt"
    first = _state()
    version = save_checkpoint(first, path, chunk_bytes=CHUNK_BYTES)
    (path / version / "model" / "w" / "c.1.0").unlink()  # gone as a pruning save deletes it
    check = decode_module.check_chunks_stored
    saved_newer: list[str] = []

    def pruned_while_checked(*args: Any) -> None:
        try:
            check(*args)
        except ChunkDecodeError:
            if not saved_newer:  # once: a newer save commits and prunes this version
                saved_newer.append(save_checkpoint({**first, "step": 4}, path))
                wait_pruned()
            raise

    monkeypatch.setattr(decode_module, "check_chunks_stored", pruned_while_checked)
    loaded = load_checkpoint(path)
    assert loaded["step"] == 4
    assert torch.equal(loaded["model"]["w"], first["model"]["w"])


@pytest.mark.parametrize("layout", [{"chunks": (512,)}, {"chunks": (256,), "shards": (1024,)}])
def test_a_tensor_rewritten_on_another_grid_is_not_checked_against_the_saved_one(
    tmp_path: Path, layout: dict[str, Any]
) -> None:
    weights = torch.cat([torch.zeros(4096), torch.arange(4096.0) + 1])
    path = str(tmp_path / "ckpt")
    save_checkpoint({"w": weights}, path, chunk_bytes=4096, compressors="zstd")
    source = tz.open_array(path, path="v000001/w", mode="r")
    assert source.chunks == (1024,)
    # rewritten by another tool (as `torchzarr rechunk` does): its all-zero chunks not stored
    aside = tz.from_array(str(tmp_path / "aside.zarr"), data=source)  # attributes kept
    tz.from_array(path, path="v000001/w", data=aside, **layout, overwrite=True)
    assert "every_chunk" in tz.open_array(path, path="v000001/w").attrs["torchzarr_tensor"]
    rewritten = tz.open_array(path, path="v000001/w", mode="r")
    first = f"v000001/w/{rewritten.metadata.chunk_key((0,))}"
    assert first not in rewritten.store.list_prefix("v000001/w/")  # all zeros: not stored
    assert torch.equal(load_checkpoint(path)["w"], weights)
    assert torch.equal(load_checkpoint(path, lazy=True)["w"], weights)


@pytest.mark.parametrize("kind", ["local", "memory"])
def test_a_load_of_a_few_keys_lists_only_their_arrays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    cls = tz.storage.LocalStore if kind == "local" else tz.storage.MemoryStore
    path: Any = str(tmp_path / "ckpt") if kind == "local" else tz.storage.MemoryStore()
    save_checkpoint({f"t{i}": torch.full((4,), float(i)) for i in range(40)}, path)
    listed: list[str] = []
    list_prefix = cls.list_prefix

    def recording_list_prefix(self: Any, prefix: str) -> Any:
        listed.append(prefix)
        return list_prefix(self, prefix)

    monkeypatch.setattr(cls, "list_prefix", recording_list_prefix)
    assert load_checkpoint(path, keys=["t3"])["t3"].tolist() == [3.0] * 4
    # a local disk lists each array's directory (os.listdir), no walk of the version
    assert listed == ([] if kind == "local" else ["v000001/t3/"])
    listed.clear()
    assert len(load_checkpoint(path)) == 40
    assert listed == ([] if kind == "local" else ["v000001/"])


def test_a_tensor_edited_in_place_that_lost_all_zero_chunks_loads_without_verification(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "ckpt")
    save_checkpoint({"w": torch.ones(64, 16)}, path, chunk_bytes=1024)
    edited = tz.open_array(path, path="v000001/w", mode="r+")
    edited[:32] = 0  # a torchzarr write: the all-zero chunks are deleted
    with pytest.raises(ChunkDecodeError, match="verify_chunks=False"):
        load_checkpoint(path)
    expected = torch.ones(64, 16)
    expected[:32] = 0
    assert torch.equal(load_checkpoint(path, verify_chunks=False)["w"], expected)
    assert torch.equal(load_checkpoint(path, lazy=True, verify_chunks=False)["w"], expected)


@pytest.mark.parametrize("lazy", [False, True])
@pytest.mark.parametrize("keys", [None, ["model.w", "step"]])
@pytest.mark.parametrize("damage", ["shape", "chunk"])
def test_a_damaged_checkpoint_raises_before_any_tensor_is_read(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    lazy: bool,
    keys: list[str] | None,
    damage: str,
) -> None:
    path = tmp_path / "ckpt"
    version = save_checkpoint(_state(), path, chunk_bytes=CHUNK_BYTES)
    if damage == "shape":  # its shape edited upward: 8 chunks stored, 1024 claimed
        meta_path = path / version / "zarr.json"
        meta = json.loads(meta_path.read_text())
        meta["consolidated_metadata"]["metadata"]["model/w"]["shape"] = [8192, 8]
        meta_path.write_text(json.dumps(meta))
    else:
        (path / version / "model" / "w" / "c.5.0").unlink()
    read: list[Any] = []
    read_tensor = decode_module._read_tensor

    def recording_read_tensor(array: Any, *args: Any) -> Any:
        read.append(array.path)
        return read_tensor(array, *args)

    monkeypatch.setattr(decode_module, "_read_tensor", recording_read_tensor)
    with pytest.raises(ChunkDecodeError, match=r"\['model'\]\['w'\]"):
        load_checkpoint(path, keys=keys, lazy=lazy)
    assert read == []  # the listing found the loss: no tensor was read (nor memory filled)
    # what the damage spares loads as saved
    loaded = load_checkpoint(path, keys=["model.z", "scale"], lazy=lazy)
    assert torch.equal(loaded["model"]["z"], torch.zeros(64, 8))
    assert len(read) == 2
