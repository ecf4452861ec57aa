"""LocalStore against the store contract."""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from store_values import StoreValueChecks

import torchzarr as tz
from torchzarr.errors import InvalidKeyError, StoreError
from torchzarr.storage.base import ByteRange, Store
from torchzarr.storage.local import LocalStore, is_temporary
from torchzarr.testing.store_contract import StoreContract


class TestLocalStore(StoreContract, StoreValueChecks):
    def make_store(self, tmp_path: Path) -> Store:
        return LocalStore(tmp_path / "data.zarr")


class TestLocalStoreDirectIO(StoreContract, StoreValueChecks):
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
    real = local_module.flush

    def failing(path: str) -> None:
        if ".1." in path:
            raise OSError(5, "Input/output error")
        real(path)

    monkeypatch.setattr(local_module, "flush", failing)
    with pytest.raises(StoreError, match=r"'k/1'.*Input/output error"):
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


@pytest.mark.parametrize("when", ["before the file", "after mkdir"])
def test_a_directory_pruned_during_a_write_is_made_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, when: str
) -> None:
    # a concurrent delete() of the directory's last key prunes it at the worst moment
    from torchzarr.storage import direct_io

    store = LocalStore(tmp_path / "s")
    parent = tmp_path / "s" / "arr" / "c" / "0"
    pruned: list[bool] = []
    if when == "before the file":
        real_open = direct_io.open_new

        def open_new(path: str, *, direct: bool) -> tuple[int, bool]:
            if not pruned and parent.is_dir():  # made for the file, gone before it
                pruned.append(True)
                parent.rmdir()
            return real_open(path, direct=direct)

        monkeypatch.setattr(direct_io, "open_new", open_new)
    else:
        real_mkdir = os.mkdir

        def mkdir(path: Any, mode: int = 0o777) -> None:
            if Path(path) == parent and not pruned:
                pruned.append(True)  # it existed, and is gone when Path.mkdir looks again
                raise FileExistsError(errno.EEXIST, "File exists", str(path))
            real_mkdir(path, mode)

        monkeypatch.setattr(os, "mkdir", mkdir)
    store.set("arr/c/0/1", b"y")
    assert pruned and store.get("arr/c/0/1") == b"y"


