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
#
# Every count is a reading of one process-wide clock that only moves forward, so that the
# table stays bounded: past ``_limit`` locations, the idle ones (no write in progress, no
# read holding writes off) are dropped and the clock's reading then is kept as ``_floor``,
# the count of every location not in the table. A location's count thus never goes back
# and moves at every write, dropped or not (a reader of an idle array sees it move once
# per prune, and reads its indexes again).
_shard_writes: dict[str, list[int]] = {}
_shard_writes_lock = threading.Lock()
_shard_writes_changed = threading.Condition(_shard_writes_lock)
_writing_here = threading.local()  # locations this thread is writing: {location: depth}
_clock = 0  # the last count handed out (hold the lock)
_floor = 0  # the count of a location not in the table
_LIMIT = 4096  # locations kept before the idle ones are dropped
_limit = _LIMIT


def _tick() -> int:
    """The clock's next reading (hold the lock)."""
    global _clock
    _clock += 1
    return _clock


def _entry(identity: str) -> list[int]:
    """The write record of a location, made at the count it had (hold the lock)."""
    entry = _shard_writes.get(identity)
    if entry is None:
        if len(_shard_writes) >= _limit:
            _prune()
        entry = _shard_writes[identity] = [_floor, 0, 0]
    return entry


def _prune() -> None:
    """Drop the idle locations, their counts all below the new floor (hold the lock).

    The next prune waits until the table doubles what stays (at least ``_LIMIT``), so
    locations busy for long cost no scan per new location.
    """
    global _floor, _limit
    for identity in [k for k, entry in _shard_writes.items() if not entry[1] and not entry[2]]:
        del _shard_writes[identity]
    _floor = _tick()
    _limit = max(_LIMIT, 2 * len(_shard_writes))


def writes_to(identity: str) -> int:
    """The write count of a location (``storage.locations.location``): it moves whenever a
    write to it starts or ends here, and never goes back.

    Example:
        >>> before = writes_to("memory://written/a")
        >>> note_rewrite("memory://written/a")
        >>> writes_to("memory://written/a") > before
        True
    """
    with _shard_writes_lock:
        entry = _shard_writes.get(identity)
        return _floor if entry is None else entry[0]


def stamp(identity: str) -> int | None:
    """The write count of a location, or None while a write to it is in progress.

    Example:
        >>> stamp("memory://never-stamped/a") == writes_to("memory://never-stamped/a")
        True
    """
    with _shard_writes_lock:
        entry = _shard_writes.get(identity)
        if entry is None:
            return _floor
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
            entry = _entry(identity)  # idle meanwhile: maybe dropped
        entry[0] = _tick()
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
            entry[0] = _tick()
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
        >>> writes_to("memory://rewritten/a") > before
        True
    """
    with _shard_writes_lock:
        _entry(identity)[0] = _tick()


def _reset_in_child() -> None:
    """A forked child has none of the parent's other threads: no write or read in progress."""
    global _shard_writes_lock, _shard_writes_changed, _writing_here
    _shard_writes_lock = threading.Lock()
    _shard_writes_changed = threading.Condition(_shard_writes_lock)
    _writing_here = threading.local()
    for entry in _shard_writes.values():
        entry[1] = entry[2] = 0


os.register_at_fork(after_in_child=_reset_in_child)
