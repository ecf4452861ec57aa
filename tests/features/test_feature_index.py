"""Tests of the feature store's id index, gather plans and reader/writer lock."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from torchzarr.errors import (
    InvalidArgumentError,
    MetadataError,
    ShapeMismatchError,
    UnsupportedDtypeError,
    ValueRangeError,
)
from torchzarr.features import FeatureStore
from torchzarr.features.index import IdIndex, ReadWriteLock, as_ids, one_id, plan_gather


def test_as_ids_accepts_tensors_arrays_lists_and_scalars() -> None:
    assert as_ids(torch.tensor([3, 1], dtype=torch.int32)).dtype == np.int64
    assert as_ids([5, 6]).tolist() == [5, 6]
    assert as_ids(np.uint8(4)).tolist() == [4]
    assert as_ids([]).tolist() == []


@pytest.mark.parametrize("bad", [torch.tensor([1.5]), np.array(["a"]), [0.5]])
def test_as_ids_rejects_non_integers(bad: object) -> None:
    with pytest.raises(UnsupportedDtypeError, match="integers"):
        as_ids(bad)


def test_as_ids_rejects_2d_ids_past_int64_and_meta_tensors() -> None:
    with pytest.raises(ShapeMismatchError, match="1-d"):
        as_ids(np.zeros((2, 2), dtype=np.int64))
    with pytest.raises(ValueRangeError, match=f"int64; got {2**63}"):
        as_ids(np.array([2**63], dtype=np.uint64))
    with pytest.raises(ValueRangeError, match=f"int64; got {-(2**70)}"):
        as_ids([1, -(2**70), 2**64])  # Python ints numpy cannot hold: named, not "object"
    with pytest.raises(InvalidArgumentError, match="meta"):
        as_ids(torch.tensor([1, 2], device="meta"))


def test_as_ids_takes_object_arrays_of_ints_and_names_other_values() -> None:
    column = np.array([1, np.int64(2), np.uint64(3), -(2**63)], dtype=object)  # pandas .values
    assert as_ids(column).tolist() == [1, 2, 3, -(2**63)]
    assert as_ids(column).dtype == np.int64
    with pytest.raises(ValueRangeError, match=f"int64; got {2**63}"):
        as_ids(np.array([1, 2**63], dtype=object))
    for bad, shown in [(1.5, "1.5"), ("a", "'a'"), (True, "True"), (None, "None")]:
        with pytest.raises(UnsupportedDtypeError, match=f"integers, got {shown} "):
            as_ids(np.array([1, bad], dtype=object))


def test_duplicate_stored_ids_are_a_corrupt_store() -> None:
    with pytest.raises(MetadataError, match="id 4 more than once"):
        IdIndex.from_ids(np.array([4, 1, 4]))


def test_empty_index_finds_nothing() -> None:
    rows, found = IdIndex.from_ids(np.array([], dtype=np.int64)).lookup(np.array([1, 2]))
    assert rows.shape == (2,) and not found.any()


def test_plan_marks_identity_only_for_distinct_ids_in_row_order() -> None:
    index = IdIndex.from_ids(np.array([10, 20, 30]))
    assert plan_gather(index, np.array([10, 20])).identity
    assert not plan_gather(index, np.array([20, 10])).identity
    assert not plan_gather(index, np.array([10, 10])).identity
    missing = plan_gather(index, np.array([10, 99]))
    assert not missing.identity and not missing.all_found
    assert missing.mask.tolist() == [True, False]


@settings(max_examples=60, deadline=None)
@given(
    stored=st.lists(st.integers(-(2**62), 2**62), unique=True, max_size=40),
    extra=st.lists(st.integers(-(2**62), 2**62), unique=True, max_size=20),
    picks=st.lists(st.integers(0, 200), max_size=50),
)
def test_index_and_plan_agree_with_a_dict(
    stored: list[int], extra: list[int], picks: list[int]
) -> None:
    extra = [e for e in extra if e not in set(stored)]
    index = IdIndex.from_ids(np.array(stored, dtype=np.int64)).extended(
        np.array(extra, dtype=np.int64)
    )
    model = {v: i for i, v in enumerate(stored + extra)}
    assert index.ids_in_row_order().tolist() == stored + extra
    universe = stored + extra + [2**62 + 1, -(2**62) - 1]
    query = np.array([universe[p % len(universe)] for p in picks], dtype=np.int64)
    plan = plan_gather(index, query)
    assert plan.mask.tolist() == [q in model for q in query.tolist()]
    assert np.all(np.diff(plan.rows) > 0)  # distinct, ascending: each chunk read once
    for q, s, m in zip(query.tolist(), plan.select.tolist(), plan.mask.tolist(), strict=True):
        if m:
            assert plan.rows[s] == model[q]


def test_lock_excludes_readers_while_a_writer_holds_it() -> None:
    lock = ReadWriteLock()
    events: list[str] = []
    reader_in = threading.Event()
    release_reader = threading.Event()

    def reader() -> None:
        with lock.shared():
            events.append("reader in")
            reader_in.set()
            release_reader.wait(5)
            events.append("reader out")

    def writer() -> None:
        with lock.exclusive():
            events.append("writer")

    t_reader = threading.Thread(target=reader)
    t_reader.start()
    reader_in.wait(5)
    t_writer = threading.Thread(target=writer)
    t_writer.start()
    time.sleep(0.05)  # give the writer a chance to (wrongly) enter
    assert events == ["reader in"]
    release_reader.set()
    t_reader.join(5)
    t_writer.join(5)
    assert events == ["reader in", "reader out", "writer"]


@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors:UserWarning")
def test_as_ids_refuses_sparse_nested_and_ragged_ids_with_torchzarr_errors() -> None:
    with pytest.raises(InvalidArgumentError, match=r"ids are a torch\.sparse_coo tensor"):
        as_ids(torch.tensor([1, 2]).to_sparse())
    nested = torch.nested.nested_tensor([torch.tensor([1, 2]), torch.tensor([3])])
    with pytest.raises(InvalidArgumentError, match="ids are a nested tensor"):
        as_ids(nested)
    with pytest.raises(ShapeMismatchError, match="unequal lengths"):
        as_ids([[1], [2, 3]])


def test_as_ids_takes_lists_of_ints_numpy_would_make_floats_exactly() -> None:
    mixed = as_ids([np.int64(1), np.uint64(2), 2**62 + 1])  # numpy: float64, rounded
    assert mixed.tolist() == [1, 2, 2**62 + 1] and mixed.dtype == np.int64
    with pytest.raises(ValueRangeError, match=f"int64; got {2**63}"):
        as_ids([-1, 2**63])  # named, not "dtype float64"
    with pytest.raises(UnsupportedDtypeError, match="float64"):
        as_ids([1, 2.5])  # a float among ints is still refused


def test_one_id_takes_0d_and_one_element_arrays_as_their_scalar() -> None:
    assert one_id(np.array(7)) == 7 and one_id(np.array([7], dtype=np.uint8)) == 7
    assert one_id(torch.tensor(3).to_sparse()) == 3
    for other in (np.array([1, 2]), np.array(1.0), np.array(2**63, dtype=np.uint64)):
        assert one_id(other) is None
    fs = FeatureStore("memory://", mode="w")
    fs.write([1], {"x": [1.0]})
    assert np.array(1) in fs and np.int64(1) in fs and np.array(2) not in fs
