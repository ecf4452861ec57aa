"""Objects no key can name, in an fsspec filesystem: written by other tools, or a URL with '//'."""

from __future__ import annotations

import uuid
import warnings

import pytest
import torch
from fsspec.implementations.memory import MemoryFile

import torchzarr as tz
from torchzarr.errors import InvalidKeyError
from torchzarr.storage import copy_keys
from torchzarr.storage.fsspec_store import FsspecStore
from torchzarr.storage.memory import MemoryStore

#: names other tools write, which no key can spell
FOREIGN = ("//x", "/b/../c", "/d/./e")


def _fresh() -> FsspecStore:
    return FsspecStore(f"memory://foreign-{uuid.uuid4().hex[:10]}")


def _hierarchy_with_foreign_objects() -> FsspecStore:
    """A group with an array, plus objects named as other tools may name them."""
    store = _fresh()
    group = tz.open_group(store, mode="w")
    group.create_array("a", data=torch.arange(4))
    for name in FOREIGN:
        store.fs.pipe_file(_root(store) + name, b"written by another tool")
    return store


def _root(store: FsspecStore) -> str:
    """The store's root as its filesystem names it."""
    return str(store.fs._strip_protocol(store.url))


def _stored(store: FsspecStore) -> list[str]:
    """Every object below the store's root, as the filesystem names it."""
    return sorted(store.fs.find(_root(store)))


def test_listings_skip_names_no_key_can_spell_warning_once_per_path() -> None:
    store = _hierarchy_with_foreign_objects()
    with pytest.warns(UserWarning) as caught:
        listed = sorted(store.list_prefix(""))
    assert listed == ["a/c/0", "a/zarr.json", "zarr.json"]
    root = _root(store)
    assert sorted(str(w.message).split("'")[1] for w in caught) == [
        f"{root}//",
        f"{root}/b/..",
        f"{root}/d/.",
    ]
    assert all("empty, '.' or '..' path component" in str(w.message) for w in caught)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # listed again: no second warning
        assert sorted(store.list_prefix("")) == listed
        for key in store.list_prefix(""):  # every key listed is one the store takes back
            assert store.get(key) is not None
        assert sorted(tz.open_group(store, mode="r").keys()) == ["a"]


def test_folder_markers_are_not_keys() -> None:
    store = _fresh()
    store.set_many({"zarr.json": b"{}", "data/arr/zarr.json": b"{}"})
    marker = _root(store) + "/data/"  # what "Create folder" of the S3 console makes
    store.fs.store[marker] = MemoryFile(store.fs, marker, b"")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # skipped silently
        assert sorted(store.list_prefix("")) == ["data/arr/zarr.json", "zarr.json"]
    assert store.get("data") is None


def test_mode_w_removes_objects_no_key_can_name() -> None:
    store = _hierarchy_with_foreign_objects()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tz.open_group(store, mode="w")
    assert _stored(store) == [_root(store) + "/zarr.json"]


def test_delete_prefix_removes_the_foreign_objects_below_the_prefix_only() -> None:
    store = _hierarchy_with_foreign_objects()
    store.delete_prefix("b/")
    root = _root(store)
    assert f"{root}/b/../c" not in _stored(store)
    assert {f"{root}//x", f"{root}/d/./e", f"{root}/a/zarr.json"} <= set(_stored(store))
    store.delete_prefix("")
    assert _stored(store) == []


def test_copy_keys_copies_the_keys_and_skips_the_rest() -> None:
    store = _hierarchy_with_foreign_objects()
    dest = MemoryStore()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        copy_keys(store, dest)
    assert sorted(dest.list_prefix("")) == ["a/c/0", "a/zarr.json", "zarr.json"]


def test_a_url_with_a_doubled_slash_takes_no_writes() -> None:
    parent = _fresh()
    tz.open_group(parent, mode="w")
    doubled = FsspecStore(parent.url + "//arr")  # a root ending in "/" joined to "/arr"
    with pytest.raises(InvalidKeyError, match=r"cannot write 'zarr.json' at 'memory://.*//arr'"):
        tz.create_array(doubled, data=torch.arange(4))
    for write in (lambda: doubled.set("k", b"v"), lambda: doubled.delete_prefix("")):
        with pytest.raises(InvalidKeyError, match=r"empty, '.' or '..' component"):
            write()
    assert _stored(parent) == [_root(parent) + "/zarr.json"]  # nothing was written
    assert doubled.get("zarr.json") is None  # reading is no error
    for odd in ("/./arr", "/x/../arr"):
        with pytest.raises(InvalidKeyError):
            FsspecStore(parent.url + odd).set("k", b"v")
    FsspecStore(parent.url + "/").set("k", b"v")  # a trailing "/" is no component
    assert parent.get("k") == b"v"
