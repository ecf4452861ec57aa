"""Hierarchies deeper than Python's recursion limit walk, list, print and delete; names
with control characters print escaped, and a group's info names at most 50 members."""

from __future__ import annotations

import json
import os
import sys
import traceback
import warnings
import zipfile

import pytest

import torchzarr as tz
from torchzarr.cli import main
from torchzarr.core.printable import printable, printable_list
from torchzarr.storage import zip as zip_module
from torchzarr.storage import zip_archive
from torchzarr.storage.base import Store
from torchzarr.storage.local_listing import walk_keys
from torchzarr.storage.zip import ZipStore

DEPTH = 400  # well past the recursion limit the fixture below sets
GROUP = json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {}})


@pytest.fixture
def shallow_stack():
    """A recursion limit ~150 frames above the test's own depth: a walk recursing per level
    of a ``DEPTH``-level tree fails, as one of ~1000 levels does at the default limit."""
    before = sys.getrecursionlimit()
    sys.setrecursionlimit(len(traceback.extract_stack()) + 150)
    yield
    sys.setrecursionlimit(before)


def _deep_local(root, depth: int = DEPTH) -> str:
    path = directory = os.path.join(root, "deep.zarr")
    for _ in range(depth + 1):  # not os.makedirs: it recurses per level
        os.mkdir(directory)
        with open(os.path.join(directory, "zarr.json"), "w") as f:
            f.write(GROUP)
        directory = os.path.join(directory, "g")
    return path


def _deep_zip(root, depth: int = DEPTH) -> str:
    path = os.path.join(root, "deep.zip")
    with zipfile.ZipFile(path, "w") as zf:
        for level in range(depth + 1):
            zf.writestr("/".join(["g"] * level + ["zarr.json"]), GROUP)
    return path


@pytest.mark.parametrize("make", [_deep_local, _deep_zip], ids=["local", "zip"])
def test_deep_hierarchies_list_print_consolidate_and_delete(tmp_path, shallow_stack, make):
    url = make(str(tmp_path))
    root = tz.open_group(url, mode="r")
    members = root.members(max_depth=None)
    assert [rel for rel, _ in members] == ["/".join(["g"] * n) for n in range(1, DEPTH + 1)]
    assert len(root.member_metadata()) == DEPTH
    lines = root.tree().splitlines()
    assert len(lines) == DEPTH + 1 and lines[-1] == " " * 4 * (DEPTH - 1) + "└── g [G]"
    assert len(tz.open_group(url, mode="r").tree(level=2).splitlines()) == 4
    assert len(tz.consolidate_metadata(url).member_metadata()) == DEPTH
    group = tz.open_group(url, mode="r+")
    del group["g"]
    assert list(group) == [] and list(group.store.list_prefix("g/")) == []
    tz.open_group(url, mode="w")  # clears whatever is there, as deep as it goes


def test_a_deep_local_store_clears_with_mode_w(tmp_path, shallow_stack):
    url = _deep_local(str(tmp_path))
    tz.open_group(url, mode="w")
    assert sorted(os.listdir(url)) == ["zarr.json"]


def test_walk_keys_is_depth_first_and_skips_symlink_loops(tmp_path, shallow_stack):
    path = _deep_local(str(tmp_path), depth=DEPTH)
    os.symlink(path, os.path.join(path, *["g"] * DEPTH, "loop"))  # back to the top
    os.makedirs(os.path.join(path, "h"))
    open(os.path.join(path, "h", "0"), "w").close()
    keys = list(walk_keys(path, "", frozenset(), None, "store"))
    assert len(keys) == DEPTH + 2 and "h/0" in keys
    # each directory's keys, then those below it: the order of a recursive walk
    chain = [key for key in keys if key.startswith("g/")]
    assert chain == sorted(chain, key=len)
    links: list[tuple[str, str]] = []
    assert len(list(walk_keys(path, "", frozenset(), links, "store"))) == DEPTH + 2
    assert [name for name, _ in links] == ["/".join(["g"] * DEPTH + ["loop"])]


def test_members_and_tree_keep_their_order(tmp_path):
    root = tz.open_group(str(tmp_path / "t.zarr"), mode="w")
    for name in ("b/y", "a/x/z", "a/w", "c"):
        root.create_group(name)
    assert [rel for rel, _ in root.members(max_depth=None)] == [
        "a", "a/w", "a/x", "a/x/z", "b", "b/y", "c",
    ]  # fmt: skip
    assert [rel for rel, _ in root.members(max_depth=1)] == ["a", "a/w", "a/x", "b", "b/y", "c"]
    assert root.tree() == "\n".join(
        [
            "/",
            "├── a [G]",
            "│   ├── w [G]",
            "│   └── x [G]",
            "│       └── z [G]",
            "├── b [G]",
            "│   └── y [G]",
            "└── c [G]",
        ]
    )


def test_a_zip_lists_each_name_once_per_change_not_per_listing(tmp_path, monkeypatch):
    """A walk of a deep zip read every name of the archive per group listed: cubic."""
    url = _deep_zip(str(tmp_path), depth=200)
    seen = []

    def counting(names, *args):
        names = list(names)
        seen.append(len(names))
        return listed(names, *args)

    listed = zip_module.listed_keys
    monkeypatch.setattr(zip_archive, "listed_keys", counting, raising=False)
    monkeypatch.setattr(zip_module, "listed_keys", counting)
    assert len(tz.open_group(url, mode="r").members(max_depth=None)) == 200
    assert sum(seen) <= 2 * 201


