"""``ZipStore``: Zarr keys as entries of one zip file, shared per path within a process."""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
import zipfile
from collections.abc import Callable, Iterator, Sequence
from functools import cached_property
from typing import Any

from torchzarr.config import config
from torchzarr.errors import ReadOnlyError, StoreError, UnknownStoreError
from torchzarr.forksafe import new_rlock
from torchzarr.storage.base import Buffer, ByteRange, Store, validate_key, validate_prefix
from torchzarr.storage.fileio import FileSignature, file_signature, path_signature, read_bytes
from torchzarr.storage.key_names import listed_keys
from torchzarr.storage.zip_io import (
    AppendState,
    Savepoint,
    append_failed,
    cut_file,
    drop_file,
    entry_bytes,
    list_entries,
    no_room_for_directory,
    open_zip,
    read_entry,
    read_many,
    refuse_change,
    release_writer_lock,
    rewrite_live,
    write_directory,
)
from torchzarr.storage.zip_shared import GONE, choose_archive, refuse_another_version
from torchzarr.storage.zip_shared import ORPHANS as _ORPHANS
from torchzarr.storage.zip_shared import archives as _archives
from torchzarr.storage.zip_shared import closed_at_exit as _closed_at_exit
from torchzarr.storage.zip_shared import path_locks as _path_locks

__all__ = ["ZipStore"]

_MODES = ("r", "w", "a", "x")
_COMPRESSIONS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA)
_log = logging.getLogger("torchzarr")
_REOPENS = 100  # attempts of a write whose archive other threads keep closing


