"""Stores: bytes in, bytes out, by key (memory, local, zip, databases, registered schemes).

The database stores import their client packages (lmdb, redis) only when first used.
"""

from __future__ import annotations

from torchzarr.storage.base import ByteRange, Store, validate_key
from torchzarr.storage.fsspec_store import FsspecStore
from torchzarr.storage.lmdb import LMDBStore
from torchzarr.storage.local import LocalStore
from torchzarr.storage.memory import MemoryStore
from torchzarr.storage.redis import RedisStore
from torchzarr.storage.registry import register_store, registered_stores, resolve_store
from torchzarr.storage.sqlite import SQLiteStore
from torchzarr.storage.zip import ZipStore

__all__ = [
    "ByteRange",
    "FsspecStore",
    "LMDBStore",
    "LocalStore",
    "MemoryStore",
    "RedisStore",
    "SQLiteStore",
    "Store",
    "ZipStore",
    "register_store",
    "registered_stores",
    "resolve_store",
    "validate_key",
]
