"""``LoggingStore``: every call logged with its keys, bytes and time; data untouched."""

from __future__ import annotations

import logging
import pickle

import pytest
import torch
from store_values import StoreValueChecks

import torchzarr as tz
from torchzarr.storage import LoggingStore
from torchzarr.storage.faults import FaultyStore
from torchzarr.storage.memory import MemoryStore
from torchzarr.testing.store_contract import StoreContract


def _messages(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "torchzarr.store"]


def test_calls_are_logged_with_keys_bytes_and_time(caplog):
    store = LoggingStore(MemoryStore({f"k{i}": b"x" * i for i in range(6)}))
    with caplog.at_level(logging.DEBUG, logger="torchzarr.store"):
        assert store.get("k3") == b"xxx"
        assert store.get_many([f"k{i}" for i in range(6)])["k5"] == b"xxxxx"
        store.set_many({"new": b"12345678"})
        assert sorted(store.list_prefix("k")) == [f"k{i}" for i in range(6)]
    got = _messages(caplog)
    assert got[0].startswith("get 'k3': wrote 0 bytes, read 3 bytes, ")
    assert got[1].startswith("get_many 'k0', 'k1', 'k2' (+3 more): wrote 0 bytes, read 15 bytes")
    assert got[2].startswith("set_many 'new': wrote 8 bytes, read 0 bytes")
    assert got[3].startswith("list_prefix 'k': ") and got[3].endswith(" ms")


def test_failures_are_logged_then_raised(caplog):
    store = LoggingStore(FaultyStore(MemoryStore({"a": b"1"}), fail_on={"get": True}))
    with (
        caplog.at_level(logging.INFO, logger="torchzarr.store"),
        pytest.raises(tz.errors.StoreError),
    ):
        store.level = logging.INFO
        store.get("a")
    assert "get 'a' failed after" in _messages(caplog)[0]


def test_nothing_is_logged_below_the_level_and_arrays_read_through_it(caplog):
    inner = MemoryStore()
    arr = tz.create_array(inner, shape=(4,), dtype=torch.int16, chunks=(2,))
    arr[:] = torch.arange(4, dtype=torch.int16)
    logged = LoggingStore(inner)
    with caplog.at_level(logging.INFO, logger="torchzarr.store"):
        assert tz.open_array(logged, mode="r")[:].tolist() == [0, 1, 2, 3]
    assert _messages(caplog) == []  # DEBUG records, the logger at INFO
    with caplog.at_level(logging.DEBUG, logger="torchzarr.store"):
        tz.open_array(logged, mode="r")[2:]
    assert any("c/1" in m for m in _messages(caplog))


def test_pickles_as_its_spec():
    store = LoggingStore(MemoryStore({"a": b"1"}), level=logging.WARNING)
    again = pickle.loads(pickle.dumps(store))
    assert again.level == logging.WARNING and again.logger.name == "torchzarr.store"
    assert repr(again).startswith("LoggingStore(")


class TestLoggingStoreContract(StoreContract, StoreValueChecks):
    """The whole store protocol holds through the wrapper, logging switched on."""

    pickles_by_value = True

    def make_store(self, tmp_path):
        logging.getLogger("torchzarr.store.contract").setLevel(logging.DEBUG)
        return LoggingStore(MemoryStore(), logger=logging.getLogger("torchzarr.store.contract"))

    def named_store(self, store):
        return "MemoryStore"  # the store the value was for
