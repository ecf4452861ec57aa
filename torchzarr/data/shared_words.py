"""Int64 words shared with DataLoader workers, allocated on first use: no descriptor held idle.

Each dataset keeps its epoch and loaded state where persistent workers can read them
(:class:`~torchzarr.data.cursor.SharedCursor`). A shared-memory tensor per dataset would
hold a file descriptor for the dataset's lifetime, and a thousand datasets (one per shard,
chained) would exhaust ``ulimit -n``. :class:`SharedWords` holds nothing until used; then
anonymous shared memory, which needs no descriptor and which forked workers share. Before
any ``fork`` every one not yet allocated is (no descriptor either), so a worker forked
before the first write still sees it. Only when pickled for a spawned or forkserver worker
(multiprocessing's ``ForkingPickler``) does it get a shared-memory tensor, sent by
descriptor: the sending process writes both from then on. Pickled otherwise (``pickle``,
``copy.deepcopy``), it is a copy of the values.
"""

from __future__ import annotations

import mmap
import os
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing.reduction import ForkingPickler
from typing import Any

import numpy as np
import torch

from torchzarr.forksafe import new_lock

__all__ = ["SharedWords"]

_unallocated: weakref.WeakSet[SharedWords] = weakref.WeakSet()
_guard = new_lock()


class SharedWords:
    """``count`` int64 words, zero at first, shared with this process's DataLoader workers.

    Read :meth:`read`; write every memory :meth:`writing` gives (one, or two once the
    words were sent to a spawned process).

    Example:
        >>> words = SharedWords(4)
        >>> with words.writing() as memories:
        ...     for memory in memories:
        ...         memory[1] = 7
        >>> words.read().tolist()
        [0, 7, 0, 0]
    """

    def __init__(self, count: int) -> None:
        self.count = count
        self._memories: list[torch.Tensor] = []  # written alike; the first is read
        self._sent: torch.Tensor | None = None  # the memory spawned processes map
        with _guard:
            _unallocated.add(self)

    def read(self) -> torch.Tensor:
        """The words (allocated now if they were not)."""
        if not self._memories:
            with _guard:
                self._allocate()
        return self._memories[0]

    @contextmanager
    def writing(self) -> Iterator[list[torch.Tensor]]:
        """Every memory holding the words, to write alike, with no copy for a spawned
        process taken meanwhile (it would send a half-written state).

        Example:
            >>> words = SharedWords(2)
            >>> with words.writing() as memories:
            ...     for memory in memories:
            ...         memory[0] = 3
            >>> words.read().tolist()
            [3, 0]
        """
        with _guard:
            self._allocate()
            yield self._memories

    def _allocate(self) -> None:
        """Anonymous shared memory for the words, if they have none (with ``_guard`` held)."""
        if not self._memories:
            mapping = mmap.mmap(-1, 8 * self.count)  # MAP_SHARED | MAP_ANONYMOUS: no descriptor
            self._memories.append(torch.frombuffer(mapping, dtype=torch.int64))
        _unallocated.discard(self)

    def _for_process(self) -> torch.Tensor:
        """The words as a shared-memory tensor another process maps (made once, kept in step)."""
        with _guard:
            if self._sent is None:
                sent = torch.zeros(self.count, dtype=torch.int64).share_memory_()
                if self._memories:
                    sent.copy_(self._memories[0])
                self._memories.append(sent)
                self._sent = sent
                _unallocated.discard(self)
            return self._sent

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        with _guard:  # never a copy of a write in progress (see writing)
            data = self._memories[0].numpy().tobytes().rstrip(b"\0") if self._memories else b""
        return _copied, (self.count, data)


def _copied(count: int, data: bytes) -> SharedWords:
    """A copy of pickled words (plain pickle, deepcopy): shared with its own workers only."""
    words = SharedWords(count)
    if data:
        padded = data + b"\0" * (-len(data) % 8)
        words.read()[: len(padded) // 8] = torch.from_numpy(np.frombuffer(padded, np.int64).copy())
    return words


def _received(memory: torch.Tensor) -> SharedWords:
    """Words sent to this (spawned) process: the sender's memory, mapped here."""
    words = SharedWords.__new__(SharedWords)
    words.count, words._memories, words._sent = memory.numel(), [memory], memory
    return words


def _reduce_for_process(words: SharedWords) -> tuple[Any, tuple[Any, ...]]:
    return _received, (words._for_process(),)


def _allocate_before_fork() -> None:
    """Allocate every SharedWords not yet allocated, so that the forked child shares it."""
    with _guard:
        for words in list(_unallocated):
            words._allocate()


ForkingPickler.register(SharedWords, _reduce_for_process)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_allocate_before_fork)
