"""torchzarr: Zarr v2/v3 arrays and groups read as torch tensors, written from them.

Example:
    >>> import torch, torchzarr as tz
    >>> arr = tz.create_array("memory://", shape=(4, 2), dtype=torch.float32, chunks=(2, 2))
    >>> arr[:] = torch.arange(8.0).reshape(4, 2)
    >>> arr[1]
    tensor([2., 3.])
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from torchzarr import checkpoint, codecs, data, errors, features, storage, telemetry
from torchzarr.checkpoint import AsyncCheckpointer, load_checkpoint, save_checkpoint
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
from torchzarr.core.from_array import from_array
from torchzarr.core.group import Group
from torchzarr.data import ChunkBlockSampler, ZarrDataset, ZarrIterableDataset
from torchzarr.features import FeatureBatch, FeatureStore
from torchzarr.storage import (
    FsspecStore,
    LMDBStore,
    LocalStore,
    MemoryStore,
    RedisStore,
    SQLiteStore,
    Store,
    ZipStore,
)

__version__ = "0.1.0"

if TYPE_CHECKING:
    from torchzarr import distributed, lightning

# Lightning and torch.distributed load only when these modules are first used.
_LAZY_MODULES = ("distributed", "lightning")


def __getattr__(name: str) -> Any:
    if name in _LAZY_MODULES:
        module = importlib.import_module(f"torchzarr.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'torchzarr' has no attribute {name!r}")


__all__ = [
    "Array",
    "AsyncCheckpointer",
    "ChunkBlockSampler",
    "ChunkCache",
    "FeatureBatch",
    "FeatureStore",
    "FsspecStore",
    "Group",
    "LMDBStore",
    "LocalStore",
    "MemoryStore",
    "RedisStore",
    "SQLiteStore",
    "Store",
    "ZarrDataset",
    "ZarrIterableDataset",
    "ZipStore",
    "__version__",
    "checkpoint",
    "codecs",
    "config",
    "consolidate_metadata",
    "create_array",
    "create_group",
    "data",
    "distributed",
    "errors",
    "features",
    "from_array",
    "lightning",
    "load_checkpoint",
    "open",
    "open_array",
    "open_group",
    "save_checkpoint",
    "storage",
    "telemetry",
]
