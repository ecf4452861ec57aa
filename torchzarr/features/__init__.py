"""The feature store: entity features written and gathered by int64 id inside training loops.

Example:
    >>> import torch
    >>> from torchzarr.features import FeatureStore
    >>> fs = FeatureStore("memory://", mode="w")
    >>> fs.write([7, 3], {"age": torch.tensor([30, 40])})
    >>> fs.read([3])["age"].tolist()
    [40]
"""

from __future__ import annotations

from torchzarr.features.index import FeatureBatch
from torchzarr.features.store import FeatureStore

__all__ = ["FeatureBatch", "FeatureStore"]
