"""ZipStore.savepoint / roll_back: giving up a series of writes leaves the file as it was."""

from __future__ import annotations

import errno
import zipfile
from pathlib import Path
from typing import Any

import pytest
import zip_faults
from zip_faults import entries

from torchzarr.errors import ReadOnlyError, StoreError
from torchzarr.storage import ByteRange, zip_archive
from torchzarr.storage.zip import ZipStore
from torchzarr.storage.zip_io import cut_file

ENTRIES = {f"k/{i}": bytes([i]) * 1000 for i in range(5)}


def make_zip(path: Path) -> Path:
    return zip_faults.make_zip(path, ENTRIES)


def test_a_roll_back_forgets_writes_and_deletes_and_cuts_the_file(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "s.zip")
    size = path.stat().st_size
    store = ZipStore(path, mode="a")
    mark = store.savepoint()
    for i in range(50):
        store.set(f"new/{i}", b"n" * 500)
    store.set("k/0", b"replaced")
    store.delete("k/1")
    assert store.roll_back(mark)
    # at once, before any close: the file is the zip it was, for every other reader
    assert entries(path) == ENTRIES and path.stat().st_size == size
    assert store.get("k/0") == ENTRIES["k/0"] and store.get("k/1") == ENTRIES["k/1"]
    assert sorted(store.list_prefix("")) == sorted(ENTRIES)
    store.set("after", b"a")  # writes go on after the roll back
    store.close()
    assert entries(path) == {**ENTRIES, "after": b"a"}


def test_entries_written_where_rolled_back_ones_were_read_back_right(tmp_path: Path) -> None:
    store = ZipStore(make_zip(tmp_path / "o.zip"), mode="a")
    mark = store.savepoint()
    store.set("a", b"x" * 100)
    assert store.get("a") == b"x" * 100  # where its data starts is now known
    assert store.roll_back(mark)
    store.set("a-longer-name", b"y" * 100)  # at the same offset, a longer local header
    assert store.get_range("a-longer-name", ByteRange(0, 10)) == b"y" * 10
    assert store.get("a-longer-name") == b"y" * 100
    store.close()


def test_a_roll_back_after_the_zip_was_closed_changes_nothing(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "c.zip")
    store = ZipStore(path, mode="a")
    mark = store.savepoint()
    store.set("new", b"1")
    store.close()
    assert not store.roll_back(mark)
    assert entries(path) == {**ENTRIES, "new": b"1"}


def test_a_read_only_zip_takes_no_savepoint(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "r.zip")
    with pytest.raises(ReadOnlyError, match=r"r\.zip"):
        ZipStore(path).savepoint()


def test_a_roll_back_without_room_for_the_directory_leaves_it_to_the_close(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = make_zip(tmp_path / "d.zip")
    store = ZipStore(path, mode="a")
    mark = store.savepoint()
    store.set("new", b"n" * 100)
    real_write_directory = zip_archive.write_directory

    def no_room(zf: zipfile.ZipFile) -> OSError:
        cut_file(zf, zf.start_dir)  # as a directory that does not fit leaves the file
        return OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(zip_archive, "write_directory", no_room)
    with pytest.raises(StoreError, match=r"directory of zip .*d\.zip.*stays open"):
        store.roll_back(mark)
    assert not store.exists("new") and store.get("k/2") == ENTRIES["k/2"]
    monkeypatch.setattr(zip_archive, "write_directory", real_write_directory)
    store.close()  # room again: the close writes the directory of the entries rolled back to
    assert entries(path) == ENTRIES


def owns_new(key: str) -> bool:
    return key.startswith("new/")


@pytest.mark.parametrize(
    "change",
    [
        lambda other: other.set("log/entry", b"kept"),  # written
        lambda other: other.set("k/3", b"replaced"),  # replaced
        lambda other: other.delete("k/4"),  # deleted
    ],
    ids=["written", "replaced", "deleted"],
)
def test_a_roll_back_leaves_a_zip_that_others_changed_since_as_it_is(
    tmp_path: Path, change: Any
) -> None:
    path = make_zip(tmp_path / "shared.zip")
    store = ZipStore(path, mode="a")
    mark = store.savepoint()
    store.set("new/0", b"n" * 100)
    other = ZipStore(path, mode="a")  # another store of the same file: the same archive
    change(other)
    expected = {key: store.get(key) for key in store.list_prefix("")}
    assert not store.roll_back(mark, owned=owns_new)
    assert {key: store.get(key) for key in store.list_prefix("")} == expected
    store.close()
    assert entries(path) == expected


def test_a_roll_back_undoes_the_changes_it_owns_beside_keys_left_alone(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "owned.zip")
    store = ZipStore(path, mode="a")
    mark = store.savepoint()
    store.set("new/0", b"n" * 100)
    ZipStore(path, mode="a").set("log/entry", b"gone")
    ZipStore(path, mode="a").delete("log/entry")  # written and deleted since: no key changed
    assert store.roll_back(mark, owned=owns_new)
    assert entries(path) == ENTRIES


def test_a_savepoint_that_an_earlier_roll_back_cut_off_is_refused(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "stale.zip")
    store = ZipStore(path, mode="a")
    earlier = store.savepoint()
    store.set("x", b"X" * 1000)
    later = store.savepoint()  # lists "x", whose bytes the roll back gives up
    store.set("y", b"Y" * 10)
    assert store.roll_back(earlier)
    store.set("z", b"Z" * 2000)  # written where "x" was
    assert not store.roll_back(later)
    assert store.get("z") == b"Z" * 2000 and not store.exists("x")
    store.close()
    assert entries(path) == {**ENTRIES, "z": b"Z" * 2000}


def test_a_roll_back_to_a_later_savepoint_keeps_an_earlier_one_valid(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "nested.zip")
    store = ZipStore(path, mode="a")
    outer = store.savepoint()
    store.set("a", b"1" * 100)
    inner = store.savepoint()
    store.set("b", b"2" * 100)
    assert store.roll_back(inner)
    store.set("c", b"3" * 100)
    assert store.roll_back(outer)
    assert entries(path) == ENTRIES
    store.close()
