"""On a local disk the every-chunk check lists each array's directory, not the version:
a chunk in a folder below (``c/1``) or a lost directory is still found missing."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

import torchzarr as tz
from torchzarr.checkpoint.chunk_check import check_chunks_stored
from torchzarr.errors import ChunkDecodeError

MARK = {"torchzarr_tensor": {"every_chunk": [2]}}


def _group(tmp_path: Path) -> tz.Group:
    root = tz.open_group(str(tmp_path), mode="w")
    for name in ("a", "b"):  # default chunk keys: c/0, c/1 (a folder below the array's)
        arr = root.create_array(name, shape=(4,), chunks=(2,), dtype="float32", attributes=MARK)
        arr[...] = torch.arange(1, 5, dtype=torch.float32)
    return tz.open_group(str(tmp_path), mode="r")


def _check(group: tz.Group, arrays: dict[str, tz.Array] | None = None) -> None:
    arrays = arrays or {n: group[n] for n in ("a", "b")}
    check_chunks_stored(group, arrays, {"a": ("a",), "b": ("b",)})


def test_chunks_in_a_folder_below_are_looked_up(tmp_path: Path) -> None:
    group = _group(tmp_path)
    _check(group)  # intact: nothing raised
    (tmp_path / "b" / "c" / "1").unlink()
    with pytest.raises(ChunkDecodeError, match=r"\['b'\].*lacks its chunk 'b/c/1'"):
        _check(group)


def test_a_lost_array_directory_is_reported(tmp_path: Path) -> None:
    group = _group(tmp_path)
    arrays = {n: group[n] for n in ("a", "b")}  # as a version's consolidated metadata has them
    shutil.rmtree(tmp_path / "a")
    with pytest.raises(ChunkDecodeError, match=r"'a/zarr\.json', its whole directory gone"):
        _check(group, arrays)


def test_no_walk_of_the_version_on_a_local_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = {f"t{i}": torch.full((3,), float(i)) for i in range(20)}
    tz.checkpoint.save_checkpoint(state, tmp_path)

    def no_listing(self: object, prefix: str) -> object:
        raise AssertionError(f"listed {prefix!r}")

    monkeypatch.setattr(tz.storage.LocalStore, "list_prefix", no_listing)
    loaded = tz.checkpoint.load_checkpoint(tmp_path)
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    (tmp_path / "v000001" / "t7" / "c.0").unlink()
    with pytest.raises(ChunkDecodeError, match=r"\['t7'\]"):
        tz.checkpoint.load_checkpoint(tmp_path)
