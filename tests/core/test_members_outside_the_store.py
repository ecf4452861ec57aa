"""A store from elsewhere never makes a read reach outside its root.

Consolidated metadata (or a listing) naming a member ``..``, ``../../victim``, ``x\\y``,
``""`` or ``a/`` lists no such member, in any listing, and a reader given a key that would
leave the root refuses it before it opens anything.
"""

from __future__ import annotations

import builtins
import json
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from documents import v3_array_document

import torchzarr as tz
from torchzarr.core import fastpath
from torchzarr.core.group import node_from_metadata
from torchzarr.core.shard_files import ShardFiles
from torchzarr.errors import InvalidArgumentError, InvalidKeyError

_BYTES = {"name": "bytes", "configuration": {"endian": "little"}}
GROUP = {"zarr_format": 3, "node_type": "group", "attributes": {}}
ARRAY = v3_array_document(4, [_BYTES])
SHARDED = {
    **ARRAY,
    "chunk_key_encoding": {"name": "v2", "configuration": {"separator": "."}},
    "codecs": [
        {
            "name": "sharding_indexed",
            "configuration": {
                "chunk_shape": [2],
                "codecs": [_BYTES],
                "index_codecs": [_BYTES, {"name": "crc32c"}],
                "index_location": "end",
            },
        }
    ],
}
V2_ARRAY = {
    "zarr_format": 2,
    "shape": [4],
    "chunks": [4],
    "dtype": "<f4",
    "compressor": None,
    "fill_value": 0,
    "filters": None,
    "order": "C",
}
SECRET = 7.0  # the value of every file planted outside the store


