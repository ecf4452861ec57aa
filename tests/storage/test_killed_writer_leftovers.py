"""Temporary files a killed writer leaves: listings skip them, deletes remove them."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest
import torch

import torchzarr as tz
from torchzarr.errors import StoreError
from torchzarr.storage.local import LocalStore
from torchzarr.storage.local_names import is_temporary, temporary_name, temporary_of
from torchzarr.storage.zip_rewrite import rewrite_live


def _leave(directory: Path, name: str, data: bytes = b"half") -> Path:
    """What a writer killed while writing ``name`` in ``directory`` leaves."""
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / temporary_name(name)
    tmp.write_bytes(data)
    return tmp


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def _dirs(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_dir())


def _group_with_leftovers(root: Path) -> None:
    g = tz.open_group(root, mode="w")
    a = g.create_array("x", shape=(16, 4), dtype=torch.int32, chunks=(8, 4))
    a[:] = torch.ones(16, 4, dtype=torch.int32)
    _leave(root / "x" / "c" / "0", "0")
    _leave(root / "x", "zarr.json")
    _leave(root / "x" / "c" / "7", "0")  # a killed first write: only the temporary there
    _leave(root / "y", "zarr.json")  # a killed create


def test_temporary_of_gives_the_name_written() -> None:
    assert temporary_of(temporary_name("zarr.json")) == "zarr.json"
    assert temporary_of(temporary_name("n" * 300)) == "n" * 100


def test_listings_skip_leftovers(tmp_path: Path) -> None:
    root = tmp_path / "g.zarr"
    _group_with_leftovers(root)
    store = LocalStore(root)
    assert sorted(store.list_prefix("")) == ["x/c/0/0", "x/c/1/0", "x/zarr.json", "zarr.json"]
    assert store.list_dir("x/c/7/") == ([], [])
    assert list(tz.open_group(root, mode="r").keys()) == ["x"]


def test_deleting_a_member_removes_its_leftovers(tmp_path: Path) -> None:
    root = tmp_path / "g.zarr"
    _group_with_leftovers(root)
    g = tz.open_group(root, mode="a")
    del g["x"]
    assert not (root / "x").exists()  # the directories left empty are pruned
    assert [f for f in _files(root) if not f.startswith("y/")] == ["zarr.json"]
    assert len(_files(root / "y")) == 1  # not under the member deleted: left alone


def test_overwrite_and_mode_w_remove_leftovers(tmp_path: Path) -> None:
    root = tmp_path / "g.zarr"
    _group_with_leftovers(root)
    b = tz.create_array(root, path="x", shape=(4,), dtype=torch.int8, overwrite=True)
    assert torch.equal(b[:], torch.zeros(4, dtype=torch.int8))
    assert not any(is_temporary(Path(f).name) for f in _files(root / "x"))
    tz.open_group(root, mode="w")
    assert _files(root) == ["zarr.json"]
    assert _dirs(root) == []


@pytest.mark.parametrize("fsync", [False, True])
def test_delete_prefix_removes_only_leftovers_under_it(tmp_path: Path, fsync: bool) -> None:
    store = LocalStore(tmp_path / "s", fsync=fsync)
    store.set("a/0", b"1")
    store.set("ab/0", b"2")
    keep = [
        _leave(tmp_path / "s" / "ab", "0"),  # "ab/0" is not under "a/"
        _leave(tmp_path / "s", "a"),  # the key "a" is not under "a/"
        _leave(tmp_path / "s", "b"),
    ]
    _leave(tmp_path / "s" / "a", "1")
    _leave(tmp_path / "s" / "a" / "deep" / "er", "0")
    store.delete_prefix("a/")
    assert not (tmp_path / "s" / "a").exists()
    assert all(p.exists() for p in keep)
    assert sorted(store.list_prefix("")) == ["ab/0"]
    store.delete_prefix("a")  # not a directory: the keys (and leftovers) starting with "a"
    assert [p.exists() for p in keep] == [False, False, True]
    assert _dirs(tmp_path / "s") == []


def test_delete_prefix_with_an_overridden_delete_removes_leftovers(tmp_path: Path) -> None:
    seen: list[str] = []

    class Logged(LocalStore):
        def delete(self, key: str) -> None:
            seen.append(key)
            super().delete(key)

    store = Logged(tmp_path / "s")
    store.set("a/0", b"1")
    _leave(tmp_path / "s" / "a", "0")
    store.delete_prefix("a/")
    assert seen == ["a/0"]  # the leftover is no key: the override does not see it
    assert not (tmp_path / "s" / "a").exists()


@pytest.mark.parametrize("fsync", [False, True])
def test_a_write_in_flight_into_a_deleted_node_fails_clearly(tmp_path: Path, fsync: bool) -> None:
    store = LocalStore(tmp_path / "s", fsync=fsync)
    store.set("a/zarr.json", b"{}")
    staged = store.stage_many({"a/c/0": b"chunk"})  # written, not yet renamed
    store.delete_prefix("a/")
    with pytest.raises(StoreError, match=r"'a/c/0'" + ("" if fsync else ".*temporary file")):
        store.publish(staged)
    assert list(store.list_prefix("")) == []  # the node's key never comes back
    assert not (tmp_path / "s" / "a").exists()


def test_zip_rewrite_temporary_is_a_hidden_local_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "r.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("old", b"1")
        zf.writestr("new", b"2")
    renamed: list[tuple[str, str]] = []
    replace = os.replace

    def spy(src: str, dst: str) -> None:
        renamed.append((src, dst))
        replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    rewrite_live(str(path), [zipfile.ZipFile(path).getinfo("new")])
    ((tmp, dst),) = renamed
    assert dst == str(path)
    assert os.path.dirname(tmp) == str(tmp_path)
    assert is_temporary(os.path.basename(tmp))  # hidden, skipped by listings
    assert temporary_of(os.path.basename(tmp)) == "r.zip"
    assert os.listdir(tmp_path) == ["r.zip"]


def test_a_leftover_that_cannot_be_removed_does_not_fail_the_delete(tmp_path, monkeypatch):
    """Another user's leftover in a sticky folder: the keys go, the delete succeeds."""
    import errno

    store = LocalStore(tmp_path / "s")
    store.set("a/0", b"x")
    leftover = tmp_path / "s" / "a" / (".1." + "ab" * 16 + ".partial")
    leftover.write_bytes(b"partial")
    unlink = os.unlink

    def refusing(path, *args, **kwargs):
        if str(path).endswith(".partial"):
            raise PermissionError(errno.EACCES, "denied", str(path))
        return unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", refusing)
    store.delete_prefix("a/")
    assert list(store.list_prefix("")) == [] and leftover.exists()
