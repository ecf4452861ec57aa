"""Copy every key below a prefix from one store to another, byte for byte, in parallel."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from torchzarr.errors import InvalidArgumentError, NodeExistsError, NodeNotFoundError
from torchzarr.storage.base import Store, validate_prefix
from torchzarr.storage.changes import keys_replaced
from torchzarr.storage.locations import location
from torchzarr.storage.overlap import refuse_overlap

__all__ = ["CopyResult", "copy_keys"]

#: the names of Zarr's metadata documents: copied after every other key, so that a copy
#: that fails midway leaves no node that opens over missing or older chunks
_DOCUMENTS = frozenset({"zarr.json", ".zarray", ".zgroup", ".zattrs", ".zmetadata"})
#: bytes a batch of keys aims at (its key count follows the sizes seen so far)
_BATCH_BYTES = 32 << 20
_FIRST_BATCH, _MAX_BATCH = 16, 512


@dataclass(frozen=True)
class CopyResult:
    """What :func:`copy_keys` copied."""

    keys: int
    nbytes: int


def _prefix(path: str) -> str:
    path = path.strip("/")
    return f"{path}/" if path else ""


def copy_keys(
    source: Store | Any,
    dest: Store | Any,
    path: str = "",
    *,
    dest_path: str | None = None,
    overwrite: bool = False,
    jobs: int = 8,
    progress: Callable[[int, int], None] | None = None,
    before_write: Callable[[], None] | None = None,
) -> CopyResult:
    """Copy every key below ``path`` in ``source`` to ``dest_path`` (default: the same path)
    in ``dest``, bytes unchanged: any Zarr hierarchy, of any format and dtype, between any
    two stores (a zip to a directory, a directory to S3).

    ``jobs`` batches of keys are in flight at once. The metadata documents (``zarr.json``,
    ``.zarray``, ...) are copied last, deepest first, once every other key is in: a copy
    that fails midway leaves chunks but no node at the destination, never an array that
    opens and reads the chunks not yet copied as fill values. A destination that already
    holds keys below ``dest_path`` is refused unless ``overwrite``: then its metadata
    documents are deleted before the first key is written (a failure leaves no node
    over a mix of old and new chunks), then the old keys a new key cannot be written
    beside in a store of files (``c/0`` where ``c/0/0`` goes, or ``c/0/0`` where ``c/0``
    goes: chunk keys nested otherwise), the copy replaces its keys, and the other ones it
    did not replace are deleted once the copy is complete. Whatever a failure leaves, the
    same copy with ``overwrite`` completes it. Overlapping ``source`` and ``dest`` (the
    same keys, one node inside the other, or a zip, SQLite or LMDB file of one inside the
    other's directory) are refused with :class:`InvalidArgumentError` before anything is
    written.
    ``progress(keys_done, keys_total)`` is called after each batch, and
    ``before_write()`` once the copy is checked, before its first change to ``dest`` (to
    drop the node from the consolidated metadata of the groups above it: else, after a
    failed ``overwrite``, they still list the old node over a mix of old and new chunks). A key deleted from the
    source while the copy runs is skipped. ``source`` and ``dest`` are stores, paths or
    URLs; stores opened here from a path or URL are closed at the end (a zip's directory
    is written then). No key below ``path`` in ``source`` is a ``NodeNotFoundError``,
    raised before the destination is opened or touched.

    It copies bytes only, reading and writing no metadata, so a node copied into a
    hierarchy is not linked into it: its missing parent groups are not created, and the
    consolidated metadata of the groups above ``dest_path`` still describes what was
    there before (an old shape, no entry for a new node). A caller copying a node into a
    consolidated hierarchy must refresh it with
    ``torchzarr.core.consolidated.refresh_consolidated(dest, [(dest_path, None),
    (dest_path, metadata), ...])``, listing the copied node and every node below it (as
    ``torchzarr copy`` does), or run ``tz.consolidate_metadata`` again. A copy to the root
    of ``dest`` (a whole store) carries the source's own consolidated metadata as it was.

    Example:
        >>> from torchzarr.storage.memory import MemoryStore
        >>> src, dst = MemoryStore({"a/zarr.json": b"{}", "a/c/0": b"x"}), MemoryStore()
        >>> copy_keys(src, dst, "a", dest_path="b")
        CopyResult(keys=2, nbytes=3)
        >>> sorted(dst.list_prefix(""))
        ['b/c/0', 'b/zarr.json']
    """
    if jobs < 1:
        raise InvalidArgumentError(f"jobs must be >= 1, got {jobs}")
    prefix = _prefix(path)
    target = _prefix(path if dest_path is None else dest_path)
    validate_prefix(prefix)
    validate_prefix(target)
    from torchzarr.storage.registry import resolve_store

    opened: list[Store] = []
    try:
        if not isinstance(source, Store):
            source = resolve_store(source, mode="r")
            opened.append(source)
        keys = sorted(source.list_prefix(prefix))
        if not keys:  # a typo must not "copy 0 keys", nor empty the destination
            raise NodeNotFoundError(f"nothing to copy: no keys at {path or '/'!r} in {source!r}")
        if not isinstance(dest, Store):
            dest = resolve_store(dest, mode="a")
            opened.append(dest)
        return _copy_between(
            source, dest, keys, prefix, target, overwrite, jobs, progress, before_write
        )
    finally:
        for store in reversed(opened):
            store.close()


def _copy_between(
    source: Store,
    dest: Store,
    keys: list[str],
    prefix: str,
    target: str,
    overwrite: bool,
    jobs: int,
    progress: Callable[[int, int], None] | None,
    before_write: Callable[[], None] | None,
) -> CopyResult:
    # a zip, SQLite or LMDB file inside the other's directory (a backup.zip in the source)
    refuse_overlap("copy", source, prefix, dest, target)
    # by location: stores rooted at a directory and at one inside it reach the same data
    src, dst = location(source.identity, prefix), location(dest.identity, target)
    if src == dst or (src + "/").startswith(dst + "/") or (dst + "/").startswith(src + "/"):
        # overwrite would delete the source; no overwrite would copy into what it reads
        raise InvalidArgumentError(
            f"cannot copy {prefix or '/'!r} of {source!r} onto {target or '/'!r} of {dest!r}: "
            "the two overlap (the same data, or one inside the other)"
        )
    existing = list(dest.list_prefix(target))
    if existing and not overwrite:
        raise NodeExistsError(
            f"{dest!r} already holds {len(existing)} keys below {target or '/'!r} "
            f"(first: {existing[0]!r}); pass overwrite=True (--overwrite) to replace them"
        )
    if before_write is not None:
        before_write()
    try:
        return _copy_keys(source, dest, keys, prefix, target, existing, jobs, progress)
    finally:  # copied keys (some, on a failure) replaced what caches of them hold
        keys_replaced(dest.identity, target.rstrip("/"))


def _copy_keys(
    source: Store,
    dest: Store,
    keys: list[str],
    prefix: str,
    target: str,
    existing: list[str],
    jobs: int,
    progress: Callable[[int, int], None] | None,
) -> CopyResult:
    done = copied = nbytes = 0
    replaced: set[str] = set()
    documents = [key for key in keys if _is_document(key)]
    keys = [key for key in keys if not _is_document(key)]
    in_the_way: set[str] = set()
    if existing:  # no node left over a mix of old and new chunks if the copy fails
        dest.delete_many([key for key in existing if _is_document(key)])
        # then what a new key cannot be written beside (it is replaced anyway)
        new = [target + key[len(prefix) :] for key in keys + documents]
        in_the_way = _in_the_way(existing, new)
        dest.delete_many(sorted(in_the_way))

    def copy(batch: list[str]) -> tuple[int, list[str], int]:
        values = source.get_many(batch)
        items = {target + key[len(prefix) :]: v for key, v in values.items() if v is not None}
        dest.set_many(items)
        return len(batch), list(items), sum(len(v) for v in items.values())

    # At most ``jobs`` batches in flight, each of about _BATCH_BYTES once sizes are known:
    # memory stays bounded whatever the chunk size.
    pending: deque[Future[tuple[int, list[str], int]]] = deque()
    per_batch, start = _FIRST_BATCH, 0
    with ThreadPoolExecutor(jobs, thread_name_prefix="torchzarr-copy") as pool:
        while start < len(keys) or pending:
            while start < len(keys) and len(pending) < jobs:
                pending.append(pool.submit(copy, keys[start : start + per_batch]))
                start += per_batch
            n, written, size = pending.popleft().result()
            done, copied, nbytes = done + n, copied + len(written), nbytes + size
            if existing:
                replaced.update(written)
            if copied:
                per_batch = max(1, min(_MAX_BATCH, _BATCH_BYTES * copied // max(nbytes, 1)))
            if progress is not None:
                progress(done, len(keys) + len(documents))
    for depth in sorted({key.count("/") for key in documents}, reverse=True):
        level = [key for key in documents if key.count("/") == depth]  # the root's last
        n, written, size = copy(level)
        done, copied, nbytes = done + n, copied + len(written), nbytes + size
        replaced.update(written)
        if progress is not None:
            progress(done, len(keys) + len(documents))
    if existing:  # only once all is copied: a failed copy leaves the old keys in place
        kept = replaced | in_the_way  # one set, not one per key
        dest.delete_many([key for key in existing if key not in kept])
    return CopyResult(copied, nbytes)


def _in_the_way(existing: list[str], new: list[str]) -> set[str]:
    """The keys of ``existing`` that a key of ``new`` cannot be written beside where keys
    are files: one that is a directory of a new key (``c/0`` for ``c/0/0``), or one below a
    new key (``c/0/0`` for ``c/0``, whose directory ``c/0`` is).

    Example:
        >>> sorted(_in_the_way(["c/0", "c/1", "d/0/0", "zarr.json"], ["c/0/0", "d/0"]))
        ['c/0', 'd/0/0']
    """
    new_keys = set(new)
    directories = {key[:i] for key in new_keys for i, ch in enumerate(key) if ch == "/"}
    return {
        key
        for key in existing
        if key not in new_keys
        and (
            key in directories or any(key[:i] in new_keys for i, ch in enumerate(key) if ch == "/")
        )
    }


def _is_document(key: str) -> bool:
    return key.rpartition("/")[2] in _DOCUMENTS
