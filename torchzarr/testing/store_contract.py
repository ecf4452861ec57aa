"""``StoreContract``: the pytest suite every Store passes; each store adds a short subclass."""

from __future__ import annotations

import os
import pickle
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch

from torchzarr.core.api import create_array, open_array
from torchzarr.errors import InvalidKeyError, ReadOnlyError
from torchzarr.storage.base import ByteRange, Store

__all__ = ["StoreContract"]

_BAD_KEYS = ("", "/abs", "a/../b", "a//b", "./a", "a/.", "a\\b", "nul\x00", "caf\udce9")
#: "x/a/b" and "xa/e" hold "a/" and "a" past their start: a prefix never matches inside a key
_TREE = {
    "a/b/c": b"1",
    "a/b/d": b"22",
    "a/e": b"333",
    "f": b"",
    "ab/x": b"5",
    "x/a/b": b"6",
    "xa/e": b"7",
}


class StoreContract:
    """The behaviour every Store must have, as a pytest base class.

    Subclass it as ``Test<Something>`` and override :meth:`make_store` to return a new,
    empty store (under ``tmp_path`` for file-backed ones). Stores whose pickled copy cannot
    see the original's data set ``persistent = False``, those that pickle their data by
    value ``pickles_by_value = True``; :meth:`store_label` says what a
    read-only error must name, :meth:`open_again` how to reach the same data again.

    Example:
        >>> from torchzarr.storage.memory import MemoryStore
        >>> class TestMemory(StoreContract):
        ...     def make_store(self, tmp_path):
        ...         return MemoryStore()
    """

    #: a pickled copy reopens on the same data (False: skip that check)
    persistent: ClassVar[bool] = True
    #: a pickled copy is an independent copy of the data (with its own identity)
    pickles_by_value: ClassVar[bool] = False
    #: ``os.fork`` is tested when the platform has it
    fork_safe: ClassVar[bool] = True

    def make_store(self, tmp_path: Path) -> Store:
        """A new, empty, writable store."""
        raise NotImplementedError("StoreContract subclasses override make_store")

    def store_label(self, store: Store) -> str:
        """Text a read-only error must contain to name the store."""
        return type(store).__name__

    def open_again(self, store: Store) -> Store | None:
        """Another store object over the same data, as opening its URL again makes.

        By default an unpickled copy (a store pickles as its spec); None (the identity
        checks that need one are skipped) for stores that pickle their data by value.
        """
        if not self.persistent or self.pickles_by_value:
            return None
        return pickle.loads(pickle.dumps(store))

    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[Store]:
        store = self.make_store(tmp_path)
        try:
            yield store
        finally:
            store.close()

    def fill(self, store: Store) -> None:
        for key, value in _TREE.items():
            store.set(key, value)

    # -- reads and writes ------------------------------------------------------------------
    def test_get_missing_is_none(self, store: Store) -> None:
        assert store.get("missing") is None
        assert store.get("no/such/key") is None
        assert store.get_range("missing", ByteRange(0, 4)) is None
        assert not store.exists("missing")
        assert store.getsize("missing") is None

    def test_set_get(self, store: Store) -> None:
        store.set("a/zarr.json", b'{"x": 1}')
        store.set("bytes-array", bytearray(b"\x00\x01\xff"))
        store.set("view", memoryview(b"abcdef")[2:])
        store.set("empty", b"")
        assert store.get("a/zarr.json") == b'{"x": 1}'
        assert store.get("bytes-array") == b"\x00\x01\xff"
        assert store.get("view") == b"cdef"
        assert store.get("empty") == b""
        assert store.exists("empty") and store.getsize("view") == 4
        assert isinstance(store.get("bytes-array"), bytes)

    def test_set_copies_the_callers_buffer(self, store: Store) -> None:
        """A store keeps the bytes as they were at set(), not the caller's mutable buffer."""
        buf = bytearray(b"before")
        backing = bytearray(b"xxview")
        store.set("ba", buf)
        store.set("mv", memoryview(backing)[2:])
        store.set_many({"many": buf})
        buf[:] = b"AFTER!"
        backing[2:] = b"VIEW"
        assert store.get("ba") == b"before", "set() kept a reference to the bytearray"
        assert store.get("mv") == b"view", "set() kept a reference to the memoryview"
        assert store.get("many") == b"before", "set_many() kept a reference to the bytearray"

    def test_large_value(self, store: Store) -> None:
        value = np.random.default_rng(0).bytes(3 << 20)
        store.set("big/0.0", value)
        assert store.get("big/0.0") == value
        assert store.get_range("big/0.0", ByteRange(1 << 20, 10)) == value[1 << 20 : (1 << 20) + 10]

    def test_overwrite(self, store: Store) -> None:
        store.set("k", b"first value")
        store.set("k", b"second")
        assert store.get("k") == b"second"
        assert store.get_range("k", ByteRange(-3)) == b"ond"
        assert store.getsize("k") == 6
        assert list(store.list_prefix("")) == ["k"]

    def test_delete(self, store: Store) -> None:
        store.set("a/k", b"v")
        store.set("a/other", b"w")
        store.delete("a/k")
        store.delete("a/k")  # twice: fine
        store.delete("never/written")
        assert store.get("a/k") is None and not store.exists("a/k")
        assert sorted(store.list_prefix("")) == ["a/other"]
        store.set("a/k", b"again")
        assert store.get("a/k") == b"again"

    def test_delete_prefix(self, store: Store) -> None:
        self.fill(store)
        store.delete_prefix("a/")
        assert sorted(store.list_prefix("")) == ["ab/x", "f", "x/a/b", "xa/e"]

    @pytest.mark.parametrize(
        ("rng", "expected"),
        [
            (ByteRange(2, 3), b"234"),
            (ByteRange(0), b"0123456789"),
            (ByteRange(7), b"789"),
            (ByteRange(-3), b"789"),
            (ByteRange(-100), b"0123456789"),
            (ByteRange(8, 100), b"89"),
            (ByteRange(100), b""),
            (ByteRange(4, 0), b""),
        ],
    )
    def test_get_range(self, store: Store, rng: ByteRange, expected: bytes) -> None:
        store.set("r", b"0123456789")
        assert store.get_range("r", rng) == expected
        assert store.get_ranges([("r", rng), ("missing", rng)]) == [expected, None]

    def test_get_many(self, store: Store) -> None:
        self.fill(store)
        got = store.get_many(["a/e", "missing", "f", "a/b/c", "a/e"])
        assert got == {"a/e": b"333", "missing": None, "f": b"", "a/b/c": b"1"}
        assert store.get_many([]) == {}
        many = {f"m/{i}": bytes([i % 256]) * (i % 7) for i in range(1200)}
        store.set_many(many)
        assert store.get_many(list(many)) == many

    # -- listing --------------------------------------------------------------------------
    def test_list_prefix(self, store: Store) -> None:
        assert list(store.list_prefix("")) == []
        self.fill(store)
        assert sorted(store.list_prefix("")) == sorted(_TREE)
        assert sorted(store.list_prefix("a/")) == ["a/b/c", "a/b/d", "a/e"]
        assert sorted(store.list_prefix("a/b/")) == ["a/b/c", "a/b/d"]
        assert sorted(store.list_prefix("a")) == ["a/b/c", "a/b/d", "a/e", "ab/x"]
        assert list(store.list_prefix("zz/")) == []
        assert sorted(store.list_prefix("x")) == ["x/a/b", "xa/e"]
        assert list(store.list_prefix("e")) == [] and list(store.list_prefix("b/")) == []

    def test_list_dir(self, store: Store) -> None:
        assert store.list_dir("") == ([], [])
        self.fill(store)
        assert store.list_dir("") == (["f"], ["a", "ab", "x", "xa"])
        assert store.list_dir("a/") == (["e"], ["b"])
        assert store.list_dir("a/b/") == (["c", "d"], [])
        assert store.list_dir("zz/") == ([], [])

    def test_list_dir_without_trailing_slash(self, store: Store) -> None:
        self.fill(store)  # "a" names the directory "a/": never the names starting with "a"
        assert store.list_dir("a") == store.list_dir("a/") == (["e"], ["b"])
        assert store.list_dir("a/b") == (["c", "d"], [])
        assert store.list_dir("zz") == ([], [])

    # -- refusals ---------------------------------------------------------------------------
    def test_read_only_refuses_writes(self, store: Store) -> None:
        store.set("k", b"v")
        view = store.with_read_only(True)
        assert view.read_only and view.get("k") == b"v"
        for write in (
            lambda: view.set("k", b"x"),
            lambda: view.delete("k"),
            lambda: view.set_many({"k2": b"x"}),
        ):
            with pytest.raises(ReadOnlyError) as info:
                write()
            assert "read-only" in str(info.value)
            assert self.store_label(store) in str(info.value)
        assert store.get("k") == b"v" and store.get("k2") is None

    @pytest.mark.parametrize("key", _BAD_KEYS)
    def test_invalid_keys(self, store: Store, key: str) -> None:
        with pytest.raises(InvalidKeyError):
            store.set(key, b"x")
        with pytest.raises(InvalidKeyError):
            store.get(key)
        with pytest.raises(InvalidKeyError):
            store.get_many(["ok", key])
        with pytest.raises(InvalidKeyError):
            store.exists(key)
        with pytest.raises(InvalidKeyError):
            store.getsize(key)
        with pytest.raises(InvalidKeyError):
            store.set_many({"ok": b"1", key: b"2"})  # checked before any key is written
        assert list(store.list_prefix("")) == []

    # -- processes and threads ---------------------------------------------------------------
    def test_pickle_round_trip(self, store: Store) -> None:
        store.set("p/0", b"payload")
        store.close()  # a store reopens lazily after close
        assert store.get("p/0") == b"payload"
        clone = pickle.loads(pickle.dumps(store))
        try:
            assert type(clone) is type(store) and clone.read_only == store.read_only
            if self.persistent:
                assert clone.get("p/0") == b"payload"
                assert clone.identity == store.identity or self.pickles_by_value
            view = pickle.loads(pickle.dumps(store.with_read_only(True)))
            assert view.read_only
            with pytest.raises(ReadOnlyError):
                view.set("p/1", b"x")
        finally:
            clone.close()

    def test_store_objects_over_the_same_data_share_an_identity(self, store: Store) -> None:
        again = self.open_again(store)
        if again is None:
            pytest.skip("no second store object over the same data")
        try:
            assert again.identity == store.identity, (
                f"two {type(store).__name__} objects over the same data have the identities "
                f"{store.identity!r} and {again.identity!r}: override Store.identity to name "
                "the data (its URL), or chunk locks and caches take them for other data"
            )
            arr = create_array(store, shape=(4,), dtype=torch.float32, chunks=(4,), fill_value=0)
            arr[:] = torch.full((4,), 2.0)
            cached = open_array(again).with_cache()
            assert torch.equal(cached[:], torch.full((4,), 2.0))
            arr[:] = torch.ones(4)  # drops the chunk cached through the other object
            assert torch.equal(cached[:], torch.ones(4))
        finally:
            again.close()

    def test_stores_over_other_data_have_other_identities(
        self, store: Store, tmp_path: Path
    ) -> None:
        (tmp_path / "other").mkdir()
        other = self.make_store(tmp_path / "other")
        try:
            assert other.identity != store.identity, (
                f"two {type(store).__name__} objects over other data share the identity "
                f"{store.identity!r}: chunk locks and caches would take them for the same data"
            )
        finally:
            other.close()

    def test_fork_child_reads(self, store: Store) -> None:
        if not self.fork_safe or not hasattr(os, "fork"):
            pytest.skip("no os.fork here")
        store.set("f/0", b"from parent")
        assert store.get("f/0") == b"from parent"  # the parent's handles are open now
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 1
            try:
                ok = store.get("f/0") == b"from parent" and store.get("f/1") is None
                os.write(write_fd, b"ok" if ok else b"bad")
                code = 0
            finally:
                os._exit(code)
        os.close(write_fd)
        _, status = os.waitpid(pid, 0)
        answer = os.read(read_fd, 16)
        os.close(read_fd)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        assert answer == b"ok"
        store.set("f/1", b"parent writes on")
        assert store.get_many(["f/0", "f/1"]) == {"f/0": b"from parent", "f/1": b"parent writes on"}

    def test_threads_write_different_keys(self, store: Store) -> None:
        errors: list[BaseException] = []

        def work(t: int) -> None:
            try:
                for i in range(25):
                    store.set(f"t{t}/{i}", f"{t}:{i}".encode())
                    assert store.get(f"t{t}/{i}") == f"{t}:{i}".encode()
            except BaseException as err:
                errors.append(err)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        keys = sorted(store.list_prefix(""))
        assert len(keys) == 150
        got = store.get_many(keys)
        assert all(got[f"t{t}/{i}"] == f"{t}:{i}".encode() for t in range(6) for i in range(25))

    # -- a Zarr array on the store -------------------------------------------------------------
    def test_array_round_trip(self, store: Store) -> None:
        data = torch.arange(60, dtype=torch.float32).reshape(10, 6)
        arr = create_array(store, shape=(10, 6), dtype=torch.float32, chunks=(4, 4))
        arr[:] = data
        arr[1:3, 2:5] = torch.full((2, 3), -1.0)  # partial chunks: read, modify, write
        data[1:3, 2:5] = -1.0
        back = open_array(store, mode="r")
        assert back.shape == (10, 6)
        assert torch.equal(back[:], data)
        assert torch.equal(back[3:9, 1:5], data[3:9, 1:5])
        assert "zarr.json" in list(store.list_prefix(""))
