"""Store wrappers: ``ReadOnlyStore``, a view over any store that refuses writes."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from torchzarr.storage.base import Buffer, ByteRange, Store

__all__ = ["ReadOnlyStore"]


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
        self._check_writable(key)

    def delete(self, key: str) -> None:
        self._check_writable(key)

    def with_read_only(self, read_only: bool = True) -> Store:
        return self if read_only else self.inner

    def close(self) -> None:
        self.inner.close()

    def __getstate__(self) -> dict[str, Any]:
        return {"inner": self.inner}