@pytest.fixture
def planted(tmp_path: Path) -> tuple[Path, Path]:
    """``(outside, root)``: a store directory three levels below ``outside``, and, outside
    it, files named as the chunks a member ``..`` or ``../../../victim`` would read."""
    root = tmp_path / "a" / "b" / "downloaded.zarr"
    root.mkdir(parents=True)
    secret = np.full(4, SECRET, "<f4").tobytes()
    for name in ("a/b/c/0", "a/b/0", "victim/c/0", "victim/0"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(secret)
    return tmp_path, root


@pytest.fixture
def opened_outside(planted: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths below ``outside`` but not below the store that anything opens or stats."""
    outside, root = planted
    seen: list[str] = []

    def note(path: object) -> None:
        if isinstance(path, str | bytes | os.PathLike):
            full = os.path.normpath(os.fsdecode(path))
            inside = full == str(root) or full.startswith(str(root) + os.sep)
            if full.startswith(str(outside) + os.sep) and not inside:
                seen.append(full)

    def recording(real):
        def call(path, *args, **kwargs):
            note(path)
            return real(path, *args, **kwargs)

        return call

    monkeypatch.setattr(os, "open", recording(os.open))
    monkeypatch.setattr(os, "stat", recording(os.stat))
    monkeypatch.setattr(builtins, "open", recording(builtins.open))
    return seen


def _write_v3(root: Path, members: dict[str, dict]) -> None:
    inline = {"kind": "inline", "must_understand": False, "metadata": members}
    (root / "zarr.json").write_text(json.dumps({**GROUP, "consolidated_metadata": inline}))


def _write_v2(root: Path, entries: dict[str, dict]) -> None:
    (root / ".zgroup").write_text(json.dumps({"zarr_format": 2}))
    metadata = {".zgroup": {"zarr_format": 2}, **entries}
    doc = {"zarr_consolidated_format": 1, "metadata": metadata}
    (root / ".zmetadata").write_text(json.dumps(doc))


def _every_listing(group: tz.Group) -> Iterator[tuple[str, list[str]]]:
    """``(API, names it lists)`` for every way a group lists its members."""
    yield "iter", list(group)
    yield "keys", list(group.keys())
    yield "items", [name for name, _ in group.items()]
    yield "values", [node.basename for node in group.values()]
    yield "arrays, groups", [name for name, _ in [*group.arrays(), *group.groups()]]
    yield "array_keys, group_keys", [*group.array_keys(), *group.group_keys()]
    yield "members", [name for name, _ in group.members(max_depth=None)]
    yield "member_metadata", [name for name, _ in group.member_metadata()]
    info = group.info
    yield "info", [*info.arrays, *info.groups, *info.unsupported, *info.unsupported_metadata]
    yield "tree", [line.split("── ")[1].split(" [")[0] for line in group.tree().splitlines()[1:]]


CRAFTED = {
    "v3 member '..'": (_write_v3, {"..": ARRAY}, []),
    "v3 chain to a sibling directory": (
        _write_v3,
        {"..": GROUP, "../..": GROUP, "../../..": GROUP, "../../../victim": ARRAY},
        [],
    ),
    "v3 sharded member '..'": (_write_v3, {"..": SHARDED, "ok": ARRAY}, ["ok"]),
    "v3 members '' and 'a/'": (_write_v3, {"": GROUP, "a/": GROUP, "a": GROUP}, ["a"]),
    "v2 member '..'": (_write_v2, {"../.zarray": V2_ARRAY, "../victim/.zarray": V2_ARRAY}, []),
    "v2 member with a backslash": (
        _write_v2,
        {"x\\y/.zarray": V2_ARRAY, "ok/.zarray": V2_ARRAY},
        ["ok"],
    ),
}


@pytest.mark.parametrize("case", list(CRAFTED))
def test_crafted_consolidated_members_are_listed_by_no_api(planted, opened_outside, case):
    _, root = planted
    write, members, expected = CRAFTED[case]
    write(root, members)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # each skipped entry is named once
        group = tz.open_group(root, mode="r")
        for api, names in _every_listing(group):
            assert sorted(set(names)) == expected, api
        assert len(group) == len(expected)
        for name, node in group.members(max_depth=None):
            assert group[name].path == node.path == name
            if isinstance(node, tz.Array):
                assert not (node[...] == SECRET).any()
        if any(isinstance(node, tz.Array) for node in group.values()):
            sample = tz.ZarrDataset(group)[0]
            assert SECRET not in [float(value) for value in sample.values()]
        else:
            with pytest.raises(InvalidArgumentError, match="no arrays"):
                tz.ZarrDataset(group)
    assert opened_outside == []


def test_a_skipped_consolidated_entry_is_named_in_a_warning(planted):
    _, root = planted
    _write_v3(root, {"..": ARRAY, "ok": ARRAY})
    with pytest.warns(UserWarning, match=r"consolidated metadata in LocalStore.* skips '\.\.'"):
        group = tz.open_group(root, mode="r")
    assert list(group) == ["ok"]


def test_a_member_named_dotdot_opens_no_node(planted, opened_outside):
    _, root = planted
    _write_v3(root, {"..": ARRAY})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        group = tz.open_group(root, mode="r")
    assert ".." not in group
    assert group.get("..") is None
    with pytest.raises(InvalidKeyError):
        group[".."]
    assert opened_outside == []


def test_a_directory_named_with_a_backslash_is_no_member(tmp_path):
    root = tz.open_group(tmp_path / "g.zarr", mode="w")
    root.create_array("ok", data=torch.arange(2.0))
    odd = tmp_path / "g.zarr" / "x\\y"
    odd.mkdir()
    (odd / "zarr.json").write_text(json.dumps({**ARRAY, "shape": [2]}))
    with pytest.warns(UserWarning, match=r"LocalStore skips .*x\\y': its name holds a backslash"):
        listed = list(tz.open_group(tmp_path / "g.zarr", mode="r"))
    assert listed == ["ok"]


class JunkListingStore(tz.storage.MemoryStore):
    """A store whose listings also name directories no key can spell."""

    def list_dir(self, prefix):
        keys, dirs = super().list_dir(prefix)
        return keys, sorted([*dirs, "", ".", "..", "x\\y"])


def test_names_a_store_lists_that_name_no_node_are_no_members():
    store = JunkListingStore()
    root = tz.open_group(store, mode="w")
    root.create_array("sub/x", data=torch.arange(2.0))
    for group in (root, tz.open_group(store, mode="r", use_consolidated=False)):
        assert list(group) == ["sub"] and list(group["sub"]) == ["x"]
        assert [name for name, _ in group.members(max_depth=None)] == ["sub", "sub/x"]
        assert group.tree() == "/\n└── sub [G]\n    └── x [A] (2,) torch.float32"
        assert group.info.groups == ("sub",) and not group.info.arrays


def test_a_node_path_that_leaves_the_root_is_refused(tmp_path):
    store = tz.storage.LocalStore(tmp_path)
    meta = tz.open_group(tmp_path, mode="w").metadata
    for path in ("..", "../x", "a/../../x", "/abs"):
        with pytest.raises(InvalidKeyError):
            node_from_metadata(store, path, meta, True)


@pytest.fixture
def local_array(planted):
    _, root = planted
    return tz.create_array(
        str(root), path="x", shape=(4,), dtype=torch.float32, chunks=(4,), compressors=None
    )


@pytest.mark.parametrize("key", ["../c/0", "x/../../c/0", "/etc/passwd", "x/c/..", "x\\..\\c"])
def test_the_local_chunk_reader_refuses_keys_that_leave_the_root(local_array, opened_outside, key):
    local_array[...] = torch.arange(4.0)
    out = np.zeros(4, "<f4")
    reader = fastpath.ChunkReader(local_array._source, out, 0, root=str(local_array.store.root))
    assert bytes(reader.read_file("x/c/0")) == np.arange(4, dtype="<f4").tobytes()
    with pytest.raises(InvalidKeyError):
        reader.read_file(key)
    with pytest.raises(InvalidKeyError):
        list(reader.read_files(["x/c/0", key]))
    with pytest.raises(InvalidKeyError):
        reader.readinto(key, np.zeros(16, np.uint8))
    assert opened_outside == []


@pytest.mark.parametrize("keep", [False, True])
def test_local_shard_files_refuse_keys_that_leave_the_root(planted, opened_outside, keep):
    _, root = planted
    (root / "0").write_bytes(b"shard")
    with ShardFiles(str(root), keep=keep) as files:
        assert files.open("0") is not None
        for key in ("../0", "../../victim/0", "/etc/passwd"):
            with pytest.raises(InvalidKeyError):
                files.open(key)
            assert files.signature(key) is None
    assert opened_outside == []
