"""The feature store: entity features written and gathered by int64 id inside training loops."""

from __future__ import annotations

from torchzarr.features.index import FeatureBatch
from torchzarr.features.store import FeatureStore

__all__ = ["FeatureBatch", "FeatureStore"]
