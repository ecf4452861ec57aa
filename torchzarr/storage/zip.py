"""``ZipStore``: Zarr keys as entries of one zip file, shared per path within a process."""

from __future__ import annotations

import atexit
import contextlib
import io
import logging
import os
import struct
import threading
import time
import uuid
import weakref
import zipfile
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from torchzarr.errors import StoreError, UnknownStoreError
from torchzarr.forksafe import LockTable
from torchzarr.storage.base import Buffer, ByteRange, Store, validate_key, validate_prefix

__all__ = ["ZipStore"]

_MODES = ("r", "w", "a", "x")
_COMPRESSIONS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA)
_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, ..., name length, extra length
_log = logging.getLogger("torchzarr")
_archives: dict[str, _Archive] = {}
_path_locks = LockTable()  # opening or closing one path's archive; other paths never wait
_REOPENS = 100  # attempts of a write whose archive other threads keep closing
# a forked child keeps the parent's archives alive, never closing them: closing would write
# a central directory into the file the parent is still writing
_ORPHANS: list[Any] = []


class _Archive:
    """One open zip file of this process: the ZipFile, a pread descriptor and a key index.

    The index maps each name to its newest entry, so an overwritten key reads its last
    value. Overwrites and deletes leave dead entries. ``close`` writes a directory of the
    live entries only, so a closed archive never lists duplicate or deleted names; the dead
    bytes stay in the file until they outweigh the live ones, when ``close`` rewrites the
    file without them (so repeated closes of a changing zip copy it a bounded number of
    times, and it never grows past about twice its live bytes).

    The pread descriptor is closed when the archive is garbage, not by ``close``: a read
    that fetched the archive before another thread closed it still reads the file it
    indexed, never a closed (or reused) descriptor. A write or delete that finds the
    archive closed changes nothing and returns False: the caller reopens and tries again.
    """

    def __init__(self, path: str, mode: str, allow_zip64: bool) -> None:
        self.path, self.mode = path, mode
        self.lock = threading.RLock()
        self.pid = os.getpid()
        self.dirty = False
        self.zf: zipfile.ZipFile | None = None
        self.fd = -1
        self.index: dict[str, zipfile.ZipInfo] = {}
        self.offsets: dict[int, int] = {}  # local header offset -> data offset
        exists = os.path.exists(path)
        if mode == "r" and not exists:
            return  # reads as an empty store, like a missing directory
        if mode == "a" and exists and os.path.getsize(path) and not zipfile.is_zipfile(path):
            raise StoreError(f"{path!r} exists and is not a zip file")
        try:
            self.zf = zipfile.ZipFile(path, mode, allowZip64=allow_zip64)  # type: ignore[call-overload]
            self.fd = os.open(path, os.O_RDONLY)
            weakref.finalize(self, os.close, self.fd).atexit = False  # exit closes it
        except (OSError, zipfile.BadZipFile) as err:
            if self.zf is not None:
                self.zf.close()
            raise StoreError(f"cannot open zip file {path!r} (mode {mode!r}): {err}") from err
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
        return sum(_entry_bytes(info) for info in self.index.values())

    def data_offset(self, info: zipfile.ZipInfo) -> int:
        """Where an entry's bytes start: after its local header, whose extra field may differ."""
        offset = self.offsets.get(info.header_offset)
        if offset is None:
            header = os.pread(self.fd, _LOCAL_HEADER.size, info.header_offset)
            magic, name_len, extra_len = _LOCAL_HEADER.unpack(header)
            if magic != b"PK\x03\x04":
                raise StoreError(
                    f"corrupt zip {self.path!r}: bad local header of {info.filename!r}"
                )
            offset = info.header_offset + _LOCAL_HEADER.size + name_len + extra_len
            self.offsets[info.header_offset] = offset
        return offset

    def read(self, key: str, rng: ByteRange | None) -> bytes | None:
        info = self.index.get(key)
        if info is None:
            return None
        size = info.file_size
        start, end = 0, size
        if rng is not None:
            start = max(size + rng.start, 0) if rng.start < 0 else min(rng.start, size)
            end = size if rng.length is None else min(start + rng.length, size)
        if start >= end:
            return b""
        # positioned reads only (no shared file offset, no lock): safe from many threads
        # and from a forked child that inherited this archive
        if info.compress_type == zipfile.ZIP_STORED:
            return self._pread(key, end - start, self.data_offset(info) + start)
        raw = self._pread(key, info.compress_size, self.data_offset(info))
        with zipfile.ZipExtFile(io.BytesIO(raw), "r", info) as f:  # decompress, check CRC
            f.seek(start)
            return f.read(end - start)

    def _pread(self, key: str, size: int, offset: int) -> bytes:
        data = os.pread(self.fd, size, offset)
        if len(data) != size:
            raise StoreError(f"truncated zip {self.path!r}: entry {key!r} is cut short")
        return data

    def write(self, key: str, value: Buffer, compression: int) -> bool:
        """Append an entry for ``key``; False (nothing written) if the archive was closed."""
        info = zipfile.ZipInfo(key, date_time=time.localtime(time.time())[:6])
        info.compress_type = compression
        info.external_attr = 0o644 << 16
        with self.lock:
            if self.zf is None:
                return False
            if self.zf.NameToInfo.pop(key, None) is not None:  # no "Duplicate name" warning:
                self.dirty = True  # close() lists the live entries only
            replaced = self.index.get(key)
            if replaced is not None:
                self.dead += _entry_bytes(replaced)
            self.zf.writestr(info, bytes(value))
            if self.zf.fp is not None:
                self.zf.fp.flush()  # the pread descriptor must see the new bytes
            self.index[key] = info
            return True

    def delete(self, key: str) -> bool:
        """Hide ``key``; False (nothing changed) if the archive was closed."""
        with self.lock:
            if self.zf is None:
                return False
            deleted = self.index.pop(key, None)
            if deleted is not None:
                self.dirty = True
                self.dead += _entry_bytes(deleted)
            return True

    def close(self) -> None:
        with self.lock:
            zf, self.zf = self.zf, None
            if zf is None:
                return
            live = list(self.index.values())
            if self.dirty and self.writable:
                # the directory lists the live entries only; their dead bytes stay behind
                zf.filelist = sorted(live, key=lambda info: info.header_offset)
                zf.NameToInfo = {info.filename: info for info in live}
                zf._didModify = True  # type: ignore[attr-defined]  # write it after deletes only too
            zf.close()
            if self.dirty and self.writable and self.dead > self.live_bytes():
                try:
                    self._compact(live)
                except OSError as err:  # the file is whole as it is: only the room is lost
                    _log.warning(
                        "zip %r keeps its dead entries: cannot rewrite it (%s)", self.path, err
                    )

    def _compact(self, live: list[zipfile.ZipInfo]) -> None:
        """Rewrite the file with only the newest entry of each live key (temp + rename)."""
        tmp = f"{self.path}.{uuid.uuid4().hex}.partial"
        try:
            with zipfile.ZipFile(self.path, "r") as src, zipfile.ZipFile(tmp, "w") as dst:
                for info in live:
                    with src.open(info) as f:
                        dst.writestr(info, f.read())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

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
        self.zf, self.mode, self.dirty = None, "r", False


