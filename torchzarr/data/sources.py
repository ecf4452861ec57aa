"""Dataset sources: one Array, a Group or a dict of arrays sharing axis 0, pickled as specs."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch.utils.data import Sampler, get_worker_info

from torchzarr.arguments import whole_number
from torchzarr.config import config, default_threads
from torchzarr.core.api import open as open_node
from torchzarr.core.array import Array
from torchzarr.core.group import Group
from torchzarr.errors import (
    ArgumentTypeError,
    InvalidArgumentError,
    ShapeMismatchError,
    UnknownCodecError,
)
from torchzarr.tensors import select_rows

__all__ = ["OnRanks", "Placement", "Source", "distributed_rank", "take_rows"]
#: what to do with a group whose members do not all fit (an xarray group's scalars and
#: coordinates of other dimensions)
_PICK = " (pass a dict of the arrays to read instead, such as {'x': group['x']})"

Item = torch.Tensor | dict[str, torch.Tensor]


_cores_shared_in: int | None = None  # the pid where share_cores_in_worker last acted


def share_cores_in_worker() -> None:
    """In a DataLoader worker, give this process's engine its share of the cores (once).

    ``W`` workers on ``C`` cores each decode on ``max(1, C // W)`` threads, so that the
    workers' pools together do not oversubscribe the machine. A ``tz.config.threads``
    changed from its default is left as it is. Elsewhere nothing happens.

    Example:
        >>> share_cores_in_worker()  # the main process: no change
    """
    global _cores_shared_in
    info = get_worker_info()
    if info is None or _cores_shared_in == os.getpid():
        return
    _cores_shared_in = os.getpid()
    cores = default_threads()
    if config.threads == cores:
        config.threads = max(1, cores // max(1, info.num_workers))


def distributed_rank(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """``(rank, world_size)``: the arguments when given, else torch.distributed's, else (0, 1).

    Call it in the main process (DataLoader workers cannot ask); :class:`Placement` does.

    Example:
        >>> distributed_rank(None, None)
        (0, 1)
    """
    if rank is not None:
        rank = whole_number("rank", rank, 0)
    if world_size is not None:
        world_size = whole_number("world_size", world_size, 1)
    if rank is None or world_size is None:
        import torch.distributed as dist

        live = dist.is_available() and dist.is_initialized()
        if world_size is None:
            world_size = dist.get_world_size() if live else 1
        if rank is None:
            rank = dist.get_rank() if live else 0
    if world_size < 1 or not 0 <= rank < world_size:
        raise InvalidArgumentError(
            f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}"
        )
    return int(rank), int(world_size)


class Placement:
    """This process's ``(rank, world_size)``: as given, or torch.distributed's when used.

    Read when used rather than at construction: a dataset or sampler built before
    torch.distributed is initialised (a script that Lightning's DDP re-runs on every rank
    builds its loaders before ``fit`` initialises the group) must still split over the
    ranks. A copy pickled for a DataLoader worker carries the values the main process
    read, as workers cannot ask; a copy made before the process group exists (a dataset
    handed to ``mp.spawn`` or Lightning's ``ddp_spawn``, a ``deepcopy``) asks again where
    it is used.

    Example:
        >>> Placement(1, 4).get()
        (1, 4)
    """

    def __init__(self, rank: int | None, world_size: int | None) -> None:
        distributed_rank(rank, world_size)  # what is given is checked now
        self.given = (rank, world_size)
        self.pinned: tuple[int, int] | None = None

    def get(self) -> tuple[int, int]:
        """``(rank, world_size)`` now."""
        return self.pinned or distributed_rank(*self.given)

    def __getstate__(self) -> dict[str, Any]:
        import torch.distributed as dist

        asked = None not in self.given or (dist.is_available() and dist.is_initialized())
        return {"given": self.given, "pinned": self.get() if asked else self.pinned}


class OnRanks:
    """``rank`` and ``world_size`` properties over a :class:`Placement` in ``_placement``.

    Example:
        >>> class Split(OnRanks):
        ...     _placement = Placement(2, 3)
        >>> Split().rank, Split().world_size
        (2, 3)
    """

    _placement: Placement

    @property
    def rank(self) -> int:
        """This rank (torch.distributed's when not given, read when used)."""
        return self._placement.get()[0]

    @property
    def world_size(self) -> int:
        """The number of ranks (torch.distributed's when not given, read when used)."""
        return self._placement.get()[1]


def _as_bytes(t: torch.Tensor) -> np.ndarray:
    """Rows of a contiguous CPU tensor as a 2-d uint8 numpy view (any dtype, no copy)."""
    rows = t.shape[0]
    return t.reshape(rows, -1).view(torch.uint8).numpy().reshape(rows, -1)


def take_rows(t: torch.Tensor, index: np.ndarray, out: torch.Tensor | None = None) -> torch.Tensor:
    """``t[index]`` along axis 0, into ``out`` if given; numpy's row copy, far faster than
    ``index_select`` for wide rows.

    Example:
        >>> take_rows(torch.arange(6).reshape(3, 2), np.array([2, 0]))
        tensor([[4, 5],
                [0, 1]])
    """
    if out is None:
        out = torch.empty((len(index), *t.shape[1:]), dtype=t.dtype)
    if t.numel() == 0 or not t.is_contiguous() or t.element_size() * t[0].numel() == 0:
        select_rows(t, torch.from_numpy(np.asarray(index, dtype=np.int64)), out=out)
        return out
    np.take(_as_bytes(t), index, axis=0, out=_as_bytes(out), mode="clip")
    return out


def _zero_d(name: str, arr: Array, kind: str) -> str:
    """The error for a 0-d array ``name`` of a source that is a ``kind`` ("": one array)."""
    if not kind:
        return f"array {arr.name} is 0-d: datasets index samples along axis 0"
    if kind == "dict":
        fix = f"leave {name!r} out of the dict (read a scalar once, with arr[()])"
    else:
        fix = _PICK.strip(" ()")
    where = f"member {name!r} of the {kind} (array {arr.name})"
    return f"{where} is 0-d: datasets index along axis 0; {fix}"


def _no_arrays(source: Any, kind: str) -> str:
    """The error for a source with no array to read, naming a group's left-out members."""
    skipped = source.info.unsupported if kind == "group" else ()
    if not skipped:
        return "the source holds no arrays"
    return (
        f"the group {source.name} holds no array torchzarr can read (left out, of a dtype "
        f"it lacks such as strings or datetimes: {', '.join(map(repr, skipped))})"
    )


class Source:
    """The arrays a dataset reads: every one indexed along axis 0 by the same sample index.

    Holds only :class:`~torchzarr.Array` objects, which pickle as (store, path, metadata)
    and reopen their engine lazily, so a Source crosses into fork, spawn and forkserver
    DataLoader workers cheaply.

    Args:
        source: an Array; a Group (its member arrays); a mapping of name to Array; or a
            path or URL opened read-only.

    Example:
        >>> src = Source(tz.create_array("memory://", shape=(6, 2), dtype=torch.int8, chunks=(4, 2)))  # doctest: +SKIP
        >>> len(src), src.chunk_len  # doctest: +SKIP
        (6, 4)
    """

    def __init__(self, source: Any) -> None:
        if isinstance(source, str | os.PathLike):
            source = open_node(os.fspath(source), mode="r")
        kind = "dict"
        if isinstance(source, Array):
            arrays, self.single = {"": source}, True
        elif isinstance(source, Group):
            arrays, self.single, kind = dict(source.arrays()), False, "group"
            unreadable = source.info.unsupported_metadata  # a codec this machine lacks
            if unreadable:  # else items would lose a field here and not on another machine
                raise UnknownCodecError(
                    f"the group {source.name} holds {', '.join(map(repr, unreadable))}, whose "
                    "metadata names a codec or extension torchzarr lacks here: install it, "
                    "or pass the arrays to use as a dict"
                )
        elif isinstance(source, Mapping):
            arrays, self.single = dict(source), False
        elif isinstance(source, Sampler):  # Lightning rebuilding a ChunkBlockSampler
            raise ArgumentTypeError(
                f"expected an Array, a Group or a dict of arrays, got a sampler "
                f"({type(source).__name__}): a ChunkBlockSampler splits ranks itself; under "
                "Lightning pass Trainer(use_distributed_sampler=False)"
            )
        else:
            raise ArgumentTypeError(
                f"expected an Array, a Group or a dict of arrays, got {type(source)}"
            )
        if not arrays:
            raise InvalidArgumentError(_no_arrays(source, kind))
        for name, arr in arrays.items():
            if not isinstance(arr, Array):
                raise ArgumentTypeError(f"member {name!r} is {type(arr)}, not a torchzarr Array")
            if arr.ndim == 0:
                raise InvalidArgumentError(_zero_d(name, arr, kind if not self.single else ""))
        lengths = {arr.shape[0] for arr in arrays.values()}
        if len(lengths) != 1:
            shapes = {name: arr.shape for name, arr in arrays.items()}
            raise ShapeMismatchError(
                f"the arrays do not share their first dimension: {shapes}"
                + ("" if kind == "dict" else _PICK)
            )
        self.arrays: dict[str, Array] = arrays
        self.length = lengths.pop()
        # The shapes the dataset's order and split were made for, and the handles whose
        # shape every read checks against them (the caller's, under a cached copy).
        self.shapes = {name: arr.shape for name, arr in arrays.items()}
        self._watched = arrays
        # The unit of reading: the longest chunk along axis 0 covers whole chunks of the others
        # whenever the chunkings nest, which is the usual case.
        self.chunk_len = max(arr.chunks[0] for arr in arrays.values())

    def __len__(self) -> int:
        return self.length

    def with_cache(self, cache: Any = None) -> Source:
        """This source reading through a decoded-chunk cache (the shared one by default)."""
        arrays = {name: arr.with_cache(cache) for name, arr in self.arrays.items()}
        cached = Source(arrays[""] if self.single else arrays)
        cached.shapes, cached._watched = self.shapes, self._watched
        return cached

    def check_shapes(self) -> None:
        """Refuse to read arrays resized since the source was made (no store round trip).

        The order, split and length of a dataset were made for the shapes it saw then; a
        resize through the same Array handle shows in its shape (one made elsewhere, by
        another handle or process, is not seen: :meth:`check_stored_shapes` sees it).

        Example:
            >>> src.check_shapes()  # doctest: +SKIP
        """
        for name, arr in self._watched.items():
            self._refuse_resized(name, arr, arr.shape)

    def check_stored_shapes(self) -> None:
        """Refuse arrays whose shape as stored now is not the one the source was made for.

        One metadata read per array: what an iterable dataset does at the start of each
        pass, in each DataLoader worker too, whose copy of the handle (made when the worker
        started) cannot show a resize made since in the main process. Rows appended along
        the first axis are let be: the rows the dataset reads are all still there (and a
        group opened through consolidated metadata that others appended to without
        consolidating again shows its old lengths: zarr-python's usual workflow). A
        shrink, or a change of another axis, raises; an array deleted since raises
        ArrayNotFoundError.

        Example:
            >>> src.check_stored_shapes()  # doctest: +SKIP
        """
        for name, arr in self._watched.items():
            now = tuple(arr._stored_metadata().shape)
            then = self.shapes[name]
            grown = len(now) == len(then) and now[1:] == then[1:] and now[:1] >= then[:1]
            if not grown:
                self._refuse_resized(name, arr, now)

    def _refuse_resized(self, name: str, arr: Array, now: tuple[int, ...]) -> None:
        """ShapeMismatchError when member ``name`` (``arr``) now has a shape other than its own."""
        then = self.shapes[name]
        if now == then:
            return
        what = (
            f"its length changed from {then[0]} to {now[0]}"
            if now[1:] == then[1:]
            else f"its shape changed from {then} to {now}"
        )
        member = "" if self.single else f" (member {name!r})"
        raise ShapeMismatchError(
            f"array {arr.name} in {arr.store!r}{member} was resized after the dataset "
            f"was built over it: {what}; rebuild the dataset (and its sampler) over "
            "the array as it is now"
        )

    def __repr__(self) -> str:
        names = ", ".join(f"{k or '<array>'}: {tuple(a.shape)}" for k, a in self.arrays.items())
        return f"Source({names}; chunk_len={self.chunk_len})"

    def read(
        self, sorted_ids: np.ndarray, out: dict[str, torch.Tensor] | None = None
    ) -> dict[str, torch.Tensor]:
        """Rows ``sorted_ids`` (ascending, unique) of every array: one planned read each.

        Each touched chunk is fetched and decoded once; a contiguous run is read as a slice.
        An array resized since the source was made raises ShapeMismatchError.
        """
        self.check_shapes()
        ids = np.asarray(sorted_ids, dtype=np.int64)
        if len(ids) and int(ids[-1]) - int(ids[0]) + 1 == len(ids):
            selection: Any = slice(int(ids[0]), int(ids[-1]) + 1)
        else:
            selection = (ids,)
        result = {}
        for name, arr in self.arrays.items():
            target = out.get(name) if out is not None else None
            result[name] = arr.read(selection, out=target)
        return result

    def empty(self, n: int, shared: bool = False) -> dict[str, torch.Tensor]:
        """Uninitialised buffers for ``n`` samples of every array, in shared memory if asked.

        A DataLoader worker's batch in shared memory crosses to the main process without
        the copy that pickling would otherwise make (as ``default_collate`` does).
        """
        out = {}
        for name, arr in self.arrays.items():
            shape = (n, *arr.shape[1:])
            if shared:
                numel = math.prod(shape)
                storage = torch.empty(0, dtype=arr.dtype)._typed_storage()._new_shared(numel)
                out[name] = torch.empty(0, dtype=arr.dtype).new(storage).view(shape)
            else:
                out[name] = torch.empty(shape, dtype=arr.dtype)
        return out

    def item(self, tensors: dict[str, torch.Tensor]) -> Item:
        """The user-facing item: a tensor for a single array, else the dict."""
        return tensors[""] if self.single else tensors
