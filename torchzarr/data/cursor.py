"""The resumable cursor: epoch, what remains of it, how it is split, how far it got, as plain ints."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from torchzarr.data.partition import (
    INT64_MAX,
    STATE_VERSION,
    EpochOrder,
    Intervals,
    Layout,
    drawn_as_before_version_3,
    remaining_after,
    total,
    whole_number,
)
from torchzarr.data.shared_words import SharedWords
from torchzarr.errors import ArgumentTypeError, InvalidArgumentError

__all__ = ["Cursor", "SharedCursor"]

_ORDER_KEYS = ("num_samples", "chunk_len", "block_chunks", "seed", "shuffle")


class Cursor:
    """Progress through the epochs of one dataset or sampler.

    A state dict holds only ints, bools and lists: the order parameters, ``epoch``,
    ``remaining`` (canonical-stream intervals not consumed before the current split),
    ``layout`` (``[world_size, workers, batch_size, drop_last]``) and ``steps`` (items each
    rank delivered under that split), or ``worker``/``worker_steps`` for the state of one
    DataLoader worker (as torchdata's StatefulDataLoader keeps them).

    Example:
        >>> c = Cursor(10, chunk_len=4, block_chunks=1, seed=0, shuffle=True)
        >>> c.begin(Layout(), worker=0)
        ([(0, 10)], 0)
    """

    def __init__(
        self, num_samples: int, chunk_len: int, block_chunks: int, seed: int, shuffle: bool
    ) -> None:
        block_chunks = whole_number("block_chunks", block_chunks, 1, INT64_MAX)
        self.num_samples, self.chunk_len, self.block_chunks = num_samples, chunk_len, block_chunks
        self.seed, self.shuffle = whole_number("seed", seed, 0), bool(shuffle)
        self.epoch = 0
        self.pending: dict[str, Any] | None = None

    def order(self) -> EpochOrder:
        """The canonical order of the current epoch."""
        return EpochOrder(
            self.num_samples, self.chunk_len, self.block_chunks, self.seed, self.epoch, self.shuffle
        )

    def set_epoch(self, epoch: int) -> None:
        """Move to ``epoch``; a loaded state for another epoch is dropped."""
        epoch = whole_number("epoch", epoch, 0, INT64_MAX)
        if self.pending is not None and int(self.pending["epoch"]) != epoch:
            self.pending = None
        self.epoch = epoch

    def resolve(self, layout: Layout) -> tuple[Intervals, int]:
        """``(remaining, rank_steps)`` a rank-level pass under ``layout`` starts from."""
        full = [(0, self.num_samples)] if self.num_samples else []
        st = self.pending
        if st is None:
            return full, 0
        remaining = [(int(a), int(b)) for a, b in st["remaining"]]
        old = Layout.from_list(st["layout"])
        if st.get("worker") is not None:
            raise InvalidArgumentError(
                "this is the state of one DataLoader worker: load it through the same "
                "StatefulDataLoader (same num_workers), or save a rank-level state with "
                "state_at(steps, num_workers) to resume on another layout"
            )
        steps = int(st["steps"])
        # Continue the same split only where the DataLoader's round robin lines up again.
        if old == layout and steps % layout.workers == 0:
            return remaining, steps
        return remaining_after(remaining, old, steps), 0

    def begin(self, layout: Layout, worker: int) -> tuple[Intervals, int]:
        """``(remaining, first item)`` for worker ``worker`` of a pass under ``layout``."""
        st = self.pending
        if st is not None and st.get("worker") is not None:
            if Layout.from_list(st["layout"]) != layout or int(st["worker"]) != worker:
                raise InvalidArgumentError(
                    f"a worker state saved under layout {st['layout']} (worker {st['worker']}) "
                    f"cannot resume under {layout.to_list()} (worker {worker})"
                )
            return [(int(a), int(b)) for a, b in st["remaining"]], int(st["worker_steps"])
        remaining, steps = self.resolve(layout)
        return remaining, layout.worker_steps(total(remaining), steps, worker)

    def state(
        self,
        remaining: Intervals,
        layout: Layout,
        steps: int | None = None,
        worker: int | None = None,
        worker_steps: int | None = None,
    ) -> dict[str, Any]:
        """A plain state dict."""
        return {
            "version": STATE_VERSION,
            "num_samples": self.num_samples,
            "chunk_len": self.chunk_len,
            "block_chunks": self.block_chunks,
            "seed": self.seed,
            "shuffle": self.shuffle,
            "epoch": self.epoch,
            "remaining": [[int(a), int(b)] for a, b in remaining],
            "layout": layout.to_list(),
            "steps": steps,
            "worker": worker,
            "worker_steps": worker_steps,
        }

    def state_after(
        self, remaining: Intervals, layout: Layout, first: int, steps: Any
    ) -> dict[str, Any]:
        """The rank-level state once a pass that began at item ``first`` delivered ``steps``.

        Example:
            >>> c = Cursor(10, chunk_len=4, block_chunks=1, seed=0, shuffle=False)
            >>> c.state_after([(0, 10)], Layout(batch_size=4), first=0, steps=2)["steps"]
            2
        """
        steps = whole_number("steps", steps, 0)
        in_pass = layout.rank_batches(total(remaining)) - first
        if steps > in_pass:
            raise InvalidArgumentError(
                f"steps={steps} is past the end of the epoch: this pass yields {in_pass} items "
                f"per rank ({first + in_pass} in the epoch); count the items trained on since "
                "the pass began, not a global step counter"
            )
        return self.state(remaining, layout, steps=first + steps)

    def load(self, state: dict[str, Any]) -> None:
        """Check a state against this order and keep it for the next pass.

        A state with nothing left of an epoch earlier than this cursor's (saved as that
        epoch ended, loaded after ``set_epoch`` moved on) is an ended epoch: it is dropped
        and the epoch set stays, so its next pass is whole. Any other state sets the epoch.
        """
        if not isinstance(state, Mapping):
            raise ArgumentTypeError(f"a dataset state is a dict, got {type(state).__name__}")
        try:
            pending = self._checked(state)
        except (KeyError, TypeError, ValueError) as err:
            if isinstance(err, InvalidArgumentError):
                raise
            raise InvalidArgumentError(
                f"malformed dataset state ({type(err).__name__}: {err}); save states with "
                "state_dict() or state_at()"
            ) from None
        if pending["epoch"] < self.epoch and _ended(pending):
            self.pending = None
            return
        self.epoch, self.pending = pending["epoch"], pending

    def pending_ended(self) -> bool:
        """Whether a state is loaded and has nothing left of its epoch (saved as it ended)."""
        return self.pending is not None and _ended(self.pending)

    def _checked(self, state: Mapping[str, Any]) -> dict[str, Any]:
        """The pending state ``state`` describes, checked against this order."""
        version = state.get("version", -1)
        if isinstance(version, bool) or not isinstance(version, int | np.integer):
            raise ArgumentTypeError(
                f"malformed dataset state: version must be an int, got {version!r} (save "
                "states with state_dict() or state_at())"
            )
        version = int(version)
        # Version 1 split a rank's batches over its workers otherwise; with one worker the
        # split is the same.
        layout = state.get("layout")
        one_worker = isinstance(layout, list | tuple) and len(layout) == 4 and layout[1] == 1
        if version not in (STATE_VERSION, 2) and not (version == 1 and one_worker):
            raise InvalidArgumentError(
                f"unsupported dataset state version {state.get('version')!r} (this torchzarr "
                f"reads versions {STATE_VERSION} and 2, and version 1 with one worker): it "
                "splits batches over DataLoader workers differently; resume from the start of "
                "an epoch (set_epoch) instead"
            )
        for key in _ORDER_KEYS:
            mine, theirs = getattr(self, key), state[key]
            if key == "shuffle":
                if not isinstance(theirs, bool | np.bool_):
                    raise ArgumentTypeError(
                        f"malformed dataset state: shuffle must be True or False, got {theirs!r}"
                    )
                theirs = bool(theirs)
            else:
                theirs = whole_number(key, theirs, 0)
            if theirs != mine:
                raise InvalidArgumentError(
                    f"the state was saved with {key}={theirs!r} but this one has {mine!r}: "
                    "the order would differ"
                )
        if state.get("worker") is None and state.get("steps") is None:
            raise InvalidArgumentError("the state has neither rank steps nor worker steps")
        remaining = _checked_intervals(state["remaining"], self.num_samples)
        layout = _checked_layout(state["layout"])
        epoch = whole_number("epoch", state["epoch"], 0, INT64_MAX)
        pending = {
            "epoch": epoch,
            "remaining": [list(pair) for pair in remaining],
            "layout": layout.to_list(),
            "steps": _count(state, "steps"),
            "worker": _count(state, "worker"),
            "worker_steps": _count(state, "worker_steps"),
        }
        _check_progress(pending, remaining, layout)
        if version < STATE_VERSION and not drawn_as_before_version_3(
            self.num_samples,
            self.chunk_len,
            self.block_chunks,
            self.seed,
            epoch,
            self.shuffle,
        ):
            raise InvalidArgumentError(
                f"this dataset state (version {version}) was saved by an older torchzarr, whose "
                f"shuffled order for seed={self.seed}, epoch={epoch} differs from this "
                "version's (a seed, epoch or block index of 2**32 or more): it cannot resume "
                f"identically; restart the epoch with set_epoch({epoch}) instead"
            )
        return pending


class SharedCursor:
    """The main process's epoch and loaded state, in shared memory for persistent workers.

    DataLoader workers kept alive between passes hold copies of the dataset made when they
    started. The main process publishes its epoch and loaded state here after each
    ``set_epoch`` and ``load_state_dict`` (:meth:`publish`); a worker takes both at the
    start of its next pass (:meth:`take`), as a fresh worker finds them in its copy. Only
    the main process writes; ``generation`` counts the publications, so a worker sees
    whether anything changed since it last took them. The memory is made on first use and
    holds no file descriptor until sent to a spawned worker (:class:`SharedWords`).

    Example:
        >>> shared, main = SharedCursor(), Cursor(10, 4, block_chunks=1, seed=0, shuffle=True)
        >>> main.set_epoch(3)
        >>> shared.publish(main)
        >>> worker_copy = Cursor(10, 4, block_chunks=1, seed=0, shuffle=True)
        >>> shared.take(worker_copy), worker_copy.epoch
        (1, 3)
    """

    #: bytes kept for a loaded state (as JSON): room for a few thousand intervals
    capacity = 65536

    def __init__(self) -> None:
        # [epoch, generation, bytes of the loaded state (-1: too large)], then its bytes
        self._words = SharedWords(3 + self.capacity // 8)

    @property
    def generation(self) -> int:
        """How many times the main process published (0: never)."""
        return int(self._words.read()[1])

    def publish(self, cursor: Cursor) -> None:
        """Hand ``cursor``'s epoch and loaded state to the workers (main process only)."""
        data = json.dumps(cursor.pending, separators=(",", ":")).encode() if cursor.pending else b""
        size = len(data) if len(data) <= self.capacity else -1
        with self._words.writing() as memories:  # never sent to a worker half-written
            for words in memories:
                if size > 0:
                    payload = words[3:].view(torch.uint8)
                    payload[:size] = torch.frombuffer(bytearray(data), dtype=torch.uint8)
                words[0], words[2] = cursor.epoch, size
                words[1] += 1

    def take(self, cursor: Cursor) -> int:
        """Give ``cursor`` the main process's epoch and loaded state; the generation taken."""
        words = self._words.read()
        generation, size = int(words[1]), int(words[2])
        if size < 0:
            raise InvalidArgumentError(
                "the main process loaded a dataset state too large to hand to persistent "
                f"DataLoader workers (over {self.capacity} bytes of intervals): create the "
                "DataLoader after load_state_dict, or use persistent_workers=False"
            )
        cursor.epoch = int(words[0])
        payload = words[3:].view(torch.uint8)
        cursor.pending = json.loads(payload[:size].numpy().tobytes()) if size else None
        return generation