class _Archive:
    """One open zip file of this process: the ZipFile, a pread descriptor and a key index.

    The index maps each name to its newest entry, so an overwritten key reads its last
    value. Overwrites and deletes leave dead entries. ``close`` writes a directory of the
    live entries only, so a closed archive never lists duplicate or deleted names; the dead
    bytes stay in the file until they outweigh the live ones, when ``close`` rewrites the
    file without them (so repeated closes of a changing zip copy it a bounded number of
    times, and it never grows past about twice its live bytes).

    The pread descriptor is closed when the archive is garbage, not by ``close``: a read
    holding the archive reads the file it indexed, never a closed (or reused) descriptor.
    A write or delete finding it closed changes nothing and returns False (try again).
    """

    def __init__(self, path: str, mode: str, allow_zip64: bool) -> None:
        self.path, self.mode = path, mode
        self.lock = new_rlock()  # kept by stores as a snapshot: unlocked in a forked child too
        self.pid = os.getpid()
        self.frozen = False  # a forked child's snapshot of the parent's open archive
        self.closed = False  # by this process: its stores move to the archive open now
        self.closed_as: FileSignature | None = None  # the file as its close left it
        self.dirty = False
        self.zf: zipfile.ZipFile | None = None
        self.fd = -1
        self.index: dict[str, zipfile.ZipInfo] = {}
        self.offsets: dict[int, int] = {}  # local header offset -> data offset
        self.cut_points: list[int] = []  # where each roll back cut the file (Savepoint)
        # the file as this process last left it: a new open reads one changed since afresh
        self.signature = self.opened_as = path_signature(path)
        if mode == "r" and (self.signature is None or not self.signature[2]):  # no bytes
            return  # a missing or empty file reads as an empty store, like a missing directory
        self.zf, self.fd = open_zip(path, mode, allow_zip64)
        weakref.finalize(self, os.close, self.fd).atexit = False  # exit closes it
        self.signature = file_signature(os.fstat(self.fd))
        self.opened_as = self.signature  # the file as this archive found it
        for info in self.zf.infolist():  # later entries win, as in zipfile and zarr-python
            if not info.is_dir():
                self.index[info.filename] = info
        self.dirty = len(self.index) != len(self.zf.infolist())
        # bytes before the directory that no live entry holds (left by earlier sessions)
        self.dead = max(0, getattr(self.zf, "start_dir", 0) - self.live_bytes())

    @property
    def writable(self) -> bool:
        return self.mode != "r"

    def live_bytes(self) -> int:
        """The bytes the live entries take in the file, local headers included."""
        return sum(entry_bytes(info) for info in self.index.values())

    def read(self, key: str, rng: ByteRange | None) -> bytes | None:
        info = self.index.get(key)
        return None if info is None else read_entry(info, rng, self._pread, self.offsets, self.path)

    def _pread(self, key: str, size: int, offset: int) -> bytes:
        data = read_bytes(self.fd, size, offset, needed=size)  # no shared offset, no lock
        if len(data) != size:
            raise StoreError(f"truncated zip {self.path!r}: entry {key!r} is cut short")
        return data

    def write(self, key: str, value: Buffer, compression: int) -> bool:
        """Append an entry for ``key``; False (nothing written) if the archive was closed.

        A write that fails (a full disk) raises :class:`StoreError` and leaves the archive
        as it was before it: see :meth:`_undo_write`.
        """
        data = bytes(value)
        info = zipfile.ZipInfo(key, date_time=time.localtime(time.time())[:6])
        info.compress_type = compression
        info.external_attr = 0o644 << 16
        with self.lock:
            zf = self.zf
            if zf is None:
                return False
            dirty, dead = self.dirty, self.dead
            before = AppendState.of(zf, key)  # no "Duplicate name" warning:
            if before.named is not None:
                self.dirty = True  # close() lists the live entries only
            replaced = self.index.get(key)
            if replaced is not None:
                self.dead += entry_bytes(replaced)
            try:
                zf.writestr(info, data)
                if zf.fp is not None:
                    zf.fp.flush()  # the pread descriptor must see the new bytes
            except BaseException as err:
                self.dirty, self.dead = dirty, dead
                no_room = self._undo_write(zf, key, before)
                if isinstance(err, OSError):
                    raise append_failed(key, self.path, err, no_room) from err
                raise
            self.index[key] = info
            self.signature = file_signature(os.fstat(self.fd))
            return True

    def _undo_write(self, zf: zipfile.ZipFile, key: str, before: AppendState) -> OSError | None:
        """Put the archive back as it was before a failed write of ``key``: the file cut
        back to where the entry started (its bytes may have reached the file over the
        directory, zipfile's buffer may hold more), zipfile made to forget the entry, and the
        live entries' directory written again. Without room even for that, the error is
        returned and ``close`` writes the directory."""
        before.restore(zf, key)
        return self._rewind(zf, before.start_dir, f"after a failed write of {key!r}", cut=True)

    def _rewind(self, zf: zipfile.ZipFile, start_dir: int, what: str, cut: bool) -> OSError | None:
        """End the file at ``start_dir`` with the live entries' directory (see ``_undo_write``)."""
        try:
            if cut:  # else written over what is there, then cut: no room needed on a full disk
                cut_file(zf, start_dir)
            zf.start_dir = start_dir
            list_entries(zf, self.index.values())
            no_room = write_directory(zf)
            self.signature = file_signature(os.fstat(self.fd))
            return no_room
        except OSError as err:  # the file is in an unknown state: write nothing more to it
            self.let_go()  # the next write reopens it (writer lock released)
            raise StoreError(
                f"zip {self.path!r} cannot be restored {what}: {err} "
                "(it may have lost its directory; `zip -FF` recovers the entries)"
            ) from err

    def roll_back(self, savepoint: Savepoint, owned: Callable[[str], bool]) -> bool:
        """Forget the entries written since ``savepoint``, cut from the file (see ZipStore)."""
        with self.lock:
            zf = self.zf
            stale = savepoint.owner is not self or not savepoint.still_a_prefix(self.cut_points)
            if zf is None or stale or savepoint.foreign_changes(self.index, owned):
                return False
            self.cut_points.append(savepoint.start_dir)
            self.index = dict(savepoint.entries)  # one assignment: readers see old or new
            self.dead, self.dirty = savepoint.dead, savepoint.dirty
            # data offsets cached for entries past the savepoint would mislead later reads
            self.offsets = {at: to for at, to in self.offsets.items() if at < savepoint.start_dir}
            no_room = self._rewind(zf, savepoint.start_dir, "to an earlier state", cut=False)
            zf._didModify = no_room is not None  # type: ignore[attr-defined]
            if no_room is not None:
                raise no_room_for_directory(self.path, no_room) from no_room
            return True

    def delete(self, key: str) -> bool:
        """Hide ``key``; False (nothing changed) if the archive was closed."""
        with self.lock:
            if self.zf is None:
                return False
            deleted = self.index.pop(key, None)
            if deleted is not None:
                self.dirty = True
                self.dead += entry_bytes(deleted)
            return True

    def close(self) -> None:
        """Write the directory and close the file.

        Without room for the directory (a full disk), raise :class:`StoreError` and stay
        open, the file cut back to its entries: a later close writes it.
        """
        with self.lock:
            zf = self.zf
            if zf is None:
                self.closed = True
                return
            ours = self.unchanged_by_others()  # else another writer's file is at the path
            live = list(self.index.values())
            if self.dirty and self.writable:
                # the directory lists the live entries only; their dead bytes stay behind
                list_entries(zf, live)
                zf._didModify = True  # type: ignore[attr-defined]  # write it after deletes only too
            if self.writable and zf._didModify:  # type: ignore[attr-defined]
                no_room = write_directory(zf)
                if no_room is not None:
                    raise no_room_for_directory(self.path, no_room) from no_room
                zf._didModify = False  # type: ignore[attr-defined]  # written: close() adds nothing
            self.zf, self.closed = None, True
            try:
                zf.close()
            except OSError as err:
                raise StoreError(f"cannot close zip {self.path!r}: {err}") from err
            if self.dirty and self.writable and self.dead > self.live_bytes():
                try:
                    rewrite_live(self.path, live)  # temp file + rename
                except OSError as err:  # the file is whole as it is: only the room is lost
                    _log.warning(
                        "zip %r keeps its dead entries: cannot rewrite it (%s)", self.path, err
                    )
            self.closed_as = path_signature(self.path) if ours else GONE
            release_writer_lock(self.fd)  # after any rewrite: another process may write now

    def freeze(self) -> None:
        """In a forked child: a read-only snapshot of what the parent had written.

        The child never writes to or closes the parent's zip; it reads the bytes already
        flushed through its copy of the descriptor, with positioned reads only.
        """
        self.lock = threading.RLock()  # the parent's may have been held at fork
        if self.zf is not None:
            _ORPHANS.append(self.zf.fp)  # never flushed or closed here
            self.zf.fp = None  # ZipFile.close() is then a no-op
            _ORPHANS.append(self.zf)
            self.frozen = self.writable  # the parent writes on: its file lacks a directory
        self.zf, self.mode, self.dirty = None, "r", False

    def unchanged_by_others(self) -> bool:
        """Whether the file at the path is the one read, as this process last left it, or
        holds changes of this process for a close to write (the zip's one writer)."""
        zf = self.zf
        if zf is not None and self.writable and (self.dirty or zf._didModify):  # type: ignore[attr-defined]
            return True
        return path_signature(self.path) == self.signature

    def let_go(self) -> None:
        """Write nothing more to the file (another writer's now): a read-only snapshot."""
        with self.lock:
            if self.zf is not None:
                drop_file(self.zf)  # never its directory
                release_writer_lock(self.fd)
            self.zf, self.mode, self.dirty = None, "r", False


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
            the file exists. ``"w"`` and ``"x"`` act on the first use only; a reopened or
            unpickled store appends.
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
        if mode not in _MODES:
            raise UnknownStoreError(f"ZipStore mode must be one of {_MODES}, got {mode!r}")
        if compression not in _COMPRESSIONS:
            raise UnknownStoreError(f"unknown zip compression {compression!r} for {path!r}")
        self.path = os.path.abspath(os.fspath(path))
        self.mode = mode
        self.read_only = mode == "r"
        self.compression = compression
        self.allowZip64 = allowZip64
        self._fresh = mode in ("w", "x")  # truncate or create on first use only
        self._pinned: _Archive | None = None  # the archive of its first use (or last write)

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
    def _archive(self, writing: str | None = None) -> _Archive:
        """The archive this store reads (see ``choose_archive``); writable when ``writing``."""
        path = self.identity  # one archive per file, whatever path or link reaches it
        write, archive = writing is not None, self._pinned
        if archive is not None and not archive.closed and (archive.writable or not write):
            return archive  # its snapshot, whatever another writer put at the path since
        changes = write or self._fresh
        action = f"create (mode {self.mode!r})" if not write else "write to"
        action = f"write {writing!r} to" if writing else action
        with _path_locks[path]:
            archive = _archives.get(path)
            if changes:
                frozen = archive is not None and archive.frozen
                refuse_change(self.path, action, frozen, exiting=path in _closed_at_exit)
            if self._fresh:
                if self.mode == "x" and os.path.exists(self.path):
                    raise StoreError(f"cannot create {self.path!r} (mode 'x'): it exists")
                if archive is not None:
                    archive.close()
                archive = _archives[path] = _Archive(self.real_path, "w", self.allowZip64)
                self._fresh = False
            else:  # a file this process may not write reads: read only until the first write
                opener = lambda mode: _Archive(self.real_path, mode, self.allowZip64)  # noqa: E731
                archive = choose_archive(path, write, opener)
            stale, self._pinned = self._pinned, archive
            if stale is not None and stale.closed and archive is not stale:
                refuse_another_version(self.path, stale, archive)
            return archive

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
        self._change(validate_key(key), lambda archive: archive.write(key, value, self.compression))

    def delete(self, key: str) -> None:
        self._check_writable(key)
        self._change(validate_key(key), lambda archive: archive.delete(key))

    def _change(self, key: str, change: Callable[[_Archive], bool]) -> None:
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
