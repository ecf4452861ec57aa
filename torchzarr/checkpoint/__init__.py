"""Checkpoints as Zarr groups: typed, pickle-free, versioned and committed atomically.

Example:
    >>> import torch, torchzarr as tz
    >>> _ = tz.checkpoint.save_checkpoint({"w": torch.arange(3)}, "memory://ckpt-pkg-doc")
    >>> tz.checkpoint.load_checkpoint("memory://ckpt-pkg-doc")["w"]
    tensor([0, 1, 2])
"""

from __future__ import annotations

from torchzarr.checkpoint.commit import read_manifest
from torchzarr.checkpoint.load import load_checkpoint
from torchzarr.checkpoint.save import AsyncCheckpointer, save_checkpoint
from torchzarr.checkpoint.snapshots import snapshot
from torchzarr.checkpoint.values import UnrepresentableError

__all__ = [
    "AsyncCheckpointer",
    "UnrepresentableError",
    "load_checkpoint",
    "read_manifest",
    "save_checkpoint",
    "snapshot",
]
