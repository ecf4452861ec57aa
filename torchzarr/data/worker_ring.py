"""Batches from DataLoader workers to the main process through one shared ring per worker.

PyTorch sends each tensor a worker yields through a fresh shared-memory segment: the worker
fills new memory, the main process maps it, and both fault in every 4 KiB page, for every
batch. A :class:`WorkerRing` is one memory file per worker (``memfd``, Linux), cut into
slots that batches are gathered into. What crosses the DataLoader's queue is a
:class:`RingTensor` (a tensor subclass that pickles as which ring, slot, offset and shape),
plus the ring's file descriptor with every tensor pickled until the main process has mapped
the ring (it then sets a word in the ring's header): the first batch the main process
receives has it, whatever the code after the dataset drops or pickles on the way (a
wrapper skipping batches, or measuring them with ``pickle.dumps``). The main process maps
each ring once and rebuilds every batch as tensors on its slot: no copy, no page faults.

A slot is lent, not reused blindly: when the last tensor on a batch is freed in the main
process, it marks the slot released in the ring's header, and the worker only gathers into
released slots. If the caller keeps more batches than the ring holds, the worker's next
batches go the DataLoader's usual way until slots come back. Each slot also has a sequence
number, odd while the worker writes it, checked when the batch is rebuilt.

The worker lends a slot too: it gathers into a slot again only once nothing in the worker
(the batch waiting on the DataLoader's queue, a view a transform kept) refers to it. What a
transform returns is checked when the batch leaves (:meth:`WorkerRing.wrap`): the slot's own
tensors become RingTensors, any other tensor, array or storage on the ring is copied, in
any container or object, so nothing sent still points into a slot the worker may refill.
"""

from __future__ import annotations

import io
import math
import mmap
import os
import pickle
import uuid
import weakref
from enum import Enum
from multiprocessing.reduction import DupFd, ForkingPickler
from typing import Any

import numpy as np
import torch

from torchzarr.arguments import whole_number
from torchzarr.errors import InvalidArgumentError, WorkerBatchError
from torchzarr.forksafe import new_lock

__all__ = ["RingTensor", "WorkerRing", "ring_slots"]

_PAGE = mmap.PAGESIZE
_ALIGN = 64
#: Largest ring a worker creates by default; bigger batches go the DataLoader's usual way.
DEFAULT_RING_BYTES = 64 * 2**20
#: Slots of a default ring: the DataLoader's read-ahead per worker (``prefetch_factor``, 2
#: by default) and a few batches the caller holds; more held batches go the usual way.
DEFAULT_RING_SLOTS = 8
# The most slots a user may ask for: each is a batch held in shared memory at once
MAX_RING_SLOTS = 1024

# Main process: ring id -> (worker pid, mapping, slot sequence numbers, released marks).
_mapped: dict[str, tuple[int, mmap.mmap, np.ndarray, np.ndarray]] = {}
# Main process: (ring id, slot, sequence) -> the slot's memory, while tensors use it.
_lent: weakref.WeakValueDictionary[tuple[str, int, int], np.ndarray] = weakref.WeakValueDictionary()
_mapped_lock = new_lock()  # the pin-memory thread rebuilds batches too