def test_a_file_in_the_way_of_a_directory_is_still_an_error(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s")
    store.set("a", b"file")
    with pytest.raises(StoreError, match="'a/b'"):
        store.set("a/b", b"x")
    assert store.get("a") == b"file" and _partials(tmp_path) == []


def test_lookups_of_names_too_long_for_a_file_read_as_missing(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s")
    store.set("f", b"123")
    key = "x" * 300  # longer than any file name may be: no such file can exist
    assert store.get(key) is None and not store.exists(key) and store.getsize(key) is None
    assert store.list_dir(key) == ([], []) and store.get_range(key, ByteRange(0, 1)) is None
    group = tz.open_group(store, mode="a")
    assert key not in group and f"{key}/sub" not in group
    for write in (lambda: store.set(key, b"1"), lambda: group.create_group(key)):
        with pytest.raises(StoreError, match="x" * 20):  # a write names the key
            write()
    os.symlink("loop", tmp_path / "s" / "loop")  # other errors stay errors, wrapped
    for lookup in (store.exists, store.getsize, store.get):
        with pytest.raises(StoreError, match="'loop'"):
            lookup("loop")
    (tmp_path / "s" / "d").mkdir()
    assert store.exists("f") and store.getsize("f") == 3
    assert not store.exists("d") and store.getsize("d") is None and store.getsize("g") is None


@pytest.mark.parametrize("fsync", [True, False])
def test_a_name_too_long_for_the_file_system_is_refused_before_any_write(
    tmp_path: Path, fsync: bool
) -> None:
    store = LocalStore(tmp_path / "s", fsync=fsync)
    store.set_many({"ok": b"old", "a/0": b"old"})
    long_key = "a/" + "z" * 300
    for write in (
        lambda: store.set_many({"ok": b"new", "a/0": b"new", long_key: b"2"}),
        lambda: store.set_many({long_key + "/0": b"2", "ok": b"new"}),
        lambda: store.set(long_key, b"2"),
    ):
        with pytest.raises(StoreError) as info:
            write()
        assert store.get("ok") == b"old" and store.get("a/0") == b"old"  # all or nothing
        assert info.value.errno == errno.ENAMETOOLONG
        assert re.search(r"'a/zzz.*300 bytes.* at most 255 bytes", str(info.value))
    assert _partials(tmp_path) == [] and sorted(store.list_prefix("")) == ["a/0", "ok"]
    store.set("n" * 255, b"longest")  # the limit itself is a name
    assert store.get("n" * 255) == b"longest" and store.get(long_key) is None


def test_the_name_limit_is_the_file_systems_asked_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[str] = []

    def pathconf(path: str, name: str) -> int:
        asked.append(path)
        if path != str(tmp_path):  # the root is not made yet: its parent answers
            raise FileNotFoundError(errno.ENOENT, "No such file", path)
        return 16

    monkeypatch.setattr(os, "pathconf", pathconf)
    store = LocalStore(tmp_path / "s" / "t")
    store.set("d" * 16 + "/" + "e" * 16, b"1")
    with pytest.raises(StoreError, match=r"'d/e{17}'.* at most 16 bytes"):
        store.set("d/" + "e" * 17, b"2")
    assert asked == [str(tmp_path / "s" / "t"), str(tmp_path / "s"), str(tmp_path)]
    monkeypatch.setattr(os, "pathconf", lambda path, name: _no_pathconf())
    other = LocalStore(tmp_path / "u")
    with pytest.raises(StoreError, match="at most 255 bytes"):  # no answer: 255
        other.set("x" * 256, b"1")


def _no_pathconf() -> int:
    raise OSError(errno.EINVAL, "Invalid argument")


def test_symlinked_directories_are_listed(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "root")
    store.set_many({"zarr.json": b"{}", "own/zarr.json": b"{}"})
    other = LocalStore(tmp_path / "elsewhere")
    other.set_many({"big/zarr.json": b"{}", "big/c/0": b"0", "big/c/1": b"1"})
    os.symlink(tmp_path / "elsewhere" / "big", tmp_path / "root" / "big")
    os.symlink(tmp_path / "root", tmp_path / "root" / "own" / "loop")  # back to the root
    os.symlink("self", tmp_path / "root" / "self")  # a link to itself
    expected = ["big/c/0", "big/c/1", "big/zarr.json", "own/zarr.json", "zarr.json"]
    assert sorted(store.list_prefix("")) == expected
    assert sorted(store.list_prefix("big/c")) == ["big/c/0", "big/c/1"]
    assert store.list_dir("") == (["zarr.json"], ["big", "own"])
    assert store.list_dir("own/") == (["zarr.json"], ["loop"])
    assert store.list_dir("big/") == (["zarr.json"], ["c"])


def test_deleting_a_prefix_unlinks_symlinked_directories(tmp_path: Path) -> None:
    # as rm -r does: the data a link points to is not the store's to delete
    store = LocalStore(tmp_path / "root")
    LocalStore(tmp_path / "elsewhere").set_many({"a/c/0": b"0", "b/c/0": b"0"})
    for name in ("a", "b"):
        os.makedirs(tmp_path / "root" / "g", exist_ok=True)
        os.symlink(tmp_path / "elsewhere" / name, tmp_path / "root" / "g" / name)
    store.set("g/own", b"x")
    store.delete_prefix("g/a/")
    assert sorted(store.list_prefix("")) == ["g/b/c/0", "g/own"]
    store.delete_prefix("")
    assert list(store.list_prefix("")) == [] and os.listdir(tmp_path / "root") == []
    assert sorted(LocalStore(tmp_path / "elsewhere").list_prefix("")) == ["a/c/0", "b/c/0"]


def test_deleting_a_prefix_with_fsync_flushes_the_directories_links_were_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalStore(tmp_path / "root", fsync=True)
    LocalStore(tmp_path / "elsewhere").set_many({"a/c/0": b"0", "b/c/0": b"0"})
    store.set_many({"g/own": b"x", "h/own": b"y"})
    for name, under in (("a", "g"), ("b", "h")):
        os.symlink(tmp_path / "elsewhere" / name, tmp_path / "root" / under / name)
    synced: list[Path] = []
    monkeypatch.setattr(LocalStore, "_fsync_dir", staticmethod(synced.append))
    store.delete_prefix("g/")  # g/own, then the link g/a: g pruned, the root changed
    assert tmp_path / "root" in synced and len(synced) == len(set(synced))
    synced.clear()
    store.delete_prefix("h/b/")  # the prefix is the link itself: h changed
    assert synced == [tmp_path / "root" / "h"]
    assert sorted(store.list_prefix("")) == ["h/own"]


def test_names_with_a_colon_are_names_not_drive_paths(tmp_path):
    from torchzarr.storage import base

    group = tz.open_group(tmp_path / "g.zarr", mode="w")
    group.create_array("a:b", shape=(2,), dtype=torch.int8)[:] = torch.tensor([1, 2])
    assert "a:b" in group and tz.open_group(tmp_path / "g.zarr")["a:b"][:].tolist() == [1, 2]
    assert base.validate_key("c:d/zarr.json") == "c:d/zarr.json"
    for key in ("/abs", "a/../b"):
        with pytest.raises(tz.errors.InvalidKeyError):
            base.validate_key(key)


def test_a_key_shaped_like_a_temporary_file_is_refused_not_hidden(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    hidden = "g/." + "0" + "." + "ab" * 16 + ".partial"
    with pytest.raises(InvalidKeyError, match="temporary file"):
        store.set(hidden, b"v")
    with pytest.raises(InvalidKeyError, match="temporary file"):
        store.set_many({hidden: b"v", "g/ok": b"1"})
    store.set("g/epoch3.partial", b"kept")  # other keys ending in .partial are keys
    assert sorted(store.list_prefix("")) == ["g/epoch3.partial"] and _partials(tmp_path) == [
        "epoch3.partial"
    ]


def test_a_directory_in_the_place_of_a_key_publishes_nothing(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s", fsync=True)
    store.set_many({"a": b"old", "b": b"old"})
    store.set("x/y", b"inner")  # "x" is a directory
    with pytest.raises(StoreError, match=r"cannot write 'x'"):
        store.set_many({"a": b"new", "x": b"new", "b": b"new"})
    assert [store.get(k) for k in ("a", "b", "x/y")] == [b"old", b"old", b"inner"]
    assert _partials(tmp_path) == []


def test_a_rename_failing_midway_names_its_key_and_leaves_the_rest_old(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the documented limit: renames are not one atomic step
    store = LocalStore(tmp_path / "s", fsync=True)
    store.set_many({"k/0": b"old", "k/1": b"old", "k/2": b"old"})
    real_replace = os.replace

    def replace(src: Any, dst: Any) -> None:
        if str(dst).endswith("k/1"):
            raise OSError(errno.EIO, "Input/output error")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(StoreError, match=r"cannot write 'k/1'.*Input/output error"):
        store.set_many({"k/0": b"new", "k/1": b"new", "k/2": b"new"})
    assert [store.get(f"k/{i}") for i in range(3)] == [b"new", b"old", b"old"]
    assert _partials(tmp_path) == []


@pytest.mark.parametrize("fsync", [False, True])
def test_a_batch_with_an_invalid_key_writes_nothing(tmp_path: Path, fsync: bool) -> None:
    store = LocalStore(tmp_path / "s", fsync=fsync)
    temporary_form = "g/.0." + "ab" * 16 + ".partial"
    for bad in ("g/../x", temporary_form):
        with pytest.raises(InvalidKeyError):
            store.set_many({"g/ok": b"1", bad: b"2"})
    assert list(store.list_prefix("")) == [] and _partials(tmp_path) == []


@pytest.mark.parametrize("name", ["n" * 213, "n" * 214, "n" * 255, "\u00e9" * 127])
def test_names_up_to_the_file_system_limit_are_written(tmp_path: Path, name: str) -> None:
    store = LocalStore(tmp_path / "s", fsync=True)
    key = "g/" + name
    staged = store.stage_many({key: b"v", "g/0": b"w"})
    assert all(is_temporary(entry.tmp.name) for entry in staged)
    assert all(len(os.fsencode(entry.tmp.name)) <= 142 for entry in staged)
    assert list(store.list_prefix("")) == [] and store.list_dir("g") == ([], [])
    store.publish(staged)
    store.set(key, b"again")
    assert store.get(key) == b"again" and sorted(store.list_prefix("g/")) == ["g/0", key]
    assert _partials(tmp_path) == []


def test_writes_in_flight_of_names_with_a_newline_stay_hidden(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s")
    staged = store.stage_many({"a\nb": b"v"})
    assert list(store.list_prefix("")) == [] and store.list_dir("") == ([], [])
    store.publish(staged)
    assert list(store.list_prefix("")) == ["a\nb"]


@pytest.mark.parametrize("kind", ["local", "zip", "sqlite", "lmdb"])
@pytest.mark.parametrize(
    ("bad", "error", "match"),
    [
        (None, tz.errors.ArgumentTypeError, "must be a str or os.PathLike path, got NoneType"),
        (1.5, tz.errors.ArgumentTypeError, "must be a str or os.PathLike path, got float"),
        (3, tz.errors.ArgumentTypeError, "must be a str or os.PathLike path, got int"),
        (b"x", tz.errors.ArgumentTypeError, "must be a str or os.PathLike path, got bytes"),
        (object(), tz.errors.ArgumentTypeError, "must be a str or os.PathLike path, got object"),
        ("a\x00b", tz.errors.InvalidArgumentError, "holds a NUL byte"),
    ],
)
def test_a_file_store_refuses_a_path_of_no_file_when_made(kind, bad, error, match) -> None:
    make = {
        "local": tz.LocalStore,
        "zip": lambda p: tz.ZipStore(p, mode="w"),
        "sqlite": tz.SQLiteStore,
        "lmdb": tz.LMDBStore,
    }[kind]
    with pytest.raises(error, match=match):
        make(bad)


@pytest.mark.parametrize("method", ["delete", "delete_many"])
def test_delete_prefix_goes_through_an_overridden_delete_or_delete_many(tmp_path, method):
    seen: list[str] = []

    class Watched(LocalStore):
        if method == "delete":

            def delete(self, key):
                seen.append(key)
                super().delete(key)
        else:

            def delete_many(self, keys):
                keys = list(keys)
                seen.extend(keys)
                super().delete_many(keys)

    store = Watched(tmp_path)
    store.set_many({"g/a/c/0": b"0", "g/a/c/1": b"1", "h/0": b"2"})
    store.delete_prefix("g/")
    assert sorted(seen) == ["g/a/c/0", "g/a/c/1"]
    assert sorted(store.list_prefix("")) == ["h/0"]
