"""Zip files and databases holding names that no key can spell, written by other tools.

A stray ``../x``, ``/abs`` or ``a//b`` entry is skipped by the listings (with a warning
naming it): the store lists only keys it takes back, so the hierarchy beside it opens,
lists, consolidates and copies as if the entry were not there.
"""

from __future__ import annotations

import sqlite3
import warnings
import zipfile
from pathlib import Path

import pytest
import torch

import torchzarr as tz
from torchzarr.cli import main
from torchzarr.storage import key_names
from torchzarr.storage.lmdb import LMDBStore
from torchzarr.storage.sqlite import SQLiteStore
from torchzarr.storage.zip import ZipStore

JUNK = ["../escaped.txt", "/abs.txt", "a//b", "b/./c", "b\\c", "a/../x"]
KEYS = ["a/c/0", "a/zarr.json", "zarr.json"]
DATA = torch.tensor([1.0, 2.0])


def _zip_with(tmp_path: Path, junk: str) -> str:
    """A zip of a group holding array ``a``, and one entry ``junk`` another tool wrote."""
    source = tz.open_group(tmp_path / "src.zarr", mode="w")
    source.create_array("a", data=DATA, compressors=None)
    path = tmp_path / "foreign.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for key in KEYS:
            archive.write(tmp_path / "src.zarr" / key, key)
        archive.writestr(junk, b"written by another tool")
    return str(path)


def _sqlite_with(tmp_path: Path, junk: str) -> str:
    path = tmp_path / "foreign.sqlite"
    tz.open_group(f"sqlite://{path}", mode="w").create_array("a", data=DATA, compressors=None)
    SQLiteStore(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO zarr(key, value) VALUES (?, ?)", (junk, b"junk"))
    conn.close()
    return f"sqlite://{path}"


def _lmdb_with(tmp_path: Path, junk: str | bytes) -> str:
    lmdb = pytest.importorskip("lmdb")
    path = tmp_path / "foreign.lmdb"
    tz.open_group(f"lmdb://{path}", mode="w").create_array("a", data=DATA, compressors=None)
    LMDBStore(path).close()
    env = lmdb.open(str(path))
    with env.begin(write=True) as txn:
        txn.put(junk if isinstance(junk, bytes) else junk.encode(), b"junk")
    env.close()
    return f"lmdb://{path}"


MAKERS = {"zip": _zip_with, "sqlite": _sqlite_with, "lmdb": _lmdb_with}


@pytest.mark.parametrize("junk", JUNK)
@pytest.mark.parametrize("kind", list(MAKERS))
def test_a_stray_name_is_skipped_and_the_hierarchy_beside_it_opens(tmp_path, kind, junk):
    url = MAKERS[kind](tmp_path, junk)
    store = tz.storage.resolve_store(url, mode="r")
    with pytest.warns(UserWarning, match=r"Store skips '.*': .*so no key can name it"):
        assert sorted(store.list_prefix("")) == KEYS
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per name and process
        assert store.list_dir("") == (["zarr.json"], ["a"])
        group = tz.open_group(url, mode="r")
        assert list(group) == ["a"]
        assert [name for name, _ in group.members(max_depth=None)] == ["a"]
        assert group.tree() == "/\n└── a [A] (2,) torch.float32"
        assert torch.equal(group["a"][...], DATA)
    store.close()


@pytest.mark.parametrize("kind", ["sqlite", "lmdb"])
def test_a_database_with_a_stray_name_consolidates(tmp_path, kind):
    url = MAKERS[kind](tmp_path, "../x")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tz.consolidate_metadata(url)
        group = tz.open_group(url, mode="r", use_consolidated=True)
    assert list(group) == ["a"] and torch.equal(group["a"][...], DATA)


def _stored_names(url: str) -> list[str]:
    """Every name in the database, as stored."""
    path = url.split("://", 1)[1]
    if url.startswith("lmdb://"):
        return sorted(name.decode() for name in LMDBStore(path)._stored_names(""))
    with sqlite3.connect(path) as conn:
        names = sorted(key for (key,) in conn.execute("SELECT key FROM zarr"))
    conn.close()
    return names


@pytest.mark.parametrize("kind", ["sqlite", "lmdb"])
def test_deleting_a_prefix_removes_the_stray_names_below_it(tmp_path, kind):
    url = MAKERS[kind](tmp_path, "a/../x")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        group = tz.open_group(url, mode="r+")
        group.create_array("b", data=DATA)
        del group["a"]
        assert list(group) == ["b"]
        assert "a/../x" not in _stored_names(url)
        tz.open_group(url, mode="w")
    assert _stored_names(url) == ["zarr.json"]


@pytest.mark.parametrize("junk", ["../escaped.txt", "/stray.txt"])
def test_the_command_line_copies_trees_and_consolidates_a_zip_with_a_stray_entry(
    tmp_path, capsys, junk
):
    zipped = _zip_with(tmp_path, junk)
    dest = tmp_path / "copy.zarr"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["copy", zipped, str(dest)]) == 0
        assert main(["tree", zipped]) == 0
        assert main(["consolidate", zipped]) == 0
    out = capsys.readouterr()
    assert "Traceback" not in out.err and "a [A] (2,)" in out.out
    assert sorted(tz.open_group(dest, mode="r")) == ["a"]
    ZipStore(zipped, mode="a").close()  # the directory consolidating appended to
    with zipfile.ZipFile(zipped) as archive:
        assert junk in archive.namelist()  # left as it was
    assert tz.open_group(zipped, mode="r", use_consolidated=True)["a"].shape == (2,)


def test_an_lmdb_key_that_is_not_utf8_is_skipped(tmp_path):
    url = _lmdb_with(tmp_path, b"junk\xff")
    with pytest.warns(UserWarning, match=r"LMDBStore skips '.*junk\\xff': its name is not UTF-8"):
        assert list(tz.open_group(url, mode="r")) == ["a"]


def test_names_with_a_backslash_or_nul_spell_no_key():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert not key_names.spells_a_key("b\\c", "/data", "Doc")
        assert not key_names.spells_a_key("a/x\x00y", "/data", "Doc")
        assert key_names.listed_keys(["a/b", "a/c\\d", "b/c", 3], "a/", "/data", "Doc") == ["a/b"]
