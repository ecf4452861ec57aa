"""``ZipStore``: Zarr keys as entries of one zip file, shared per path within a process."""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import cached_property
from typing import Any

from torchzarr.config import config
from torchzarr.errors import ReadOnlyError, StoreError, UnknownStoreError
from torchzarr.storage.base import (
    Buffer,
    ByteRange,
    Store,
    validate_dir_prefix,
    validate_key,
    validate_prefix,
)
from torchzarr.storage.buffers import as_buffer
from torchzarr.storage.changes import keys_replaced
from torchzarr.storage.key_names import listed_keys
from torchzarr.storage.store_args import local_path
from torchzarr.storage.zip_archive import Archive
from torchzarr.storage.zip_io import Savepoint, not_writable, read_many, refuse_change
from torchzarr.storage.zip_shared import archives as _archives
from torchzarr.storage.zip_shared import choose_archive, last_closed, refuse_another_version
from torchzarr.storage.zip_shared import closed_at_exit as _closed_at_exit
from torchzarr.storage.zip_shared import path_locks as _path_locks

__all__ = ["ZipStore"]

_MODES = ("r", "w", "a", "x")
_COMPRESSIONS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA)
_REOPENS = 100  # attempts of a write whose archive other threads keep closing
_MAX_NAME = 0xFFFF  # bytes of an entry's name: a 16-bit field of its headers, zip64 too


