"""``MemoryStore``: keys and bytes in a dict, for tests, scratch data and ``memory://`` URLs."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from typing import Any

from torchzarr.errors import ArgumentTypeError
from torchzarr.forksafe import new_lock
from torchzarr.storage.base import Buffer, Store, validate_key, validate_prefix
from torchzarr.storage.buffers import as_bytes
from torchzarr.storage.store_args import flag

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
        self._data: dict[str, bytes] = {
            validate_key(k): as_bytes("MemoryStore data", k, v) for k, v in _items(data)
        }
        self._lock = new_lock()
        self.read_only = flag("read_only", read_only)
        self._name = f"memory-{next(_counter)}"
        self._serial = next(_counter)  # names this dict's data, whatever the store is called
        self._prefix = ""  # a view of the keys below a path of another store's dict ("a/b/")

    def __getstate__(self) -> dict[str, Any]:
        with self._lock:
            data = {k[len(self._prefix) :]: v for k, v in self._data.items() if self._mine(k)}
        return {"data": data, "read_only": self.read_only, "name": self._name}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._data = state["data"]
        self._lock = new_lock()
        self.read_only = state["read_only"]
        self._name = state["name"]
        self._serial = next(_counter)  # a copy by value is other data (an id() is reused)
        self._prefix = ""

    @property
    def identity(self) -> str:
        # a view's identity is its root's joined with its path: caches see one location
        return f"memory://{self._root_name()}@{self._serial}/{self._prefix}".rstrip("/")

    def _root_name(self) -> str:
        return self._name[: len(self._name) - len(self._prefix)].rstrip("/")

    def _mine(self, key: str) -> bool:
        return key.startswith(self._prefix)

    def __repr__(self) -> str:
        return f"MemoryStore({self._name}{', read-only' if self.read_only else ''})"

    def get(self, key: str) -> bytes | None:
        return self._data.get(self._prefix + validate_key(key))

    def exists(self, key: str) -> bool:
        return self._prefix + validate_key(key) in self._data

    def getsize(self, key: str) -> int | None:
        value = self._data.get(self._prefix + validate_key(key))
        return None if value is None else len(value)

    def set(self, key: str, value: Buffer) -> None:
        self._check_writable(key)
        data = as_bytes(self, key, value)
        with self._lock:
            self._data[self._prefix + validate_key(key)] = data

    def delete(self, key: str) -> None:
        self._check_writable(key)
        with self._lock:
            self._data.pop(self._prefix + validate_key(key), None)

    def delete_prefix(self, prefix: str) -> None:
        self._check_writable(prefix or "/")  # refused read-only, even with nothing under it
        super().delete_prefix(prefix)

    def list_prefix(self, prefix: str) -> Iterator[str]:
        validate_prefix(prefix)
        full, cut = self._prefix + prefix, len(self._prefix)
        with self._lock:
            keys = list(self._data)
        return iter([k[cut:] for k in keys if k.startswith(full)])

    def with_read_only(self, read_only: bool = True) -> MemoryStore:
        return self._view(self._name, self._prefix, read_only)

    def _view(self, name: str, prefix: str, read_only: bool) -> MemoryStore:
        """A store of this one's dict, called ``name``, of the keys below ``prefix``."""
        clone = MemoryStore.__new__(MemoryStore)
        clone._data = self._data
        clone._lock = self._lock
        clone._name, clone._serial, clone._prefix = name, self._serial, prefix
        clone.read_only = read_only
        return clone


def _items(data: Any) -> list[tuple[Any, Any]]:
    if data is None:
        return []
    if not isinstance(data, Mapping):
        raise ArgumentTypeError(
            f"MemoryStore data must be a mapping of keys to bytes, got {data!r:.80}"
        )
    return list(data.items())


def named_memory_store(name: str) -> MemoryStore:
    """The process-wide memory store called ``name`` (``memory://name``), created on first use.

    A name with a path (``memory://scratch/runs/a``) is the store ``scratch`` seen from
    that path, as a directory below a local store's: what is written through one is a node
    of the other (``runs/a`` of ``memory://scratch``).

    Example:
        >>> named_memory_store("scratch") is named_memory_store("scratch")
        True
        >>> named_memory_store("scratch/runs/a").set("zarr.json", b"{}")
        >>> named_memory_store("scratch").get("runs/a/zarr.json")
        b'{}'
    """
    root, _, path = name.partition("/")
    with _named_lock:
        if root not in _named:
            store = MemoryStore()
            store._name = root
            _named[root] = store
        store = _named[root]
    path = "/".join(part for part in path.split("/") if part)
    if not path:
        return store
    validate_prefix(path + "/")
    return store._view(f"{root}/{path}", path + "/", read_only=False)
