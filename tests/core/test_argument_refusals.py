"""Bad arguments to array and group calls (attributes, hierarchy specs, axis names, block
slices, dtypes) raise torchzarr errors naming them, before anything is written."""

from __future__ import annotations

import pytest
import torch

import torchzarr as tz
from torchzarr.errors import ArgumentTypeError, SelectionError, UnsupportedDtypeError


@pytest.mark.parametrize("node", ["array", "group"])
@pytest.mark.parametrize("bad", [None, 1.5, [1, 2], object(), "", ()])
def test_update_attributes_takes_only_a_mapping(node, bad):
    store = tz.MemoryStore()
    made = (
        tz.create_array(store, shape=(2,), dtype="int8", attributes={"a": 1})
        if node == "array"
        else tz.create_group(store, attributes={"a": 1})
    )
    before = dict(store._data)
    with pytest.raises(ArgumentTypeError, match="new_attributes must be a mapping"):
        made.update_attributes(bad)
    assert dict(store._data) == before and dict(made.attrs) == {"a": 1}


@pytest.mark.parametrize("bad", [None, 1.5, [1, 2], object()])
def test_attrs_update_refuses_what_is_no_mapping_nor_pairs(bad):
    arr = tz.create_array("memory://", shape=(2,), dtype="int8")
    with pytest.raises(ArgumentTypeError, match=r"attrs\.update takes a mapping"):
        arr.attrs.update(bad)
    arr.attrs.update([("k", 1)], j=2)  # pairs and keywords, as dict.update takes them
    assert dict(arr.attrs) == {"k": 1, "j": 2}


@pytest.mark.parametrize("bad", [None, [("a", {})], "a", 3])
def test_create_hierarchy_takes_only_a_mapping(bad):
    store = tz.MemoryStore()
    root = tz.open_group(store, mode="w")
    before = dict(store._data)
    with pytest.raises(ArgumentTypeError, match="specs must be a mapping"):
        root.create_hierarchy(bad)
    assert dict(store._data) == before


@pytest.mark.parametrize(
    "make",
    [
        lambda names: tz.create_array(
            tz.MemoryStore(), shape=(4,), dtype="u1", dimension_names=names
        ),
        lambda names: tz.from_array(tz.MemoryStore(), data=torch.ones(4), dimension_names=names),
    ],
)
def test_dimension_names_must_be_a_sequence(make):
    with pytest.raises(ArgumentTypeError, match="dimension_names must be a sequence"):
        make(3)
    assert make(iter(["x"])).dimension_names == ("x",)  # any iterable, read once


@pytest.mark.parametrize("bad", [slice(None, None, 0), slice(0.5, 2), slice("a", "b")])
def test_block_slices_that_are_no_slices_of_ints_are_selection_errors(bad):
    arr = tz.create_array("memory://", shape=(40,), chunks=(4,), dtype="int64")
    for call in (
        lambda: arr.blocks[bad],
        lambda: arr.get_block_selection(bad),
        lambda: arr.set_block_selection(bad, 1),
    ):
        with pytest.raises(SelectionError, match="invalid block slice"):
            call()
    assert int(arr[:].abs().sum()) == 0


@pytest.mark.parametrize("bad", [range(1, 3), [0, 2], torch.tensor([0, 2])])
def test_block_index_lists_are_refused_as_lists_not_as_arrays(bad):
    """zarr-python refuses them too; the message names what the user wrote."""
    arr = tz.create_array("memory://", shape=(40,), chunks=(4,), dtype="int64")
    with pytest.raises(SelectionError, match="got an index list or array on axis 0"):
        arr.blocks[bad]


@pytest.mark.parametrize("bad", [torch.tensor(3), torch.ones(2), "a1,,"])
def test_a_dtype_that_is_data_or_unparsable_is_an_unsupported_dtype(bad):
    store = tz.MemoryStore()
    with pytest.raises(UnsupportedDtypeError, match="unsupported dtype"):
        tz.create_array(store, shape=(2,), dtype=bad)
    assert not list(store.list_prefix(""))
    features = tz.FeatureStore(tz.MemoryStore(), mode="w")
    with pytest.raises(UnsupportedDtypeError, match="feature 'x': unsupported dtype"):
        features.create_feature("x", bad)
