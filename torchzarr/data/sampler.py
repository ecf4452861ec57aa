"""``ChunkBlockSampler``: batches drawn from a few chunks at a time, resumable, rank-aware."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

from torch.utils.data import Sampler

from torchzarr.data.cursor import Cursor
from torchzarr.data.partition import (
    INT64_MAX,
    Intervals,
    Layout,
    iter_id_batches,
    slot_pieces,
    total,
    whole_number,
)
from torchzarr.data.sources import OnRanks, Placement, Source

__all__ = ["ChunkBlockSampler"]


class ChunkBlockSampler(OnRanks, Sampler[list[int]]):
    """A batch sampler whose batches come from a few chunks at a time, resumable, rank-aware.

    Each epoch permutes the chunks along axis 0, cuts the permutation into blocks of
    ``block_chunks`` chunks and shuffles the samples inside each block. A batch takes
    consecutive samples of that order, from the block it starts in and as many of the next
    as it needs: with ``batch_size`` at most a block (``block_chunks`` x rows per chunk)
    usually one or two blocks, so up to ``2 * block_chunks`` chunks; a larger batch about
    ``batch_size / (block_chunks * rows per chunk) + 1`` blocks.
    :class:`~torchzarr.ZarrDataset` reads the chunks of a batch once each (with
    ``ZarrDataset(..., cache=True)`` once per block, as successive batches share their
    chunks). The order is a pure function of ``(seed, epoch)``. Under torch.distributed (or
    with ``rank``/``world_size`` given) every rank gets the same number of batches; the
    drop/pad rules are those of :class:`~torchzarr.data.partition.Layout`.

    Args:
        dataset: a :class:`~torchzarr.ZarrDataset` (anything with a ``source``), or a source.
        batch_size: samples per batch.
        block_chunks: chunks shuffled together; larger mixes better and reads more at once.
        shuffle: False keeps the natural order (still split over ranks).
        seed: seed of the order (>= 0).
        drop_last: drop the short tail instead of padding by wrapping round.
        rank, world_size: this rank's place; default torch.distributed's when initialised.

    Example:
        >>> ds = tz.ZarrDataset(arr, cache=True)  # doctest: +SKIP
        >>> sampler = tz.ChunkBlockSampler(ds, batch_size=256, block_chunks=8, seed=1)  # doctest: +SKIP
        >>> loader = torch.utils.data.DataLoader(ds, batch_sampler=sampler, num_workers=2)  # doctest: +SKIP
        >>> sampler.set_epoch(3)  # doctest: +SKIP
    """

    def __init__(
        self,
        dataset: Any,
        batch_size: int,
        block_chunks: int = 4,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        source = getattr(dataset, "source", dataset)
        source = source if isinstance(source, Source) else Source(source)
        self._source = source  # (checked at each epoch: made for the shapes it has now)
        self._placement = Placement(rank, world_size)
        self.batch_size = whole_number("batch_size", batch_size, 1)
        self.drop_last = bool(drop_last)
        self.cursor = Cursor(len(source), source.chunk_len, block_chunks, seed, shuffle)
        self._live: tuple[Intervals, int] | None = None
        self._steps = 0
        self._chosen: int | None = None  # the epoch last given to set_epoch
        self._ended: dict[str, Any] | None = None  # an ended state a load moved past

    @property
    def layout(self) -> Layout:
        """How an epoch is split over the ranks."""
        return Layout(self.world_size, 1, self.batch_size, self.drop_last)

    @property
    def epoch(self) -> int:
        """The current epoch."""
        return self.cursor.epoch

    @property
    def sampler(self) -> ChunkBlockSampler:
        """This sampler itself: where Lightning and Accelerate look for ``set_epoch`` on a
        loader's batch sampler (``loader.batch_sampler.sampler``), so they move it to each
        epoch as they do a ``DistributedSampler``.

        Example:
            >>> loader.batch_sampler.sampler is sampler  # doctest: +SKIP
            True
        """
        return self

    def set_epoch(self, epoch: int) -> None:
        """Use the order of ``epoch`` for the next pass (call it before each epoch).

        A call with the epoch the sampler is in changes nothing: a loaded state, or the
        position of a pass under way, stays. Right after :meth:`load_state_dict` moved past
        an ended epoch, a call with that epoch returns to its (empty) end.

        Example:
            >>> sampler.set_epoch(1)  # doctest: +SKIP
        """
        before = self.cursor.epoch
        self.cursor.set_epoch(epoch)
        ended, self._ended = self._ended, None
        if ended is not None and self.cursor.epoch == ended["epoch"]:
            self.cursor.pending = ended
        self._chosen = self.cursor.epoch
        if self.cursor.epoch != before:
            self._live = None

    def __len__(self) -> int:
        """Batches of a whole epoch on this rank, as ``ZarrIterableDataset`` counts them
        under workers: a pass resumed from a loaded state yields ``len - step`` of them.
        (Lightning takes the length once, right after it restored the state, and keeps it
        for every later epoch: a length of the resumed pass cut those short.)"""
        return self.layout.rank_batches(self.cursor.num_samples)

    def __iter__(self) -> Iterator[list[int]]:
        # In the main process, where the handles the dataset was given show a resize with no
        # store round trip: persistent DataLoader workers' copies cannot show one.
        self._source.check_shapes()
        if (self.cursor.pending or {}).get("worker") is not None:
            self.cursor.resolve(self.layout)  # refuses a DataLoader worker's state, naming it
        remaining, first = self.cursor.begin(self.layout, 0)
        self.cursor.pending, self._ended = None, None
        self._live, self._steps = (remaining, first), first
        order = self.cursor.order()
        nb = self.layout.rank_batches(total(remaining))
        pieces = slot_pieces(remaining, self.layout, self.rank, first)
        batches = iter_id_batches(order, pieces, self.layout.batch_size)
        for k, batch in zip(range(first, nb), batches, strict=True):
            self._steps = k + 1
            yield batch.tolist()

    def state_dict(self) -> dict[str, Any]:
        """Plain-int state: where this epoch stands (all ranks share it).

        Example:
            >>> state = sampler.state_dict()  # doctest: +SKIP
        """
        if self._live is not None:
            return self.cursor.state(self._live[0], self.layout, steps=self._steps)
        cursor = self._saved_cursor()
        remaining, steps = cursor.resolve(self.layout)
        return cursor.state(remaining, self.layout, steps=steps)

    def state_at(self, steps: int) -> dict[str, Any]:
        """The state once this rank has consumed ``steps`` batches of the current pass.

        Use it when the DataLoader reads ahead of training (workers prefetch batches).
        ``steps`` counts from the start of this pass (not a global step counter): a state
        past the end of the epoch is refused. It needs the DataLoader to deliver batches in
        the order drawn (``in_order=True``, the default): with ``in_order=False`` a resume
        from it loses and repeats samples; use torchdata's ``StatefulDataLoader`` there.

        Example:
            >>> state = sampler.state_at(step)  # doctest: +SKIP
        """
        cursor = self.cursor if self._live is not None else self._saved_cursor()
        remaining, first = self._live or cursor.resolve(self.layout)
        return cursor.state_after(remaining, self.layout, first, steps)

    def _saved_cursor(self) -> Cursor:
        """The cursor, or, while a load has moved past an ended state (until the next
        pass or :meth:`set_epoch`), one at that state: saved again, it is the same state."""
        if self._ended is None:
            return self.cursor
        cursor = copy.copy(self.cursor)
        cursor.epoch, cursor.pending = self._ended["epoch"], self._ended
        return cursor

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from a state; the next pass continues that epoch where it stopped.

        The state may come from another number of ranks with the same global batch size
        (``batch_size * world_size``): the rest of the epoch is then split again. A state
        with nothing left of its epoch (saved as it ended) moves the sampler to the next
        epoch, whole, unless :meth:`set_epoch` put it in the saved epoch before the load
        (then the pass is that epoch's empty end) or in a later one (which stays). So a
        ``StatefulDataLoader`` with workers, whose iterator draws its first batches as it
        is made, deals the next epoch's order even where ``set_epoch(epoch + 1)`` comes
        only after ``iter(loader)``, as in Lightning.

        Example:
            >>> sampler.load_state_dict(state)  # doctest: +SKIP
        """
        moved_past, self._ended = self._ended, None
        self.cursor.load(state)
        self._live = None
        pending = self.cursor.pending
        if (
            pending is None
            and moved_past is not None
            and self.cursor.epoch == moved_past["epoch"] + 1
        ):
            # the same ended state (or another of that epoch) loaded again: still moved past
            self._ended = moved_past
            return
        if (
            pending is None
            or pending["worker"] is not None
            or pending["epoch"] == self._chosen
            or pending["epoch"] >= INT64_MAX
            or not self.cursor.pending_ended()
        ):
            return
        self.cursor.set_epoch(pending["epoch"] + 1)  # drops the ended state
        self._ended = pending