def _entry_bytes(info: zipfile.ZipInfo) -> int:
    """The bytes an entry takes before the directory: local header, name, extra, data."""
    return _LOCAL_HEADER.size + len(info.filename.encode()) + len(info.extra) + info.compress_size


def _after_fork_in_child() -> None:
    for archive in _archives.values():
        archive.freeze()


@atexit.register
def _close_all() -> None:
    """Write the directory of every zip still open in this process (never a forked copy)."""
    for path, archive in list(_archives.items()):
        if archive.pid == os.getpid():
            with _path_locks[path]:
                if _archives.get(path) is not archive:
                    continue  # closed or replaced meanwhile
                del _archives[path]  # a later write reopens it, never finds it closed
                with contextlib.suppress(Exception):
                    archive.close()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class ZipStore(Store):
    """A zip file of Zarr keys, readable and writable, compatible with zarr-python's ZipStore.

    Entries are written ``ZIP_STORED`` by default (chunks are compressed already), so a
    ranged read fetches only the bytes asked for. All ZipStores of one path in a process
    share one open archive, so a reader sees what a writer of the same process wrote.

    A zip cannot replace an entry in place: overwriting a key appends a new entry, and
    reads return the newest (as zipfile and zarr-python do); deleting hides the key.
    ``close()`` (or leaving a ``with`` block, or the end of the interpreter) writes the
    zip's directory and, if entries were replaced or deleted, rewrites the file without
    the dead ones. Until then, other processes cannot read what was written.

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

    def __repr__(self) -> str:
        return f"ZipStore({self.path!r}, mode={self.mode!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ZipStore) and (self.path, self.mode) == (other.path, other.mode)

    def __hash__(self) -> int:
        return hash((self.path, self.mode))

    @property
    def identity(self) -> str:
        return "zip://" + self.path

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
    def _archive(self, write: bool = False) -> _Archive:
        archive = _archives.get(self.path)
        if archive is not None and not self._fresh and (archive.writable or not write):
            return archive
        with _path_locks[self.path]:
            archive = _archives.get(self.path)
            if self._fresh:
                if self.mode == "x" and os.path.exists(self.path):
                    raise StoreError(f"cannot create {self.path!r} (mode 'x'): it exists")
                if archive is not None:
                    archive.close()
                archive = _archives[self.path] = _Archive(self.path, "w", self.allowZip64)
                self._fresh = False
            elif archive is None or (write and not archive.writable):
                if archive is not None:
                    archive.close()  # reads in flight keep its descriptor until they end
                exists = os.path.exists(self.path)
                mode = "a" if write or (exists and not self.read_only) else "r"
                archive = _archives[self.path] = _Archive(self.path, mode, self.allowZip64)
            return archive

    def close(self) -> None:
        """Write the zip's directory and release the file; the store reopens on next use.

        Other threads may go on using stores of the same path: a read in flight finishes on
        the closed archive, a write waits and then appends to the archive reopened after it.
        """
        with _path_locks[self.path]:  # no store opens it again before its directory is written
            archive = _archives.pop(self.path, None)
            if archive is not None:
                archive.close()

    # -- reads ----------------------------------------------------------------------------
    def get(self, key: str) -> bytes | None:
        return self._archive().read(validate_key(key), None)

    def get_range(self, key: str, byte_range: ByteRange) -> bytes | None:
        return self._archive().read(validate_key(key), byte_range)

    def get_many(self, keys: Sequence[str]) -> dict[str, bytes | None]:
        archive = self._archive()
        return {key: archive.read(validate_key(key), None) for key in keys}

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
            if change(self._archive(write=True)):
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
        return iter([key for key in keys if key.startswith(prefix)])
