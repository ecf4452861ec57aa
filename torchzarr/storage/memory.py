"""``MemoryStore``: keys and bytes in a dict, for tests, scratch data and ``memory://`` URLs."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from typing import Any

from torchzarr.forksafe import new_lock
from torchzarr.storage.base import Buffer, Store, validate_key, validate_prefix

__all__ = ["MemoryStore", "named_memory_store"]

_counter = itertools.count()
_named: dict[str, MemoryStore] = {}
_named_lock = new_lock()


class MemoryStore(Store):
    """A store held in a Python dict; thread-safe, pickles by value.

    Example:
        >>> store = MemoryStore()
        >>> store.set("a/zarr.json", b"{}")
        >>> list(store.list_prefix("a/"))
        ['a/zarr.json']
    """

    def __init__(
        self, data: Mapping[str, Buffer] | None = None, *, read_only: bool = False
    ) -> None:
        self._data: dict[str, bytes] = {validate_key(k): bytes(v) for k, v in (data or {}).items()}
        self._lock = new_lock()
        self.read_only = read_only
        self._name = f"memory-{next(_counter)}"
        self._serial = next(_counter)  # names this dict's data, whatever the store is called

    def __getstate__(self) -> dict[str, Any]:
        with self._lock:
            return {"data": dict(self._data), "read_only": self.read_only, "name": self._name}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._data = state["data"]
        self._lock = new_lock()
        self.read_only = state["read_only"]
        self._name = state["name"]
        self._serial = next(_counter)  # a copy by value is other data (an id() is reused)

    @property
    def identity(self) -> str:
        return f"memory://{self._name}@{self._serial}"

    def __repr__(self) -> str:
        return f"MemoryStore({self._name}{', read-only' if self.read_only else ''})"

    def get(self, key: str) -> bytes | None:
        return self._data.get(validate_key(key))

    def exists(self, key: str) -> bool:
        return validate_key(key) in self._data

    def getsize(self, key: str) -> int | None:
        value = self._data.get(validate_key(key))
        return None if value is None else len(value)

    def set(self, key: str, value: Buffer) -> None:
        self._check_writable(key)
        data = bytes(value)
        with self._lock:
            self._data[validate_key(key)] = data

    def delete(self, key: str) -> None:
        self._check_writable(key)
        with self._lock:
            self._data.pop(validate_key(key), None)

    def list_prefix(self, prefix: str) -> Iterator[str]:
        validate_prefix(prefix)
        with self._lock:
            keys = list(self._data)
        return iter([k for k in keys if k.startswith(prefix)])

    def with_read_only(self, read_only: bool = True) -> MemoryStore:
        clone = MemoryStore.__new__(MemoryStore)
        clone._data = self._data
        clone._lock = self._lock
        clone._name, clone._serial = self._name, self._serial
        clone.read_only = read_only
        return clone


def named_memory_store(name: str) -> MemoryStore:
    """The process-wide memory store called ``name`` (``memory://name``), created on first use.

    Example:
        >>> named_memory_store("scratch") is named_memory_store("scratch")
        True
    """
    with _named_lock:
        if name not in _named:
            store = MemoryStore()
            store._name = name
            _named[name] = store
        return _named[name]