def test_zip_listing_follows_writes_deletes_and_roll_backs(tmp_path):
    path = str(tmp_path / "l.zip")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with zipfile.ZipFile(path, "w") as zf:
            for name in ("a/b/0", "a/x", "y", "../up", "a//z"):
                zf.writestr(name, b"1")
    store = ZipStore(path, mode="a")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for prefix in ("", "a", "a/", "a/b/", "q/"):
                assert store.list_dir(prefix) == Store.list_dir(store, prefix)
        assert store.list_dir("a") == (["x"], ["b"])
        mark = store.savepoint()
        store.set("a/c/d/1", b"2")
        assert store.list_dir("a/") == (["x"], ["b", "c"]) and store.list_dir("a/c") == ([], ["d"])
        store.delete("a/x")
        assert store.list_dir("a") == ([], ["b", "c"])
        store.roll_back(mark)
        assert store.list_dir("a") == (["x"], ["b"]) and store.list_dir("a/c") == ([], [])
    finally:
        store.close()


EVIL = "x\n└── evil [A] (9,) torch.int8\x1b]0;pwned\x07\x1b[2J\u202e"
SHOWN = "x\\n└── evil [A] (9,) torch.int8\\x1b]0;pwned\\x07\\x1b[2J\\u202e"


def test_printable_escapes_what_steers_a_terminal_only():
    assert printable(EVIL) == SHOWN
    for plain in ("exp", "café", "日本/データ", "a b-c_d.e"):
        assert printable(plain) == plain
    steering = "\x00\x1f\x7f\x80\x9f\u061c\u200e\u200f\u2028\u2029\u202a\u202e\u2066\u2069"
    assert printable(steering) == repr(steering)[1:-1] and "\\" not in printable("\u200d")
    assert printable_list([f"m{i}" for i in range(53)]).endswith("m49, ... and 3 more")


def test_tree_and_info_escape_node_names(tmp_path):
    root = tz.open_group(str(tmp_path / "n.zarr"), mode="w")
    root.create_group("a\nb").create_array(EVIL, shape=(2,), dtype="int8")
    root.create_group("日本é")
    root.attrs["k\x1b[2J"] = 1
    assert root.tree().splitlines() == [
        "/",
        "├── a\\nb [G]",
        f"│   └── {SHOWN} [A] (2,) torch.int8",
        "└── 日本é [G]",
    ]
    assert root["a\nb"].tree().splitlines()[0] == "/a\\nb"
    text = str(root.info)
    assert "Groups       : 2 (a\\nb, 日本é)" in text and "k\\x1b[2J" in text
    assert "\x1b" not in str(root["a\nb"].info) and "\x1b" not in str(root["a\nb"][EVIL].info)
    assert "Name         : /a\\nb" in str(root["a\nb"].info)


def test_the_cli_prints_names_escaped(tmp_path, capsys):
    url = str(tmp_path / "c.zarr")
    tz.open_group(url, mode="w").create_array(f"g/{EVIL}", shape=(2,), dtype="int8")
    for argv in (
        ["tree", url],
        ["info", url, "--path", "g"],
        ["tree", url, "--path", f"g/{EVIL}"],
        ["bench", url, "--path", f"g/{EVIL}", "--rounds", "1"],
    ):
        assert main(argv) == 0
        out = capsys.readouterr().out
        assert SHOWN in out and "\x1b" not in out and "\u202e" not in out
    assert main(["info", url, "--path", "g/\x1b[2Jnone"]) == 1
    assert "\x1b" not in capsys.readouterr().err


def test_info_of_a_group_names_50_members_and_counts_the_rest(tmp_path):
    root = tz.open_group("memory://info-cap", mode="w")
    root.create_hierarchy({f"m{i:03d}": {} for i in range(120)})
    line = next(row for row in str(root.info).splitlines() if row.startswith("Groups"))
    assert line.endswith("120 (m000, m001, " + line.split("m001, ")[1])
    assert "m049, ... and 70 more)" in line and "m050" not in line
    assert len(root.info.groups) == 120


def test_a_local_store_writes_a_key_below_more_folders_than_the_stack_is_deep(tmp_path):
    """mkdir(parents=True) recursed once per missing folder: a bare RecursionError."""
    import subprocess
    import sys

    from torchzarr.storage.local import LocalStore

    depth = sys.getrecursionlimit() + 50
    key = "/".join(["g"] * depth + ["k"])
    store = LocalStore(tmp_path / "s")
    try:
        store.set(key, b"1")
        assert bytes(store.get(key)) == b"1"
        store.delete(key)  # its emptied folders pruned
        assert not (tmp_path / "s" / "g").exists()
    finally:  # shutil.rmtree (pytest's clean-up of old temporary folders) recurses per level
        subprocess.run(["rm", "-rf", str(tmp_path / "s")], check=False)


def test_a_zip_index_takes_new_names_in_place(tmp_path):
    """A new name dropped the whole index of directories: the next listing scanned every
    entry again."""
    from torchzarr.storage.zip import ZipStore

    store = ZipStore(tmp_path / "a.zip", mode="w")
    store.set("a/x", b"1")
    assert store.list_dir("a/") == (["x"], [])
    index = store._archive().directories()
    store.set("a/b/c/0", b"2")
    store.set("a/y", b"3")
    assert store._archive().directories() is index
    assert store.list_dir("a/") == (["x", "y"], ["b"]) and store.list_dir("a/b/") == ([], ["c"])
    store.delete("a/y")
    assert store.list_dir("a/") == (["x"], ["b"])
    store.close()
