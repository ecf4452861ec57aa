"""Stores: bytes in, bytes out, by key (memory, local, zip, databases, registered schemes).

The database stores import their client packages (lmdb, redis) only when first used.

Example:
    >>> from torchzarr.storage import resolve_store
    >>> store = resolve_store("memory://", mode="w")
    >>> store.set("a/zarr.json", b"{}"), sorted(store.list_prefix(""))
    (None, ['a/zarr.json'])
"""

from __future__ import annotations

from torchzarr.storage.base import ByteRange, Store, validate_key
from torchzarr.storage.copy import CopyResult, copy_keys
from torchzarr.storage.faults import FaultInjectedError, FaultyStore, LatencyStore
from torchzarr.storage.fsspec_store import FsspecStore
from torchzarr.storage.lmdb import LMDBStore
from torchzarr.storage.local import LocalStore
from torchzarr.storage.memory import MemoryStore
from torchzarr.storage.redis import RedisStore
from torchzarr.storage.registry import register_store, registered_stores, resolve_store
from torchzarr.storage.retry import RetryingStore, RetryPolicy, is_transient, with_retries
from torchzarr.storage.sqlite import SQLiteStore
from torchzarr.storage.wrappers import LoggingStore, ReadOnlyStore
from torchzarr.storage.zip import ZipStore

__all__ = [
    "ByteRange",
    "CopyResult",
    "FaultInjectedError",
    "FaultyStore",
    "FsspecStore",
    "LMDBStore",
    "LatencyStore",
    "LocalStore",
    "LoggingStore",
    "MemoryStore",
    "ReadOnlyStore",
    "RedisStore",
    "RetryPolicy",
    "RetryingStore",
    "SQLiteStore",
    "Store",
    "ZipStore",
    "copy_keys",
    "is_transient",
    "register_store",
    "registered_stores",
    "resolve_store",
    "validate_key",
    "with_retries",
]
