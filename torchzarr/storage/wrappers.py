"""Store wrappers: ``ForwardingStore`` (the base of wrappers), ``ReadOnlyStore`` (refuses
writes) and ``LoggingStore`` (logs every call with its keys, bytes and time)."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from torchzarr.storage.base import Buffer, ByteRange, Store

__all__ = ["ForwardingStore", "LoggingStore", "ReadOnlyStore", "payload_bytes"]


class ReadOnlyStore(Store):
    """Forwards reads to ``inner`` and refuses every write with ``ReadOnlyError``.

    Example:
        >>> from torchzarr.storage.memory import MemoryStore
        >>> view = ReadOnlyStore(MemoryStore({"a": b"1"}))
        >>> view.get("a"), view.read_only
        (b'1', True)
    """

    read_only = True

    def __init__(self, inner: Store) -> None:
        self.inner = inner

    def __repr__(self) -> str:
        return f"ReadOnlyStore({self.inner!r})"

    @property
    def identity(self) -> str:
        return self.inner.identity

    def get(self, key: str) -> bytes | None:
        return self.inner.get(key)

    def get_range(self, key: str, byte_range: ByteRange) -> bytes | None:
        return self.inner.get_range(key, byte_range)

    def get_many(self, keys: Sequence[str]) -> dict[str, bytes | None]:
        return self.inner.get_many(keys)

    def get_ranges(self, requests: Sequence[tuple[str, ByteRange]]) -> list[bytes | None]:
        return self.inner.get_ranges(requests)

    def exists(self, key: str) -> bool:
        return self.inner.exists(key)

    def getsize(self, key: str) -> int | None:
        return self.inner.getsize(key)

    def list_prefix(self, prefix: str) -> Iterator[str]:
        return self.inner.list_prefix(prefix)

    def list_dir(self, prefix: str) -> tuple[list[str], list[str]]:
        return self.inner.list_dir(prefix)

    def set(self, key: str, value: Buffer) -> None:
        """Refused: raises ``ReadOnlyError`` naming ``key`` (so do ``set_many`` and the
        other writes, which go through here)."""
        self._check_writable(key)

    def delete(self, key: str) -> None:
        """Refused: raises ``ReadOnlyError`` naming ``key`` (so does ``delete_many``)."""
        self._check_writable(key)

    def delete_prefix(self, prefix: str) -> None:
        """Refused: raises ``ReadOnlyError`` naming ``prefix``, keys under it or none."""
        self._check_writable(prefix or "/")

    def with_read_only(self, read_only: bool = True) -> Store:
        return self if read_only else self.inner

    def close(self) -> None:
        self.inner.close()

    def __getstate__(self) -> dict[str, Any]:
        return {"inner": self.inner}


class ForwardingStore(Store):
    """Forwards everything to ``inner`` through ``_call`` (subclasses add behaviour there).

    Example:
        >>> from torchzarr.storage.memory import MemoryStore
        >>> ForwardingStore(MemoryStore({"a": b"1"})).get("a")
        b'1'
    """

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def _locked(self) -> threading.Lock:
        # a lock inherited through fork may be held by a parent thread that does not exist here
        if self._pid != os.getpid():
            self._lock, self._pid = threading.Lock(), os.getpid()
        return self._lock

    @property
    def read_only(self) -> bool:  # type: ignore[override]
        return self.inner.read_only

    @property
    def identity(self) -> str:
        return self.inner.identity  # the same data: caches may share entries

    def _call(self, method: str, keys: Sequence[str], *args: Any) -> Any:
        return getattr(self.inner, method)(*args)

    def get(self, key: str) -> bytes | None:
        return self._call("get", [key], key)

    def get_range(self, key: str, byte_range: ByteRange) -> bytes | None:
        return self._call("get_range", [key], key, byte_range)

    def get_many(self, keys: Sequence[str]) -> dict[str, bytes | None]:
        return self._call("get_many", list(keys), keys)

    def get_ranges(self, requests: Sequence[tuple[str, ByteRange]]) -> list[bytes | None]:
        keys = [key for key, _ in requests]
        return self._call("get_ranges", keys, requests)

    def exists(self, key: str) -> bool:
        return bool(self._call("exists", [key], key))

    def getsize(self, key: str) -> int | None:
        return self._call("getsize", [key], key)

    def set(self, key: str, value: Buffer) -> None:
        self._call("set", [key], key, value)

    def set_many(self, items: Mapping[str, Buffer]) -> None:
        self._call("set_many", list(items), items)

    def delete(self, key: str) -> None:
        self._call("delete", [key], key)

    def delete_many(self, keys: Iterable[str]) -> None:
        keys = list(keys)
        self._call("delete_many", keys, keys)

    def delete_prefix(self, prefix: str) -> None:
        self._call("delete_prefix", [prefix], prefix)

    def list_prefix(self, prefix: str) -> Iterator[str]:
        return iter(self._call("list_prefix", [prefix], prefix))

    def list_dir(self, prefix: str) -> tuple[list[str], list[str]]:
        return self._call("list_dir", [prefix], prefix)

    def close(self) -> None:
        self.inner.close()

    # with_read_only is the base one, a ReadOnlyStore over this wrapper: the read-only view
    # shares its delays, faults and counters


class LoggingStore(ForwardingStore):
    """Logs every call to ``inner`` on the ``torchzarr.store`` logger (at ``level``): the
    method, its first keys, the bytes moved and the time taken; failures are logged too.

    For finding out what a read asks of a remote store: how many requests, of what size.

    Args:
        inner: the store holding the data.
        level: the logging level of the records (``logging.DEBUG`` by default).
        logger: the logger to use (``logging.getLogger("torchzarr.store")`` by default).

    Example:
        >>> import logging
        >>> from torchzarr.storage.memory import MemoryStore
        >>> logged = LoggingStore(MemoryStore({"a": b"12"}), level=logging.INFO)
        >>> logged.get("a")
        b'12'
    """

    def __init__(
        self, inner: Store, level: int = logging.DEBUG, logger: logging.Logger | None = None
    ) -> None:
        super().__init__(inner)
        self.level = level
        self.logger = logger or logging.getLogger("torchzarr.store")

    def __repr__(self) -> str:
        return f"LoggingStore({self.inner!r})"

    def _call(self, method: str, keys: Sequence[str], *args: Any) -> Any:
        if not self.logger.isEnabledFor(self.level):
            return getattr(self.inner, method)(*args)
        shown = ", ".join(map(repr, keys[:3])) + (
            f" (+{len(keys) - 3} more)" if len(keys) > 3 else ""
        )
        start = time.perf_counter()
        try:
            result = getattr(self.inner, method)(*args)
            if method == "list_prefix":
                result = list(result)
        except Exception as err:
            self.logger.log(
                self.level,
                "%s %s failed after %.1f ms: %s",
                method,
                shown,
                (time.perf_counter() - start) * 1e3,
                err,
            )
            raise
        written = payload_bytes(args[-1]) if method in ("set", "set_many") else 0
        self.logger.log(
            self.level,
            "%s %s: wrote %d bytes, read %d bytes, %.1f ms",
            method,
            shown,
            written,
            payload_bytes(result),
            (time.perf_counter() - start) * 1e3,
        )
        return result

    def __getstate__(self) -> dict[str, Any]:
        return {"inner": self.inner, "level": self.level, "name": self.logger.name}

    def __setstate__(self, state: dict[str, Any]) -> None:
        LoggingStore.__init__(
            self, state["inner"], state["level"], logging.getLogger(state["name"])
        )


def payload_bytes(value: Any) -> int:
    """Bytes in a value a store call took or returned (bytes, or dicts and lists of them).

    Example:
        >>> payload_bytes({"a": b"12", "b": None}), payload_bytes([b"1", b"234"])
        (2, 4)
    """
    if isinstance(value, bytes | bytearray | memoryview):
        return memoryview(value).nbytes
    if isinstance(value, Mapping):
        return sum(payload_bytes(v) for v in value.values())
    if isinstance(value, list):
        return sum(payload_bytes(v) for v in value)
    return 0
