"""Regression tests of FeatureStore: prefetch id buffers, up-front dtype refusals, rebuilt
stores, mode "w"/"w-" at construction, fills of unsigned features, zero-width rows and the
order of new ids."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import torchzarr as tz
from torchzarr.errors import (
    ArgumentTypeError,
    MetadataError,
    MissingIdError,
    NodeExistsError,
    ShapeMismatchError,
    UnsupportedDtypeError,
    ValueRangeError,
)
from torchzarr.features import FeatureStore, upsert
from torchzarr.storage import LocalStore


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_prefetch_keeps_its_own_copy_of_a_reused_id_buffer(kind: str) -> None:
    fs = FeatureStore(tz.MemoryStore(), mode="w")
    fs.write(np.arange(10), {"x": torch.arange(10.0)})
    ids = np.array([1, 2], dtype=np.int64) if kind == "numpy" else torch.tensor([1, 2])
    fs.prefetch(ids)
    pending = fs._ahead._pending
    assert pending is not None
    pending[2].result()  # the prefetch is done (no timing involved)
    ids[0], ids[1] = 7, 8  # the caller refills its buffer for the next batch
    assert fs.read(ids)["x"].tolist() == [7.0, 8.0]


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_complex_into_a_real_feature_is_refused_before_anything_is_written(
    zarr_format: int,
) -> None:
    fs = FeatureStore(tz.MemoryStore(), mode="w", zarr_format=zarr_format)
    fs.write([1, 2], {"emb": torch.tensor([1.0, 2.0]), "score": torch.tensor([0.5, 0.5])})
    with pytest.raises(UnsupportedDtypeError, match=r"feature 'score' of torch\.float32 .*complex"):
        fs.write([2, 3], {"emb": torch.tensor([99.0, 3.0]), "score": torch.tensor([1 + 1j, 0j])})
    assert fs.read([2])["emb"].tolist() == [2.0]  # the refused write left nothing visible
    assert len(fs) == 2 and fs.version == 1


def test_finite_complex_values_that_would_overflow_are_refused() -> None:
    fs = FeatureStore(tz.MemoryStore(), mode="w")
    fs.write([1], {"c": torch.tensor([1 + 1j], dtype=torch.complex64)})
    refused = [
        torch.tensor([1e300 + 2j], dtype=torch.complex128),
        torch.tensor([2 + 1e300j], dtype=torch.complex128),
        torch.tensor([1e300], dtype=torch.float64),
    ]
    for value in refused:
        with pytest.raises(ValueRangeError, match=r"feature 'c' of torch\.complex64"):
            fs.write([1], {"c": value})
    fs.write([1], {"c": torch.tensor([complex(float("inf"), 3.0)], dtype=torch.complex128)})
    fs.write([2], {"c": torch.tensor([5], dtype=torch.int64)})  # fits: taken without looking
    assert fs.read([1, 2])["c"].tolist() == [complex(float("inf"), 3.0), 5 + 0j]


def test_refresh_reloads_a_store_rebuilt_with_mode_w(tmp_path: Path) -> None:
    path = str(tmp_path / "fs.zarr")
    FeatureStore(path, mode="w").write([1, 2], {"x": torch.tensor([1.0, 2.0])})
    reader = FeatureStore(path, mode="r")
    assert reader.read([1, 2])["x"].tolist() == [1.0, 2.0]
    FeatureStore(path, mode="w").write([2, 1], {"x": torch.tensor([20.0, 10.0])})  # same version
    assert reader.refresh() is True
    assert reader.read([1, 2])["x"].tolist() == [10.0, 20.0]
    assert reader.refresh() is False


@pytest.mark.parametrize(("first", "then"), [(3, 2), (2, 3)])
def test_refresh_reloads_a_store_rebuilt_with_mode_w_in_the_other_format(
    tmp_path: Path, first: int, then: int
) -> None:
    path = str(tmp_path / "fs.zarr")
    FeatureStore(path, mode="w", zarr_format=first).write([1, 2], {"x": torch.tensor([1.0, 2.0])})
    reader = FeatureStore(path, mode="r")
    assert reader.read([1])["x"].tolist() == [1.0]
    FeatureStore(path, mode="w", zarr_format=then).write([5], {"x": torch.tensor([5.0])})
    assert reader.refresh() is True
    assert reader.group.zarr_format == then
    assert reader.read([5])["x"].tolist() == [5.0]
    with pytest.raises(MissingIdError):
        reader.read([1])  # gone with the rebuild


@pytest.mark.parametrize(
    ("zarr_format", "others"), [(3, (".zgroup", ".zattrs", ".zarray")), (2, ("zarr.json",))]
)
def test_a_refresh_reads_one_document_where_the_store_kept_its_format(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, zarr_format: int, others: tuple[str, ...]
) -> None:
    """A refresh runs on every read meeting an unknown id: no requests for the other
    format's documents (404s, on object stores)."""
    path = str(tmp_path / "fs.zarr")
    FeatureStore(path, mode="w", zarr_format=zarr_format).write([1], {"x": torch.ones(1)})
    reader = FeatureStore(path, mode="r")
    reader.read([1])
    asked: list[str] = []
    get_many = LocalStore.get_many

    def counted(self: LocalStore, keys: Any, *args: Any, **kwargs: Any) -> Any:
        keys = list(keys)
        asked.extend(keys)
        return get_many(self, keys, *args, **kwargs)

    monkeypatch.setattr(LocalStore, "get_many", counted)
    assert reader.refresh() is False
    assert asked and not [key for key in asked if key.endswith(others)], asked


