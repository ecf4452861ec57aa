"""Opening a feature store: its group laid out at first use (one thread of the process at a
time), its published state loaded and refreshed."""

from __future__ import annotations

from typing import Any

from torchzarr.core.api import open_group
from torchzarr.core.cache import ChunkCache
from torchzarr.core.group import Group
from torchzarr.errors import ReadOnlyError
from torchzarr.features.index import ReadWriteLock
from torchzarr.features.layout import (
    STATE_ATTRIBUTE,
    Published,
    forget_cached,
    init_layout,
    load_published,
    published_stamp,
    reopened,
    writer_lock,
)

__all__ = ["OpenedStore", "open_feature_group"]


def open_feature_group(
    store: Any, mode: str, path: str, zarr_format: int | None, options: dict[str, Any] | None
) -> Group:
    """The group of a feature store, opened as ``open_group`` opens it (created when absent
    in modes "a", "w" and "w-") and laid out as a feature store with no rows when it is not
    one yet (:func:`~torchzarr.features.layout.init_layout`, which refuses any other group).

    A group without the layout is laid out (or refused) under the process-wide writer lock
    of the store, reopened first: threads and instances of this process making the same new
    store at once (first writes in mode "a") all open the one the first of them laid out.

    Example:
        >>> group = open_feature_group("memory://", "w", "", None, None)
        >>> group.attrs["feature_store"]["num_rows"]
        0
    """
    group = open_group(
        store,
        mode,
        path=path,
        zarr_format=zarr_format,
        use_consolidated=False,
        storage_options=options,
    )
    if STATE_ATTRIBUTE in group.attrs:
        return group
    with writer_lock(group):
        group = reopened(group)  # another thread may have laid it out since it was opened
        init_layout(group)  # (a group that is not one, read-only or not empty, is refused)
    return group


class OpenedStore:
    """The group and published state of a :class:`~torchzarr.features.FeatureStore`
    (which this is the base of): opened at first use, reloaded by :meth:`refresh`."""

    _spec: tuple[Any, str, str, int | None, dict[str, Any] | None]
    _group: Group | None
    _published: Published | None
    _cache: ChunkCache
    _open_lock: Any
    _rw: ReadWriteLock

    def _state(self) -> Published:
        published = self._published
        if published is None:
            with self._open_lock:
                if self._published is None:
                    self._published = load_published(self._open_locked(), self._cache)
                published = self._published
        return published

    def _open(self) -> Group:
        group = self._group
        if group is not None:
            return group
        with self._open_lock:  # threads sharing the instance open it once
            return self._open_locked()

    def _open_locked(self) -> Group:
        if self._group is not None:
            return self._group
        store, mode, path, zarr_format, options = self._spec
        group = open_feature_group(store, mode, path, zarr_format, options)
        self._group = group
        if mode in ("w", "w-"):  # done: opening again (a copy, a pickle) must not wipe it
            # options are in the store; its format is detected (a rebuild may change it)
            self._spec = (group.store, "r+", path, None, None)
        return group

    def refresh(self) -> bool:
        """Pick up writes published by other instances or processes; True if anything changed.

        Example:
            >>> from torchzarr.features import FeatureStore
            >>> FeatureStore("memory://", mode="w").refresh()
            False
        """
        old = self._state()
        if published_stamp(reopened(self._open())) == (old.store_id, old.version):
            return False  # checked first without holding readers back
        with self._rw.exclusive():
            return self._catch_up()

    def _catch_up(self) -> bool:
        """Load the state published since this instance's (the caller holds the exclusive
        lock); True if there was one. A rebuilt store (mode="w") has a new store id."""
        old = self._state()
        group = reopened(self._open())
        if published_stamp(group) == (old.store_id, old.version):
            return False
        new = load_published(group, self._cache)
        self._group = group
        forget_cached(old)
        self._published = new
        return True

    def _latest_writable(self) -> tuple[Group, Published]:
        """The group and the latest published state, for a write (the caller holds the
        write lock and the exclusive lock): a write never starts from a stale state, which
        would cut off the rows other instances or processes appended since."""
        group = self._open()
        if group.read_only:
            raise ReadOnlyError(f"feature store {group.name} in {group.store!r} is read-only")
        self._catch_up()
        return self._open(), self._state()
