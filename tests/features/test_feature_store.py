"""Tests of FeatureStore: upserts, gathers by id, missing ids, prefetch, reopening."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import torchzarr as tz
from torchzarr.dtypes import all_data_types
from torchzarr.errors import (
    ArrayNotFoundError,
    GroupNotFoundError,
    InvalidArgumentError,
    InvalidKeyError,
    MetadataError,
    MissingIdError,
    ReadOnlyError,
    ShapeMismatchError,
    UnsupportedDtypeError,
    ValueRangeError,
)
from torchzarr.features import FeatureBatch, FeatureStore
from torchzarr.features.index import collate_feature_batches
from torchzarr.tensors import torch_dtype


def _store(tmp_path: Path, **kwargs: object) -> FeatureStore:
    return FeatureStore(tz.LocalStore(str(tmp_path / "fs")), mode="w", **kwargs)  # type: ignore[arg-type]


def test_write_then_read_in_caller_order_with_duplicates() -> None:
    fs = FeatureStore(tz.MemoryStore(), mode="w")
    emb = torch.arange(12, dtype=torch.float32).reshape(4, 3)
    fs.write(torch.tensor([40, 10, 30, 20]), {"emb": emb, "label": torch.tensor([4, 1, 3, 2])})
    got = fs.read([20, 40, 20, 10])
    assert isinstance(got, FeatureBatch)
    assert torch.equal(got["emb"], emb[[3, 0, 3, 1]])
    assert got["label"].tolist() == [2, 4, 2, 1]
    assert got.mask.tolist() == [True] * 4
    assert len(fs) == 4 and fs.ids.tolist() == [40, 10, 30, 20]
    assert fs.features == ("emb", "label")
    assert 30 in fs and 31 not in fs and "30" not in fs


def test_upsert_overwrites_known_ids_and_appends_new_ones() -> None:
    fs = FeatureStore(tz.MemoryStore(), mode="w", chunk_bytes=16)
    fs.write([1, 2, 3], {"x": torch.tensor([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])})
    fs.write([3, 9, 1], {"x": torch.tensor([[30.0, 30.0], [90.0, 90.0], [10.0, 10.0]])})
    assert fs.ids.tolist() == [1, 2, 3, 9]
    assert fs.read([1, 2, 3, 9])["x"][:, 0].tolist() == [10.0, 2.0, 30.0, 90.0]
    assert fs.version == 2


def test_last_occurrence_of_a_repeated_id_wins() -> None:
    fs = FeatureStore(tz.MemoryStore(), mode="w")
    fs.write([5, 5, 6], {"v": torch.tensor([1, 2, 3])})
    assert fs.read([5, 6])["v"].tolist() == [2, 3]
    assert len(fs) == 2


def test_new_feature_on_existing_rows_gets_fill_and_grows_with_appends() -> None:
    fs = FeatureStore(tz.MemoryStore(), mode="w")
    fs.write([1, 2], {"a": torch.tensor([1.0, 2.0])})
    fs.write([2, 3], {"b": torch.tensor([[True], [True]])})
    got = fs.read([1, 2, 3])
    assert got["a"].tolist() == [1.0, 2.0, 0.0]
    assert got["b"].tolist() == [[False], [True], [True]]
    assert fs.array("b").dtype == torch.bool and fs.array("a").shape == (3,)


def test_dtype_and_row_shape_come_from_the_data_and_chunks_suit_gathers() -> None:
    fs = FeatureStore(tz.MemoryStore(), mode="w", chunk_bytes=64 << 10)
    fs.write(list(range(3)), {"img": torch.zeros(3, 4, 8, dtype=torch.bfloat16)})
    arr = fs.array("img")
    assert arr.dtype == torch.bfloat16 and arr.shape == (3, 4, 8)
    assert arr.chunks == (1024, 4, 8)  # 64 KiB of 64-byte rows
    assert fs.read([2])["img"].dtype == torch.bfloat16


def test_missing_ids_raise_a_key_error_naming_the_first_ones() -> None:
    fs = FeatureStore(tz.MemoryStore(), mode="w")
    fs.write([1], {"v": torch.tensor([1])})
    with pytest.raises(KeyError) as info:
        fs.read([1, 77, 78])
    assert isinstance(info.value, MissingIdError)
    assert "2 of 3 ids" in str(info.value) and "[77, 78]" in str(info.value)


def test_missing_fill_returns_fill_values_and_a_mask() -> None:
    fs = FeatureStore(tz.MemoryStore(), mode="w")
    fs.write([1, 2], {"v": torch.tensor([5.0, 6.0])})
    fs.create_feature("w", dtype=torch.float32, fill_value=-1.0)
    got = fs.read([2, 99, 1], missing="fill")
    assert got["v"].tolist() == [6.0, 0.0, 5.0]
    assert got["w"].tolist() == [-1.0, -1.0, -1.0]
    assert got.mask.tolist() == [True, False, True]
    with pytest.raises(ValueError, match="missing"):
        fs.read([1], missing="skip")


def test_dataloader_default_collation_keeps_every_samples_mask() -> None:
    fs = FeatureStore(tz.MemoryStore(), mode="w")
    fs.write([1, 2], {"x": torch.tensor([1.0, 2.0]), "e": torch.ones(2, 3)})
    asked = [[1, 99], [98, 2], [2, 1], [97, 96]]

    class Batches(torch.utils.data.Dataset[FeatureBatch]):
        def __len__(self) -> int:
            return len(asked)

        def __getitem__(self, i: int) -> FeatureBatch:
            return fs.read(asked[i], missing="fill")

    batch = next(iter(torch.utils.data.DataLoader(Batches(), batch_size=4, num_workers=0)))
    assert isinstance(batch, FeatureBatch)
    assert batch.mask.tolist() == [[True, False], [False, True], [True, True], [False, False]]
    assert batch["x"].tolist() == [[1.0, 0.0], [0.0, 2.0], [2.0, 1.0], [0.0, 0.0]]
    assert batch["e"].shape == (4, 2, 3) and batch["e"][3].sum() == 0
    odd = fs.read([1], "x")
    with pytest.raises(InvalidArgumentError, match=r"features \['x', 'e'\] with one of \['x'\]"):
        torch.utils.data.default_collate([fs.read([1]), odd])
    with pytest.raises(InvalidArgumentError, match="a sample that is a dict"):
        torch.utils.data.default_collate([fs.read([1]), dict(fs.read([1]))])
    swapped = collate_feature_batches([fs.read([1], ["x", "e"]), fs.read([2], ["e", "x"])])
    assert swapped["x"].tolist() == [[1.0], [2.0]] and swapped.mask.shape == (2, 1)


def test_pinning_a_feature_batch_pins_its_mask_too(monkeypatch: pytest.MonkeyPatch) -> None:
    from torch.utils.data._utils.pin_memory import pin_memory

    pinned: list[torch.Tensor] = []

    def recorded(tensor: torch.Tensor, *args: object) -> torch.Tensor:
        pinned.append(tensor.clone())  # no CUDA here: a copy stands for the pinned one
        return pinned[-1]

    monkeypatch.setattr(torch.Tensor, "pin_memory", recorded)
    fs = FeatureStore(tz.MemoryStore(), mode="w")
    fs.write([1], {"x": torch.tensor([1.0])})
    batch = pin_memory(fs.read([1, 5], missing="fill"))  # what a DataLoader's pinning calls
    assert isinstance(batch, FeatureBatch)
    assert any(batch.mask is tensor for tensor in pinned)
    assert any(batch["x"] is tensor for tensor in pinned)


def test_features_subset_unknown_feature_and_empty_batch() -> None:
    fs = FeatureStore(tz.MemoryStore(), mode="w")
    fs.write([1, 2], {"a": torch.tensor([1, 2]), "b": torch.tensor([[1, 1], [2, 2]])})
    assert list(fs.read([2], features=["b"])) == ["b"]
    with pytest.raises(ArrayNotFoundError, match="'c'"):
        fs.read([1], features=["c"])
    empty = fs.read([])
    assert empty["b"].shape == (0, 2) and empty.mask.shape == (0,)


def test_out_tensors_are_filled_in_place() -> None:
    fs = FeatureStore(tz.MemoryStore(), mode="w")
    fs.write([1, 2, 3], {"v": torch.tensor([[1.0], [2.0], [3.0]])})
    for ids in ([1, 2, 3], [3, 1, 1]):  # direct read and gathered read
        out = torch.empty(3, 1)
        got = fs.read(ids, out={"v": out})
        assert got["v"] is out and out[:, 0].tolist() == [float(i) for i in ids]
    with pytest.raises(ShapeMismatchError, match="out for feature 'v'"):
        fs.read([1, 2], out={"v": torch.empty(3, 1)})


def test_pin_memory_is_accepted_without_cuda() -> None:
    fs = FeatureStore(tz.MemoryStore(), mode="w")
    fs.write([1, 2], {"v": torch.tensor([1, 2])})
    assert fs.read([2, 1], pin_memory=True)["v"].tolist() == [2, 1]


def test_prefetch_result_is_used_by_the_matching_read(monkeypatch: pytest.MonkeyPatch) -> None:
    fs = FeatureStore(tz.MemoryStore(), mode="w")
    fs.write([1, 2, 3], {"v": torch.tensor([1, 2, 3])})
    fs.prefetch([3, 1])
    pending = fs._ahead._pending
    assert pending is not None
    expected = pending[2].result()
    calls: list[object] = []
    monkeypatch.setattr(fs, "_read", lambda *a, **k: calls.append(a))
    assert fs.read([3, 1]) is expected and calls == []
    fs.prefetch([3, 1])
    fs.read([1, 3])  # different ids: the prefetched batch is ignored, a fresh read runs
    assert len(calls) == 1
    fs.close()


def test_prefetch_discarded_after_a_write_and_errors_surface_on_read() -> None:
    with FeatureStore(tz.MemoryStore(), mode="w") as fs:
        fs.write([1], {"v": torch.tensor([1])})
        fs.prefetch([1])
        fs._ahead._pending[2].result()  # type: ignore[index]
        fs.write([1], {"v": torch.tensor([5])})
        assert fs.read([1])["v"].tolist() == [5]
        fs.prefetch([1, 404])
        with pytest.raises(MissingIdError, match="404"):
            fs.read([1, 404])


def test_bad_writes_raise_clear_errors() -> None:
    fs = FeatureStore(tz.MemoryStore(), mode="w")
    fs.write([1, 2], {"v": torch.zeros(2, 3)})
    with pytest.raises(ShapeMismatchError, match="one row per id"):
        fs.write([1, 2], {"v": torch.zeros(3, 3)})
    with pytest.raises(ShapeMismatchError, match=r"rows of shape \(3,\)"):
        fs.write([1, 2], {"v": torch.zeros(2, 4)})
    with pytest.raises(InvalidKeyError, match="ids"):
        fs.write([1], {"ids": torch.zeros(1)})
    with pytest.raises(InvalidKeyError, match="a/b"):
        fs.write([1], {"a/b": torch.zeros(1)})
    with pytest.raises(ShapeMismatchError, match="at least one feature"):
        fs.write([1], {})
    with pytest.raises(UnsupportedDtypeError, match="feature 'name': values of dtype <U3"):
        fs.write([1, 2], {"name": ["abc", "de"]})
    with pytest.raises(ValueRangeError, match=f"feature 'big': cannot store int {2**70}"):
        fs.write([1, 2], {"big": [2**70, 1]})  # as the docs say: no "values of dtype object"
    assert fs.version == 1 and len(fs) == 2


def test_values_a_feature_dtype_cannot_hold_are_refused_and_nothing_changes() -> None:
    fs = FeatureStore(tz.MemoryStore(), mode="w")
    start = {
        "label": torch.tensor([1, 2], dtype=torch.int32),
        "u8": torch.tensor([1, 2], dtype=torch.uint8),
        "half": torch.tensor([1.0, 2.0], dtype=torch.float16),
        "flag": torch.tensor([True, False]),
    }
    fs.write([1, 2], start)
    refused = [
        ("label", torch.tensor([2**40, 7]), "range from 7 to 1099511627776"),
        ("u8", torch.tensor([300, 5]), "range from 5 to 300"),
        ("u8", [-1, 5], "range from -1 to 5"),
        ("label", torch.tensor([2.7, 1.0]), "non-integral"),
        ("label", torch.tensor([float("nan"), 1.0]), "non-finite"),
        ("half", torch.tensor([1e6, 1.0]), "range from 1.0 to 1000000.0"),
        ("flag", torch.tensor([2, 0]), "range from 0 to 2"),
    ]
    for name, value, message in refused:
        with pytest.raises(ValueRangeError, match=f"feature '{name}' of .*{message}"):
            fs.write([2, 3], {name: value})
    assert len(fs) == 2 and fs.version == 1  # nothing was written
    # casts that keep the values are taken: in-range ints, whole floats, inf stays inf
    fs.write(
        [1, 2],
        {
            "label": torch.tensor([2**31 - 1, -(2**31)]),
            "u8": torch.tensor([255.0, 0.0]),
            "half": torch.tensor([float("inf"), 0.5], dtype=torch.float64),
            "flag": torch.tensor([0, 1]),
        },
    )
    got = fs.read([1, 2])
    assert got["label"].tolist() == [2**31 - 1, -(2**31)] and got["u8"].tolist() == [255, 0]
    assert got["half"].tolist() == [float("inf"), 0.5] and got["flag"].tolist() == [False, True]


def test_an_existing_store_opens_in_its_own_format(tmp_path: Path) -> None:
    path = str(tmp_path / "fs2")
    FeatureStore(path, mode="w", zarr_format=2).write([1], {"v": torch.ones(1, 3)})
    for mode in ("r", "r+", "a"):
        fs = FeatureStore(path, mode=mode)
        assert fs.group.zarr_format == 2 and fs.read([1])["v"].tolist() == [[1.0] * 3]
    with pytest.raises(GroupNotFoundError, match="zarr_format=3"):
        FeatureStore(path, mode="r", zarr_format=3).read([1])
    assert FeatureStore(tz.MemoryStore(), mode="w").group.zarr_format == 3  # new: v3


EVERY_DTYPE = [torch_dtype(dt) for dt in all_data_types()]  # float8 kinds included


@pytest.mark.parametrize("row_shape", [(), (3,)], ids=["scalar rows", "vector rows"])
@pytest.mark.parametrize("dtype", EVERY_DTYPE, ids=str)
def test_every_dtype_is_written_upserted_and_gathered(dtype, row_shape) -> None:
    values = (torch.arange(4 * max(1, sum(row_shape))) % 7).reshape(4, *row_shape)
    values = values.to(torch.float32).to(dtype)
    fs = FeatureStore(tz.MemoryStore(), mode="w")
    fs.write([10, 11, 12, 13], {"f": values})
    fs.write([12, 14], {"f": values[[0, 1]]})  # one known id overwritten, one appended
    got = fs.read([14, 12, 10])["f"]
    expected = torch.stack([values[1], values[0], values[0]])
    assert got.dtype == dtype and got.shape == (3, *row_shape)
    assert torch.equal(got.view(torch.uint8), expected.view(torch.uint8))  # bit for bit


def test_numpy_features_of_any_layout_and_byte_order_are_taken() -> None:
    fs = FeatureStore(tz.MemoryStore(), mode="w")
    big_endian = np.array([1.5, 2.5], dtype=">f4")
    fs.write([1, 2], {"x": big_endian, "rev": np.arange(4)[::-2], "u": np.array([3, 4], ">u2")})
    got = fs.read([2, 1])
    assert got["x"].tolist() == [2.5, 1.5] and got["rev"].tolist() == [1, 3]
    assert got["u"].dtype == torch.uint16 and got["u"].tolist() == [4, 3]


def test_reopen_read_only_and_pickle(tmp_path: Path) -> None:
    fs = _store(tmp_path)
    fs.write([4, 8], {"v": torch.tensor([[4.0], [8.0]])})
    ro = FeatureStore(str(tmp_path / "fs"), mode="r")
    assert ro.read([8])["v"].tolist() == [[8.0]]
    with pytest.raises(ReadOnlyError):
        ro.write([1], {"v": torch.zeros(1, 1)})
    clone = pickle.loads(pickle.dumps(fs))
    assert clone.read([4, 8])["v"][:, 0].tolist() == [4.0, 8.0]
    assert len(pickle.loads(pickle.dumps(fs))) == 2  # a "w" store is not wiped on unpickle
    small = tz.ChunkCache(max_bytes=1 << 10)
    shared = FeatureStore(str(tmp_path / "fs"), mode="r", cache=small)
    assert pickle.loads(pickle.dumps(shared))._cache is small  # the cache it was given


def test_other_instances_see_published_writes_after_refresh(tmp_path: Path) -> None:
    writer = _store(tmp_path)
    writer.write([1], {"v": torch.tensor([1])})
    reader = FeatureStore(str(tmp_path / "fs"), mode="r")
    assert reader.read([1])["v"].tolist() == [1]
    writer.write([2], {"v": torch.tensor([2])})
    writer.write([1], {"v": torch.tensor([10])})
    assert reader.read([2])["v"].tolist() == [2]  # an unknown id triggers a refresh
    assert reader.read([1])["v"].tolist() == [10]  # and the refresh dropped cached chunks
    assert reader.refresh() is False


def test_a_read_of_a_feature_another_instance_published_since_refreshes(tmp_path: Path) -> None:
    writer = _store(tmp_path)
    writer.write([1], {"v": torch.tensor([1])})
    reader = FeatureStore(str(tmp_path / "fs"), mode="r")
    assert reader.read([1])["v"].tolist() == [1]
    writer.write([1], {"w": torch.tensor([5.0])})  # a new feature of known ids
    assert reader.read([1], ["w"])["w"].tolist() == [5.0]
    with pytest.raises(ArrayNotFoundError, match="no feature 'x' in the feature store"):
        reader.read([1], ["x"])  # after that refresh, still unknown


def test_unpublished_rows_from_a_failed_write_do_not_leak() -> None:
    fs = FeatureStore(tz.MemoryStore(), mode="w")
    fs.write([1], {"a": torch.tensor([1]), "b": torch.tensor([1])})
    fs.array("b").append(torch.tensor([99]))  # as if a write died before publishing
    assert len(fs) == 1
    fs.write([2], {"a": torch.tensor([2])})
    assert fs.read([2])["b"].tolist() == [0]


def test_not_a_feature_store() -> None:
    store = tz.MemoryStore()
    root = tz.open_group(store, mode="w")
    root.create_array("x", shape=(2,), dtype=torch.int8, chunks=(2,))
    with pytest.raises(MetadataError, match="not a feature store"):
        len(FeatureStore(store, mode="a"))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("num_rows", -1, "its num_rows must be >= 0, got -1"),
        ("num_rows", 2.9, "its num_rows must be an int, got 2.9"),
        ("num_rows", "3", "its num_rows must be an int, got '3'"),
        ("num_rows", True, "its num_rows must be an int, got True"),
        ("version", "1", "its version must be an int, got '1'"),
    ],
)
def test_a_published_row_count_or_version_that_is_not_a_whole_number_is_refused(
    field: str, value: object, message: str
) -> None:
    store = tz.MemoryStore()
    FeatureStore(store, mode="w").write([10, 20, 30], {"emb": torch.ones(3, 1)})
    root = tz.open_group(store, mode="r+")
    root.attrs["feature_store"] = {**root.attrs["feature_store"], field: value}
    reader = FeatureStore(store, mode="r")
    with pytest.raises(MetadataError, match=r"'feature_store' attribute of group / in Memory"):
        len(reader)
    with pytest.raises(MetadataError, match=message):
        reader.read([10])


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_layout_is_plain_zarr(zarr_format: int) -> None:
    fs = FeatureStore(tz.MemoryStore(), mode="w", zarr_format=zarr_format)
    fs.write([3, 4], {"emb": torch.ones(2, 5)})
    assert fs.group.zarr_format == zarr_format
    assert fs.group["ids"][:].tolist() == [3, 4]
    assert fs.group["emb"].shape == (2, 5)
    assert fs.group.attrs["feature_store"]["num_rows"] == 2


@settings(max_examples=25, deadline=None)
@given(
    writes=st.lists(
        st.tuples(st.lists(st.integers(0, 40), min_size=1, max_size=12), st.booleans()),
        min_size=1,
        max_size=6,
    ),
    query=st.lists(st.integers(0, 45), max_size=30),
)
def test_matches_a_dict_model(writes: list[tuple[list[int], bool]], query: list[int]) -> None:
    fs = FeatureStore(tz.MemoryStore(), mode="w", chunk_bytes=24)
    model: dict[int, tuple[float, int]] = {}
    for step, (ids, with_b) in enumerate(writes):
        a = torch.tensor([[float(i * 100 + step)] * 2 for i in range(len(ids))])
        values = {"a": a}
        if with_b:
            values["b"] = torch.tensor([step] * len(ids))
        fs.write(ids, values)
        for pos, i in enumerate(ids):
            old_b = model.get(i, (0.0, 0))[1]
            model[i] = (float(pos * 100 + step), step if with_b else old_b)
    assert sorted(fs.ids.tolist()) == sorted(model)
    got = fs.read(query, missing="fill")
    assert got.mask.tolist() == [q in model for q in query]
    for row, q in enumerate(query):
        want_a, want_b = model.get(q, (0.0, 0))
        assert got["a"][row].tolist() == [want_a, want_a]
        if "b" in got:
            assert int(got["b"][row]) == want_b
    if query and all(q in model for q in query):
        strict = fs.read(query)
        assert torch.equal(strict["a"], got["a"])
    np.testing.assert_array_equal(fs.group["ids"][:].numpy(), fs.ids.numpy())


def test_membership_of_tensors_and_out_of_range_ids_and_one_feature_by_name() -> None:
    fs = FeatureStore(tz.MemoryStore(), mode="w")
    fs.write([42, 7], {"label": torch.tensor([1, 0]), "x": torch.ones(2, 2)})
    assert fs.ids[0] in fs and torch.tensor(7) in fs and torch.tensor([42]) in fs
    assert torch.tensor(8) not in fs and torch.tensor([7, 42]) not in fs
    assert torch.tensor(7.0) not in fs and "7" not in fs
    assert np.uint64(2**64 - 1) not in fs and 2**70 not in fs and -(2**70) not in fs
    assert set(fs.read([7], features="label")) == {"label"}


def test_widening_casts_are_taken_without_looking_and_complex_ids_are_not_members() -> None:
    from torchzarr.features import fits as rows  # the value checks live in fits.py

    fs = FeatureStore(tz.MemoryStore(), mode="w")
    fs.write([1], {"i": torch.tensor([1], dtype=torch.int64), "f": torch.tensor([1.0])})
    looked = []
    original = rows._bounds
    rows._bounds = lambda value: looked.append(value.dtype) or original(value)  # type: ignore[assignment]
    try:
        fs.write([1], {"i": torch.tensor([7], dtype=torch.int8), "f": torch.tensor([2.0]).half()})
        assert looked == []  # int8 into int64, float16 into float32: nothing to check
        fs.write([1], {"i": torch.tensor([7.0])})
        assert looked == [torch.float32]
    finally:
        rows._bounds = original  # type: ignore[assignment]
    assert fs.read([1])["i"].tolist() == [7]
    assert torch.tensor([1], dtype=torch.complex32) not in fs