def test_mode_w_and_w_minus_act_at_construction_and_pickles_do_not_wipe(tmp_path: Path) -> None:
    path = str(tmp_path / "fs.zarr")
    FeatureStore(path, mode="w").write([5], {"x": torch.tensor([5.0])})
    fresh = FeatureStore(path, mode="w")  # wipes now
    assert FeatureStore(path, mode="r").ids.tolist() == []
    with pytest.raises(NodeExistsError):
        FeatureStore(path, mode="w-")  # refused now, not at first use
    FeatureStore(path, mode="a").write([1, 2], {"x": torch.tensor([1.0, 2.0])})
    fresh.refresh()
    assert fresh.ids.tolist() == [1, 2]  # written after construction: kept
    worker = pickle.loads(pickle.dumps(FeatureStore(path, mode="a")))
    clone = pickle.loads(pickle.dumps(fresh))  # as sent to a DataLoader worker
    assert clone.read([1, 2])["x"].tolist() == [1.0, 2.0] and worker.ids.tolist() == [1, 2]
    assert FeatureStore(path, mode="r").ids.tolist() == [1, 2]


@pytest.mark.parametrize("zarr_format", [2, 3])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.uint16, torch.uint32, torch.uint64])
def test_missing_fill_works_for_unsigned_features(zarr_format: int, dtype: torch.dtype) -> None:
    fs = FeatureStore(tz.MemoryStore(), mode="w", zarr_format=zarr_format)
    fs.write([1, 2], {"x": torch.tensor([5, 6], dtype=dtype)})
    fs.create_feature("y", dtype, (2,), fill_value=9)
    got = fs.read([2, 99, 1], missing="fill")
    assert got["x"].dtype == dtype and got["x"].tolist() == [6, 0, 5]
    assert got["y"].tolist() == [[9, 9]] * 3 and got.mask.tolist() == [True, False, True]


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_zero_width_rows_are_stored_and_gathered(zarr_format: int) -> None:
    fs = FeatureStore(tz.MemoryStore(), mode="w", zarr_format=zarr_format)
    fs.write([1, 2], {"e": torch.zeros(2, 0), "f": torch.zeros(2, 3, 0)})
    assert fs.read([2, 1])["e"].shape == (2, 0)
    got = fs.read([2, 9], missing="fill")
    assert got["f"].shape == (2, 3, 0) and got.mask.tolist() == [True, False]


