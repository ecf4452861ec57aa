"""The canonical epoch order, its split over ranks x workers, and what remains after a stop (pure)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from torchzarr.arguments import whole_number
from torchzarr.errors import InvalidArgumentError

__all__ = [
    "STATE_VERSION",
    "INT64_MAX",
    "EpochOrder",
    "Intervals",
    "Layout",
    "drawn_as_before_version_3",
    "iter_id_batches",
    "remaining_after",
    "slot_pieces",
    "total",
    "whole_number",
]


#: version of the plain-int state dicts written by the datasets and the sampler (3: shuffled
#: orders drawn from seeds or epochs >= 2**32 changed, see :func:`drawn_as_before_version_3`)
STATE_VERSION = 3

Intervals = list[tuple[int, int]]

#: the largest ``block_chunks`` and epoch: orders are computed (and the main process's epoch
#: handed to persistent workers) in int64
INT64_MAX = 2**63 - 1


_WORD = 2**32


def _rng(seed: int, epoch: int, *more: int) -> np.random.Generator:
    """The generator of one draw of the order, one-to-one in ``(seed, epoch, *more)``.

    Values below 2**32 seed numpy with the plain list, as saved states expect. numpy cuts
    larger ints into 32-bit words and reads a list of up to four words as if padded with
    zeros, so ``[2**32, 0, 0]`` would draw as ``[0, 1, 0]``: when any value is that large,
    each value is spelled out as its word count, then its words. That spelling is longer
    than four words (and so never read as a padded short list) and prefix-free.

    Example:
        >>> bool(_rng(2**32, 0).integers(2**62) != _rng(0, 1).integers(2**62))
        True
    """
    values = [int(seed), int(epoch), *(int(v) for v in more)]
    if all(v < _WORD for v in values):
        return np.random.default_rng(values)
    words: list[int] = []
    for value in values:
        digits = [(value >> shift) % _WORD for shift in range(0, max(1, value.bit_length()), 32)]
        words += [len(digits), *digits]
    return np.random.default_rng(np.array(words, dtype=np.uint32))


def drawn_as_before_version_3(
    num_samples: int, chunk_len: int, block_chunks: int, seed: int, epoch: int, shuffle: bool
) -> bool:
    """Whether torchzarr before state version 3 drew this epoch's order as it is drawn now.

    It seeded numpy with the plain list ``[seed, epoch, ...]`` whatever the values, which
    :func:`_rng` still does when every value (seed, epoch, block index) is below 2**32.

    Example:
        >>> drawn_as_before_version_3(100, 10, 2, seed=2**40, epoch=0, shuffle=True)
        False
    """
    chunks = -(-num_samples // chunk_len)
    units = -(-chunks // block_chunks)
    return not shuffle or max(seed, epoch, units - 1) < _WORD


class EpochOrder:
    """The order of one epoch: a pure function of (seed, epoch), whatever the ranks or workers.

    Chunks along axis 0 are permuted, cut into units of ``block_chunks`` consecutive chunks
    of the permutation, and the samples of each unit are shuffled inside it. The
    concatenation of the units is the epoch's canonical stream; positions in it are what
    the split over ranks x workers and the resume cursor count.

    Example:
        >>> order = EpochOrder(10, chunk_len=4, block_chunks=2, seed=0, epoch=0, shuffle=False)
        >>> order.ids(0, 10).tolist()
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    """

    def __init__(
        self,
        num_samples: int,
        chunk_len: int,
        block_chunks: int,
        seed: int,
        epoch: int,
        shuffle: bool,
    ) -> None:
        if chunk_len < 1 or block_chunks < 1:
            raise InvalidArgumentError("chunk_len and block_chunks must be >= 1")
        if seed < 0 or epoch < 0:
            raise InvalidArgumentError(f"seed and epoch must be >= 0, got {seed} and {epoch}")
        self.num_samples, self.chunk_len, self.block_chunks = num_samples, chunk_len, block_chunks
        self.seed, self.epoch, self.shuffle = seed, epoch, shuffle
        self._last: tuple[int, np.ndarray] | None = None

    @cached_property
    def chunk_order(self) -> np.ndarray:
        """The epoch's permutation of chunk indices along axis 0."""
        nchunks = -(-self.num_samples // self.chunk_len)
        if not self.shuffle:
            return np.arange(nchunks, dtype=np.int64)
        return _rng(self.seed, self.epoch, 0).permutation(nchunks).astype(np.int64)

    @cached_property
    def offsets(self) -> np.ndarray:
        """Start of each unit in the canonical stream, and the total at the end."""
        order = self.chunk_order
        if not len(order):
            return np.zeros(1, dtype=np.int64)
        sizes = np.minimum(self.chunk_len, self.num_samples - order * self.chunk_len)
        per_unit = np.add.reduceat(sizes, np.arange(0, len(order), self.block_chunks))
        return np.concatenate([[0], np.cumsum(per_unit)]).astype(np.int64)

    @property
    def num_units(self) -> int:
        """Number of units (blocks of chunks) in the epoch."""
        return len(self.offsets) - 1

    def unit_chunks(self, unit: int) -> np.ndarray:
        """Chunk indices (along axis 0) making up one unit."""
        k = self.block_chunks
        return self.chunk_order[unit * k : (unit + 1) * k]

    def unit_ids(self, unit: int) -> np.ndarray:
        """Sample indices of one unit, in the epoch's order."""
        if self._last is not None and self._last[0] == unit:
            return self._last[1]
        cl, n = self.chunk_len, self.num_samples
        ids = np.concatenate(
            [
                np.arange(c * cl, min((c + 1) * cl, n), dtype=np.int64)
                for c in self.unit_chunks(unit)
            ]
        )
        if self.shuffle:
            ids = _rng(self.seed, self.epoch, 1, unit).permutation(ids)
        self._last = (unit, ids)
        return ids

    def pieces(self, start: int, stop: int) -> list[tuple[int, int, int]]:
        """``(unit, lo, hi)`` pieces of the canonical stream ``[start, stop)``, in order."""
        out = []
        offsets = self.offsets
        unit = int(np.searchsorted(offsets, start, side="right")) - 1
        while start < stop:
            base, end = int(offsets[unit]), int(offsets[unit + 1])
            hi = min(stop, end)
            out.append((unit, start - base, hi - base))
            start, unit = hi, unit + 1
        return out

    def ids(self, start: int, stop: int) -> np.ndarray:
        """Sample indices at canonical positions ``[start, stop)``."""
        parts = [self.unit_ids(u)[lo:hi] for u, lo, hi in self.pieces(start, stop)]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


@dataclass(frozen=True)
class Layout:
    """How one epoch is split: ``world_size`` ranks x ``workers`` slots each, batches of ``batch_size``.

    Rules (the same for the sampler and the iterable dataset): the samples still to read
    are dealt to the ranks as equal contiguous runs of the canonical stream. With
    ``drop_last=False`` each rank's run is ``ceil(n / world_size)`` long, the shortfall
    (fewer than ``world_size`` samples) padded by wrapping round to the start, and cut into
    batches, the last one possibly short; with ``drop_last=True`` runs are
    ``n // world_size`` long and only full batches are kept. Every rank gets the same
    number of batches. A rank's batches are dealt to its workers as contiguous runs, the
    last workers taking one batch more when they do not divide evenly: the DataLoader's
    round robin over the workers then delivers the run's last batch (the short one) last,
    and no sample is repeated inside a rank.

    Example:
        >>> Layout(world_size=2, workers=1, batch_size=4, drop_last=False).rank_batches(10)
        2
    """

    world_size: int = 1
    workers: int = 1
    batch_size: int = 1
    drop_last: bool = False

    def __post_init__(self) -> None:
        # (frozen: the checked values are set as the dataset constructors check theirs)
        for name in ("world_size", "workers", "batch_size"):
            object.__setattr__(self, name, whole_number(name, getattr(self, name), 1))
        object.__setattr__(self, "drop_last", bool(self.drop_last))

    @property
    def slots(self) -> int:
        """Number of independent streams: ranks x workers."""
        return self.world_size * self.workers

    def run_length(self, n: int) -> int:
        """Samples dealt to each rank when ``n`` remain."""
        return n // self.world_size if self.drop_last else -(-n // self.world_size)

    def rank_batches(self, n: int) -> int:
        """Batches each rank yields (over all its workers) when ``n`` samples remain."""
        run = self.run_length(n)
        return run // self.batch_size if self.drop_last else -(-run // self.batch_size)

    def worker_batches(self, n: int, worker: int) -> tuple[int, int]:
        """``(first, count)``: the batches of its rank's run that ``worker`` yields.

        The last workers take one batch more, so the worker holding the run's end (the
        last) yields in the round robin's final round, and its short batch comes last.
        """
        per, extra = divmod(self.rank_batches(n), self.workers)
        late = self.workers - extra  # the first worker that yields one batch more
        return worker * per + max(0, worker - late), per + (worker >= late)

    def worker_steps(self, n: int, steps: int, worker: int) -> int:
        """Items ``worker`` has delivered after its rank delivered ``steps`` (round robin),
        when ``n`` samples remained at the start of the pass.

        Full rounds take one item from every worker; the final, partial round takes one
        from each of the last workers, in order (see :meth:`worker_batches`).
        """
        per, extra = divmod(self.rank_batches(n), self.workers)
        full = per * self.workers
        if steps <= full:
            return max(0, -(-(steps - worker) // self.workers))
        late = worker - (self.workers - extra)
        return per + (0 <= late < steps - full)

    def to_list(self) -> list[int]:
        """A plain list for state dicts."""
        return [self.world_size, self.workers, self.batch_size, int(self.drop_last)]

    @classmethod
    def from_list(cls, values: Any) -> Layout:
        """The inverse of :meth:`to_list`.

        Example:
            >>> Layout.from_list([2, 1, 4, 0])
            Layout(world_size=2, workers=1, batch_size=4, drop_last=False)
        """
        if not isinstance(values, list | tuple) or len(values) != 4:
            raise InvalidArgumentError(
                "Layout.from_list takes [world_size, workers, batch_size, drop_last], got "
                f"{values!r:.80}"
            )
        world, workers, batch, drop = values
        if isinstance(drop, float) or drop not in (0, 1):
            raise InvalidArgumentError(f"drop_last must be 0 or 1 in a layout list, got {drop!r}")
        return cls(world, workers, batch, bool(drop))


def total(intervals: Intervals) -> int:
    """Number of positions in a list of ``(start, stop)`` intervals.

    Example:
        >>> total([(0, 3), (5, 6)])
        4
    """
    return sum(b - a for a, b in intervals)


def _take(intervals: Intervals, lo: int, hi: int) -> Intervals:
    """Canonical intervals for the ``[lo, hi)`` stretch of the concatenated ``intervals``."""
    out: Intervals = []
    acc = 0
    for a, b in intervals:
        size = b - a
        s, e = max(lo - acc, 0), min(hi - acc, size)
        if s < e:
            out.append((a + s, a + e))
        acc += size
        if acc >= hi:
            break
    return out


def _wrapped(lo: int, hi: int, n: int) -> Intervals:
    """``[lo, hi)`` of a stream of ``n`` positions repeated end to end, as plain ranges."""
    out: Intervals = []
    while lo < hi and n > 0:
        base = (lo // n) * n
        end = min(hi, base + n)
        out.append((lo - base, end - base))
        lo = end
    return out


def _worker_span(layout: Layout, n: int, slot: int, first: int, count: int) -> tuple[int, int]:
    """``[lo, hi)`` in the padded stream: batches ``first`` to ``first + count`` of ``slot``'s worker."""
    rank, worker = divmod(slot, layout.workers)
    run = layout.run_length(n)
    start, _ = layout.worker_batches(n, worker)
    base = rank * run
    lo = base + min(run, (start + first) * layout.batch_size)
    hi = base + min(run, (start + first + count) * layout.batch_size)
    return lo, max(lo, hi)


def slot_pieces(remaining: Intervals, layout: Layout, slot: int, first_batch: int) -> Intervals:
    """Canonical intervals slot ``slot`` yields from batch ``first_batch`` to its last one.

    Example:
        >>> slot_pieces([(0, 10)], Layout(2, 1, 2), slot=1, first_batch=1)
        [(7, 10)]
    """
    n = total(remaining)
    _, count = layout.worker_batches(n, slot % layout.workers)
    lo, hi = _worker_span(layout, n, slot, first_batch, count - first_batch)
    out: Intervals = []
    for a, b in _wrapped(lo, hi, n):
        out.extend(_take(remaining, a, b))
    return out


def _merge(intervals: Intervals) -> Intervals:
    out: Intervals = []
    for a, b in sorted(intervals):
        if b <= a:
            continue
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def remaining_after(remaining: Intervals, layout: Layout, steps: int) -> Intervals:
    """What is left of ``remaining`` once every rank has delivered ``steps`` items.

    Ranks advance in lockstep and a rank's DataLoader takes items from its workers round
    robin, so ``steps`` fixes what every slot delivered. When the ranks finished their
    batches the epoch is over: nothing is left, not even the tail ``drop_last`` dropped.

    Example:
        >>> remaining_after([(0, 10)], Layout(2, 1, 2), steps=1)
        [(2, 5), (7, 10)]
    """
    n = total(remaining)
    if steps >= layout.rank_batches(n):
        return []
    used: Intervals = []
    for rank in range(layout.world_size):
        for w in range(layout.workers):
            _, count = layout.worker_batches(n, w)
            done = min(count, layout.worker_steps(n, steps, w))
            lo, hi = _worker_span(layout, n, rank * layout.workers + w, 0, done)
            used.extend(_wrapped(lo, hi, n))
    left: Intervals = []
    pos = 0
    for a, b in _merge(used):
        if a > pos:
            left.append((pos, a))
        pos = max(pos, b)
    if pos < n:
        left.append((pos, n))
    out: Intervals = []
    for a, b in left:
        out.extend(_take(remaining, a, b))
    return _merge(out)


def iter_id_batches(
    order: EpochOrder, intervals: Intervals, batch_size: int
) -> Iterator[np.ndarray]:
    """Sample indices of ``intervals`` (canonical positions), cut into batches of ``batch_size``.

    Example:
        >>> order = EpochOrder(5, chunk_len=2, block_chunks=1, seed=0, epoch=0, shuffle=False)
        >>> [b.tolist() for b in iter_id_batches(order, [(0, 2), (3, 5)], 3)]
        [[0, 1, 3], [4]]
    """
    pending: list[np.ndarray] = []
    have = 0
    for a, b in intervals:
        for unit, lo, hi in order.pieces(a, b):
            ids = order.unit_ids(unit)[lo:hi]
            while len(ids):
                take = min(batch_size - have, len(ids))
                pending.append(ids[:take])
                have += take
                ids = ids[take:]
                if have == batch_size:
                    yield np.concatenate(pending)
                    pending, have = [], 0
    if have:
        yield np.concatenate(pending)
