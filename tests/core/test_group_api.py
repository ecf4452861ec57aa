"""Groups, modes of open_*, attributes and hierarchy creation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import torchzarr as tz
from torchzarr.errors import (
    ArrayNotFoundError,
    AttributeValueError,
    GroupNotFoundError,
    NodeExistsError,
    NodeNotFoundError,
    ReadOnlyError,
)


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_nested_groups_and_arrays(any_store, zarr_format):
    root = tz.open_group(any_store, mode="w", zarr_format=zarr_format)
    run = root.require_group("exp1/run2")
    assert run.path == "exp1/run2" and run.zarr_format == zarr_format
    assert root.require_group("exp1/run2").path == "exp1/run2"
    x = run.create_array("x", shape=(3,), dtype=torch.int32, chunks=(2,))
    x[:] = torch.tensor([1, 2, 3], dtype=torch.int32)
    assert torch.equal(root["exp1/run2/x"][:], torch.tensor([1, 2, 3], dtype=torch.int32))
    assert "exp1" in root and "exp1/run2/x" in root and "nope" not in root
    assert list(root) == ["exp1"] and len(root) == 1
    assert [name for name, _ in root.members(max_depth=None)] == [
        "exp1",
        "exp1/run2",
        "exp1/run2/x",
    ]
    assert root["exp1"].group_keys() == ["run2"]
    assert run.array_keys() == ["x"]
    with pytest.raises(NodeNotFoundError, match="nope"):
        root["nope"]
    with pytest.raises(KeyError):
        root["nope/deeper"]


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_create_array_writes_group_documents_only_for_missing_parents(zarr_format):
    store = tz.storage.MemoryStore()
    tz.create_array(store, shape=(4,), dtype=torch.int8, zarr_format=zarr_format)
    names = {2: [".zarray"], 3: ["zarr.json"]}[zarr_format]
    assert sorted(store.list_prefix("")) == names  # a root array has no group beside it
    store = tz.storage.MemoryStore()
    tz.create_array(store, path="a/b", shape=(4,), dtype=torch.int8, zarr_format=zarr_format)
    assert isinstance(tz.open(store, path="a"), tz.Group)
    assert isinstance(tz.open(store, path="a/b"), tz.Array)
    group_doc = {2: ".zgroup", 3: "zarr.json"}[zarr_format]
    assert group_doc in store.list_prefix("") and f"a/{group_doc}" in store.list_prefix("a/")


def test_attrs_persist_and_refuse_non_json(any_store):
    root = tz.open_group(any_store, mode="w")
    root.attrs["lr"] = 3e-4
    root.attrs.update({"tags": ["a", "b"], "nested": {"k": 1}})
    again = tz.open_group(any_store, mode="r")
    assert dict(again.attrs) == {"lr": 3e-4, "tags": ["a", "b"], "nested": {"k": 1}}
    with pytest.raises(AttributeValueError, match="bad"):
        root.attrs["bad"] = {"inner": object()}
    with pytest.raises(AttributeValueError, match="nan"):
        root.attrs["nan"] = float("nan")
    with pytest.raises(AttributeValueError, match="'inf'"):
        root.attrs.update({"ok": 1, "inf": torch.tensor([1.0, float("inf")])})
    with pytest.raises(AttributeValueError, match="keys must be str"):
        root.attrs.update({1: 2})
    assert "ok" not in root.attrs and "bad" not in root.attrs  # nothing half-written
    del root.attrs["lr"]
    assert "lr" not in tz.open_group(any_store).attrs


def test_attrs_take_numpy_and_torch_values_as_json_numbers_and_lists(any_store):
    stats = {"mean": torch.tensor([0.5, 0.25]), "count": np.int64(7), "scale": np.float32(2)}
    arr = tz.create_array(any_store, shape=(2,), dtype="int8", attributes={"stats": stats})
    arr.attrs["nested"] = [np.arange(2), {"t": torch.tensor(3)}, (np.bool_(True),)]
    arr.attrs.put({**arr.attrs, "std": torch.tensor([1.0], dtype=torch.bfloat16)})
    again = tz.open_array(any_store, mode="r").attrs
    assert again["stats"] == {"mean": [0.5, 0.25], "count": 7, "scale": 2.0}
    assert again["nested"] == [[0, 1], {"t": 3}, [True]] and again["std"] == [1.0]
    assert type(again["stats"]["count"]) is int
    with pytest.raises(AttributeValueError, match="attribute 'x'"):
        tz.create_group(any_store, path="g", attributes={"x": float("nan")})
    with pytest.raises(AttributeValueError, match="attribute 'c'"):
        tz.create_array(any_store, path="b", shape=(1,), dtype="int8", attributes={"c": 1j})
    assert any_store.get("g/zarr.json") is None and any_store.get("b/zarr.json") is None


def test_v2_attrs_live_in_zattrs(any_store):
    arr = tz.create_array(any_store, shape=(2,), dtype="int8", zarr_format=2)
    arr.attrs["units"] = "m"
    assert b'"units"' in any_store.get(".zattrs")
    assert b"units" not in any_store.get(".zarray")


def test_tree_marks_groups_and_arrays(any_store):
    root = tz.open_group(any_store, mode="w")
    root.create_array("a/x", shape=(4, 2), dtype=torch.float32)
    root.require_group("b")
    text = root.tree()
    assert text.splitlines()[0] == "/"
    assert "a [G]" in text and "x [A] (4, 2) torch.float32" in text and "b [G]" in text


def test_tree_level_is_the_deepest_level_shown_as_in_zarr_python(any_store):
    root = tz.open_group(any_store, mode="w")
    root.create_group("a/b/c")
    shown = {level: root.tree(level).count("[G]") for level in (0, 1, 2, None)}
    assert shown == {0: 1, 1: 2, 2: 3, None: 3}


def test_create_hierarchy_in_one_pass(any_store):
    root = tz.open_group(any_store, mode="w")
    made = root.create_hierarchy(
        {
            "data/images": {"shape": (10, 4), "dtype": torch.uint8, "chunks": (5, 4)},
            "data/labels": {"shape": (10,), "dtype": "int64"},
            "meta": {"attributes": {"source": "synthetic"}},
        }
    )
    assert set(made) >= {"data", "data/images", "data/labels", "meta"}
    assert root["data/images"].shape == (10, 4)
    assert dict(root["meta"].attrs) == {"source": "synthetic"}


def test_open_modes(any_store):
    with pytest.raises(GroupNotFoundError):
        tz.open_group(any_store, mode="r")
    with pytest.raises(ArrayNotFoundError):
        tz.open_array(any_store, mode="r+")
    arr = tz.open_array(any_store, mode="w-", shape=(3,), dtype="float32")
    with pytest.raises(NodeExistsError):
        tz.open_array(any_store, mode="w-", shape=(3,), dtype="float32")
    arr[:] = 1.0
    assert tz.open_array(any_store, mode="a")[0].item() == 1.0
    assert tz.open_array(any_store, mode="r+")[0].item() == 1.0
    with pytest.raises(GroupNotFoundError, match="array"):
        tz.open_group(any_store, mode="r")
    replaced = tz.open_array(any_store, mode="w", shape=(2,), dtype="int8")
    assert replaced.shape == (2,) and replaced.nchunks_initialized == 0
    assert isinstance(tz.open(any_store, mode="r"), tz.Array)
    group = tz.open_group(any_store, mode="w")
    assert isinstance(tz.open(any_store), tz.Group) and group.path == ""
    with pytest.raises(ValueError, match="mode"):
        tz.open(any_store, mode="x")


@pytest.mark.parametrize("placed", [{"path": "x"}, {"store": "memory://"}])
def test_a_member_array_is_placed_by_its_name_alone(placed):
    group = tz.open_group("memory://", mode="w")
    with pytest.raises(tz.errors.ArgumentTypeError, match="takes the member's name, not"):
        group.create_array("a", shape=(2,), dtype="int8", **placed)
    assert "a" not in group and group.create_array("a", shape=(2,), dtype="int8").path == "a"


def test_create_array_refuses_existing_unless_overwrite(any_store):
    tz.create_array(any_store, path="a", shape=(2,), dtype="int8")
    with pytest.raises(NodeExistsError, match="'a'"):
        tz.create_array(any_store, path="a", shape=(2,), dtype="int8")
    tz.create_array(any_store, path="a", shape=(5,), dtype="int8", overwrite=True)
    assert tz.open_array(any_store, path="a").shape == (5,)
    with pytest.raises(NodeExistsError):
        tz.create_array(any_store, path="a/b", shape=(1,), dtype="int8")


def test_read_only_group(any_store):
    tz.open_group(any_store, mode="w")
    ro = tz.open_group(any_store, mode="r")
    with pytest.raises(ReadOnlyError):
        ro.require_group("x")
    with pytest.raises(ReadOnlyError):
        ro.attrs["a"] = 1
    with pytest.raises(ReadOnlyError):
        ro.create_array("y", shape=(1,), dtype="int8")


def test_delete_member(any_store):
    root = tz.open_group(any_store, mode="w")
    root.create_array("g/x", shape=(4,), dtype="int8")[:] = 1
    del root["g"]
    assert "g" not in root and list(any_store.list_prefix("g/")) == []
    with pytest.raises(NodeNotFoundError):
        del root["g"]


def test_require_array_checks_existing(any_store):
    root = tz.open_group(any_store, mode="w")
    a = root.require_array("x", shape=(3,), dtype="int16")
    assert root.require_array("x", shape=(3,), dtype="int16").path == a.path
    with pytest.raises(NodeExistsError, match="shape"):
        root.require_array("x", shape=(4,), dtype="int16")
    with pytest.raises(NodeExistsError, match="dtype"):
        root.require_array("x", shape=(3,), dtype="int32")
    assert root.require_array("x", shape=3, dtype="int16").path == a.path  # an int shape
    with pytest.raises(NodeExistsError, match="shape"):
        root.require_array("x", shape=4)


def test_require_array_checks_the_shape_and_dtype_of_data():
    root = tz.open_group(tz.MemoryStore(), mode="w")
    x = root.create_array("x", shape=(4,), dtype=torch.int32)
    with pytest.raises(NodeExistsError, match=r"array /x exists with shape \(4,\), not \(10,\)"):
        root.require_array("x", data=torch.ones(10, dtype=torch.int32))
    with pytest.raises(NodeExistsError, match=r"array /x exists with dtype torch\.int32"):
        root.require_array("x", data=torch.ones(4, dtype=torch.float64))
    with pytest.raises(NodeExistsError, match="dtype"):
        root.require_array("x", data=[1, 2, 3, 4])  # int64, as create_array would make it
    with pytest.raises(tz.errors.ShapeMismatchError):  # as create_array(shape=, data=)
        root.require_array("x", shape=(4,), data=[1, 2, 3])
    # an explicit dtype is what create_array would use (it casts the data)
    same = root.require_array("x", data=torch.ones(4, dtype=torch.float64), dtype="int32")
    assert same.path == x.path and x[:].tolist() == [0, 0, 0, 0]  # its data kept
    assert root.require_array("x", data=np.ones(4, dtype=np.int32)).path == x.path
    assert root.require_array("x", data=root["x"]).path == x.path  # an Array: its own


@pytest.mark.parametrize("bad", [1.5, True, "1", [1]])
def test_member_depths_must_be_none_or_a_whole_number(bad):
    root = tz.open_group(tz.MemoryStore(), mode="w")
    root.create_array("a/b/x", shape=(2,), dtype="int8")
    with pytest.raises(tz.errors.ArgumentTypeError, match="max_depth must be None or an int"):
        root.members(max_depth=bad)
    with pytest.raises(tz.errors.ArgumentTypeError, match="max_depth must be None or an int"):
        root.nmembers(max_depth=bad)
    with pytest.raises(tz.errors.ArgumentTypeError, match="level must be None or an int"):
        root.tree(level=bad)
    with pytest.raises(tz.errors.InvalidArgumentError, match="max_depth must be >= 0, got -1"):
        root.nmembers(max_depth=-1)
    with pytest.raises(tz.errors.InvalidArgumentError, match="level must be >= 0, got -1"):
        root.tree(level=-1)
    assert root.nmembers(max_depth=np.int64(1)) == 2 and root.nmembers(max_depth=None) == 3


def test_assigning_a_group_is_refused_and_an_array_copied():
    root = tz.open_group(tz.MemoryStore(), mode="w")
    root["x"] = torch.arange(3)
    sub = root.create_group("sub")
    with pytest.raises(tz.errors.ArgumentTypeError, match="cannot assign group /sub to 'y'"):
        root["y"] = sub
    with pytest.raises(TypeError, match=r"cannot assign None to 'x'.*del group"):
        root["x"] = None  # zarr-python: a TypeError too
    assert "y" not in root and root["x"][:].tolist() == [0, 1, 2]
    root["y"] = root["x"]
    assert root["y"][:].tolist() == [0, 1, 2]


def test_create_array_from_data_takes_its_shape_and_dtype(any_store):
    arr = tz.create_array(
        any_store, path="i", data=torch.arange(6, dtype=torch.int16).reshape(2, 3)
    )
    assert arr.shape == (2, 3) and arr.dtype == torch.int16
    assert arr[:].tolist() == [[0, 1, 2], [3, 4, 5]]
    cast = tz.create_array(any_store, path="f", data=[[1.5, 2.5]], dtype=torch.float16)
    assert cast.dtype == torch.float16 and cast[:].tolist() == [[1.5, 2.5]]
    assert tz.create_array(any_store, path="s", data=np.float32(2))[()].item() == 2.0
    bf16 = tz.create_array(any_store, path="b", data=torch.ones(3, dtype=torch.bfloat16))
    again = tz.create_array(any_store, path="b2", data=bf16)  # an Array: its own dtype
    assert again.dtype == torch.bfloat16 and torch.equal(again[:], bf16[:])
    with pytest.raises(tz.errors.ShapeMismatchError, match=r"\(3,\).*\(2,\)"):
        tz.create_array(any_store, path="m", shape=(3,), data=[1, 2])
    with pytest.raises(tz.errors.InvalidArgumentError, match="shape= and dtype="):
        tz.create_array(any_store, path="n", shape=(3,))
    for ragged in ([[1, 2], [3]], [[1], [2, [3]]]):
        with pytest.raises(tz.errors.ShapeMismatchError, match="not rectangular: create_array"):
            tz.create_array(any_store, path="r", data=ragged)
        with pytest.raises(tz.errors.ShapeMismatchError, match="not rectangular"):
            tz.open_group(any_store)["r"] = ragged
    assert "r" not in tz.open_group(any_store)


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_fill_value_as_text_for_floats(tmp_path, zarr_format):
    import zarr

    for i, (text, dtype) in enumerate(
        [("NaN", "float32"), ("Infinity", "float64"), ("-Infinity", "float16")]
    ):
        arr = tz.create_array(
            tmp_path,
            path=f"a{i}",
            shape=(2,),
            dtype=dtype,
            fill_value=text,
            zarr_format=zarr_format,
        )
        expected = float(text.replace("Infinity", "inf"))
        np.testing.assert_array_equal(arr[:].numpy(), np.full(2, expected, dtype=dtype))
        theirs = zarr.open_array(str(tmp_path / f"a{i}"), mode="r")
        np.testing.assert_array_equal(theirs.fill_value, np.array(expected, dtype=dtype))
    with pytest.raises(tz.errors.MetadataError, match="does not fit dtype int32"):
        tz.create_array(tmp_path, path="i", shape=(2,), dtype="int32", fill_value="NaN")


def test_create_array_from_bad_data_changes_nothing(any_store):
    keep = tz.create_array(any_store, path="keep", data=torch.ones(2))
    with pytest.raises(tz.errors.ValueRangeError):
        tz.create_array(any_store, path="keep", data=[300], dtype=torch.uint8, overwrite=True)
    assert torch.equal(tz.open_array(any_store, path="keep")[:], torch.ones(2))
    assert "keep" in tz.open_group(any_store) and keep.shape == (2,)


def test_group_setitem_nmembers_and_update_attributes(any_store):
    root = tz.open_group(any_store, mode="w")
    root["x"] = torch.arange(3)
    root["sub/y"] = np.ones((2, 2), dtype=np.float32)
    root["x"] = [7, 8]  # replaces, as in zarr-python
    assert root["x"][:].tolist() == [7, 8] and root["sub/y"].dtype == torch.float32
    assert root.nmembers() == 2 and root.nmembers(max_depth=None) == 3
    assert root.update_attributes({"a": 1}) is root and dict(root.attrs) == {"a": 1}
    with pytest.raises(ReadOnlyError):
        tz.open_group(any_store, mode="r")["z"] = [1]


@pytest.mark.parametrize("use_consolidated", [None, False])
def test_asking_for_the_other_format_finds_nothing_and_says_what_is_there(
    tmp_path, use_consolidated
):
    root = tz.open_group(tmp_path, mode="w", zarr_format=3)
    root.create_array("x", shape=(2,), dtype="int8")
    tz.consolidate_metadata(tmp_path)
    with pytest.raises(GroupNotFoundError, match="a group of Zarr v3 is there, and zarr_format=2"):
        tz.open_group(tmp_path, mode="r", zarr_format=2, use_consolidated=use_consolidated)
    with pytest.raises(ArrayNotFoundError, match="an array of Zarr v3 is there"):
        tz.open_array(tmp_path, path="x", mode="r", zarr_format=2)
    with pytest.raises(ArrayNotFoundError, match=r"pass shape= and dtype=, or data=, to create"):
        tz.open_array(tmp_path, path="y")  # mode "a" could create it, given a shape
    assert tz.open_array(tmp_path, path="y", data=[1, 2])[:].tolist() == [1, 2]


def test_mode_w_minus_refuses_a_path_holding_keys_without_metadata(any_store):
    root = tz.open_group(any_store, mode="w")
    stale = root.create_array("x", shape=(4,), dtype="int64", chunks=(4,), fill_value=0)
    del tz.open_group(any_store, mode="a")["x"]
    stale[:] = torch.tensor([11, 22, 33, 44])  # a handle of the deleted array: a chunk alone
    orphans = sorted(any_store.list_prefix("x/"))
    assert orphans and "x" not in root
    with pytest.raises(NodeExistsError, match=r"'x' .*mode 'w-': keys already exist"):
        tz.open_array(any_store, path="x", mode="w-", shape=(4,), dtype="int64", chunks=(4,))
    with pytest.raises(NodeExistsError, match=r"'x' .*mode 'w-'"):
        tz.open_group(any_store, path="x", mode="w-")
    assert sorted(any_store.list_prefix("x/")) == orphans and "x" not in root
    fresh = tz.open_array(any_store, path="x", mode="w", shape=(4,), dtype="int64", chunks=(4,))
    assert fresh[:].tolist() == [0, 0, 0, 0]  # "w" clears them first
    assert tz.open_array(any_store, path="y", mode="w-", data=[1, 2])[:].tolist() == [1, 2]


def test_mode_w_minus_refuses_a_store_holding_other_files(tmp_path):
    (tmp_path / "notes.txt").write_text("kept")
    with pytest.raises(NodeExistsError, match=r"'/' .*mode 'w-'"):
        tz.open_group(tmp_path, mode="w-")
    with pytest.raises(NodeExistsError, match="mode 'w-'"):
        tz.open(tmp_path, mode="w-")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_creating_without_overwrite_keeps_keys_no_metadata_owns(any_store):
    # As zarr-python: only a node is refused, and "w" or "w-" are the modes that look further.
    any_store.set("x/c/0", b"\x00" * 8)
    arr = tz.create_array(any_store, path="x", shape=(1,), dtype="int64", chunks=(1,))
    assert any_store.get("x/c/0") is not None and arr.nchunks_initialized == 1


def test_attribute_dict_keys_must_be_str_at_any_depth(any_store):
    root = tz.open_group(any_store, mode="w", attributes={"kept": 1})
    document = any_store.get("zarr.json")
    for value, where in (
        ({0: "cat", 1: "dog"}, r"attribute 'labels': key 0 \(int\)"),
        ({1: "int-key", "1": "str-key"}, r"attribute 'labels': key 1 \(int\)"),
        ({"a": [{"b": {None: 1}}]}, r"attribute 'labels'\['a'\]\[0\]\['b'\]: key None"),
        ({"ok": {(1, 2): "x"}}, r"attribute 'labels'\['ok'\]: key \(1, 2\) \(tuple\)"),
    ):
        with pytest.raises(AttributeValueError, match=where):
            root.attrs["labels"] = value
    with pytest.raises(AttributeValueError, match="'classes'"):
        tz.create_group(any_store, path="g", attributes={"classes": {0: "cat"}})
    with pytest.raises(AttributeValueError, match="'classes'"):
        tz.create_array(
            any_store, path="a", shape=(1,), dtype="int8", attributes={"classes": {0: 1}}
        )
    assert any_store.get("zarr.json") == document and list(root) == []  # nothing written
    root.attrs["labels"] = {"0": "cat"}
    assert tz.open_group(any_store, mode="r").attrs["labels"] == {"0": "cat"}


def test_a_tensor_without_values_is_refused_as_an_attribute(any_store):
    root = tz.open_group(any_store, mode="w")
    with pytest.raises(AttributeValueError, match="'m': a tensor on the meta device"):
        root.attrs["m"] = torch.empty(2, device="meta")
    with pytest.raises(AttributeValueError, match=r"'nested'\[1\]: a tensor on the meta"):
        root.attrs["nested"] = [1, torch.empty(2, device="meta")]
    with pytest.raises(AttributeValueError, match="'sparse': tensor has no list of values"):
        root.attrs["sparse"] = torch.eye(2).to_sparse()
    assert dict(root.attrs) == {}


def test_opening_as_the_other_format_says_what_is_there(any_store):
    root = tz.open_group(any_store, mode="w", zarr_format=3)
    root.create_group("s")
    with pytest.raises(NodeNotFoundError, match="a group of Zarr v3 is there, and zarr_format=2"):
        tz.open(any_store, mode="r", zarr_format=2)
    with pytest.raises(NodeExistsError, match="a group of Zarr v3 already exists at '/'"):
        tz.open_group(any_store, mode="a", zarr_format=2)
    with pytest.raises(NodeExistsError, match="a group of Zarr v3 already exists at '/'"):
        tz.open_array(any_store, mode="a", zarr_format=2, shape=(1,), dtype="int8")
    with pytest.raises(NodeExistsError, match=r"^a group already exists at 's'"):
        tz.create_group(any_store, path="s")  # same format: no note


@pytest.mark.parametrize("mode", ["a", "w-"])
def test_a_node_already_there_is_named_before_the_format_of_its_group(tmp_path, mode):
    tz.open_group(tmp_path, mode="w", zarr_format=2).create_array("a", shape=(2,), dtype="int8")
    with pytest.raises(NodeExistsError, match="an array of Zarr v2 already exists at 'a'"):
        tz.open_array(tmp_path, path="a", mode=mode, shape=(1,), dtype="int8", zarr_format=3)
    assert tz.open_array(tmp_path, path="a").shape == (2,)


def test_attribute_values_that_hold_themselves_are_refused_naming_the_attribute(any_store):
    root = tz.open_group(any_store, mode="w", attributes={"kept": 1})
    document = any_store.get("zarr.json")
    loop: list = []
    loop.append(loop)
    mapping: dict = {"k": None}
    mapping["k"] = {"inner": [mapping]}
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    for name, value, message in (
        ("loop", loop, r"attribute 'loop'\[0\]: .*circular"),
        ("mapping", mapping, r"attribute 'mapping'\['k'\]\['inner'\]\[0\]: .*circular"),
        ("deep", deep, r"attribute 'deep': .*nested more than 900 levels deep"),
    ):
        with pytest.raises(AttributeValueError, match=message):
            root.attrs[name] = value
    with pytest.raises(AttributeValueError, match="'loop'"):
        tz.create_array(any_store, path="a", shape=(1,), dtype="int8", attributes={"loop": loop})
    assert any_store.get("zarr.json") == document and list(root) == []  # nothing written
    shared = [1, 2]
    root.attrs["shared"] = {"a": shared, "b": [shared, shared]}  # repeated, not circular
    assert root.attrs["shared"] == {"a": [1, 2], "b": [[1, 2], [1, 2]]}


@pytest.mark.parametrize("mode", ["w", "w-", "a"])
def test_open_with_array_arguments_opens_or_creates_an_array_as_open_array(any_store, mode):
    arr = tz.open(any_store, mode=mode, path="x", shape=(3,), dtype="float32", chunks=(2,))
    assert isinstance(arr, tz.Array) and arr.shape == (3,) and arr.chunks == (2,)
    arr[:] = torch.tensor([1.0, 2.0, 3.0])
    if mode == "a":  # an existing array is opened as it is
        again = tz.open(any_store, mode="a", path="x", shape=(9,), dtype="int8")
        assert again.shape == (3,) and again[:].tolist() == [1.0, 2.0, 3.0]
    made = tz.open(tz.MemoryStore(), mode="w", data=torch.arange(4), zarr_format=2)
    assert made.zarr_format == 2 and made[:].tolist() == [0, 1, 2, 3]


def test_open_refuses_keyword_arguments_no_array_takes_naming_them(any_store):
    for call in (tz.open, tz.open_array):
        with pytest.raises(tz.errors.ArgumentTypeError, match=r"shpae.*shape") as info:
            call(any_store, mode="w", shpae=(3,), dtype="float32")
        assert isinstance(info.value, TypeError)
    with pytest.raises(tz.errors.ArgumentTypeError, match="overwrite"):
        tz.open(any_store, mode="w", shape=(3,), dtype="float32", overwrite=True)
    assert list(any_store.list_prefix("")) == []  # nothing created
    with pytest.raises(ArrayNotFoundError, match="no array at '/'"):
        tz.open(any_store, mode="r+", shape=(3,), dtype="float32")  # r+ creates nothing