def test_a_fill_value_the_dtype_cannot_hold_names_the_feature() -> None:
    fs = FeatureStore(tz.MemoryStore(), mode="w")
    with pytest.raises(MetadataError, match="feature 'small': fill_value 300"):
        fs.create_feature("small", torch.uint8, fill_value=300)
    assert fs.features == ()


def test_repeated_new_ids_are_appended_in_order_of_first_appearance() -> None:
    fs = FeatureStore(tz.MemoryStore(), mode="w")
    fs.write([5], {"v": torch.tensor([0])})
    fs.write([9, 5, 8, 9], {"v": torch.tensor([1, 2, 3, 4])})
    assert fs.ids.tolist() == [5, 9, 8]
    assert fs.read([5, 9, 8])["v"].tolist() == [2, 4, 3]  # the last row of an id wins


def test_conjugate_views_write_into_complex_features_of_another_width():
    fs = FeatureStore(tz.MemoryStore(), mode="w")
    fs.write([1], {"c": torch.tensor([1 + 1j], dtype=torch.complex64)})
    fs.write([1], {"c": torch.tensor([3 + 4j], dtype=torch.complex128).conj()})
    assert fs.read([1])["c"].tolist() == [3 - 4j]


@pytest.mark.parametrize("zarr_format", [2, 3])
@pytest.mark.parametrize(
    "bad",
    [torch.tensor([-4.0, 2.0]), torch.tensor([True, False]), torch.tensor([0, 3])],
    ids=["negative", "bool-false", "int-zero"],
)
def test_values_a_float8_e8m0_feature_cannot_hold_are_refused_before_anything_is_written(
    zarr_format: int, bad: torch.Tensor
) -> None:
    fs = FeatureStore(tz.MemoryStore(), mode="w", zarr_format=zarr_format)
    fs.create_feature("scale", torch.float8_e8m0fnu)
    fs.write([1, 2], {"a": torch.tensor([1.0, 2.0]), "scale": torch.tensor([1.0, 1.0])})
    with pytest.raises(ValueRangeError, match=r"feature 'scale'.*float8_e8m0fnu"):
        fs.write([1, 2], {"a": torch.tensor([10.0, 20.0]), "scale": bad})
    assert fs.read([1, 2])["a"].tolist() == [1.0, 2.0]  # not overwritten
    assert fs.version == 2