def _checked_intervals(value: Any, num_samples: int) -> Intervals:
    """The state's ``remaining``: sorted, disjoint ``[start, stop]`` pairs within the epoch."""
    if not isinstance(value, list | tuple):
        raise ArgumentTypeError(
            f"malformed dataset state: remaining must be a list of [start, stop] pairs, "
            f"got {value!r}"
        )
    out: Intervals = []
    previous_stop = 0
    for i, pair in enumerate(value):
        if not isinstance(pair, list | tuple) or len(pair) != 2:
            raise InvalidArgumentError(
                f"malformed dataset state: remaining[{i}] = {pair!r} is not a [start, stop] pair"
            )
        start = whole_number(f"remaining[{i}][0]", pair[0], 0)
        stop = whole_number(f"remaining[{i}][1]", pair[1], 0)
        if not previous_stop <= start <= stop <= num_samples:
            raise InvalidArgumentError(
                f"malformed dataset state: remaining[{i}] = {[start, stop]} (the intervals must "
                f"be sorted, disjoint and within [0, {num_samples}])"
            )
        out.append((start, stop))
        previous_stop = stop
    return out


def _checked_layout(value: Any) -> Layout:
    """The state's ``layout``: ``[world_size, workers, batch_size, drop_last]``."""
    if not isinstance(value, list | tuple) or len(value) != 4:
        raise InvalidArgumentError(
            "malformed dataset state: layout must be [world_size, workers, batch_size, "
            f"drop_last], got {value!r}"
        )
    world, workers, batch = (
        whole_number(f"layout[{i}] ({name})", value[i], 1)
        for i, name in enumerate(("world_size", "workers", "batch_size"))
    )
    drop_last = value[3]
    if drop_last not in (0, 1) or isinstance(drop_last, float):
        raise InvalidArgumentError(
            f"malformed dataset state: layout[3] (drop_last) must be 0 or 1, got {drop_last!r}"
        )
    return Layout(world, workers, batch, bool(drop_last))


