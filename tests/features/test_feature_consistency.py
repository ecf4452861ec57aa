"""One writer, many readers: a read never sees part of a write call."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import torchzarr as tz
from torchzarr.features import FeatureStore

WRITES = 40
STEP = 7  # ids appended per write


def _run(writer: Callable[[], None], readers: list[Callable[[threading.Event], int]]) -> list[int]:
    """Run the writer and readers together; return how many checks each reader made."""
    done = threading.Event()
    errors: list[BaseException] = []
    counts = [0] * len(readers)

    def reader_main(i: int) -> None:
        try:
            while not done.is_set():
                counts[i] += readers[i](done)
            counts[i] += readers[i](done)  # one last look at the final state
        except BaseException as err:  # reported in the main thread
            errors.append(err)

    threads = [threading.Thread(target=reader_main, args=(i,)) for i in range(len(readers))]
    for t in threads:
        t.start()
    try:
        writer()
    finally:
        done.set()
        for t in threads:
            t.join(60)
    if errors:
        raise errors[0]
    return counts


def _batch(gen: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Write ``gen`` rewrites every id so far and appends STEP new ones."""
    ids = torch.arange(STEP * (gen + 1), dtype=torch.int64)
    emb = torch.stack([torch.full_like(ids, gen), ids], dim=1).float()
    return ids.flip(0), {"emb": emb.flip(0), "gen": torch.full((ids.numel(),), gen).flip(0)}


@pytest.mark.parametrize("kind", ["memory", "local"])
def test_shared_instance_readers_see_whole_writes(kind: str, tmp_path: Path) -> None:
    store = tz.MemoryStore() if kind == "memory" else tz.LocalStore(str(tmp_path / "fs"))
    fs = FeatureStore(store, mode="w", chunk_bytes=64)  # many small chunks per write
    fs.write(*_batch(0))

    def writer() -> None:
        for gen in range(1, WRITES):
            fs.write(*_batch(gen))

    def reader(_: threading.Event) -> int:
        ids = fs.ids  # a published snapshot; the read below may see a later one
        batch = fs.read(torch.cat([ids, ids[:3]]), missing="raise")
        gens = batch["gen"]
        g = int(gens[0])
        # every row from one write call: the same generation in every row and every feature
        assert torch.all(gens == g), f"rows from different writes: {gens.unique().tolist()}"
        assert torch.all(batch["emb"][:, 0] == g)
        assert torch.equal(batch["emb"][:, 1], torch.cat([ids, ids[:3]]).float())
        assert g >= (ids.numel() // STEP) - 1  # never older than the ids it was asked for
        return 1

    counts = _run(writer, [reader, reader, reader])
    assert all(c > 0 for c in counts)
    assert len(fs) == STEP * WRITES
    assert int(fs.read([0])["gen"][0]) == WRITES - 1


def test_prefetching_reader_sees_whole_writes() -> None:
    fs = FeatureStore(tz.MemoryStore(), mode="w", chunk_bytes=64)
    fs.write(*_batch(0))

    def writer() -> None:
        for gen in range(1, WRITES):
            fs.write(*_batch(gen))

    def reader(_: threading.Event) -> int:
        ids = torch.arange(STEP)
        fs.prefetch(ids)
        batch = fs.read(ids)
        assert torch.all(batch["gen"] == batch["gen"][0])
        assert torch.all(batch["emb"][:, 0] == batch["gen"].float())
        return 1

    assert _run(writer, [reader])[0] > 0


def test_other_instances_see_only_complete_appended_rows(tmp_path: Path) -> None:
    path = str(tmp_path / "fs")
    fs = FeatureStore(path, mode="w", chunk_bytes=64)
    fs.write([0], {"emb": torch.zeros(1, 2), "label": torch.zeros(1, dtype=torch.int64)})

    def writer() -> None:
        for gen in range(1, WRITES):
            ids = torch.arange(gen * STEP - STEP + 1, gen * STEP + 1)
            fs.write(ids, {"emb": ids[:, None].repeat(1, 2).float(), "label": ids})

    def reader(_: threading.Event) -> int:
        other = FeatureStore(path, mode="r")  # as a DataLoader worker would open it
        ids = other.ids
        batch = other.read(ids)
        assert torch.equal(batch["label"], ids), "a published row is incomplete"
        assert torch.equal(batch["emb"], ids[:, None].repeat(1, 2).float())
        return 1

    counts = _run(writer, [reader, reader])
    assert all(c > 0 for c in counts)


def test_another_instance_in_the_process_sees_overwrites_before_it_refreshes(
    tmp_path: Path,
) -> None:
    """As the docs say: only the published ids and features wait for a refresh; the rows of
    the arrays are read as they are, so a read of another instance can mix two writes."""
    path = str(tmp_path / "fs")
    writer = FeatureStore(path, mode="w")
    writer.write([1, 2], {"a": torch.tensor([1.0, 2.0]), "b": torch.tensor([1, 2])})
    other = FeatureStore(path, mode="r")
    assert other.read([1])["a"].tolist() == [1.0]
    writer.write([1], {"a": torch.tensor([10.0])})
    writer.write([3], {"c": torch.tensor([3.0])})
    assert other.version == 1 and other.read([1])["a"].tolist() == [10.0]  # no refresh ran
    assert other.features == ("a", "b") and 3 not in other  # these wait for a refresh
