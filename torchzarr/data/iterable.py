"""``ZarrIterableDataset``: chunk streaming with a two-level shuffle, split over ranks x workers."""

from __future__ import annotations

import math
import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from torchzarr.arguments import flag, optional_callable
from torchzarr.data.cursor import Cursor, SharedCursor
from torchzarr.data.partition import (
    EpochOrder,
    Intervals,
    Layout,
    slot_pieces,
    total,
    whole_number,
)
from torchzarr.data.pinned import PinnedRing
from torchzarr.data.sources import (
    Item,
    OnRanks,
    Placement,
    Source,
    share_cores_in_worker,
    take_rows,
)
from torchzarr.data.worker_ring import MAX_RING_SLOTS, WorkerRing, ring_slots
from torchzarr.errors import ArgumentTypeError, InvalidArgumentError

__all__ = ["ZarrIterableDataset"]

Piece = tuple[dict[str, torch.Tensor], np.ndarray]
Buffers = dict[str, torch.Tensor]
Ring = PinnedRing | WorkerRing


class ZarrIterableDataset(OnRanks, IterableDataset[Any]):
    """Stream samples or whole batches over axis 0, shuffled chunk-aware, resumable.

    Each epoch has one canonical order, a pure function of ``(seed, epoch)``: the chunks
    along axis 0 are permuted, cut into blocks of ``block_chunks`` chunks, and the samples
    of a block shuffled together. The rest of the epoch is dealt to the ranks as equal
    contiguous runs of that order, and a rank's run to its DataLoader workers (drop/pad rules in
    :class:`~torchzarr.data.partition.Layout`), so every sample comes out once per epoch and
    every rank yields the same number of items. A block is read with one planned read
    (each chunk once) on a background thread while the previous one is consumed.

    With ``batch_size`` set, items are whole batches: use ``DataLoader(ds, batch_size=None)``.

    Resume: ``state_dict()``/``load_state_dict()`` (plain ints and lists) continue an epoch
    where it stopped; with DataLoader workers use torchdata's ``StatefulDataLoader``, or
    :meth:`state_at` with the number of items trained on (under the DataLoader's default
    ``in_order=True`` only). A state saved on W ranks also
    resumes on another number of ranks with the same global batch size.

    Args:
        source: an Array, a Group, a dict of arrays sharing axis 0, or a path/URL.
        batch_size: yield batches of this many samples (else single samples).
        shuffle: False streams in order (still split over ranks and workers).
        seed: seed of the order (>= 0).
        block_chunks: chunks shuffled together (K): more mixes better and costs memory.
        drop_last: drop the short tail instead of padding by wrapping round.
        transform: called on every item (a batch when ``batch_size`` is set).
        rank, world_size: this rank's place; default torch.distributed's when initialised.
        prefetch: blocks read ahead.
        pin_memory: gather batches into a ring of ``prefetch + 3`` reused buffers, pinned
            (pageable without CUDA, reused all the same): clone a batch kept longer. Only
            in the main process (with workers use ``DataLoader(pin_memory=True)``).
        worker_buffers: slots of each DataLoader worker's batch ring (0: enough for the
            DataLoader's read-ahead and a few held batches, 8, within 64 MiB; at most
            1024). With
            ``batch_size`` set, workers gather batches into one shared-memory ring each
            (Linux), and the main process gets them as tensors on it: no copy and no fresh
            segment per batch, several times faster than PyTorch's own transfer. A slot is
            reused only once every tensor of its batch is freed in the main process; a
            caller keeping more batches than the ring holds gets the next ones the usual way.

    Example:
        >>> ds = tz.ZarrIterableDataset(arr, batch_size=256, block_chunks=8, seed=0)  # doctest: +SKIP
        >>> loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)  # doctest: +SKIP
        >>> for epoch in range(3):  # doctest: +SKIP
        ...     ds.set_epoch(epoch)
        ...     for batch in loader:
        ...         ...
    """

    def __init__(
        self,
        source: Any,
        batch_size: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        block_chunks: int = 4,
        drop_last: bool = False,
        transform: Callable[[Item], Any] | None = None,
        *,
        rank: int | None = None,
        world_size: int | None = None,
        prefetch: int = 2,
        pin_memory: bool = False,
        worker_buffers: int = 0,
    ) -> None:
        if batch_size is not None:
            batch_size = whole_number("batch_size", batch_size, 1)
        transform = optional_callable("transform", transform)
        self.source = source if isinstance(source, Source) else Source(source)
        self.batch_size = batch_size
        self.drop_last = bool(drop_last)
        self.transform = transform
        self.prefetch = whole_number("prefetch", prefetch, 1)
        self.pin_memory = flag("pin_memory", pin_memory)
        worker_buffers = whole_number("worker_buffers", worker_buffers, 0, MAX_RING_SLOTS)
        if worker_buffers and worker_buffers < 3:
            raise InvalidArgumentError(f"worker_buffers must be 0 or >= 3, got {worker_buffers}")
        self.worker_buffers = worker_buffers
        self._placement = Placement(rank, world_size)
        src = self.source
        self.cursor = Cursor(len(src), src.chunk_len, block_chunks, seed, shuffle)
        # The main process's epoch and loaded state in shared memory: persistent DataLoader
        # workers follow set_epoch and load_state_dict too. Only the main process writes it.
        self._shared_cursor = SharedCursor()
        self._followed = 0  # the generation of the shared cursor this copy follows
        self._pending_once = False  # a state loaded in a worker serves one pass
        self._worker_pid = os.getpid()  # where the last pass ran (a worker: its first is new)
        self._live: dict[str, Any] | None = None
        self._ring: Ring | None = None
        self._shared = False

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_live"] = state["_ring"] = None  # per-process
        return state

    def __repr__(self) -> str:
        return (
            f"ZarrIterableDataset({self.source!r}, batch_size={self.batch_size}, "
            f"epoch={self.epoch}, rank={self.rank}/{self.world_size})"
        )

    @property
    def epoch(self) -> int:
        """The current epoch."""
        return self.cursor.epoch

    def set_epoch(self, epoch: int) -> None:
        """Use the order of ``epoch`` for the next pass (call it before each epoch).

        Example:
            >>> ds.set_epoch(2)  # doctest: +SKIP
        """
        if epoch == self.cursor.epoch and self.cursor.pending is None:
            self.cursor.set_epoch(epoch)  # checks it; the position in the pass stays
            return
        self.cursor.set_epoch(epoch)
        self._publish_epoch()
        self._live = None

    def _publish_epoch(self) -> None:
        """Hand the epoch and loaded state to the DataLoader workers, from the main process only.

        A worker never writes them (its parent's epoch stays its parent's): it notes that it
        has taken in every setting so far, so its own state holds until the main process
        sets an epoch or loads a state again.
        """
        if get_worker_info() is None:
            self._shared_cursor.publish(self.cursor)
        self._followed = self._shared_cursor.generation

    def layout(self, num_workers: int = 0) -> Layout:
        """The split of an epoch over this job's ranks and ``num_workers`` DataLoader workers."""
        workers = max(1, whole_number("num_workers", num_workers, 0))
        return Layout(self.world_size, workers, self.batch_size or 1, self.drop_last)

    def num_items(self, num_workers: int = 0) -> int:
        """Items (batches, or samples) this rank yields in the current epoch's next pass.

        The same for any ``num_workers``: the workers share their rank's run. Counted from
        where a loaded state resumes.

        Example:
            >>> ds.num_items(num_workers=2)  # doctest: +SKIP
            196
        """
        layout = self.layout(num_workers)
        remaining, steps = self.cursor.resolve(layout)
        return layout.rank_batches(total(remaining)) - steps

    def __len__(self) -> int:
        """The batches this rank yields in the next pass (:meth:`num_items`), with ``batch_size``.

        So ``len(DataLoader(ds, batch_size=None))`` is the epoch's steps. Without
        ``batch_size`` there is no ``len()`` (``TypeError``, which DataLoader and Lightning
        read as "unknown length"): a DataLoader batching samples batches each worker's
        share apart, so its own count (``ceil(len / batch_size)``) could come out short
        and a trainer trusting it would drop the last batches. ``num_items()`` still counts
        the samples.
        """
        if not self.batch_size:
            raise ArgumentTypeError(
                "a ZarrIterableDataset without batch_size has no len(): pass batch_size= "
                "(and DataLoader(batch_size=None)), or count samples with num_items()"
            )
        return self.num_items()

    # -- iteration ------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Any]:
        if get_worker_info() is None:
            return self._start()
        try:
            return self._start()
        except Exception as err:  # raised again, where PyTorch forwards it
            # PyTorch calls iter() of a persistent worker's later pass outside its exception
            # forwarding: raised here, the error would kill the worker ("exited unexpectedly").
            return _raise_when_started(err)

    def _start(self) -> Iterator[Any]:
        """Start a pass in this process: its share of the epoch, checked against the store."""
        info = get_worker_info()
        worker = info.id if info is not None else 0
        share_cores_in_worker()
        shared = self._shared_cursor
        first_pass = self._worker_pid != os.getpid()  # a fresh worker: its copy is the state
        self._worker_pid = os.getpid()  # the main process had at iter(loader): all agree on it
        if (
            info is not None
            and not first_pass
            and not self._pending_once
            and shared.generation != self._followed
        ):
            # A persistent worker: since its last pass the main process set an epoch or loaded
            # a state, or a state loaded in this worker served its pass. Start where a fresh
            # worker would, from the main process's epoch and loaded state.
            self._followed = shared.take(self.cursor)
        # Once per pass: a worker's copy of the handles cannot show a resize made since it
        # started (persistent workers), and another handle's is not seen in any process.
        self.source.check_stored_shapes()
        layout = self.layout(info.num_workers if info is not None else 0)
        remaining, first = self.cursor.begin(layout, worker)
        # The main process uses a loaded state up; a worker keeps the one its parent loaded
        # for every pass over that epoch (as fresh workers would get it again, and len()
        # counts from it), but uses up a state loaded in the worker (StatefulDataLoader's).
        if info is None:
            self.cursor.pending = None
        elif self._pending_once:
            self.cursor.pending, self._pending_once, self._followed = None, False, -1
        order = self.cursor.order()
        count = layout.worker_batches(total(remaining), worker)[1] - first
        slot = self.rank * layout.workers + worker  # (layout read the same placement)
        intervals = slot_pieces(remaining, layout, slot, first)
        live = {
            "remaining": remaining,
            "layout": layout,
            "worker": worker if info is not None else None,
            "first": first,
            "steps": first,
        }
        self._live = live
        self._shared = info is not None
        return self._generate(order, intervals, count, live, self._get_ring(info is not None))

    def _get_ring(self, in_worker: bool) -> Ring | None:
        """Where batches are gathered: a worker's shared ring, a pinned ring, or None."""
        if not self.batch_size or not (in_worker or self.pin_memory):
            return None
        kind = WorkerRing if in_worker else PinnedRing
        if isinstance(self._ring, kind):
            return self._ring  # (a forked worker may inherit the parent's pinned ring)
        specs = {k: (tuple(a.shape[1:]), a.dtype) for k, a in self.source.arrays.items()}
        if not in_worker:
            self._ring = PinnedRing(specs, self.batch_size, slots=self.prefetch + 3)
            return self._ring
        # In a DataLoader worker: batches cross to the main process through one shared ring,
        # else (no memfd, or batches too big for the ring budget) the usual way.
        row_bytes = sum(math.prod(shape) * dtype.itemsize for shape, dtype in specs.values())
        slots = self.worker_buffers or ring_slots(self.batch_size * row_bytes)
        self._ring = WorkerRing.create(specs, self.batch_size, slots)
        return self._ring

    def _pieces(self, order: EpochOrder, intervals: Intervals) -> Iterator[np.ndarray]:
        for a, b in intervals:
            for unit, lo, hi in order.pieces(a, b):
                yield order.unit_ids(unit)[lo:hi]

    def _load(self, ids: np.ndarray, out: dict[str, torch.Tensor]) -> Piece:
        sort = np.argsort(ids, kind="stable")
        data = self.source.read(ids[sort], out=out)
        where = np.empty_like(sort)
        where[sort] = np.arange(len(sort), dtype=sort.dtype)
        return data, where.astype(np.intp)

    def _generate(
        self,
        order: EpochOrder,
        intervals: Intervals,
        count: int,
        live: dict[str, Any],
        ring: Ring | None,
    ) -> Iterator[Any]:
        if count <= 0:
            return
        pool = ThreadPoolExecutor(1, thread_name_prefix="torchzarr-data")
        pending: deque[tuple[Buffers, Future[Piece]]] = deque()
        ids_iter = self._pieces(order, intervals)
        step = self.batch_size or 1
        parts: list[Piece] = []
        have = 0
        # Blocks are read into a few reused buffers: fresh ones would cost page faults.
        spare: list[Buffers] = []
        held: list[Buffers] = []
        # (a block holds at most the whole array, however large block_chunks is)
        capacity = min(order.block_chunks * order.chunk_len, order.num_samples)

        def refill() -> None:
            while len(pending) < self.prefetch + 1:
                ids = next(ids_iter, None)
                if ids is None:
                    return
                buf = spare.pop() if spare else self.source.empty(capacity)
                view = {k: t[: len(ids)] for k, t in buf.items()}
                pending.append((buf, pool.submit(self._load, ids, view)))

        try:
            refill()
            while pending:
                buf, fut = pending.popleft()
                data, where = fut.result()
                refill()
                if self.batch_size is None:
                    rows = {k: take_rows(t, where) for k, t in data.items()}
                    spare.append(buf)
                    for i in range(len(where)):
                        live["steps"] += 1
                        yield self._finish({k: t[i] for k, t in rows.items()})
                    continue
                pos = 0
                while pos < len(where):
                    take = min(step - have, len(where) - pos)
                    parts.append((data, where[pos : pos + take]))
                    have, pos = have + take, pos + take
                    if have == step:
                        batch = self._gather(parts, have, ring)
                        parts, have = [], 0
                        spare.extend(held)
                        held.clear()
                        live["steps"] += 1
                        yield self._finish(batch, ring)
                        del batch  # a worker ring reuses the slot only once nothing here holds it
                (held if parts else spare).append(buf)
            if have:
                batch = self._gather(parts, have, ring)
                live["steps"] += 1
                yield self._finish(batch, ring)
        finally:
            for _, waiting in pending:
                waiting.cancel()
            pool.shutdown(wait=True, cancel_futures=True)

    def _gather(self, parts: list[Piece], rows: int, ring: Ring | None) -> dict[str, torch.Tensor]:
        out = ring.next(rows) if ring is not None else None
        if out is None:  # no ring, or all its slots still lent to the main process
            out = self.source.empty(rows, self._shared)
        offset = 0
        for data, where in parts:
            n = len(where)
            for k, t in data.items():
                take_rows(t, where, out=out[k][offset : offset + n])
            offset += n
        return out

    def _finish(self, tensors: dict[str, torch.Tensor], ring: Ring | None = None) -> Any:
        item = self.source.item(tensors)
        item = self.transform(item) if self.transform is not None else item
        return ring.wrap(item) if isinstance(ring, WorkerRing) else item

    # -- state ----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Plain-int state of the current pass in this process (a worker's own, in a worker).

        With ``num_workers=0`` this is the rank's position after the items the dataset has
        yielded, which is the training position when the loop takes each item as it comes.
        Anything reading ahead (on CUDA, :class:`~torchzarr.data.DevicePrefetcher` holds one
        batch in flight) puts it ahead: then save :meth:`state_at` with the steps trained
        on. StatefulDataLoader calls it in each worker and hands each its own state back.
        All ranks hold the same state.

        Example:
            >>> state = ds.state_dict()  # doctest: +SKIP
        """
        live = self._live
        if live is None:
            return self.state_at(0)
        if live["worker"] is None:
            return self.cursor.state(live["remaining"], live["layout"], steps=live["steps"])
        return self.cursor.state(
            live["remaining"], live["layout"], worker=live["worker"], worker_steps=live["steps"]
        )

    def state_at(self, steps: int, num_workers: int = 0) -> dict[str, Any]:
        """The state once this rank has trained on ``steps`` items of the current pass.

        ``steps`` counts from the start of this pass (not a global step counter): a state
        past the end of the epoch is refused.

        Valid in the main process whatever the workers do: the DataLoader takes items from
        its ``num_workers`` workers round robin, so ``steps`` fixes what each delivered.
        That needs ``DataLoader(in_order=True)``, the default: with ``in_order=False`` a
        resume from it loses and repeats samples (the dataset cannot see the setting),
        so use torchdata's ``StatefulDataLoader`` there. Items are what the dataset
        yields: with workers, set ``batch_size`` here and use ``DataLoader(batch_size=None)``
        so that one step is one item.

        Example:
            >>> torch.save(ds.state_at(step, num_workers=2), "data_state.pt")  # doctest: +SKIP
        """
        layout = self.layout(num_workers)
        live = self._live
        if live is not None and live["worker"] is None and live["layout"] == layout:
            remaining, first = live["remaining"], live["first"]
        else:
            remaining, first = self.cursor.resolve(layout)
        return self.cursor.state_after(remaining, layout, first, steps)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the saved epoch where it stopped on the next pass.

        A rank-level state resumes on any number of ranks and workers with the same global
        batch size; a worker's state (from StatefulDataLoader) on the same layout.

        Example:
            >>> ds.load_state_dict(state)  # doctest: +SKIP
        """
        self.cursor.load(state)
        self._publish_epoch()
        self._pending_once = get_worker_info() is not None
        self._live = None


def _raise_when_started(err: Exception) -> Iterator[Any]:
    """A generator raising ``err`` at its first ``next()`` (in a worker, PyTorch forwards it).

    Example:
        >>> it = _raise_when_started(KeyError("k"))
        >>> next(it)
        Traceback (most recent call last):
        ...
        KeyError: 'k'
    """
    raise err
    yield  # a generator: nothing runs before the first next()