class ZipStore(Store):
    """A zip file of Zarr keys, readable and writable, compatible with zarr-python's ZipStore.

    Entries are written ``ZIP_STORED`` by default (chunks are compressed already), so a
    ranged read fetches only the bytes asked for. All ZipStores of one path in a process
    share one open archive, so a reader sees what a writer of the same process wrote. A
    store reads the zip as its first use found it: one that another writer replaced or
    rewrote since is read afresh by the stores first used after that.

    A zip cannot replace an entry in place: overwriting a key appends a new entry, and
    reads return the newest (as zipfile and zarr-python do); deleting hides the key.
    ``close()`` (or leaving a ``with`` block, or the end of the interpreter) writes the
    zip's directory and, if entries were replaced or deleted, rewrites the file without
    the dead ones. Until then, other processes cannot read what was written.

    An entry read whole is checked against its CRC-32 (:class:`ChecksumError` if it
    differs; a part of an entry cannot be checked). A write that fails midway (a full
    disk) raises :class:`StoreError` and leaves the zip as it was before that write.

    Args:
        path: the zip file.
        mode: ``"r"`` read only (a missing file reads as empty), ``"a"`` read and append
            (created if missing), ``"w"`` create or truncate, ``"x"`` create, failing if
            the file exists; the missing directories above a file created are made.
            ``"w"`` and ``"x"`` act on the first use only; a reopened or unpickled store
            appends.
        compression: ``zipfile.ZIP_STORED`` (default) or ``zipfile.ZIP_DEFLATED``, ...
        allowZip64: allow entries and archives over 4 GiB.

    Example:
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "data.zip")
        >>> with ZipStore(path, mode="w") as store:
        ...     store.set("a/zarr.json", b"{}")
        ...     store.set("a/zarr.json", b'{"x": 1}')
        >>> ZipStore(path).get("a/zarr.json"), ZipStore(path).get_range("a/zarr.json", ByteRange(-2))
        (b'{"x": 1}', b'1}')
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        mode: str = "r",
        *,
        compression: int = zipfile.ZIP_STORED,
        allowZip64: bool = True,
    ) -> None:
        path = local_path("path", path)
        if mode not in _MODES:
            raise UnknownStoreError(f"ZipStore mode must be one of {_MODES}, got {mode!r}")
        if compression not in _COMPRESSIONS:
            raise UnknownStoreError(f"unknown zip compression {compression!r} for {path!r}")
        self.path = path
        self.mode = mode
        self.read_only = mode == "r"
        self.compression = compression
        self.allowZip64 = allowZip64
        self._fresh = mode in ("w", "x")  # truncate or create on first use only
        self._pinned: Archive | None = None  # the archive of its first use (or last write)

    def __repr__(self) -> str:
        return f"ZipStore({self.path!r}, mode={self.mode!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ZipStore) and (self.path, self.mode) == (other.path, other.mode)

    def __hash__(self) -> int:
        return hash((self.path, self.mode))

    @cached_property
    def real_path(self) -> str:
        """The file, symlinks resolved (once, as LocalStore does): rewritten there, a link
        stays a link to it, and a file reached through links is one archive."""
        return os.path.realpath(self.path)

    @property
    def identity(self) -> str:
        return "zip://" + self.real_path

    def __getstate__(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "mode": "r" if self.read_only else "a",  # an unpickled copy never truncates
            "compression": self.compression,
            "allowZip64": self.allowZip64,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        ZipStore.__init__(self, **state)

    def with_read_only(self, read_only: bool = True) -> ZipStore:
        state = {**self.__getstate__(), "mode": "r" if read_only else "a"}
        return ZipStore(**state)

    # -- the shared archive -------------------------------------------------------------
    def _archive(self, writing: str | None = None) -> Archive:
        """The archive this store reads (see ``choose_archive``); writable when ``writing``."""
        path = self.identity  # one archive per file, whatever path or link reaches it
        write, archive = writing is not None, self._pinned
        if (
            archive is not None
            and not archive.closed
            and (archive.writable or not write)
            # a write to a file deleted or replaced since goes to the one at the path now
            and not (write and archive.unclosed_writes and not archive.unchanged_by_others())
        ):
            return archive  # its snapshot, whatever another writer put at the path since
        changes = write or self._fresh
        action = f"create (mode {self.mode!r})" if not write else "write to"
        action = f"write {writing!r} to" if writing else action
        with _path_locks[path]:
            archive = _archives.get(path)
            if changes:
                frozen = archive is not None and archive.frozen
                refuse_change(self.path, action, frozen, exiting=path in _closed_at_exit)
                self._make_parent()
            if self._fresh:
                if self.mode == "x" and os.path.exists(self.path):
                    raise StoreError(f"cannot create {self.path!r} (mode 'x'): it exists")
                if archive is not None:
                    archive.close()
                archive = _archives[path] = Archive(self.real_path, "w", self.allowZip64)
                self._fresh = False
                keys_replaced(path, "")  # caches drop the chunks of the zip truncated
            else:  # a file this process may not write reads: read only until the first write
                opener = lambda mode: Archive(self.real_path, mode, self.allowZip64)  # noqa: E731
                archive = choose_archive(path, write, opener)
            stale, self._pinned = self._pinned, archive
            if stale is not None and stale.closed and archive is not stale:
                refuse_another_version(self.path, stale, archive)
            return archive

    def _make_parent(self) -> None:
        """Make the missing directories above a zip file to be written, as LocalStore and
        SQLiteStore make theirs (one that cannot be made: opening the zip says why)."""
        parent = os.path.dirname(self.real_path)
        if parent and not os.path.isdir(parent):
            try:
                os.makedirs(parent, exist_ok=True)
            except OSError as err:
                if not_writable(err):  # a read-only file system: as a zip there says
                    raise ReadOnlyError(
                        f"cannot write to zip file {self.real_path!r} (mode {self.mode!r}): "
                        f"cannot make its folder: {err}"
                    ) from err

    def close(self) -> None:
        """Write the zip's directory and release the file; the store reopens on next use.

        Other threads may go on using stores of the same path: a read in flight finishes on
        the closed archive, a write waits and then appends to the archive reopened after it.
        Without room for the directory, :class:`StoreError` is raised and the zip stays
        open, its entries intact: close it again once there is room.
        """
        path = self.identity
        self._pinned = None  # its next use takes the zip now at the path
        with _path_locks[path]:  # no store opens it again before its directory is written
            archive = _archives.get(path)
            if archive is not None and not archive.frozen:  # a snapshot stays: the parent's
                del _archives[path]
                try:
                    archive.close()
                except StoreError:
                    if archive.zf is not None:  # no room for its directory: a later close
                        _archives[path] = archive  # (or the exit) writes it
                    raise
                last_closed[path] = archive

    def savepoint(self) -> Savepoint:
        """Open the zip for writing and note its entries, for :meth:`roll_back` to return to.

        Example:
            >>> import os, tempfile
            >>> store = ZipStore(os.path.join(tempfile.mkdtemp(), "s.zip"), mode="a")
            >>> store.set("a", b"1"); mark = store.savepoint(); store.set("b", b"2")
            >>> store.roll_back(mark), sorted(store.list_prefix(""))
            (True, ['a'])
        """
        if self.read_only:
            raise ReadOnlyError(f"cannot write to {self!r}: it is read-only")
        for _ in range(_REOPENS):
            archive = self._archive(writing="")
            with archive.lock:  # its entries, where the next one goes, what close must do
                if (zf := archive.zf) is not None:
                    entries, cuts = dict(archive.index), len(archive.cut_points)
                    return Savepoint(
                        archive, zf.start_dir, entries, archive.dead, archive.dirty, cuts
                    )
        raise StoreError(f"cannot open {self.path!r}: closed by others {_REOPENS} times")

    def roll_back(self, savepoint: Savepoint, owned: Callable[[str], bool] | None = None) -> bool:
        """Undo the writes and deletes since ``savepoint``; the file ends where it did then.

        Its directory is written at once, so other processes read the zip as it was.
        ``owned(key)`` says which keys the caller changed (default: all, for a caller that
        is the zip's only writer): False, changing nothing, if another key was written,
        replaced or deleted since (by another thread or store of the same file), if the
        zip was closed since, or if a roll back since went to an earlier savepoint. Without
        room for the directory, :class:`StoreError` is raised: the zip is rolled back in
        this process and stays open; close it again once there is room.

        A roll back changes the store, not its readers: a decoded-chunk cache
        (``Array.with_cache``) keeps what it read, and a read of an entry given up that is
        in flight (or in a forked child's snapshot) may return bytes written later where
        the entry was.
        """
        archive = _archives.get(self.identity)
        return archive is not None and archive.roll_back(savepoint, owned or (lambda key: True))

    # -- reads ----------------------------------------------------------------------------
    def get(self, key: str) -> bytes | None:
        return self._archive().read(validate_key(key), None)

    def get_range(self, key: str, byte_range: ByteRange) -> bytes | None:
        return self._archive().read(validate_key(key), byte_range)

    def get_many(self, keys: Sequence[str]) -> dict[str, bytes | None]:
        unique = [validate_key(key) for key in dict.fromkeys(keys)]
        archive = self._archive()
        read = lambda key: archive.read(key, None)  # noqa: E731
        return read_many(unique, archive.index, read, config.threads)

    def exists(self, key: str) -> bool:
        return validate_key(key) in self._archive().index

    def getsize(self, key: str) -> int | None:
        info = self._archive().index.get(validate_key(key))
        return None if info is None else info.file_size

    # -- writes ---------------------------------------------------------------------------
    def set(self, key: str, value: Buffer) -> None:
        self._check_writable(key)
        data = as_buffer(self, self._entry_name(key), value)
        self._change(key, lambda archive: archive.write(key, data, self.compression))

    def set_many(self, items: Mapping[str, Buffer]) -> None:
        for key in items:  # every name checked before the first entry is written
            self._entry_name(key)
        super().set_many(items)

    def _entry_name(self, key: str) -> str:
        """``key``, validated, refused if its UTF-8 is too long for an entry's name."""
        size = len(validate_key(key).encode())
        if size > _MAX_NAME:
            raise StoreError(
                f"cannot write {key[:60] + '...'!r} to {self!r}: the key is {size:,} bytes "
                f"(UTF-8), over the zip format's limit of {_MAX_NAME:,} bytes per entry name"
            )
        return key

    def delete(self, key: str) -> None:
        self._check_writable(key)
        self._change(validate_key(key), lambda archive: archive.delete(key))

    def delete_prefix(self, prefix: str) -> None:
        self._check_writable(prefix or "/")  # refused read-only, even with nothing under it
        super().delete_prefix(prefix)

    def _change(self, key: str, change: Callable[[Archive], bool]) -> None:
        """``change`` the shared archive; again on the reopened one if another thread closed it."""
        for _ in range(_REOPENS):
            if change(self._archive(writing=key)):
                return
        raise StoreError(
            f"cannot write {key!r} to {self.path!r}: closed by others {_REOPENS} times"
        )

    # -- listing --------------------------------------------------------------------------
    def list_prefix(self, prefix: str) -> Iterator[str]:
        validate_prefix(prefix)
        archive = self._archive()
        with archive.lock:
            keys = list(archive.index)
        return iter(listed_keys(keys, prefix, self.path, "ZipStore"))

    def list_dir(self, prefix: str) -> tuple[list[str], list[str]]:
        # from the archive's index of directories: a scan of every key per listing made
        # walking a deep hierarchy (a listing per group) cubic in its depth
        prefix = validate_dir_prefix(prefix)
        archive = self._archive()
        with archive.lock:  # a write adds names to the index in place
            keys, dirs = archive.directories().get(prefix, ((), ()))
            return sorted(keys), sorted(dirs)