def _round_up(n: int, to: int) -> int:
    return -(-n // to) * to


def ring_slots(slot_bytes: int, budget: int = DEFAULT_RING_BYTES) -> int:
    """Slots for a worker's ring of ``slot_bytes`` slots: 8, fewer within ``budget``, or 0.

    Slots are lent, never overwritten while in use, so a ring smaller than what is in
    flight only sends some batches the DataLoader's usual way. Returns 0 (no ring) when not
    even 3 slots fit the budget.

    Example:
        >>> ring_slots(2**20)
        8
        >>> ring_slots(2**30)
        0
    """
    fits = budget // max(1, slot_bytes)
    return 0 if fits < 3 else min(DEFAULT_RING_SLOTS, fits)


def _live(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _release(released: np.ndarray, slot: int, seq: int) -> None:
    released[slot] = seq  # every tensor on the batch is gone: the worker may reuse the slot


def _unhold(held: list[bool], slot: int) -> None:
    held[slot] = False  # worker: nothing here refers to the slot's memory any more


def _rebuild(
    ring: str,
    pid: int,
    geometry: tuple[int, int, int],
    dup: Any,
    slot: int,
    seq: int,
    offset: int,
    shape: tuple[int, ...],
    dtype: torch.dtype,
) -> torch.Tensor:
    """Main process: the tensor a :class:`RingTensor` describes (see the module docstring).

    ``geometry`` is the ring's (slots, header bytes, slot bytes); ``offset`` is the
    tensor's place in its slot. Mapping a ring from another process sets its header's
    mapped word: the worker sends no more descriptors.
    """
    slots, header, slot_bytes = geometry
    with _mapped_lock:
        entry = _mapped.get(ring)
        if dup is not None:
            fd = dup.detach()
            try:
                if entry is None:
                    mapping = mmap.mmap(fd, header + slots * slot_bytes)
                    for other in [k for k, v in _mapped.items() if not _live(v[0])]:
                        del _mapped[other]  # rings of finished workers: their tensors hold them
                    seqs = np.frombuffer(mapping, np.int64, count=slots)
                    released = np.frombuffer(mapping, np.int64, count=slots, offset=8 * slots)
                    entry = _mapped[ring] = (pid, mapping, seqs, released)
                    if pid != os.getpid():  # not a copy the worker made of its own batch
                        np.frombuffer(mapping, np.int64, count=1, offset=16 * slots)[0] = 1
            finally:
                os.close(fd)
        if entry is None:
            raise WorkerBatchError(
                f"a batch from DataLoader worker {pid} names shared ring {ring}, which this "
                "process never received (its first batch was lost?)"
            )
        _, mapping, seqs, released = entry
        if int(seqs[slot]) != seq:
            raise WorkerBatchError(
                f"DataLoader worker {pid} rewrote slot {slot} of its batch ring before this "
                f"process read it (batch {seq // 2} of that slot, found {int(seqs[slot]) // 2})"
            )
        memory = _lent.get((ring, slot, seq))
        if memory is None:  # the batch's first tensor: lend the slot until all are freed
            start = header + slot * slot_bytes
            memory = np.frombuffer(mapping, np.uint8, count=slot_bytes, offset=start)
            weakref.finalize(memory, _release, released, slot, seq)
            _lent[(ring, slot, seq)] = memory
    nbytes = math.prod(shape) * dtype.itemsize
    return torch.from_numpy(memory[offset : offset + nbytes]).view(dtype).view(shape)


class RingTensor(torch.Tensor):
    """A tensor in a worker's ring: an ordinary tensor there, rebuilt in the main process.

    In the worker it is a view of its slot (code after the dataset sees a tensor; results
    of operations on it are plain tensors). Pickled, it is only the ring's id, the slot and
    the layout, plus the ring's descriptor until the main process has mapped the ring;
    unpickling rebuilds it from the main process's mapping of the ring.

    Example:
        >>> ring = WorkerRing({"x": ((3,), torch.float32)}, batch_size=2, slots=3)
        >>> batch = ring.wrap(ring.next(2))
        >>> type(batch["x"]).__name__, type(batch["x"] + 1).__name__
        ('RingTensor', 'Tensor')
    """

    # Operations on a RingTensor give plain tensors: only the slot views themselves pickle
    # as ring references.
    __torch_function__ = torch._C._disabled_torch_function_impl  # type: ignore[assignment]
    _ring_args: tuple[Any, ...]

    @staticmethod
    def of(view: torch.Tensor, args: tuple[Any, ...]) -> RingTensor:
        """``view`` (sharing its memory) as a RingTensor that pickles as ``args``."""
        tensor = torch.Tensor._make_subclass(RingTensor, view)
        tensor._ring_args = args
        return tensor

    def __deepcopy__(self, memo: dict[int, Any]) -> torch.Tensor:
        """A deep copy is a plain tensor of its own memory, off the ring (as the results
        of operations on it are)."""
        copied = memo.get(id(self))
        if copied is None:
            copied = memo[id(self)] = self.__copy__()
        return copied

    def __copy__(self) -> torch.Tensor:
        """A copy is a plain tensor of its own memory, off the ring, as a deep copy is."""
        return self.as_subclass(torch.Tensor).clone()

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, tuple[Any, ...]]:
        ring, pid, geometry, descriptor, *rest = self._ring_args
        # Every tensor pickled carries the descriptor until the main process has mapped the
        # ring: whichever batches a wrapper pickles or drops, the first one sent has it.
        dup = descriptor.attach() if descriptor is not None else None
        return _rebuild, (ring, pid, geometry, dup, *rest)


class _Descriptor:
    """A ring's memory file: closed once nothing refers to it, sent until the ring is mapped."""

    def __init__(self, fd: int, mapped: np.ndarray) -> None:
        self.fd = fd
        self._mapped = mapped  # the header word the main process sets on mapping the ring
        weakref.finalize(self, os.close, fd)

    def attach(self) -> Any:
        """The descriptor to pickle (a ``DupFd``) until the main process has mapped the ring.

        Each ``DupFd`` holds a duplicate descriptor in this process's resource sharer until
        the receiver fetches it: one per batch pickled but never sent before the ring is
        mapped (a wrapper's ``pickle.dumps``), none after.
        """
        return DupFd(self.fd) if self._mapped[0] == 0 else None

    def __deepcopy__(self, memo: Any) -> _Descriptor:
        return self  # a deep copy of a RingTensor still names the same ring


class WorkerRing:
    """A worker's ring of batch slots in one shared memory file (see the module docstring).

    Args:
        specs: ``{name: (row_shape, dtype)}`` of one sample.
        batch_size: rows per slot.
        slots: number of slots (at least 3).

    Example:
        >>> ring = WorkerRing({"x": ((3,), torch.float32)}, batch_size=4, slots=3)
        >>> views = ring.next(2)
        >>> views["x"].shape
        torch.Size([2, 3])
    """

    def __init__(
        self, specs: dict[str, tuple[tuple[int, ...], torch.dtype]], batch_size: int, slots: int
    ) -> None:
        if slots < 3:
            raise InvalidArgumentError(f"a worker ring needs at least 3 slots, got {slots}")
        self.slots, self.batch_size = slots, batch_size
        self._layout: dict[str, tuple[int, tuple[int, ...], torch.dtype]] = {}
        offset = 0
        for name, (shape, dtype) in specs.items():
            self._layout[name] = (offset, tuple(shape), dtype)
            offset = _round_up(offset + batch_size * math.prod(shape) * dtype.itemsize, _ALIGN)
        self.slot_bytes = _round_up(max(offset, 1), _PAGE)
        # sequence numbers, released marks, and the word the main process sets on mapping
        self._header = _round_up((2 * slots + 1) * 8, _PAGE)
        self.size = self._header + slots * self.slot_bytes
        fd = os.memfd_create("torchzarr-batches", os.MFD_CLOEXEC)
        try:
            os.posix_fallocate(fd, 0, self.size)  # out of memory: an error now, not SIGBUS later
            self._map = mmap.mmap(fd, self.size)
        except BaseException:
            os.close(fd)
            raise
        self.id = uuid.uuid4().hex
        self._seqs = np.frombuffer(self._map, np.int64, count=slots)
        self._released = np.frombuffer(self._map, np.int64, count=slots, offset=8 * slots)
        mapped = np.frombuffer(self._map, np.int64, count=1, offset=16 * slots)
        self._descriptor = _Descriptor(fd, mapped)  # RingTensors keep it open until pickled
        self._low = np.frombuffer(self._map, np.uint8, count=1).ctypes.data
        self._held = [False] * slots  # slots the worker itself still refers to
        self._next = 0
        self._current: tuple[int, int, dict[str, torch.Tensor]] | None = None

    @classmethod
    def create(
        cls, specs: dict[str, tuple[tuple[int, ...], torch.dtype]], batch_size: int, slots: int
    ) -> WorkerRing | None:
        """A ring, or None where the system has no ``memfd`` or not enough memory for it.

        Example:
            >>> WorkerRing.create({"x": ((1,), torch.int8)}, batch_size=2, slots=2) is None
            True
        """
        if not hasattr(os, "memfd_create") or slots < 3:
            return None
        try:
            return cls(specs, batch_size, slots)
        except OSError:
            return None

    def next(self, rows: int) -> dict[str, torch.Tensor] | None:
        """Views of a free slot, cut to ``rows`` rows, to gather a batch into.

        None when every slot is still lent to the main process (it keeps that many
        batches): gather this batch elsewhere.
        """
        rows = whole_number("rows", rows, 0, self.batch_size)  # more would overlap the next array
        if self._current is not None:  # the last batch never reached wrap (its read failed)
            abandoned = self._current[0]
            self._seqs[abandoned] += 1
            self._released[abandoned] = self._seqs[abandoned]
            self._current = None
        for step in range(self.slots):
            slot = (self._next + step) % self.slots
            # never used, or given back by the main process and free of views here
            if not self._held[slot] and self._released[slot] == self._seqs[slot]:
                break
        else:
            return None
        self._next = (slot + 1) % self.slots
        self._seqs[slot] += 1  # odd: being written
        base = self._header + slot * self.slot_bytes
        # Every tensor on the slot keeps this array alive: once the last is gone (the batch
        # pickled and dropped by the DataLoader's queue thread), the worker may reuse it.
        memory = np.frombuffer(self._map, np.uint8, count=self.slot_bytes, offset=base)
        self._held[slot] = True
        weakref.finalize(memory, _unhold, self._held, slot).atexit = False
        views = {}
        for name, (offset, shape, dtype) in self._layout.items():
            nbytes = rows * math.prod(shape) * dtype.itemsize
            raw = memory[offset : offset + nbytes]
            views[name] = torch.from_numpy(raw).view(dtype).view((rows, *shape))
        self._current = (slot, rows, views)
        return views

    def wrap(self, item: Any) -> Any:
        """``item`` (the batch, transformed or not) with the slot's tensors as RingTensors.

        Whatever holds them (dicts, lists, tuples, namedtuples, dataclasses, any object
        pickle can take), other tensors, arrays and storages on the ring (views a transform
        derived) are copied now: the DataLoader pickles a batch later, on its queue's thread.
        Plain dicts, lists and tuples are walked; other objects are rebuilt once through
        pickle (their structure only: tensors and arrays pass by reference), so their types
        and attributes are kept. An item that cannot be pickled here leaves the worker as it
        is and its slot is never reused.

        Example:
            >>> ring = WorkerRing({"x": ((1,), torch.int8)}, batch_size=2, slots=3)
            >>> sorted(ring.wrap(ring.next(2)))
            ['x']
        """
        if self._current is None:
            return item
        slot, rows, views = self._current
        self._current = None
        self._seqs[slot] += 1  # even: complete
        seq = int(self._seqs[slot])
        geometry = (self.slots, self._header, self.slot_bytes)
        ring_args = (self.id, os.getpid(), geometry, self._descriptor)
        outgoing = _Outgoing(self, views, (*ring_args, slot, seq), rows)
        try:
            out = outgoing.convert(item)
        except Exception:  # not picklable here: the DataLoader reports it if it fails too
            return item  # views may be left in it: the slot stays lent for good
        if not outgoing.sent:
            self._released[slot] = seq  # nothing of the slot left the worker: free once unheld
        return out

    def holds(self, address: int) -> bool:
        """Whether ``address`` lies in this ring's memory."""
        return self._low <= address < self._low + self.size


# Types that cannot refer to a ring: passed on as they are.
_ATOMS = frozenset({str, bytes, int, float, complex, bool, type(None)})
# numpy scalars (but np.void: a structured element may be a view), dtypes, devices, enums
_SCALARS = (np.number, np.bool_, np.str_, np.bytes_, np.dtype, torch.dtype, torch.device, Enum)
_NOT_A_LEAF = object()


class _NeedsRebuild(Exception):
    """Raised by the walk of plain containers on meeting any other object."""


class _Outgoing:
    """One batch leaving a worker: its slot's tensors as RingTensors, other ring memory copied."""

    def __init__(
        self, ring: WorkerRing, views: dict[str, torch.Tensor], args: tuple[Any, ...], rows: int
    ) -> None:
        self.ring, self.views, self.args, self.rows = ring, views, args, rows
        self.names = {id(t): name for name, t in views.items()}
        self.sent = False

    def convert(self, item: Any) -> Any:
        """``item`` with nothing left pointing into the ring but RingTensors: plain dicts,
        lists and tuples are walked; an item holding anything else is rebuilt whole, once."""
        try:
            return self._walk(item)
        except _NeedsRebuild:
            self.sent = False  # counted again by the rebuild
            return self.rebuild(item)

    def _walk(self, value: Any) -> Any:
        kind = type(value)
        if kind in _ATOMS or isinstance(value, _SCALARS):
            return value
        if kind is dict:
            return {self._walk(k): self._walk(v) for k, v in value.items()}
        if kind is list:
            return [self._walk(v) for v in value]
        if kind is tuple:
            return tuple(self._walk(v) for v in value)
        if (
            isinstance(value, tuple)
            and hasattr(value, "_fields")
            and not getattr(value, "__dict__", None)
        ):
            return kind(*(self._walk(v) for v in value))  # a plain namedtuple: walked too
        leaf = self.leaf(value)
        if leaf is _NOT_A_LEAF:
            raise _NeedsRebuild
        return leaf

    def leaf(self, value: Any) -> Any:
        """A tensor, array or storage as it may leave; ``_NOT_A_LEAF`` for anything else."""
        if isinstance(value, torch.Tensor):
            name = self.names.get(id(value))
            if name is not None and value is self.views[name]:
                offset, shape, dtype = self.ring._layout[name]
                self.sent = True
                return RingTensor.of(value, (*self.args, offset, (self.rows, *shape), dtype))
            if value.device.type != "cpu":
                return value
            if value.layout != torch.strided or value.is_nested:
                return value.clone()  # its memory is not one storage: copy, to be safe
            return value.clone() if self.ring.holds(value.untyped_storage().data_ptr()) else value
        if isinstance(value, np.ndarray) and not value.dtype.hasobject:
            return value.copy() if self.ring.holds(value.ctypes.data) else value
        if isinstance(value, torch.UntypedStorage | torch.TypedStorage):
            on_ring = value.device.type == "cpu" and self.ring.holds(value.data_ptr())
            return value.clone() if on_ring else value
        return _NOT_A_LEAF

    def rebuild(self, value: Any) -> Any:
        """Any other object, pickled and unpickled with its tensors and arrays converted."""
        buffer = io.BytesIO()
        finder = _Finder(buffer, self)
        finder.dump(value)
        buffer.seek(0)
        return _Rebuilder(buffer, finder.found).load()


class _Finder(ForkingPickler):
    """Pickles an object's structure as the DataLoader's queue would (its reducers too); its
    tensors, arrays and storages go by reference."""

    def __init__(self, file: io.BytesIO, outgoing: _Outgoing) -> None:
        super().__init__(file, pickle.HIGHEST_PROTOCOL)
        self.outgoing = outgoing
        self.found: list[Any] = []
        # id(original) -> (original, place in found): the original is kept alive, so that an
        # array made while pickling (a __getstate__'s) never lends its id to the next one
        self.index: dict[int, tuple[Any, int]] = {}

    def persistent_id(self, obj: Any) -> int | None:
        if type(obj) in _ATOMS:
            return None
        known = self.index.get(id(obj))
        if known is None:
            converted = self.outgoing.leaf(obj)
            if converted is _NOT_A_LEAF:
                return None
            known = self.index[id(obj)] = (obj, len(self.found))
            self.found.append(converted)
        return known[1]


class _Rebuilder(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, found: list[Any]) -> None:
        super().__init__(file)
        self.found = found

    def persistent_load(self, pid: Any) -> Any:
        return self.found[pid]
