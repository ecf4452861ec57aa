"""A training loop that looks up entity features by id, prefetching the next batch's rows.

Run: python examples/feature_store_training.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from torchzarr.features import FeatureStore


def build_store(path: Path, users: int = 5_000, dim: int = 16) -> None:
    """Write user embeddings and labels keyed by (sparse, unordered) user id."""
    gen = torch.Generator().manual_seed(0)
    ids = torch.randperm(users * 10, generator=gen)[:users] + 1_000_000
    emb = torch.randn(users, dim, generator=gen)
    labels = (emb.sum(dim=1) > 0).long()
    with FeatureStore(str(path), mode="w") as fs:
        fs.write(ids, {"emb": emb, "label": labels})


def train(path: Path, steps: int = 60, batch_size: int = 256) -> float:
    """Logistic regression on the stored embeddings; returns the last loss."""
    fs = FeatureStore(str(path), mode="r")
    all_ids = fs.ids
    gen = torch.Generator().manual_seed(1)
    model = torch.nn.Linear(fs.array("emb").shape[1], 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    next_ids = all_ids[torch.randint(len(all_ids), (batch_size,), generator=gen)]
    fs.prefetch(next_ids)
    loss = torch.tensor(0.0)
    for _ in range(steps):
        ids = next_ids
        batch = fs.read(ids)  # served by the prefetch started during the previous step
        next_ids = all_ids[torch.randint(len(all_ids), (batch_size,), generator=gen)]
        fs.prefetch(next_ids)  # the next batch's chunks load while this step trains
        loss = torch.nn.functional.cross_entropy(model(batch["emb"]), batch["label"])
        opt.zero_grad()
        loss.backward()
        opt.step()
    fs.close()
    return float(loss.detach())


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "features.zarr"
        build_store(path)
        loss = train(path)
        print(f"final loss {loss:.3f}")
        assert loss < 0.5, "the features should make the labels easy to learn"


if __name__ == "__main__":
    main()
