"""torchzarr: Zarr v2/v3 arrays and groups read as torch tensors, written from them.

Example:
    >>> import torch, torchzarr as tz
    >>> arr = tz.create_array("memory://", shape=(4, 2), dtype=torch.float32, chunks=(2, 2))
    >>> arr[:] = torch.arange(8.0).reshape(4, 2)
    >>> arr[1]
    tensor([2., 3.])
"""

from __future__ import annotations

from torchzarr import codecs, errors, storage, telemetry
from torchzarr.config import config
from torchzarr.core.api import (
    consolidate_metadata,
    create_array,
    create_group,
    open,
    open_array,
    open_group,
)
from torchzarr.core.array import Array
from torchzarr.core.cache import ChunkCache
from torchzarr.core.group import Group
from torchzarr.storage import LocalStore, MemoryStore, Store

__version__ = "0.1.0"

__all__ = [
    "Array",
    "ChunkCache",
    "Group",
    "LocalStore",
    "MemoryStore",
    "Store",
    "__version__",
    "codecs",
    "config",
    "consolidate_metadata",
    "create_array",
    "create_group",
    "errors",
    "open",
    "open_array",
    "open_group",
    "storage",
    "telemetry",
]
