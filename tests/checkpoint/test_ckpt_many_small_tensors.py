"""Checkpoints of many small tensors (biases, norms, optimizer steps): what each costs.

Array metadata is validated once per shape and dtype, small raw tensors are read from
their chunk files directly, and the flushes before a commit run a share per thread; what
is written stays the same plain Zarr (zarr-python and tensorstore read every array).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from torchzarr.checkpoint import load_checkpoint, rawio, save_checkpoint
from torchzarr.core.array import Array
from torchzarr.core.create import array_metadata_from_args
from torchzarr.errors import ChunkDecodeError
from torchzarr.metadata.jsonutil import node_json_dumps
from torchzarr.metadata.v3 import ArrayMetadataV3
from torchzarr.storage import LocalStore, MemoryStore

#: 64 bytes per chunk: the float32 (10, 3) tensor has chunks of 5 rows, the (11, 3) one a
#: padded edge chunk
CHUNK_BYTES = 64


def _state() -> dict[str, Any]:
    torch.manual_seed(0)
    weight = torch.nn.Parameter(torch.randn(10, 3))
    return {
        "layers": [{"w": torch.randn(4, 2), "b": torch.randn(2)} for _ in range(5)],
        "multi": torch.randn(10, 3),
        "edge": torch.randn(11, 3),
        "scalar": torch.tensor(2.5),
        "steps": torch.arange(6, dtype=torch.int64),
        "mask": torch.tensor([True, False, True]),
        "half": torch.randn(5).to(torch.bfloat16),
        "f8": torch.randn(4).to(torch.float8_e4m3fn),
        "z": torch.randn(3, dtype=torch.complex64),
        "np": np.arange(6, dtype=np.int16).reshape(2, 3),
        "param": weight,
        "step": 7,
    }


def _same(a: Any, b: Any) -> None:
    assert type(a) is type(b), (type(a), type(b))
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8))
        assert a.requires_grad == b.requires_grad
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for key in a:
            _same(a[key], b[key])
    elif isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _same(x, y)
    else:
        assert a == b


def _refuse_engine_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"engine read of {self.path}")

    monkeypatch.setattr(Array, "__getitem__", refuse)
    monkeypatch.setattr(Array, "read", refuse)


def test_small_raw_tensors_load_from_their_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = _state()
    save_checkpoint(state, tmp_path, chunk_bytes=CHUNK_BYTES)
    _refuse_engine_reads(monkeypatch)  # every tensor here is small, raw and local
    _same(load_checkpoint(tmp_path), state)
    _same(load_checkpoint(tmp_path, huge_pages=True), state)


def test_read_array_of_small_arrays_elsewhere_goes_through_the_engine(tmp_path: Path) -> None:
    class Counting(LocalStore):  # a subclass sees every read, as in the engine's fast path
        reads = 0

        def get(self, key: str) -> bytes | None:
            if key.rsplit("/", 1)[-1].startswith("c."):
                Counting.reads += 1
            return super().get(key)

    save_checkpoint({"w": torch.randn(10, 3)}, tmp_path, chunk_bytes=CHUNK_BYTES)
    out = load_checkpoint(Counting(tmp_path, read_only=True))
    assert Counting.reads == 2 and out["w"].shape == (10, 3)
    memory = MemoryStore()
    save_checkpoint({"w": torch.ones(3)}, memory)
    assert torch.equal(load_checkpoint(memory)["w"], torch.ones(3))


@pytest.mark.parametrize("change", ["longer", "shorter", "gone"])
def test_a_damaged_small_chunk_is_reported_as_before(tmp_path: Path, change: str) -> None:
    save_checkpoint({"w": torch.randn(10, 3)}, tmp_path, chunk_bytes=CHUNK_BYTES)
    chunk = tmp_path / "v000001" / "w" / "c.1.0"
    data = chunk.read_bytes()
    if change == "gone":
        chunk.unlink()
    else:
        chunk.write_bytes(data + b"x" if change == "longer" else data[:-1])
    with pytest.raises(ChunkDecodeError, match=r"c\.1"):  # the engine's error, naming the chunk
        load_checkpoint(tmp_path)


def test_array_metadata_is_validated_once_per_shape_and_dtype(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[tuple[int, ...]] = []
    original = ArrayMetadataV3.__post_init__

    def counting(self: ArrayMetadataV3) -> None:
        built.append(tuple(self.shape))
        original(self)

    monkeypatch.setattr(ArrayMetadataV3, "__post_init__", counting)
    state = {f"b{i}": torch.zeros(16) for i in range(50)}
    state.update({f"w{i}": torch.zeros(4, 16) for i in range(50)})
    save_checkpoint(state, tmp_path)
    assert sorted(built) == [(4, 16), (16,)]


def test_each_array_document_is_what_create_array_writes(tmp_path: Path) -> None:
    state = _state()
    save_checkpoint(state, tmp_path, chunk_bytes=CHUNK_BYTES)
    documents = sorted((tmp_path / "v000001").rglob("zarr.json"))
    arrays = [path for path in documents if json.loads(path.read_bytes())["node_type"] == "array"]
    assert len(arrays) == 20
    for path in arrays:
        written = json.loads(path.read_bytes())
        attributes = {"torchzarr_tensor": written["attributes"]["torchzarr_tensor"]}
        t = _stored_tensor(state, written["attributes"]["torchzarr_tensor"]["key_path"])
        expected = array_metadata_from_args(
            shape=tuple(t.shape),
            dtype=t.dtype,
            chunks=tuple(written["chunk_grid"]["configuration"]["chunk_shape"]),
            compressors=None,
            fill_value=None,
            chunk_key_encoding={"name": "default", "configuration": {"separator": "."}},
            attributes=attributes,
        )
        assert path.read_bytes() == node_json_dumps(expected.to_json()), path
    raw = json.loads((tmp_path / "v000001" / "f8" / "zarr.json").read_bytes())
    assert raw["attributes"]["_torchzarr_dtype"] == "float8_e4m3fn"  # kept per array


def _stored_tensor(state: dict[str, Any], key_path: dict[str, Any]) -> torch.Tensor:
    value: Any = state
    for key in key_path["tuple"]:
        value = value[key if isinstance(key, str) else key["int"] if isinstance(key, dict) else key]
    return torch.from_numpy(value) if isinstance(value, np.ndarray) else value


@pytest.mark.interop
def test_zarr_python_and_tensorstore_read_every_array(tmp_path: Path) -> None:
    zarr = pytest.importorskip("zarr")
    ts = pytest.importorskip("tensorstore")
    state = {
        "w": torch.randn(11, 3),
        "b": torch.randn(3, dtype=torch.float64),
        "mask": torch.tensor([True, False]),
        "z": torch.randn(2, dtype=torch.complex64),
        "steps": torch.arange(5, dtype=torch.int16),
        "scalar": torch.tensor(4, dtype=torch.uint8),
    }
    save_checkpoint(state, tmp_path, chunk_bytes=CHUNK_BYTES)
    for name, t in state.items():
        path = tmp_path / "v000001" / name
        spec = {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(path)}}
        assert np.array_equal(ts.open(spec).result().read().result(), t.numpy()), name
        assert np.array_equal(zarr.open_array(str(path), mode="r")[...], t.numpy()), name


def test_sync_local_flushes_every_file_and_directory_a_share_per_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs /proc to name a flushed descriptor")
    save_checkpoint({f"t{i}": torch.ones(2) for i in range(40)}, tmp_path, fsync=False)
    flushed: list[str] = []
    tasks: list[int] = []
    real_fsync, real_run_all = os.fsync, rawio.run_all

    def fsync(fd: int) -> None:
        flushed.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    def run_all(work: Any, items: Any, threads: int, name: str = "") -> Any:
        tasks.append(len(items))
        return real_run_all(work, items, threads, name)

    monkeypatch.setattr(rawio.os, "fsync", fsync)
    monkeypatch.setattr(rawio, "run_all", run_all)
    rawio.sync_local(LocalStore(tmp_path), "v000001", threads=8)
    top = os.path.realpath(tmp_path / "v000001")
    expected = [top]
    for directory, _, files in os.walk(top):
        expected += [directory] if directory != top else []
        expected += [os.path.join(directory, name) for name in files]
    assert sorted(flushed) == sorted(expected)  # each once: 40 arrays, 2 files + a directory
    assert len(flushed) == 1 + 1 + 40 * 3 and tasks == [8]


def test_make_dirs_makes_parents_first_and_skips_other_stores(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    (tmp_path / "v").mkdir()
    rawio.make_dirs(store, "v", ["a/b/c", "a", "a/b", "d", "d"])  # any order, repeats
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == [
        "v",
        "v/a",
        "v/a/b",
        "v/a/b/c",
        "v/d",
    ]
    memory = MemoryStore()
    rawio.make_dirs(memory, "v", ["a"])
    assert list(memory.list_prefix("")) == []
