"""``StoreValueChecks``: the values every store takes, and names no file can have; a mixin
of each store's contract test class (``class TestXStore(StoreContract, StoreValueChecks)``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from torchzarr.errors import ArgumentTypeError
from torchzarr.storage.base import ByteRange, Store

#: values that are no buffer: ``bytes(value)`` would store zero bytes or a list's numbers
NOT_BUFFERS = [3, True, "abc", [1, 2], torch.tensor(3), None]
LONG_NAME = "x" * 300  # over the 255 bytes a file name may have on most file systems


def buffers() -> dict[str, Any]:
    """Buffers of every kind, each stored as its bytes in C order."""
    return {
        "fortran": np.asfortranarray(np.arange(6, dtype=np.int32).reshape(2, 3)),
        "strided": memoryview(b"abcdefgh")[::2],
        "scalar": np.int64(5),  # a numpy scalar is a buffer of its bytes
        "big-endian": np.arange(3, dtype=">f4"),
        "no-items": np.zeros((2, 0)),
        "bytearray": bytearray(b"xy"),
        "bytes": b"plain",
    }


class StoreValueChecks:
    """Checks mixed into a class whose ``store`` fixture gives a new, empty, writable store."""

    def named_store(self, store: Store) -> str:
        """Text the error of a value that is no buffer names the store by."""
        return type(store).__name__

    @pytest.mark.parametrize("value", NOT_BUFFERS, ids=lambda v: type(v).__name__)
    def test_values_that_are_no_buffer_are_refused_naming_store_and_key(
        self, store: Store, value: Any
    ) -> None:
        with pytest.raises(ArgumentTypeError, match="key 'k' must be bytes") as caught:
            store.set("k", value)
        assert self.named_store(store) in str(caught.value)
        with pytest.raises(ArgumentTypeError, match="key 'bad' must be bytes"):
            store.set_many({"ok": b"1", "bad": value})  # checked before any key is written
        assert store.get("k") is None and store.get("ok") is None and store.get("bad") is None

    def test_buffers_are_stored_as_their_bytes_in_c_order(self, store: Store) -> None:
        expected = {key: memoryview(value).tobytes() for key, value in buffers().items()}
        for key, value in buffers().items():
            store.set(f"one/{key}", value)
        store.set_many({f"many/{key}": value for key, value in buffers().items()})
        for key, data in expected.items():
            assert store.get(f"one/{key}") == data, key
            assert store.get(f"many/{key}") == data, key
        assert store.get("one/fortran") == np.arange(6, dtype=np.int32).tobytes()

    def test_names_too_long_for_a_file_read_as_missing(self, store: Store) -> None:
        for key in (LONG_NAME, f"{LONG_NAME}/zarr.json", f"a/{LONG_NAME}"):
            assert store.get(key) is None
            assert store.get_range(key, ByteRange(0, 4)) is None
            assert store.get_many([key]) == {key: None}
            assert not store.exists(key)
            assert store.getsize(key) is None
            assert store.list_dir(key) == ([], [])
            assert list(store.list_prefix(key)) == []
            store.delete(key)  # a missing key: no error
