"""PyTorch datasets over Zarr arrays: map-style, chunk-block sampling, streaming, device prefetch."""

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
