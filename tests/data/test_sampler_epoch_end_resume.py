"""A ChunkBlockSampler in a StatefulDataLoader, resumed from a state saved as an epoch ended.

With workers, the loader's iterator draws its first batches from the sampler when it is made
(``iter(loader)``). Lightning loads the loader's state, makes that iterator and only then calls
``set_epoch`` (``FitLoop.setup_data`` before ``on_advance_start``), so a resumed pass must
already be in the right epoch when the iterator is made.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from datahelpers import ids_of, make_array

import torchzarr as tz

sdl = pytest.importorskip("torchdata.stateful_dataloader")

# 103 rows in chunks of 10, batches of 8: 13 batches an epoch


@pytest.fixture
def rows():
    return make_array(tz.MemoryStore())


def _sampler(rows: Any) -> tz.ChunkBlockSampler:
    return tz.ChunkBlockSampler(tz.ZarrDataset(rows), batch_size=8, block_chunks=2, seed=9)


def _loader(rows: Any, num_workers: int) -> tuple[tz.ChunkBlockSampler, Any]:
    sampler = _sampler(rows)
    return sampler, sdl.StatefulDataLoader(
        tz.ZarrDataset(rows), batch_sampler=sampler, num_workers=num_workers
    )


def _order(rows: Any, epoch: int) -> list[list[int]]:
    sampler = _sampler(rows)
    sampler.set_epoch(epoch)
    return [sorted(batch) for batch in sampler]


def _batches(iterator: Any) -> list[list[int]]:
    return [sorted(ids_of(batch)) for batch in iterator]


def _saved(rows: Any, num_workers: int, epoch: int, where: str) -> dict[str, Any]:
    """The loader's state in ``epoch``: after 5 steps, at its last step, or after the loop."""
    sampler, loader = _loader(rows, num_workers)
    for e in range(epoch + 1):
        sampler.set_epoch(e)
        for step, _ in enumerate(loader, 1):
            if e == epoch and step == {"mid": 5, "last step": len(loader)}.get(where):
                state = loader.state_dict()
    return state if where != "after the loop" else loader.state_dict()


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("where", ["last step", "after the loop", "mid"])
@pytest.mark.parametrize("order", ["set_epoch, iter", "iter, set_epoch"])
def test_a_resumed_loader_deals_each_epoch_as_an_uninterrupted_run(rows, num_workers, where, order):
    """``iter, set_epoch`` is Lightning's order on a resume that loads the loader's state."""
    state = _saved(rows, num_workers, epoch=1, where=where)
    resumes_in = 1 if where == "mid" else 2
    sampler, loader = _loader(rows, num_workers)  # a new process
    loader.load_state_dict(state)
    if order == "set_epoch, iter":
        sampler.set_epoch(resumes_in)
        first = _batches(iter(loader))
    else:
        iterator = iter(loader)  # with workers: batches drawn here
        sampler.set_epoch(resumes_in)
        first = _batches(iterator)
    expected = _order(rows, resumes_in)
    assert first == (expected[5:] if where == "mid" else expected)
    sampler.set_epoch(resumes_in + 1)
    assert _batches(loader) == _order(rows, resumes_in + 1)


def test_a_loaded_ended_state_moves_the_sampler_to_the_next_epoch(rows):
    source = _sampler(rows)
    source.set_epoch(1)
    ended = source.state_at(13)
    fresh = _sampler(rows)  # epoch 0, never set: the next pass is epoch 2, whole
    fresh.load_state_dict(ended)
    assert fresh.epoch == 2 and len(fresh) == 13
    assert [sorted(b) for b in fresh] == _order(rows, 2)
    assert fresh.state_dict()["epoch"] == 2

    back = _sampler(rows)
    back.load_state_dict(ended)
    back.set_epoch(1)  # the saved epoch, right after the load: its (empty) end
    assert back.epoch == 1 and list(back) == []
    back.set_epoch(2)
    assert [sorted(b) for b in back] == _order(rows, 2)

    chosen = _sampler(rows)
    chosen.set_epoch(1)  # put in the saved epoch before the load: its (empty) end
    chosen.load_state_dict(ended)
    assert chosen.epoch == 1 and list(chosen) == []
    later = _sampler(rows)
    later.set_epoch(3)  # a later epoch stays
    later.load_state_dict(ended)
    assert later.epoch == 3 and [sorted(b) for b in later] == _order(rows, 3)
    mid = _sampler(rows)
    mid.load_state_dict(source.state_at(4))  # something left: that epoch resumes
    assert mid.epoch == 1 and len(list(mid)) == 9


