"""The resumable cursor: epoch, what remains of it, how it is split, how far it got, as plain ints."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torchzarr.data.partition import (
    STATE_VERSION,
    EpochOrder,
    Intervals,
    Layout,
    remaining_after,
    total,
    whole_number,
)
from torchzarr.errors import ArgumentTypeError, InvalidArgumentError

__all__ = ["Cursor"]

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
        block_chunks = whole_number("block_chunks", block_chunks, 1)
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
        epoch = whole_number("epoch", epoch, 0)
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

    def load(self, state: dict[str, Any]) -> None:
        """Check a state against this order and keep it for the next pass."""
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
        self.epoch, self.pending = pending["epoch"], pending

    def _checked(self, state: Mapping[str, Any]) -> dict[str, Any]:
        """The pending state ``state`` describes, checked against this order."""
        version = int(state.get("version", -1))
        # Version 1 split a rank's batches over its workers otherwise; with one worker the
        # split is the same.
        layout = state.get("layout")
        one_worker = isinstance(layout, list | tuple) and len(layout) == 4 and layout[1] == 1
        if version != STATE_VERSION and not (version == 1 and one_worker):
            raise InvalidArgumentError(
                f"unsupported dataset state version {state.get('version')!r} (this torchzarr "
                f"reads version {STATE_VERSION}, and version 1 with one worker): it splits "
                "batches over DataLoader workers differently; resume from the start of an "
                "epoch (set_epoch) instead"
            )
        for key in _ORDER_KEYS:
            mine, theirs = getattr(self, key), state[key]
            if type(mine)(theirs) != mine:
                raise InvalidArgumentError(
                    f"the state was saved with {key}={theirs!r} but this one has {mine!r}: "
                    "the order would differ"
                )
        if state.get("worker") is None and state.get("steps") is None:
            raise InvalidArgumentError("the state has neither rank steps nor worker steps")
        return {
            "epoch": whole_number("epoch", state["epoch"], 0),
            "remaining": [[int(a), int(b)] for a, b in state["remaining"]],
            "layout": [int(v) for v in state["layout"]],
            "steps": _count(state, "steps"),
            "worker": _count(state, "worker"),
            "worker_steps": _count(state, "worker_steps"),
        }


def _count(state: Mapping[str, Any], key: str) -> int | None:
    """``state[key]`` as an int >= 0, or None where it is missing or None."""
    value = state.get(key)
    return None if value is None else whole_number(key, value, 0)
