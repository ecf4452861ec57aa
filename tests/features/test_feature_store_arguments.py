"""Arguments and values a FeatureStore refuses up front, and what a failed write leaves."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest
import torch

import torchzarr as tz
from torchzarr.core.array import Array
from torchzarr.errors import (
    ArgumentTypeError,
    ArrayNotFoundError,
    InvalidArgumentError,
    MissingIdError,
    ShapeMismatchError,
    UnsupportedDtypeError,
)
from torchzarr.features import FeatureStore, upsert


def _store(**kwargs: Any) -> FeatureStore:
    fs = FeatureStore(tz.MemoryStore(), mode="w", **kwargs)
    fs.write([1, 2], {"a": torch.tensor([1.0, 2.0]), "b": torch.tensor([10.0, 20.0])})
    return fs


def _nested() -> torch.Tensor:
    with warnings.catch_warnings():  # the nested tensor API warns that it is a prototype
        warnings.simplefilter("ignore")
        return torch.nested.nested_tensor([torch.zeros(2), torch.zeros(3)])


@pytest.mark.filterwarnings("ignore:ComplexHalf support is experimental")
@pytest.mark.parametrize(
    ("name", "bad", "error", "match"),
    [
        ("b", lambda: torch.empty(3, device="meta"), InvalidArgumentError, "'b' is a meta"),
        ("b", lambda: torch.tensor([1.0, 2.0, 3.0]).to_sparse(), InvalidArgumentError, "sparse"),
        ("b", _nested, InvalidArgumentError, "'b' is a nested tensor"),
        ("b", lambda: [[1.0, 2.0], [3.0], [4.0]], ShapeMismatchError, "'b' needs one row"),
        ("c", lambda: torch.ones(3, dtype=torch.complex32), UnsupportedDtypeError, "feature 'c'"),
    ],
)
def test_values_that_are_no_dense_grid_are_refused_before_anything_is_written(
    name: str, bad: Any, error: type[Exception], match: str
) -> None:
    fs = _store()
    with pytest.raises(error, match=match):
        fs.write([1, 2, 3], {"a": torch.tensor([100.0, 200.0, 300.0]), name: bad()})
    assert fs.version == 1 and len(fs) == 2
    fresh = FeatureStore(fs.group.store, mode="r")
    assert fresh.read([1, 2])["a"].tolist() == [1.0, 2.0]
    group = tz.open_group(fs.group.store, mode="r", use_consolidated=False)
    assert {name: group[name].shape[0] for name in group} == {"ids": 2, "a": 2, "b": 2}


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_a_write_failing_midway_leaves_arrays_as_long_as_the_ids(
    zarr_format: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    fs = _store(zarr_format=zarr_format)
    store_rows = upsert.write_rows

    def failing_write_rows(arr: Array, rows: np.ndarray, data: torch.Tensor) -> None:
        if arr.basename == "b":
            raise OSError("disk full")
        store_rows(arr, rows, data)

    monkeypatch.setattr(upsert, "write_rows", failing_write_rows)
    new = {"a": torch.ones(3), "b": torch.ones(3), "c": torch.ones(3, 2)}
    with pytest.raises(OSError, match="disk full"):
        fs.write([2, 3, 4], new)
    monkeypatch.undo()
    group = tz.open_group(fs.group.store, mode="r", use_consolidated=False)
    assert sorted(group) == ["a", "b", "ids"]  # the feature the write made is gone
    assert {name: group[name].shape[0] for name in ("ids", "a", "b")} == {"ids": 2, "a": 2, "b": 2}
    assert fs.version == 1 and fs.read([1])["b"].tolist() == [10.0]
    fs.write([3], {"b": torch.tensor([30.0])})
    assert fs.read([1, 3])["a"].tolist() == [1.0, 0.0]


def test_create_feature_takes_dtype_names_numpy_dtypes_and_an_int_row_shape() -> None:
    fs = _store()
    fs.create_feature("by_name", "float16", 3)
    fs.create_feature("by_numpy", np.int32, [2, 2])
    fs.create_feature("by_dtype", np.dtype("uint8"), np.int64(4), chunk_rows=np.int64(8))
    assert fs.array("by_name").dtype == torch.float16 and fs.array("by_name").shape == (2, 3)
    assert fs.array("by_numpy").dtype == torch.int32 and fs.array("by_numpy").shape == (2, 2, 2)
    assert fs.array("by_dtype").chunks[0] == 8


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"dtype": None}, ArgumentTypeError, "dtype"),
        ({"dtype": "text"}, UnsupportedDtypeError, "feature 'f'"),
        ({"row_shape": (2.5,)}, ArgumentTypeError, r"row_shape\[0\] must be an int"),
        ({"row_shape": (-1,)}, InvalidArgumentError, r"row_shape\[0\] must be >= 0"),
        ({"row_shape": "3"}, ArgumentTypeError, "row_shape"),
        ({"chunk_rows": 0}, InvalidArgumentError, "chunk_rows must be >= 1"),
        ({"chunk_rows": -1}, InvalidArgumentError, "chunk_rows must be >= 1"),
        ({"chunk_rows": 1.5}, ArgumentTypeError, "chunk_rows must be an int"),
        ({"chunk_rows": 2**40}, InvalidArgumentError, "at most 67108864"),
    ],
)
def test_create_feature_refuses_bad_arguments_naming_them(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    fs = _store()
    args = {"dtype": torch.float32, **kwargs}
    with pytest.raises(error, match=match):
        fs.create_feature("f", **args)
    assert "f" not in fs.group and fs.features == ("a", "b")


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"mode": "q"}, InvalidArgumentError, "mode must be one of"),
        ({"mode": "rw"}, InvalidArgumentError, "mode must be one of"),
        ({"mode": None}, InvalidArgumentError, "mode must be one of"),
        ({"mode": 3}, InvalidArgumentError, "mode must be one of"),
        ({"chunk_bytes": 4096.0}, ArgumentTypeError, "chunk_bytes must be an int"),
        ({"chunk_bytes": "4k"}, ArgumentTypeError, "chunk_bytes must be an int"),
        ({"chunk_bytes": 0}, InvalidArgumentError, "chunk_bytes must be >= 1"),
        ({"shard_bytes": 10**12}, InvalidArgumentError, "shard_bytes must be at most"),
        ({"chunk_bytes": 1 << 30}, InvalidArgumentError, "chunk_bytes must be at most"),
    ],
)
def test_the_constructor_refuses_bad_arguments(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        FeatureStore(tz.MemoryStore(), **kwargs)


def test_the_largest_shards_allowed_are_used() -> None:
    fs = FeatureStore(tz.MemoryStore(), mode="w", shard_bytes=64 << 20)
    fs.write([1, 2, 3], {"e": torch.ones(3, 4)})
    assert fs.array("e").shards == ((64 << 20) // 16, 4)


def test_missing_ids_are_named_once_each_in_the_order_asked() -> None:
    fs = _store()
    with pytest.raises(MissingIdError) as info:
        fs.read([99999, 1, 99999, 7, 99999])
    message = str(info.value)
    assert "4 of 5 ids" in message and "(2 distinct)" in message
    assert "first: [99999, 7]" in message


def test_out_must_map_names_to_tensors() -> None:
    fs = _store()
    with pytest.raises(ArgumentTypeError, match=r"out\['a'\] must be a torch.Tensor.*from_numpy"):
        fs.read([1, 2], "a", out={"a": np.zeros(2, np.float32)})
    with pytest.raises(ArgumentTypeError, match="out must map feature names"):
        fs.read([1, 2], "a", out=[torch.zeros(2)])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (1, "features must be a feature name or an iterable of names"),
        (1.5, "features must be a feature name or an iterable of names"),
        (b"a", "features must be a feature name or an iterable of names"),
        (torch.tensor(3), "features must be a feature name or an iterable of names"),
        ([1], "features holds 1 of type int"),
        (["a", None], "features holds None of type NoneType"),
    ],
)
@pytest.mark.parametrize("call", ["read", "prefetch"])
def test_features_must_be_a_name_or_names(bad: Any, match: str, call: str) -> None:
    fs = _store()
    with pytest.raises(ArgumentTypeError, match=match):
        getattr(fs, call)([1], features=bad)
    assert fs.read([1], features=("b", "a")).keys() == {"a", "b"}


@pytest.mark.parametrize("prefetched", [False, True])
def test_out_names_no_feature_or_one_not_requested_are_refused(prefetched: bool) -> None:
    fs = _store()
    cases: list[tuple[Any, dict[str, torch.Tensor], type[Exception], str]] = [
        (None, {"aa": torch.zeros(2)}, ArrayNotFoundError, "out names 'aa', which is no feature"),
        ("a", {"b": torch.zeros(2)}, InvalidArgumentError, "out names feature 'b', which this"),
    ]
    for features, out, error, match in cases:
        if prefetched:
            fs.prefetch([1, 2], features)
        with pytest.raises(error, match=match):
            fs.read([1, 2], features, out=out)
        assert out[next(iter(out))].tolist() == [0.0, 0.0]
    buf = torch.zeros(2)
    assert fs.read([2, 1], "b", out={"b": buf})["b"] is buf and buf.tolist() == [20.0, 10.0]


@pytest.mark.parametrize(
    "scalar", [5, 5.0, np.float32(5), np.array(5), torch.tensor(5.0)], ids=repr
)
@pytest.mark.parametrize("ids", [[7], [7, 8]])
def test_a_scalar_is_no_row_whatever_its_type(scalar: Any, ids: list[int]) -> None:
    fs = _store()
    with pytest.raises(ShapeMismatchError, match=r"'s' is a scalar \(shape \(\)\)"):
        fs.write(ids, {"s": scalar})
    assert fs.features == ("a", "b") and len(fs) == 2


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_missing_fill_on_sharded_features_uses_the_shard_reader(
    zarr_format: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    fs = FeatureStore(tz.MemoryStore(), mode="w", zarr_format=zarr_format)
    fs.write(np.arange(100), {"e": torch.arange(200.0).reshape(100, 2)})
    fs.create_feature("w", torch.int16, fill_value=-3)
    whole_reads: list[str] = []
    read = Array.read

    def counted_read(self: Array, *args: Any, **kwargs: Any) -> torch.Tensor:
        whole_reads.append(self.basename)
        return read(self, *args, **kwargs)

    monkeypatch.setattr(Array, "read", counted_read)
    got = fs.read([5, -1, 3, 5], missing="fill")
    assert got["e"][:, 0].tolist() == [10.0, 0.0, 6.0, 10.0]
    assert got["w"].tolist() == [-3, -3, -3, -3]
    assert got.mask.tolist() == [True, False, True, True]
    assert whole_reads == ([] if zarr_format == 3 else ["e", "w"])


@pytest.mark.parametrize("zarr_format", [2, 3])
@pytest.mark.parametrize("prefetched", [False, True])
@pytest.mark.parametrize("ids", [[1, 2, 3], [3, 1, 3]], ids=["in-row-order", "gathered"])
@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (lambda: torch.zeros(3, 4, requires_grad=True), "feature 'x': out requires grad"),
        (lambda: torch.zeros(1, 4).expand(3, 4), "feature 'x': out has overlapping memory"),
    ],
    ids=["requires-grad", "expanded"],
)
def test_out_tensors_a_read_cannot_fill_are_refused_on_every_path(
    zarr_format: int, prefetched: bool, ids: list[int], bad: Any, match: str
) -> None:
    fs = FeatureStore(tz.MemoryStore(), mode="w", zarr_format=zarr_format)
    fs.write(np.arange(10), {"x": torch.arange(40.0).reshape(10, 4)})
    if prefetched:
        fs.prefetch(ids, "x")
    out = bad()
    with pytest.raises(InvalidArgumentError, match=match):
        fs.read(ids, "x", out={"x": out})
    assert not out.detach().any()  # left unfilled
    good = torch.empty(3, 4)
    assert fs.read(ids, "x", out={"x": good})["x"] is good and good[:, 0].tolist() == [
        4.0 * i for i in ids
    ]
