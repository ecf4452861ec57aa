"""``torch.distributed.checkpoint`` storage for Zarr: ``ZarrStorageWriter`` and ``ZarrStorageReader``.

Example:
    >>> import torch, torch.distributed.checkpoint as dcp  # doctest: +SKIP
    >>> from torchzarr.distributed import ZarrStorageReader, ZarrStorageWriter  # doctest: +SKIP
    >>> dcp.save(state, storage_writer=ZarrStorageWriter("ckpt/step100"))  # doctest: +SKIP
    >>> dcp.load(state, storage_reader=ZarrStorageReader("ckpt/step100"))  # doctest: +SKIP
"""

from __future__ import annotations

from torchzarr.checkpoint.dcp import ZarrStorageReader, ZarrStorageWriter, aligned_chunks
from torchzarr.checkpoint.dcp_metadata import metadata_from_json, metadata_to_json

__all__ = [
    "ZarrStorageReader",
    "ZarrStorageWriter",
    "aligned_chunks",
    "metadata_from_json",
    "metadata_to_json",
]
