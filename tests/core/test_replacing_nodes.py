"""Creating over what is there: ``create_hierarchy`` refuses existing nodes unless told to
overwrite, and overwriting (``mode="w"``, ``overwrite=True``, ``group[name] = data``) clears
the whole prefix without needing to parse what was there, as zarr-python does."""

from __future__ import annotations

import json
import threading

import pytest
import torch

import torchzarr as tz
from torchzarr.errors import InvalidArgumentError, NodeExistsError


def _int_array(root: tz.Group, name: str = "x") -> tz.Array:
    arr = root.create_array(name, shape=(4,), dtype="int32", chunks=(2,))
    arr[:] = torch.tensor([1, 2, 3, 4], dtype=torch.int32)
    return arr


# --- create_hierarchy --------------------------------------------------------------------


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_create_hierarchy_refuses_existing_nodes(any_store, zarr_format):
    root = tz.open_group(any_store, mode="w", zarr_format=zarr_format)
    _int_array(root)
    root.create_group("g", attributes={"keep": 1})
    float_x = {"x": {"shape": (4,), "dtype": "float32", "chunks": (2,)}}
    for specs in (
        float_x,
        {"x": {}},
        {"g": {}},
        {"x/sub": {}},
        {"x/sub/deeper": {"shape": (1,), "dtype": "int8"}},
    ):
        with pytest.raises(NodeExistsError, match=r"'x'|'g'"):
            root.create_hierarchy(specs)
    with pytest.raises(InvalidArgumentError, match="the group itself"):
        root.create_hierarchy({"/": {}})
    # nothing changed: the int32 data reads back, no node below the array, attributes kept
    again = tz.open_group(any_store, mode="r")
    assert again["x"][:].tolist() == [1, 2, 3, 4] and again["x"].dtype == torch.int32
    assert sorted(again) == ["g", "x"] and dict(again["g"].attrs) == {"keep": 1}
    assert [k for k in any_store.list_prefix("x/") if "sub" in k] == []


def test_create_hierarchy_keeps_existing_parent_groups(any_store):
    root = tz.open_group(any_store, mode="w")
    root.create_group("a", attributes={"keep": True})
    made = root.create_hierarchy({"a/y": {"shape": (2,), "dtype": "int8"}})
    assert sorted(made) == ["a/y"]  # the parent is there: not written again
    assert dict(root["a"].attrs) == {"keep": True} and root["a/y"].shape == (2,)


def test_create_hierarchy_overwrite_replaces_nodes_and_clears_their_keys(any_store):
    root = tz.open_group(any_store, mode="w")
    _int_array(root)
    _int_array(root, "g/old")
    made = root.create_hierarchy(
        {"x": {"shape": (4,), "dtype": "float32", "chunks": (2,)}, "g": {}, "g/new": {}},
        overwrite=True,
    )
    assert made["x"][:].tolist() == [0.0] * 4  # no old int32 chunk read as float32
    assert not [k for k in any_store.list_prefix("x/") if not k.endswith("zarr.json")]
    assert sorted(tz.open_group(any_store)["g"]) == ["new"]


def test_create_hierarchy_checks_what_is_there_in_one_batch(tmp_path, monkeypatch):
    root = tz.open_group(tmp_path, mode="w")
    specs = {f"m/layer{i}/w": {"shape": (2,), "dtype": "float32"} for i in range(50)}
    calls = []
    store = root.store
    real = type(store).get_many

    def counting(self, keys):
        calls.append(len(keys))
        return real(self, keys)

    monkeypatch.setattr(type(store), "get_many", counting)
    root.create_hierarchy(specs)
    assert len(calls) <= 2  # one check of every node (the other: consolidated metadata above)


# --- overwriting clears the prefix -------------------------------------------------------


def _leftovers(path) -> None:
    """An array whose metadata is gone (chunks left) and a group with only children."""
    root = tz.open_group(path, mode="w")
    arr = root.create_array("y", shape=(2,), dtype="int8", chunks=(1,))
    arr[:] = 7
    root.create_array("x/arr", shape=(2,), dtype="int8")
    (path / "y" / "zarr.json").unlink()
    (path / "x" / "zarr.json").unlink()


def test_mode_w_clears_keys_no_metadata_owns(tmp_path):
    _leftovers(tmp_path)
    fresh = tz.open_array(tmp_path, path="y", mode="w", shape=(2,), dtype="int8", chunks=(1,))
    assert fresh[:].tolist() == [0, 0] and fresh.nchunks_initialized == 0
    assert list(tz.open_group(tmp_path, path="x", mode="w")) == []
    _leftovers(tmp_path)
    tz.create_array(tmp_path, path="y", shape=(2,), dtype="int8", chunks=(1,), overwrite=True)
    assert tz.open_array(tmp_path, path="y")[:].tolist() == [0, 0]


BAD_DOCUMENTS = {
    "not json": "{",
    "unknown codec": json.dumps(
        {
            "zarr_format": 3,
            "node_type": "array",
            "shape": [2],
            "data_type": "int8",
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [2]}},
            "chunk_key_encoding": {"name": "default"},
            "fill_value": 0,
            "codecs": [{"name": "bytes"}, {"name": "some_future_codec"}],
        }
    ),
    "extension": json.dumps(
        {"zarr_format": 3, "node_type": "group", "future": {"must_understand": True}}
    ),
}


@pytest.mark.parametrize("document", list(BAD_DOCUMENTS.values()), ids=list(BAD_DOCUMENTS))
def test_overwrite_needs_no_parseable_metadata(tmp_path, document):
    (tmp_path / "n").mkdir()
    (tmp_path / "n" / "zarr.json").write_text(document)
    (tmp_path / "n" / "c").mkdir()
    (tmp_path / "n" / "c" / "0").write_bytes(b"old")
    with pytest.raises(NodeExistsError):  # without overwrite: there is something there
        tz.create_group(tmp_path, path="n")
    assert isinstance(tz.open_group(tmp_path, path="n", mode="w"), tz.Group)
    assert not (tmp_path / "n" / "c").exists()
    (tmp_path / "zarr.json").write_text(document)
    assert tz.open_group(tmp_path, mode="w").attrs == {}


def test_overwrite_below_an_array_deletes_nothing(any_store):
    root = tz.open_group(any_store, mode="w")
    arr = _int_array(root)
    for name in ("x/c", "x/c/0"):  # where the array's chunks are
        with pytest.raises(NodeExistsError, match="an array exists at 'x'"):
            root.create_array(name, shape=(1,), dtype="int8", overwrite=True)
    assert arr[:].tolist() == [1, 2, 3, 4]


def test_two_threads_creating_one_hierarchy_leave_one_winner(any_store):
    root = tz.open_group(any_store, mode="w")
    barrier = threading.Barrier(4)
    outcomes: list[str] = []

    def create() -> None:
        barrier.wait()
        try:
            root.create_hierarchy({"a/x": {"shape": (2,), "dtype": "int8"}})
            outcomes.append("made")
        except NodeExistsError:
            outcomes.append("exists")

    threads = [threading.Thread(target=create) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["exists"] * 3 + ["made"]
