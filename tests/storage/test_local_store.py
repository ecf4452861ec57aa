"""LocalStore against the store contract."""

from __future__ import annotations

from pathlib import Path

from torchzarr.storage.base import Store
from torchzarr.storage.local import LocalStore
from torchzarr.testing.store_contract import StoreContract


class TestLocalStore(StoreContract):
    def make_store(self, tmp_path: Path) -> Store:
        return LocalStore(tmp_path / "data.zarr")


class TestLocalStoreDirectIO(StoreContract):
    """The same contract with writes past the page cache (fsync on: the batched path too)."""

    def make_store(self, tmp_path: Path) -> Store:
        return LocalStore(tmp_path / "data.zarr", fsync=True, direct_io=True)


def _partials(root: Path) -> list[str]:
    return [p.name for p in root.rglob("*") if p.name.endswith(".partial")]


def test_staged_files_are_invisible_until_published(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s", fsync=True)
    store.set("a/0", b"old")
    staged = store.stage_many({"a/0": b"new", "a/1": b"one"})
    assert store.get("a/0") == b"old" and store.get("a/1") is None
    assert sorted(store.list_prefix("")) == ["a/0"]
    store.publish(staged)
    assert store.get("a/0") == b"new" and store.get("a/1") == b"one"
    dropped = store.stage_many({"a/0": b"never"})
    store.discard(dropped)
    assert store.get("a/0") == b"new" and _partials(tmp_path) == []


def test_a_failed_flush_publishes_nothing(tmp_path: Path, monkeypatch) -> None:
    import pytest

    from torchzarr.errors import StoreError
    from torchzarr.storage import local as local_module

    store = LocalStore(tmp_path / "s", fsync=True)
    store.set_many({"k/0": b"a", "k/1": b"b"})
    real = local_module._flush

    def failing(path: str) -> None:
        if ".1." in path:
            raise OSError(5, "Input/output error")
        real(path)

    monkeypatch.setattr(local_module, "_flush", failing)
    with pytest.raises(StoreError, match="Input/output error"):
        store.set_many({"k/0": b"A", "k/1": b"B", "k/2": b"C"})
    assert [store.get(f"k/{i}") for i in range(3)] == [b"a", b"b", None]
    assert _partials(tmp_path) == []


def test_durable_batches_start_writeback_early(tmp_path: Path, monkeypatch) -> None:
    from torchzarr.storage import direct_io

    started: list[int] = []
    monkeypatch.setattr(direct_io, "start_writeback", started.append)
    LocalStore(tmp_path / "a", fsync=True).set_many({"x": b"1", "y": b"2", "z": b"3"})
    assert len(started) == 3
    LocalStore(tmp_path / "b").set_many({"x": b"1", "y": b"2"})  # not durable: no flush
    assert len(started) == 3


def test_a_read_only_store_refuses_batched_durable_writes_by_name(tmp_path: Path) -> None:
    import pytest

    from torchzarr.errors import ReadOnlyError

    store = LocalStore(tmp_path / "s", read_only=True, fsync=True)
    with pytest.raises(ReadOnlyError, match="k/1"):
        store.stage_many({"k/1": b"b"})
    with pytest.raises(ReadOnlyError):
        store.set_many({"k/0": b"a", "k/1": b"b"})
