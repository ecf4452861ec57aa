"""Stores: bytes in, bytes out, by key (memory, local directory, and registered schemes)."""

from __future__ import annotations

from torchzarr.storage.base import ByteRange, Store, validate_key
from torchzarr.storage.local import LocalStore
from torchzarr.storage.memory import MemoryStore
from torchzarr.storage.registry import register_store, registered_stores, resolve_store

__all__ = [
    "ByteRange",
    "LocalStore",
    "MemoryStore",
    "Store",
    "register_store",
    "registered_stores",
    "resolve_store",
    "validate_key",
]
