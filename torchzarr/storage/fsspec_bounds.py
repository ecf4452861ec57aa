"""The byte bounds of a batch of FsspecStore reads: ``(start, end)`` of each range, suffixes
made absolute where the protocol cannot read them, long ranges of local files cut at their size.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Sequence

from torchzarr.storage.base import ByteRange
from torchzarr.storage.local import READ_UNCHECKED  # the cut LocalStore's reads make too

__all__ = ["Bounds", "read_bounds"]

#: ``(start, end)`` of a read: ``(None, None)`` the whole object, a negative start a suffix
Bounds = tuple[int | None, int | None]

#: protocols that answer suffix ranges (``bytes=-n``) themselves; Azure Blob cannot, so a
#: batched size lookup comes first there
_NATIVE_SUFFIX = frozenset({"s3", "s3a", "gs", "gcs", "http", "https", "memory", "file", "local"})


def read_bounds(
    ranges: Sequence[ByteRange | None],
    paths: Sequence[str],
    protocol: str,
    sizes: Callable[[list[str]], list[int | None]],
    *,
    local: bool,
) -> list[Bounds]:
    """The bounds of reading each of ``ranges`` (None: all) of the object at ``paths``.

    ``sizes`` looks up the sizes of objects in one batch (None for a missing one), for
    suffix ranges of a protocol that cannot read them. With ``local`` (the local file
    system), a range longer than 64 MiB ends at the end of its file: a read would
    otherwise take memory for every byte asked for (``ByteRange(0, 1 << 40)``).

    Example:
        >>> read_bounds([None, ByteRange(2, 3), ByteRange(-4)], ["a", "b", "c"], "s3", None, local=False)
        [(None, None), (2, 5), (-4, None)]
    """
    bounds: list[Bounds] = [
        (None, None)
        if rng is None
        else (rng.start, None if rng.length is None else rng.start + rng.length)
        for rng in ranges
    ]
    if protocol not in _NATIVE_SUFFIX:
        bounds = _resolve_suffixes(paths, bounds, sizes)
    return _capped(paths, bounds) if local else bounds


def _resolve_suffixes(
    paths: Sequence[str], bounds: list[Bounds], sizes: Callable[[list[str]], list[int | None]]
) -> list[Bounds]:
    """Suffix ranges as absolute ones, from one batched size lookup."""
    idx = [i for i, (start, _) in enumerate(bounds) if start is not None and start < 0]
    if not idx:
        return bounds
    out = list(bounds)
    for i, size in zip(idx, sizes([paths[i] for i in idx]), strict=True):
        start = bounds[i][0]
        if size is not None and start is not None:
            out[i] = (max(size + start, 0), size)
    return out


def _capped(paths: Sequence[str], bounds: list[Bounds]) -> list[Bounds]:
    """Long ranges of local files ending at most at the end of their file."""
    out = list(bounds)
    for i, (start, end) in enumerate(bounds):
        if start is None or end is None or start < 0 or end - start <= READ_UNCHECKED:
            continue
        try:
            found = os.stat(paths[i])
        except OSError:
            continue  # the read says what is wrong
        if stat.S_ISREG(found.st_mode):
            out[i] = (start, max(start, min(end, found.st_size)))
    return out
