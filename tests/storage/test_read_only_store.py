"""``ReadOnlyStore``: every read forwarded to the inner store, every write refused."""

from __future__ import annotations

import pytest
import torch

import torchzarr as tz
from torchzarr.errors import ReadOnlyError
from torchzarr.storage.base import ByteRange
from torchzarr.storage.memory import MemoryStore
from torchzarr.storage.wrappers import ReadOnlyStore

_READ_ONLY_STORES = {
    "memory": lambda tmp: MemoryStore(read_only=True),
    "memory-view": lambda tmp: MemoryStore().with_read_only(True),
    "read-only-store": lambda tmp: ReadOnlyStore(MemoryStore()),
    "zip": lambda tmp: tz.ZipStore(tmp / "none.zip", mode="r"),
    "local": lambda tmp: tz.LocalStore(tmp / "none", read_only=True),
    "sqlite": lambda tmp: tz.storage.SQLiteStore(tmp / "none.db", read_only=True),
}


def test_reads_are_forwarded_and_writes_refused_naming_the_key():
    inner = MemoryStore({"a/x": b"0123456789", "a/y": b"yy", "b": b"!"})
    view = ReadOnlyStore(inner)
    assert view.read_only and view.identity == inner.identity
    assert view.get("a/x") == b"0123456789" and view.get("nope") is None
    assert view.get_range("a/x", ByteRange(2, 3)) == b"234"
    assert view.get_many(["a/y", "nope"]) == {"a/y": b"yy", "nope": None}
    assert view.get_ranges([("a/x", ByteRange(-2)), ("b", ByteRange(0, 1))]) == [b"89", b"!"]
    assert view.exists("b") and not view.exists("c")
    assert view.getsize("a/x") == 10 and view.getsize("nope") is None
    assert sorted(view.list_prefix("a/")) == ["a/x", "a/y"]
    assert view.list_dir("") == inner.list_dir("")
    with pytest.raises(ReadOnlyError, match="a/x"):
        view.set("a/x", b"new")
    with pytest.raises(ReadOnlyError, match="'b'"):
        view.delete("b")
    assert inner.get("a/x") == b"0123456789" and inner.get("b") == b"!"
    assert view.with_read_only(True) is view and view.with_read_only(False) is inner
    assert "ReadOnlyStore(" in repr(view)


def test_arrays_over_a_read_only_view_read_but_never_write():
    inner = MemoryStore()
    arr = tz.create_array(inner, shape=(4,), dtype=torch.int16, chunks=(2,))
    arr[:] = torch.arange(4, dtype=torch.int16)
    view = tz.open_array(ReadOnlyStore(inner), mode="r")
    assert view[1:3].tolist() == [1, 2]
    with pytest.raises(ReadOnlyError):
        view[0] = 7
    assert arr[:].tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("kind", sorted(_READ_ONLY_STORES))
@pytest.mark.parametrize("prefix", ["", "a/"])
def test_delete_prefix_of_an_empty_read_only_store_is_refused_by_every_store(
    tmp_path, kind, prefix
):
    store = _READ_ONLY_STORES[kind](tmp_path)
    assert store.read_only and list(store.list_prefix("")) == []
    with pytest.raises(ReadOnlyError, match=repr(prefix or "/")):
        store.delete_prefix(prefix)


@pytest.mark.parametrize("kind", ["local", "memory", "sqlite", "lmdb"])
def test_read_only_must_be_a_bool_for_every_embedded_store(tmp_path, kind):
    # bool("false") is True: a str made the store read-only, the reverse of what was asked
    from torchzarr.errors import ArgumentTypeError
    from torchzarr.storage import LMDBStore, LocalStore, MemoryStore, SQLiteStore

    make = {
        "local": lambda ro: LocalStore(tmp_path / "d", read_only=ro),
        "memory": lambda ro: MemoryStore(read_only=ro),
        "sqlite": lambda ro: SQLiteStore(str(tmp_path / "s.sqlite"), read_only=ro),
        "lmdb": lambda ro: LMDBStore(str(tmp_path / "l.lmdb"), read_only=ro),
    }[kind]
    with pytest.raises(ArgumentTypeError, match="read_only must be True or False, got str"):
        make("false")
    assert make(False).read_only is False
    url = {
        "local": str(tmp_path / "u"),
        "memory": "memory://",
        "sqlite": f"sqlite://{tmp_path}/u.sqlite",
        "lmdb": f"lmdb://{tmp_path}/u.lmdb",
    }[kind]
    # through storage_options too, naming the URL (it was an UnknownStoreError, no TypeError)
    with pytest.raises(ArgumentTypeError, match=r"cannot open .*read_only must be True or Fa"):
        tz.open_group(url, storage_options={"read_only": "false"})