def _check_progress(pending: dict[str, Any], remaining: Intervals, layout: Layout) -> None:
    """Refuse steps past the end of the epoch the state describes."""
    n = total(remaining)
    if pending["worker"] is not None:
        worker = pending["worker"]
        if worker >= layout.workers:
            raise InvalidArgumentError(
                f"malformed dataset state: worker {worker} of a layout with "
                f"{layout.workers} workers"
            )
        count = layout.worker_batches(n, worker)[1]
        if pending["worker_steps"] is None or pending["worker_steps"] > count:
            raise InvalidArgumentError(
                f"malformed dataset state: worker_steps={pending['worker_steps']} but worker "
                f"{worker} yields {count} items of this epoch"
            )
    if pending["steps"] is not None and pending["steps"] > layout.rank_batches(n):
        raise InvalidArgumentError(
            f"malformed dataset state: steps={pending['steps']} is past the end of the epoch "
            f"({layout.rank_batches(n)} items per rank)"
        )


def _ended(pending: dict[str, Any]) -> bool:
    """Whether a checked state has nothing left to yield (of its rank, or of its worker)."""
    layout = Layout.from_list(pending["layout"])
    n = total([(int(a), int(b)) for a, b in pending["remaining"]])
    if pending["worker"] is not None:
        return bool(pending["worker_steps"] >= layout.worker_batches(n, pending["worker"])[1])
    return bool(pending["steps"] >= layout.rank_batches(n))


def _count(state: Mapping[str, Any], key: str) -> int | None:
    """``state[key]`` as an int >= 0, or None where it is missing or None."""
    value = state.get(key)
    return None if value is None else whole_number(key, value, 0)
