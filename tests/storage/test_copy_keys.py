"""copy_keys: metadata documents last, so a copy that fails midway leaves no node."""

from __future__ import annotations

import pytest
import torch

import torchzarr as tz
from torchzarr.errors import StoreError
from torchzarr.storage.copy import copy_keys
from torchzarr.storage.memory import MemoryStore


class _FailsAt(MemoryStore):
    """A source whose reads of one key fail (a damaged entry, a lost connection)."""

    def __init__(self, data, bad: str) -> None:
        super().__init__(data)
        self.bad = bad

    def get_many(self, keys):
        if self.bad in keys:
            raise StoreError(f"cannot read {self.bad!r}")
        return super().get_many(keys)


def _array(zarr_format: int) -> MemoryStore:
    store = MemoryStore()
    arr = tz.create_array(
        store, path="a", shape=(256,), dtype=torch.int32, chunks=(4,), zarr_format=zarr_format
    )
    arr[:] = torch.arange(1, 257, dtype=torch.int32)
    arr.attrs["units"] = "m"
    return store


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_a_copy_failing_midway_leaves_no_node_that_opens(zarr_format):
    source = _array(zarr_format)
    chunk = "a/63" if zarr_format == 2 else "a/c/63"
    failing = _FailsAt(dict(source._data), chunk)
    dest = MemoryStore()
    with pytest.raises(StoreError, match="cannot read"):
        copy_keys(failing, dest, "a", jobs=4)
    assert not [
        key
        for key in dest.list_prefix("")
        if key.rpartition("/")[2].startswith((".z", "zarr.json"))
    ]
    with pytest.raises(tz.errors.NodeNotFoundError):
        tz.open_array(dest, path="a", mode="r")
    assert copy_keys(source, dest, "a", overwrite=True).keys == len(list(source.list_prefix("a/")))
    assert tz.open_array(dest, path="a", mode="r")[:].tolist() == list(range(1, 257))


def test_an_overwrite_failing_midway_leaves_no_node_over_old_and_new_chunks():
    dest = _array(3)  # 1..256
    source = _array(3)
    tz.open_array(source, path="a")[:] = -torch.arange(1, 257, dtype=torch.int32)
    with pytest.raises(StoreError, match="cannot read"):
        copy_keys(_FailsAt(dict(source._data), "a/c/63"), dest, "a", overwrite=True, jobs=1)
    assert dest.get("a/c/0") == source.get("a/c/0")  # some chunks were replaced ...
    with pytest.raises(tz.errors.NodeNotFoundError):  # ... so no node reads old and new
        tz.open_array(dest, path="a", mode="r")


def test_documents_are_written_deepest_first_after_every_chunk():
    source = MemoryStore()
    root = tz.open_group(source, mode="w")
    root.create_array("g/x", data=torch.arange(8), chunks=(2,))
    tz.consolidate_metadata(source)
    order: list[str] = []

    class Recording(MemoryStore):
        def set_many(self, items):
            order.extend(items)
            super().set_many(items)

    copy_keys(source, Recording(), jobs=1)
    documents = [key for key in order if key.endswith("zarr.json")]
    assert order[-len(documents) :] == documents  # after every chunk
    assert documents == ["g/x/zarr.json", "g/zarr.json", "zarr.json"]  # the root's last


@pytest.mark.parametrize("dest_path", ["", "m"])
@pytest.mark.parametrize("old_chunks", [(3,), (2, 2, 2)])  # c/0 under c/0/0, or c/0/0/0
def test_an_overwrite_replaces_chunk_keys_nested_otherwise_in_a_directory(
    tmp_path, dest_path, old_chunks
):
    source = tz.LocalStore(tmp_path / "src")
    tz.create_array(source, data=torch.arange(16.0).reshape(4, 4), chunks=(2, 2))  # c/0/0
    shape = (10,) if len(old_chunks) == 1 else (4, 4, 4)
    dest = tz.LocalStore(tmp_path / "dst")
    tz.create_array(dest, path=dest_path, data=torch.ones(shape), chunks=old_chunks)
    for _ in range(2):  # and again over the copy
        copy_keys(source, dest, "", dest_path=dest_path, overwrite=True)
        copied = tz.open_array(dest, path=dest_path, mode="r")
        assert copied[:].tolist() == torch.arange(16.0).reshape(4, 4).tolist()
    assert sorted(dest.list_prefix(_prefix(dest_path) + "c/")) == [
        f"{_prefix(dest_path)}c/{i}/{j}" for i in range(2) for j in range(2)
    ]


