"""PyTorch datasets over Zarr arrays: map-style, chunk-block sampling, streaming, device prefetch.

Example:
    >>> import torch, torchzarr as tz
    >>> ids = tz.create_array("memory://", data=torch.arange(10), chunks=(4,))
    >>> ds = tz.data.ZarrIterableDataset(ids, batch_size=5, shuffle=False)
    >>> [batch.tolist() for batch in ds]
    [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
"""

from torchzarr.data.dataset import ZarrDataset
from torchzarr.data.iterable import ZarrIterableDataset
from torchzarr.data.partition import Layout
from torchzarr.data.pinned import DevicePrefetcher, PinnedRing
from torchzarr.data.sampler import ChunkBlockSampler

__all__ = [
    "ChunkBlockSampler",
    "DevicePrefetcher",
    "Layout",
    "PinnedRing",
    "ZarrDataset",
    "ZarrIterableDataset",
]