def test_a_state_moved_past_is_kept_until_the_next_pass(rows):
    """Saved again before a pass or ``set_epoch`` (a job preempted right after its resume),
    or loaded twice, the ended state stays what it was: the saved epoch is not dealt again."""
    source = _sampler(rows)
    source.set_epoch(1)
    ended = source.state_at(13)
    moved = _sampler(rows)
    moved.load_state_dict(ended)
    assert moved.state_dict() == ended and moved.state_at(0) == ended
    again = _sampler(rows)
    again.load_state_dict(moved.state_dict())
    again.set_epoch(1)  # a loop restarting at the saved epoch
    assert list(again) == []
    twice = _sampler(rows)
    twice.load_state_dict(ended)
    twice.load_state_dict(ended)
    assert twice.epoch == 2 and twice.state_dict() == ended
    twice.set_epoch(1)
    assert list(twice) == []
    twice.set_epoch(2)
    assert [sorted(b) for b in twice] == _order(rows, 2)


SAMPLES, BATCH = 150, 25  # 6 steps an epoch


def _module(pl: Any, path: Path, kind: str, seen: list[Any], set_epoch_early: bool) -> Any:
    """A ChunkBlockSampler left to Lightning's set_epoch, or a ZarrIterableDataset moved in
    ``on_train_epoch_start``: both in a StatefulDataLoader with 2 workers."""

    class Recorder(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))
            arr = tz.open_array(path, mode="r")
            if kind == "sampler":
                self.dataset = tz.ZarrDataset(arr)
                self.moved = tz.ChunkBlockSampler(self.dataset, BATCH, block_chunks=2, seed=3)
            else:
                self.dataset = self.moved = _iterable(arr)

        def train_dataloader(self) -> Any:
            if set_epoch_early and not self.trainer.fit_loop.restarting:
                # as docs/datasets.md gives: Lightning makes the iterator before set_epoch
                self.moved.set_epoch(self.trainer.fit_loop.epoch_progress.current.processed)
            how = {"batch_sampler": self.moved} if kind == "sampler" else {"batch_size": None}
            return sdl.StatefulDataLoader(
                self.dataset, num_workers=2, multiprocessing_context="fork", **how
            )

        def on_train_epoch_start(self) -> None:
            if kind == "iterable":
                self.moved.set_epoch(self.current_epoch)

        def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
            seen.append((self.current_epoch, batch.tolist()))
            return self.weight * batch.float().mean()

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.0)

    return Recorder()


def _iterable(arr: Any) -> tz.ZarrIterableDataset:
    return tz.ZarrIterableDataset(arr, batch_size=BATCH, block_chunks=2, seed=3)


def _epoch_order(path: Path, kind: str, epoch: int) -> list[int]:
    arr = tz.open_array(path, mode="r")
    if kind == "sampler":
        sampler = tz.ChunkBlockSampler(tz.ZarrDataset(arr), BATCH, block_chunks=2, seed=3)
        sampler.set_epoch(epoch)
        return [i for batch in sampler for i in batch]
    ds = _iterable(arr)
    ds.set_epoch(epoch)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)
    return torch.cat(list(loader)).tolist()


def _fit(pl: Any, root: Path, module: Any, when: str, resume: Path | None = None) -> None:
    # "epoch end": in on_train_epoch_end; "last step": in on_train_batch_end of the 6th step
    every = {"every_n_epochs": 1} if when == "epoch end" else {"every_n_train_steps": 6}
    saving = pl.callbacks.ModelCheckpoint(
        dirpath=root / "ck",
        filename="{epoch}",
        save_top_k=-1,
        save_on_train_epoch_end=True,
        **every,
    )
    trainer = pl.Trainer(
        max_epochs=3,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
        callbacks=[saving],
    )
    trainer.fit(module, ckpt_path=resume)


@pytest.mark.parametrize(
    ("kind", "when"),
    [("sampler", "epoch end"), ("sampler", "last step"), ("iterable", "epoch end")],
)
def test_a_fit_resumed_at_an_epoch_end_deals_each_epoch_in_its_own_order(tmp_path, kind, when):
    """num_workers=2. An epoch-end checkpoint needs ``set_epoch`` in ``train_dataloader``:
    Lightning loads no loader state there, and sets the epoch only after it made the
    iterator, whose workers drew epoch 0's first batches. A last-step checkpoint resumes a
    sampler through the loaded state, with or without that ``set_epoch``."""
    pl = pytest.importorskip("lightning.pytorch")
    path = tmp_path / "ids.zarr"
    tz.create_array(path, shape=(SAMPLES,), dtype=torch.int64, chunks=(25,))[:] = torch.arange(
        SAMPLES
    )
    orders = [_epoch_order(path, kind, epoch) for epoch in range(3)]
    assert orders[1] != orders[0]
    _fit(pl, tmp_path, _module(pl, path, kind, [], set_epoch_early=True), when)
    for early in [True, False] if when == "last step" else [True]:
        seen: list[tuple[int, list[int]]] = []
        resume = tmp_path / "ck" / "epoch=0.ckpt"
        _fit(pl, tmp_path, _module(pl, path, kind, seen, early), when, resume=resume)
        assert [epoch for epoch, _ in seen] == [1] * 6 + [2] * 6, early
        for epoch in (1, 2):
            assert [i for e, ids in seen if e == epoch for i in ids] == orders[epoch], early