def test_an_overwrite_replaces_chunk_files_with_a_directory_of_chunks(tmp_path):
    source = tz.LocalStore(tmp_path / "src")
    tz.create_array(source, data=torch.arange(10), chunks=(3,))  # c/0 ... c/3: files
    dest = tz.LocalStore(tmp_path / "dst")
    tz.create_array(dest, data=torch.ones(4, 4), chunks=(2, 2))  # c/0/0: c/0 a directory
    copy_keys(source, dest, overwrite=True)
    assert tz.open_array(dest, mode="r")[:].tolist() == list(range(10))


@pytest.mark.parametrize("dest_path", ["", "g/a"])
def test_replacing_only_the_chunk_keys_of_an_array_drops_its_cached_chunks(tmp_path, dest_path):
    source, dest = tz.LocalStore(tmp_path / "src"), tz.LocalStore(tmp_path / "dst")
    for store, value in [(source, 2.0), (dest, 1.0)]:
        arr = tz.create_array(store, path=dest_path, shape=(20,), dtype=torch.float32, chunks=(5,))
        arr[:] = value
    hot = tz.open_array(dest, path=dest_path).with_cache()
    assert hot[:4].tolist() == [1.0] * 4  # the shared cache holds the array's chunks
    chunks = _prefix(dest_path) + "c"  # the keys below the array, not the array's own
    copy_keys(source, dest, chunks, overwrite=True)
    assert hot[:4].tolist() == [2.0] * 4
    assert tz.open_array(dest, path=dest_path).with_cache()[:4].tolist() == [2.0] * 4


def _prefix(path: str) -> str:
    return f"{path}/" if path else ""


def _files(root) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("dest", ["{src}/backup.zip", "sqlite://{src}/a/b.db", "lmdb://{src}/b"])
def test_a_file_store_inside_the_source_directory_is_refused_before_anything_is_written(
    tmp_path, dest
):
    # was: copied into the source, and a re-run with overwrite copied the old zip into the new
    src = tmp_path / "src.zarr"
    tz.create_array(str(src), data=torch.arange(4), chunks=(2,))
    before, dest = _files(src), dest.format(src=src)
    for overwrite in (False, True):
        with pytest.raises(tz.errors.InvalidArgumentError, match="the two overlap"):
            copy_keys(str(src), dest, overwrite=overwrite)
        with pytest.raises(tz.errors.InvalidArgumentError, match="the two overlap"):
            copy_keys(tz.LocalStore(src), tz.storage.resolve_store(dest, mode="a"))
        assert _files(src) == before and sorted(p.name for p in src.iterdir()) == sorted(
            {name.split("/")[0] for name in before}
        )


def test_a_source_file_inside_the_destination_directory_is_refused(tmp_path):
    tz.create_array(str(tmp_path / "a.zip"), data=torch.arange(4), chunks=(2,)).store.close()
    before = (tmp_path / "a.zip").read_bytes()
    with pytest.raises(tz.errors.InvalidArgumentError, match="the two overlap"):
        copy_keys(str(tmp_path / "a.zip"), str(tmp_path), overwrite=True)  # would delete it
    assert (tmp_path / "a.zip").read_bytes() == before
    assert copy_keys(str(tmp_path / "a.zip"), str(tmp_path), dest_path="x").keys == 3  # beside
    assert tz.open_array(str(tmp_path), path="x", mode="r")[:].tolist() == [0, 1, 2, 3]