def test_values_are_converted_one_feature_at_a_time_as_they_are_written(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every refusal comes before the first write (above), yet each value is converted to
    its feature's dtype only as its rows are written: a write of CUDA tensors holds one
    feature's host copy at a time, not all of them at once."""
    fs = FeatureStore(tz.MemoryStore(), mode="w")
    half = torch.zeros(1, dtype=torch.float16)
    fs.write([1], {"a": half, "b": half, "scale": torch.ones(1, dtype=torch.float8_e8m0fnu)})
    events: list[str] = []
    convert, store_rows = upsert.as_stored, upsert.write_rows

    def converting(name: str, value: torch.Tensor, dt: Any) -> np.ndarray:
        events.append(f"convert {name}")
        return convert(name, value, dt)

    def writing(arr: Any, rows: np.ndarray, data: torch.Tensor) -> None:
        events.append(f"write {arr.basename}")
        store_rows(arr, rows, data)

    monkeypatch.setattr(upsert, "as_stored", converting)
    monkeypatch.setattr(upsert, "write_rows", writing)
    values = {"a": torch.ones(2), "b": torch.full((2,), 2.0), "scale": torch.ones(2)}
    fs.write([1, 2], values)  # float32 into float16: converted
    # (float8_e8m0fnu: converted when checked, values <= 0 being refused by their values)
    assert events == ["convert a", "write a", "convert b", "write b", "write scale"]
    assert fs.read([2])["b"].tolist() == [2.0]


# (feature dtype, value dtype, largest magnitude taken, smallest refused): the boundaries of
# torch's own cast (round to nearest even, through float32; float8_e4m3fn saturates at 448)
_BOUNDARIES = [
    (torch.float16, torch.float32, 65519.0, 65520.0),
    (torch.float16, torch.int32, 65519, 65520),
    (torch.bfloat16, torch.float32, 3.3961773e38, 3.3961775292304597e38),
    (torch.float32, torch.float64, 3.4028235677973362e38, 3.4028235677973366e38),
    (torch.float8_e4m3fn, torch.float32, 464.0, 464.00003),
    (torch.float8_e5m2, torch.float32, 61439.996, 61440.0),
    (torch.float8_e4m3fnuz, torch.float32, 247.99998, 248.0),
    (torch.float8_e8m0fnu, torch.float32, 2.126e38, 2.5521177519070385e38),
]


@pytest.mark.parametrize(("dtype", "source", "taken", "refused"), _BOUNDARIES, ids=str)
def test_values_rounding_to_the_largest_finite_value_are_taken_and_no_further(
    dtype: torch.dtype, source: torch.dtype, taken: float, refused: float
) -> None:
    fs = FeatureStore(tz.MemoryStore(), mode="w")
    fs.create_feature("h", dtype)
    largest = torch.finfo(dtype).max
    signs = [1.0] if dtype == torch.float8_e8m0fnu else [1.0, -1.0]  # e8m0: no sign
    for sign in signs:
        value = torch.tensor([sign * taken], dtype=torch.float64).to(source)
        fs.write([1], {"h": value})
        assert fs.read([1])["h"].double().item() == sign * largest == value.to(dtype).item()
        with pytest.raises(ValueRangeError, match=f"feature 'h' of {dtype}"):
            fs.write([1], {"h": torch.tensor([sign * refused], dtype=torch.float64).to(source)})


@pytest.mark.parametrize(
    "empty",
    [torch.tensor([]), torch.tensor([], dtype=torch.bool), torch.tensor([], dtype=torch.bfloat16)],
    ids=str,
)
def test_no_ids_are_taken_as_an_empty_tensor_of_any_dtype(empty: torch.Tensor) -> None:
    fs = FeatureStore(tz.MemoryStore(), mode="w")
    fs.write([1], {"x": [1.0]})
    assert fs.read(empty)["x"].shape == (0,)
    fs.prefetch(empty)
    assert fs.read(empty).mask.shape == (0,)
    with pytest.raises(UnsupportedDtypeError, match="ids must be integers"):
        fs.read(torch.tensor([1.0]))  # ids that are there are still integers only


@pytest.mark.parametrize("dtype", ["bfloat16", "float8_e5m2", "float8_e4m3fn"])
def test_ml_dtypes_values_are_written_as_their_bits(dtype):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    raw, width = (np.uint16, torch.uint16) if dtype == "bfloat16" else (np.uint8, torch.uint8)
    bits = [0xFFCA, 0x3F80] if dtype == "bfloat16" else [0x7E, 0x38]  # a NaN payload, a 1.0-ish
    values = np.array([bits], dtype=raw).view(getattr(ml_dtypes, dtype))  # JAX's arrays
    store = tz.FeatureStore("memory://", mode="w")
    store.write([7], {"e": values})
    got = store.read([7])["e"]
    assert got.dtype == getattr(torch, dtype)
    assert got.view(width).flatten().tolist() == bits


def test_lists_of_ints_are_written_exactly_into_a_uint64_feature() -> None:
    fs = FeatureStore(tz.MemoryStore(), mode="w")
    fs.write([0, 1], {"h": np.zeros(2, dtype=np.uint64)})  # a uint64 hash feature
    fs.write([0, 1], {"h": [1, 2**63 + 1]})  # numpy alone: float64, rounded to 2**63
    assert fs.read([0, 1])["h"].tolist() == [1, 2**63 + 1]
    fs.write([0], {"h": [2**64 - 1]})  # numpy's np.ulonglong, which torch.from_numpy refuses
    fs.write([1], {"h": np.array([7], dtype=np.ulonglong)})
    assert fs.read([0, 1])["h"].tolist() == [2**64 - 1, 7]
    fs.write([2], {"i": [np.int64(-1)]})
    for name, value in (("h", [-1]), ("h", [-1, 2**63]), ("i", [1, 2**63])):
        with pytest.raises(ValueRangeError, match=f"feature {name!r}"):
            fs.write([0, 1][: len(value)], {name: value})
    assert fs.read([0, 1])["h"].tolist() == [2**64 - 1, 7]  # nothing written
    with pytest.raises(ValueRangeError, match="neither int64 nor uint64 holds"):
        fs.write([0, 1], {"new": [-1, 2**63]})  # would make a float64 feature of rounded ints
    assert "new" not in fs.read([0])


@pytest.mark.parametrize(
    ("dtype", "value"),
    [("uint64", 2**64), ("int64", -(2**63) - 1), ("uint64", -(2**63) - 1), ("float64", 2**70)],
)
def test_python_ints_no_64_bit_dtype_holds_are_a_range_error_naming_feature_and_value(
    dtype: str, value: int
) -> None:
    fs = FeatureStore(tz.MemoryStore(), mode="w")
    fs.write([0], {"h": torch.zeros(1, dtype=getattr(torch, dtype))})
    with pytest.raises(ValueRangeError, match=f"feature 'h': cannot store int {value} "):
        fs.write([0], {"h": [value]})  # numpy holds it as an object: no dtype error
    assert fs.read([0])["h"].tolist() == [0]


def test_lists_of_tensors_are_written_as_the_tensor_torch_stack_makes() -> None:
    fs = FeatureStore(tz.MemoryStore(), mode="w")
    bf16 = [torch.tensor([1.5, -2.0], dtype=torch.bfloat16), torch.zeros(2, dtype=torch.bfloat16)]
    f8 = [torch.tensor([0.5], dtype=torch.float8_e4m3fn)] * 2
    grad = [torch.ones(2, requires_grad=True), torch.zeros(2, requires_grad=True)]
    top = [torch.tensor(2**64 - 1, dtype=torch.uint64), torch.tensor(3, dtype=torch.uint64)]
    nested = ([torch.tensor(1), torch.tensor(2)], (torch.tensor(3), torch.tensor(4)))
    fs.write([1, 2], {"b": bf16, "f8": f8, "g": grad, "u": top, "n": nested})
    got = fs.read([1, 2])
    assert got["b"].dtype == torch.bfloat16 and got["b"].tolist() == [[1.5, -2.0], [0.0, 0.0]]
    assert got["f8"].dtype == torch.float8_e4m3fn and got["f8"].float().tolist() == [[0.5]] * 2
    assert got["g"].tolist() == [[1.0, 1.0], [0.0, 0.0]] and not got["g"].requires_grad
    assert got["u"].dtype == torch.uint64 and got["u"].tolist() == [2**64 - 1, 3]
    assert got["n"].dtype == torch.int64 and got["n"].tolist() == [[1, 2], [3, 4]]
    mixed = [torch.ones(2), torch.ones(2, dtype=torch.int32)]  # numpy reads them: float64
    fs.write([3, 4], {"m": mixed})
    assert fs.read([3])["m"].dtype == torch.float64
    promoted = [torch.ones(1, dtype=torch.bfloat16), torch.ones(1, dtype=torch.float16)]
    fs.write([5, 6], {"p": promoted})  # numpy reads no bfloat16: torch promotes, to float32
    assert fs.read([5])["p"].dtype == torch.float32


def test_lists_of_tensors_of_other_shapes_or_with_other_values_are_refused() -> None:
    fs = FeatureStore(tz.MemoryStore(), mode="w")
    fs.write([1], {"x": torch.zeros(1, 2)})
    with pytest.raises(ShapeMismatchError, match=r"feature 'x'.*shapes \(2,\) .*\(3,\)"):
        fs.write([1, 2], {"x": [torch.ones(2), torch.ones(3)]})
    with pytest.raises(ArgumentTypeError, match=r"feature 'x'.*tensor of shape \(2,\)"):
        fs.write([1, 2], {"x": [torch.ones(2, dtype=torch.bfloat16), [1.0, 2.0]]})
    fs.write([3, 4], {"x": [torch.ones(2), [1.0, 2.0]]})  # numpy reads such a mix, as before
    assert fs.read([4])["x"].tolist() == [[1.0, 2.0]]
    with pytest.raises(UnsupportedDtypeError, match=r"torch\.bfloat16 and torch\.float8_e4m3fn"):
        fs.write(
            [1, 2],
            {"x": [torch.ones(2, dtype=torch.bfloat16), torch.ones(2, dtype=torch.float8_e4m3fn)]},
        )
    assert len(fs) == 3 and fs.read([1])["x"].tolist() == [[0.0, 0.0]]


_NO_INFINITY = [torch.float8_e4m3fn, torch.float8_e4m3fnuz, torch.float8_e5m2fnuz]


@pytest.mark.parametrize("dtype", [*_NO_INFINITY, torch.float8_e8m0fnu], ids=str)
@pytest.mark.parametrize("source", [torch.float32, torch.float16, torch.float64], ids=str)
def test_infinities_into_a_float_kind_without_them_are_refused_and_nan_is_taken(
    dtype: torch.dtype, source: torch.dtype
) -> None:
    fs = FeatureStore(tz.MemoryStore(), mode="w")
    fs.create_feature("s", dtype)
    fs.write([1, 2], {"s": torch.tensor([1.0, 2.0], dtype=source)})
    for infinity in (float("inf"), -float("inf")):
        with pytest.raises(ValueRangeError, match=f"feature 's' of {dtype} cannot hold infin"):
            fs.write([1, 2], {"s": torch.tensor([infinity, 2.0], dtype=source)})
    assert fs.read([1, 2])["s"].float().tolist() == [1.0, 2.0]  # nothing written
    fs.write([1], {"s": torch.tensor([float("nan")], dtype=source)})
    assert fs.read([1])["s"].float().isnan().all()
    kept = FeatureStore(tz.MemoryStore(), mode="w")  # a kind with infinities keeps them
    kept.create_feature("s", torch.float8_e5m2)
    kept.write([1], {"s": torch.tensor([-float("inf")], dtype=source)})
    assert kept.read([1])["s"].float().tolist() == [-float("inf")]


_FLOAT8 = [*_NO_INFINITY, torch.float8_e5m2, torch.float8_e8m0fnu]


@pytest.mark.parametrize("dtype", _FLOAT8, ids=str)
@pytest.mark.parametrize("source", _FLOAT8, ids=str)
def test_float8_values_go_into_any_float8_feature_that_holds_them(
    dtype: torch.dtype, source: torch.dtype
) -> None:
    """torch has no isinf/isfinite for most float8 kinds: the checks must not need them."""
    fs = FeatureStore(tz.MemoryStore(), mode="w")
    fs.create_feature("s", dtype)
    fs.write([1, 2], {"s": torch.tensor([1.0, 2.0]).to(source)})
    assert fs.read([1, 2])["s"].float().tolist() == [1.0, 2.0]
    if torch.finfo(source).max > torch.finfo(dtype).max:
        with pytest.raises(ValueRangeError, match="feature 's'"):
            fs.write([1], {"s": torch.tensor([torch.finfo(source).max]).to(source)})
