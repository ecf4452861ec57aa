"""A save writes through the store it is given: read-only refused up front, subclasses kept."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import torchzarr as tz
from torchzarr.checkpoint.commit import checkpoint_store, with_flush_settings
from torchzarr.errors import ReadOnlyError
from torchzarr.storage import LocalStore, MemoryStore, ReadOnlyStore


def files_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


@pytest.mark.parametrize("options", [{}, {"fsync": False, "direct_io": False}])
def test_a_save_to_a_read_only_local_store_is_refused_before_writing(
    tmp_path: Path, options: dict[str, bool]
) -> None:
    path = tmp_path / "ckpt"
    tz.save_checkpoint({"w": torch.zeros(3), "step": 1}, str(path))
    before = files_under(path)
    store = LocalStore(path, read_only=True)
    with pytest.raises(ReadOnlyError, match=r"ckpt.*read-only"):
        tz.save_checkpoint({"w": torch.ones(3), "step": 2}, store, **options)
    assert files_under(path) == before  # not even a version directory
    assert tz.load_checkpoint(str(path))["step"] == 1


def test_a_save_to_a_read_only_view_is_refused() -> None:
    inner = MemoryStore()
    with pytest.raises(ReadOnlyError, match="read-only"):
        tz.save_checkpoint({"w": torch.ones(1)}, ReadOnlyStore(inner))
    assert list(inner.list_prefix("")) == []


class RecordingStore(LocalStore):
    """A local store that records the keys written through it."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.written: list[str] = []

    def set(self, key: str, value: bytes | bytearray | memoryview) -> None:
        self.written.append(key)
        super().set(key, value)


def test_a_save_writes_through_a_local_store_subclass(tmp_path: Path) -> None:
    store = RecordingStore(tmp_path / "ckpt")
    tz.save_checkpoint({"w": torch.ones(2)}, store)
    assert "zarr.json" in store.written and "v000001/zarr.json" in store.written
    assert torch.equal(tz.load_checkpoint(str(tmp_path / "ckpt"))["w"], torch.ones(2))


def test_flush_settings_keep_the_class_and_read_only_flag(tmp_path: Path) -> None:
    store = RecordingStore(tmp_path)
    store.read_only = True
    changed = with_flush_settings(store, True, True)
    assert (
        type(changed) is RecordingStore and changed.read_only and changed.written is store.written
    )
    assert (changed.fsync, changed.direct_io) == (True, True) and not store.fsync
    assert type(checkpoint_store(store, fsync=True)) is RecordingStore
