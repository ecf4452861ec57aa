"""``Archive``: one open zip file of this process, as the ZipStores of its path share it."""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
import zipfile
from collections.abc import Callable, Iterable

from torchzarr.errors import StoreError
from torchzarr.forksafe import new_rlock
from torchzarr.storage.base import Buffer, ByteRange
from torchzarr.storage.buffers import as_buffer
from torchzarr.storage.fileio import (
    FileSignature,
    file_signature,
    path_signature,
    read_bytes,
)
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
    release_writer_lock,
    write_directory,
)
from torchzarr.storage.zip_rewrite import rewrite_live
from torchzarr.storage.zip_shared import GONE, close_at_process_exit, warn_writes_lost
from torchzarr.storage.zip_shared import ORPHANS as _ORPHANS

__all__ = ["Archive", "Directories", "add_to_directories", "directory_index"]

#: a directory (``""``, ``"a/"``) -> the names of the keys and directories directly in it
Directories = dict[str, tuple[set[str], set[str]]]

_log = logging.getLogger("torchzarr")


class Archive:
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
        self._directories: Directories | None = None  # of the index's names, built on demand
        self.offsets: dict[int, int] = {}  # local header offset -> data offset
        self.cut_points: list[int] = []  # where each roll back cut the file (Savepoint)
        # the file as this process last left it: a new open reads one changed since afresh
        self.signature = self.opened_as = path_signature(path)
        if mode == "r" and (self.signature is None or not self.signature[2]):  # no bytes
            return  # a missing or empty file reads as an empty store, like a missing directory
        self.zf, self.fd = open_zip(path, mode, allow_zip64)
        if mode != "r":
            close_at_process_exit()  # a multiprocessing child runs no atexit function
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
        data = as_buffer(f"ZipStore({self.path!r})", key, value)  # ZipStore.set checked it
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
            if replaced is None and self._directories is not None:
                add_to_directories(self._directories, key)  # a new name
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
            self._directories = None
            self.dead, self.dirty = savepoint.dead, savepoint.dirty
            # data offsets cached for entries past the savepoint would mislead later reads
            self.offsets = {at: to for at, to in self.offsets.items() if at < savepoint.start_dir}
            no_room = self._rewind(zf, savepoint.start_dir, "to an earlier state", cut=False)
            zf._didModify = no_room is not None  # type: ignore[attr-defined]
            if no_room is not None:
                raise no_room_for_directory(self.path, no_room) from no_room
            return True

    def directories(self) -> Directories:
        """Each directory of the index's keys (``""``, ``"a/"``, ``"a/b/"``) mapped to the
        names of the keys and of the directories directly in it: built once per change of
        the names, in time linear in their length (a listing per group, each scanning every
        key, made a walk of a deep hierarchy cubic)."""
        with self.lock:
            if self._directories is None:
                self._directories = directory_index(
                    listed_keys(list(self.index), "", self.path, "ZipStore")
                )
            return self._directories

    def delete(self, key: str) -> bool:
        """Hide ``key``; False (nothing changed) if the archive was closed."""
        with self.lock:
            if self.zf is None:
                return False
            deleted = self.index.pop(key, None)
            if deleted is not None:
                self._directories = None
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
            if not ours and self.unclosed_writes:
                warn_writes_lost(self.path)
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
            if ours and self.dirty and self.writable and self.dead > self.live_bytes():
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
        if self.unclosed_writes:
            # the same file (device, inode) unless deleted or replaced, writes and all
            now, then = path_signature(self.path), self.signature
            return now is not None and then is not None and now[:2] == then[:2]
        return path_signature(self.path) == self.signature

    @property
    def unclosed_writes(self) -> bool:
        """Whether this process changed the file since it last wrote the zip's directory."""
        zf = self.zf
        return zf is not None and self.writable and (self.dirty or zf._didModify)  # type: ignore[attr-defined]

    def let_go(self) -> None:
        """Write nothing more to the file (another writer's now): a read-only snapshot."""
        with self.lock:
            if self.zf is not None:
                drop_file(self.zf)  # never its directory
                release_writer_lock(self.fd)
            self.zf, self.mode, self.dirty = None, "r", False


def directory_index(keys: Iterable[str]) -> Directories:
    """Each directory of ``keys`` mapped to ``(key names, directory names)`` directly in it.

    Example:
        >>> directory_index(["a/b/0", "a/x", "y"])["a/"]
        ({'x'}, {'b'})
    """
    index: Directories = {}
    for key in keys:
        add_to_directories(index, key)
    return index


def add_to_directories(index: Directories, key: str) -> None:
    """Enter ``key`` in ``index`` (:func:`directory_index`), with its new directories.

    Example:
        >>> index = directory_index(["a/x"])
        >>> add_to_directories(index, "a/b/0")
        >>> index["a/"], index["a/b/"]
        (({'x'}, {'b'}), ({'0'}, set()))
    """
    head, sep, name = key.rpartition("/")
    parent, new = head + sep, False
    if parent not in index:
        index[parent], new = (set(), set()), True
    index[parent][0].add(name)
    while new and parent:  # a directory new to the index: so may be its parents
        head, sep, name = parent[:-1].rpartition("/")
        parent, new = head + sep, head + sep not in index
        if new:
            index[parent] = (set(), set())
        index[parent][1].add(name)
