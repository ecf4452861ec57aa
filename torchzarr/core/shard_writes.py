"""Writes to sharded arrays made in this process, as their shard readers see them.

A reader of part of a shard reads its index, then the inner chunks it names: a write to
the shard in between would pair an index with bytes of another version. Every write
through the engine is marked (:func:`writing`); a reader reads again when one overlapped
it, and holds writes off (:func:`quiet`) after a few tries.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["chunks_per_key", "note_rewrite", "quiet", "stamp", "writes_to", "writing"]

# Writes to sharded arrays per array location (store identity and path) in this process:
# [count, writes in progress, reads holding writes off]. The count moves when a write starts
# and when it ends: a reader drops its cached indexes when it moved, so a write through any
# Array (however its store was rooted) is seen by every reader; a read that overlapped a
# write neither caches the index it fetched nor returns what it read, but reads again.
_shard_writes: dict[str, list[int]] = {}
_shard_writes_lock = threading.Lock()
_shard_writes_changed = threading.Condition(_shard_writes_lock)
_writing_here = threading.local()  # locations this thread is writing: {location: depth}


def _entry(identity: str) -> list[int]:
    """The write record of a location (hold the lock)."""
    entry = _shard_writes.get(identity)
    if entry is None:
        entry = _shard_writes[identity] = [0, 0, 0]
    return entry


def writes_to(identity: str) -> int:
    """How many times writes to a location (``storage.locations.location``) started or ended here.

    Example:
        >>> writes_to("memory://never-written/a")
        0
    """
    with _shard_writes_lock:
        entry = _shard_writes.get(identity)
        return 0 if entry is None else entry[0]


def stamp(identity: str) -> int | None:
    """The write count of a location, or None while a write to it is in progress.

    Example:
        >>> stamp("memory://never-stamped/a")
        0
    """
    with _shard_writes_lock:
        entry = _shard_writes.get(identity)
        if entry is None:
            return 0
        return None if entry[1] else entry[0]


def chunks_per_key(source: Any) -> int:
    """The chunks one stored key of ``source``'s array holds, as telemetry counts them: the
    inner chunks of a shard, else 1.

    Example:
        >>> chunks_per_key(arr._source)  # doctest: +SKIP
        1
    """
    return source.shard_reader.inner_per_shard if source.shard_reader is not None else 1


@contextlib.contextmanager
def writing(source: Any) -> Iterator[None]:
    """Mark a write to ``source``'s array (a ``ChunkSource``) in progress, for the
    shard readers of this process (a no-op for an array that is not sharded).

    The write count moves before the write changes any shard and again after it: a read
    that overlapped the write sees the count move, or a write in progress when it began,
    and reads again (``ShardReader.read``). A write waits while a read that gave up
    reading optimistically runs.

    ``engine.write_from`` and ``reshape.clear_outside`` hold it, so every write through
    the engine is marked; nesting in one thread is fine.

    Example:
        >>> with writing(arr._source):  # doctest: +SKIP
        ...     arr._source.store.delete_many(shard_keys)
    """
    reader = source.shard_reader
    if reader is None:
        yield
        return
    identity = reader._identity
    depth = getattr(_writing_here, "depth", None)
    if depth is None:
        depth = _writing_here.depth = {}
    mine = depth.get(identity, 0)  # a write inside this thread's own: never waits
    with _shard_writes_changed:
        entry = _entry(identity)
        while entry[2] and not mine:
            _shard_writes_changed.wait()
        entry[0] += 1
        entry[1] += 1
    depth[identity] = mine + 1
    try:
        yield
    finally:
        if mine:
            depth[identity] = mine
        else:
            del depth[identity]
        with _shard_writes_changed:
            entry[0] += 1
            entry[1] -= 1
            _shard_writes_changed.notify_all()


@contextlib.contextmanager
def quiet(identity: str) -> Iterator[None]:
    """Hold off writes to ``identity`` in this process, once those in progress are done
    (but for this thread's own).

    Example:
        >>> with quiet("memory://held-off/a"):
        ...     pass
    """
    mine = getattr(_writing_here, "depth", {}).get(identity, 0)
    with _shard_writes_changed:
        entry = _entry(identity)
        entry[2] += 1
        while entry[1] > mine:
            _shard_writes_changed.wait()
    try:
        yield
    finally:
        with _shard_writes_changed:
            entry[2] -= 1
            _shard_writes_changed.notify_all()


def note_rewrite(identity: str) -> None:
    """Move the write count of a location: its readers drop the shard indexes they keep.

    Example:
        >>> before = writes_to("memory://rewritten/a")
        >>> note_rewrite("memory://rewritten/a")
        >>> writes_to("memory://rewritten/a") - before
        1
    """
    with _shard_writes_lock:
        _entry(identity)[0] += 1


def _reset_in_child() -> None:
    """A forked child has none of the parent's other threads: no write or read in progress."""
    global _shard_writes_lock, _shard_writes_changed, _writing_here
    _shard_writes_lock = threading.Lock()
    _shard_writes_changed = threading.Condition(_shard_writes_lock)
    _writing_here = threading.local()
    for entry in _shard_writes.values():
        entry[1] = entry[2] = 0


os.register_at_fork(after_in_child=_reset_in_child)
