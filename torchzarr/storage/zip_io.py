"""Low-level I/O on one zip file under ``zipfile``: checked entry reads, undone appends.

``ZipStore`` reads entries with positioned reads and appends them through ``zipfile``.
This module holds what that needs beyond ``zipfile``'s public API: reading an entry (or a
range of it, or several on threads) and checking it against the entry's CRC-32, and
putting a file back as it was when an append fails midway (a full disk) or a series of
appends is given up (:class:`Savepoint`), so that the entries before them stay readable;
and the errors of changes that fail or are refused.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

from torchzarr.errors import ChecksumError, ChunkDecodeError, ReadOnlyError, StoreError
from torchzarr.storage.base import ByteRange
from torchzarr.storage.file_locks import lock_exclusive, unlock
from torchzarr.storage.fileio import is_file_at
from torchzarr.storage.local_names import not_a_directory

__all__ = [
    "LOCAL_HEADER",
    "AppendState",
    "Savepoint",
    "append_failed",
    "check_crc",
    "cut_file",
    "decompress",
    "drop_file",
    "entry_bytes",
    "list_entries",
    "no_room_for_directory",
    "not_writable",
    "open_zip",
    "read_entry",
    "read_many",
    "refuse_change",
    "release_writer_lock",
    "write_directory",
]

LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, ..., name length, extra length
_THREAD_BYTES = 2 << 20  # read_many reads on a thread for each (up to max_threads)

# what a corrupt compressed entry raises while it is decompressed (bz2: OSError)
_NOT_WHOLE = (
    " (not a whole zip: another writer may be appending to it, its directory not yet "
    "written; retry once it has closed the zip)"
)
_DECODE_ERRORS: tuple[type[Exception], ...] = (zlib.error, zipfile.BadZipFile, EOFError, OSError)
with contextlib.suppress(ImportError):
    import lzma

    _DECODE_ERRORS += (lzma.LZMAError,)


def entry_bytes(info: zipfile.ZipInfo) -> int:
    """The bytes an entry takes before the directory: local header, name, extra, data.

    Example:
        >>> entry_bytes(zipfile.ZipInfo("a/0"))
        33
    """
    return LOCAL_HEADER.size + len(info.filename.encode()) + len(info.extra) + info.compress_size


def open_zip(path: str, mode: str, allow_zip64: bool) -> tuple[zipfile.ZipFile, int]:
    """``path`` opened by zipfile in ``mode``, and a descriptor for positioned reads.

    For writing (any mode but ``"r"``) the descriptor holds an exclusive ``flock`` on the
    file, taken before zipfile opens (and mode ``"w"`` empties) it, until
    :func:`release_writer_lock`: a second writer process fails here instead of losing the
    first one's entries when both close.

    Raises :class:`ReadOnlyError` for a file this process may not write (any mode but
    ``"r"``: permission denied, or a read-only file system), else :class:`StoreError` naming the file, if it cannot be opened or another
    process writes it.

    Example:
        >>> import tempfile
        >>> zf, fd = open_zip(os.path.join(tempfile.mkdtemp(), "o.zip"), "a", True)
        >>> zf.namelist(), fd >= 0
        ([], True)
        >>> zf.close(); os.close(fd)
    """
    zf, fd = None, -1
    try:
        fd = os.open(path, os.O_RDONLY) if mode == "r" else _locked_for_writing(path)
        if mode == "a" and os.fstat(fd).st_size > 0 and not zipfile.is_zipfile(path):
            raise StoreError(f"{path!r} exists and is not a zip file")
        zf = zipfile.ZipFile(path, mode, allowZip64=allow_zip64)  # type: ignore[call-overload]
        return zf, fd
    except (OSError, zipfile.BadZipFile, StoreError) as err:
        if zf is not None:
            zf.close()
        if fd >= 0:
            os.close(fd)
        if isinstance(err, StoreError):
            raise
        if not_writable(err) and mode != "r":
            raise ReadOnlyError(
                f"cannot write to zip file {path!r} (mode {mode!r}): {err}"
            ) from err
        if isinstance(err, zipfile.BadZipFile) and not _starts_as_a_zip(path):
            raise StoreError(
                f"cannot open {path!r} (mode {mode!r}) as a zip: it is not a zip file (it "
                "does not start with a zip signature: another kind of file at the path?)"
            ) from err
        hint = _NOT_WHOLE if isinstance(err, zipfile.BadZipFile) else ""  # no directory yet
        why = not_a_directory(path, err) or f"{err}{hint}"  # names a file in the way
        raise StoreError(f"cannot open zip file {path!r} (mode {mode!r}): {why}") from err


def not_writable(err: BaseException) -> bool:
    """Whether ``err`` says the file may not be written: permission denied, or a read-only
    file system (``EROFS`` is no ``PermissionError``)."""
    return isinstance(err, PermissionError) or (
        isinstance(err, OSError) and err.errno in (errno.EROFS, errno.EACCES, errno.EPERM)
    )


#: what a zip file starts with: an entry's local header, or the end of an empty zip's
#: directory (or the marker of a split archive)
_ZIP_STARTS = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08", b"PK00")
_SIGNATURE_SCAN = 1 << 20  # bytes searched for an entry of a zip with bytes before it


def _starts_as_a_zip(path: str) -> bool:
    """Whether the file at ``path`` has a zip signature: at its start, or an entry's in its
    first MiB (a self-extracting zip); True when it cannot be read (no evidence)."""
    try:
        with open(path, "rb") as f:
            head = f.read(_SIGNATURE_SCAN)
    except OSError:
        return True
    return head[:4] in _ZIP_STARTS or b"PK\x03\x04" in head


def _locked_for_writing(path: str) -> int:
    """A descriptor of the file at ``path`` holding its writer lock, taken before zipfile
    opens (and mode ``"w"`` empties) it: another writer's file may lack its directory."""
    for _ in range(16):  # another writer's close may rename a rewritten file over the path
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            lock_exclusive(fd, path, wait=False)
        except BlockingIOError:
            os.close(fd)
            raise StoreError(
                f"cannot write zip file {path!r}: another writer has it open (another "
                "process, or another store of the same file in this one); one writer per "
                "zip: give each process a zip of its own, or write to a directory"
            ) from None
        except OSError:
            os.close(fd)
            raise
        if is_file_at(fd, path):
            return fd  # the lock is on the file at the path: its next writer waits for it
        unlock(fd)
        os.close(fd)
    raise StoreError(f"cannot write zip file {path!r}: it keeps being replaced")


def release_writer_lock(fd: int) -> None:
    """Let other processes write the zip again (see :func:`open_zip`); closing the
    descriptor does too.

    Example:
        >>> release_writer_lock(-1)  # no descriptor: nothing to release
    """
    unlock(fd)


def append_failed(key: str, path: str, err: OSError, no_room: OSError | None) -> StoreError:
    """The error of an append of ``key`` that failed and was undone (see ``AppendState``).

    ``no_room``: the error that kept the directory from being written again, if any.

    Example:
        >>> append_failed("k", "a.zip", OSError(28, "No space left on device"), None)
        StoreError("cannot write 'k' to zip 'a.zip': [Errno 28] No space left on device (the zip keeps its earlier entries)")
    """
    kept = "the zip keeps its earlier entries"
    if no_room is not None:
        kept += (
            "; without room for its directory, other processes cannot read it until a "
            "close() with room writes it"
        )
    return StoreError(f"cannot write {key!r} to zip {path!r}: {err} ({kept})")


def no_room_for_directory(path: str, err: OSError) -> StoreError:
    """The error of a zip left open because its directory did not fit (a full disk).

    Example:
        >>> no_room_for_directory("a.zip", OSError(28, "No space left on device"))
        StoreError("cannot write the directory of zip 'a.zip': [Errno 28] No space left on device (it stays open: close it again when there is room)")
    """
    return StoreError(
        f"cannot write the directory of zip {path!r}: {err} (it stays open: close it again "
        "when there is room)"
    )


def refuse_change(path: str, action: str, frozen: bool, exiting: bool) -> None:
    """Raise if ``action`` (a write, or truncating) must not reach the zip at ``path``:
    ``frozen``, a forked child's snapshot of the zip its parent writes, or ``exiting``,
    the interpreter having written the zip's directory at its exit.

    Example:
        >>> refuse_change("a.zip", "write 'k' to", frozen=False, exiting=False)
    """
    if frozen:
        raise ReadOnlyError(
            f"cannot {action} zip {path!r} in a forked child: the zip its parent process "
            "is writing is a read-only snapshot here, of what the parent had written at the fork"
        )
    if exiting:
        raise StoreError(
            f"cannot {action} zip {path!r}: the interpreter is exiting and has written the "
            "zip's directory, which a later write would leave out (let threads that write "
            "finish, or close the zip, before the program ends)"
        )


def read_entry(
    info: zipfile.ZipInfo,
    rng: ByteRange | None,
    pread: Callable[[str, int, int], bytes],
    offsets: dict[int, int],
    path: str,
) -> bytes:
    """The bytes of entry ``info`` (``rng`` of them) of the zip ``path``.

    ``pread(key, size, offset)`` reads the file (positioned reads: safe from many threads
    and from a forked child), raising if it comes back short. ``offsets`` caches where each
    entry's data starts, by local header offset. An entry read whole is checked against
    its CRC-32.

    Example:
        >>> import tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "r.zip")
        >>> with zipfile.ZipFile(path, "w") as zf:
        ...     zf.writestr("k", b"hello world")
        >>> info, fd = zipfile.ZipFile(path).getinfo("k"), os.open(path, os.O_RDONLY)
        >>> pread = lambda key, size, offset: os.pread(fd, size, offset)
        >>> read_entry(info, ByteRange(6), pread, {}, path), read_entry(info, None, pread, {}, path)
        (b'world', b'hello world')
        >>> os.close(fd)
    """
    key, size = info.filename, info.file_size
    start, end = 0, size
    if rng is not None:
        start = max(size + rng.start, 0) if rng.start < 0 else min(rng.start, size)
        end = size if rng.length is None else min(start + rng.length, size)
    if start >= end:
        return b""
    data_offset = offsets.get(info.header_offset)
    if data_offset is None:  # after the local header, whose extra field may differ
        header = pread(key, LOCAL_HEADER.size, info.header_offset)
        magic, name_len, extra_len = LOCAL_HEADER.unpack(header)
        if magic != b"PK\x03\x04":
            raise StoreError(f"corrupt zip {path!r}: bad local header of {key!r}")
        data_offset = info.header_offset + LOCAL_HEADER.size + name_len + extra_len
        offsets[info.header_offset] = data_offset
    where = f"entry {key!r} of zip {path!r}"
    if info.compress_type != zipfile.ZIP_STORED:
        return decompress(pread(key, info.compress_size, data_offset), info, start, end, where)
    data = pread(key, end - start, data_offset + start)
    if end - start == size:  # a range cannot be checked: the CRC covers it all
        check_crc(data, info, where)
    return data


def read_many(
    keys: Sequence[str],
    index: dict[str, zipfile.ZipInfo],
    read: Callable[[str], bytes | None],
    max_threads: int,
) -> dict[str, bytes | None]:
    """``read(key)`` of each of ``keys``, on up to ``max_threads`` threads when the entries
    (their infos in ``index``) are large: copies out of the page cache and CRC checks then
    run at once (both release the GIL).

    Example:
        >>> read_many(["a", "b"], {}, lambda key: key.encode(), 4)
        {'a': b'a', 'b': b'b'}
    """
    infos = [index.get(key) for key in keys]
    sizes = [info.file_size for info in infos if info is not None]
    threads = min(max_threads, len(sizes), sum(sizes) // _THREAD_BYTES)
    if threads < 2:
        return {key: read(key) for key in keys}
    with ThreadPoolExecutor(threads, thread_name_prefix="torchzarr-zip") as pool:
        return dict(zip(keys, pool.map(read, keys), strict=True))


def check_crc(data: bytes, info: zipfile.ZipInfo, where: str) -> None:
    """Raise :class:`ChecksumError` naming ``where`` unless ``data`` matches ``info``'s CRC-32.

    Only a whole entry can be checked: the CRC covers all of its bytes.

    Example:
        >>> info = zipfile.ZipInfo("k")
        >>> info.CRC = zlib.crc32(b"value")
        >>> check_crc(b"value", info, "entry 'k'")
        >>> check_crc(b"valuE", info, "entry 'k'")
        Traceback (most recent call last):
        ...
        torchzarr.errors.ChecksumError: entry 'k' fails its CRC-32 check
    """
    if zlib.crc32(data) != info.CRC:
        raise ChecksumError(f"{where} fails its CRC-32 check")


def decompress(raw: bytes, info: zipfile.ZipInfo, start: int, end: int, where: str) -> bytes:
    """Bytes ``start:end`` of the compressed entry ``info`` whose stored bytes are ``raw``.

    Read to its end, the entry's CRC-32 is checked. Corrupt data raises
    :class:`ChecksumError` (CRC mismatch) or :class:`ChunkDecodeError` naming ``where``.

    Example:
        >>> buf = io.BytesIO()
        >>> with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        ...     zf.writestr("k", b"hello world")
        >>> info = zipfile.ZipFile(buf).getinfo("k")
        >>> raw = buf.getvalue()[30 + 1 : 30 + 1 + info.compress_size]
        >>> decompress(raw, info, 6, 11, "entry 'k'")
        b'world'
    """
    try:
        with zipfile.ZipExtFile(io.BytesIO(raw), "r", info) as f:
            f.seek(start)
            return f.read(end - start)
    except _DECODE_ERRORS as err:
        # zipfile raises BadZipFile for a CRC-32 mismatch only; the rest cannot decompress
        kind = ChecksumError if isinstance(err, zipfile.BadZipFile) else ChunkDecodeError
        name = type(err).__qualname__
        if type(err).__module__ != "builtins":
            name = f"{type(err).__module__}.{name}"
        raise kind(f"{where} is corrupt: {name}: {err}") from err


class AppendState(NamedTuple):
    """What ``zipfile`` held before an append, to put back if the append fails.

    Example:
        >>> with zipfile.ZipFile(io.BytesIO(), "w") as zf:
        ...     AppendState.of(zf, "k")
        AppendState(start_dir=0, listed=0, named=None)
    """

    start_dir: int  # where the entry starts, over the old directory
    listed: int  # entries in zipfile's list before it
    named: zipfile.ZipInfo | None  # zipfile's entry of the same name, taken out of its map

    @classmethod
    def of(cls, zf: zipfile.ZipFile, name: str) -> AppendState:
        """The state of ``zf`` before ``name`` is appended; takes ``name`` out of its map
        (the append puts it back), so zipfile warns of no duplicate name."""
        return cls(zf.start_dir, len(zf.filelist), zf.NameToInfo.pop(name, None))

    def restore(self, zf: zipfile.ZipFile, name: str) -> None:
        """Make ``zf`` forget a failed append of ``name`` (its file is left to
        :func:`cut_file`); the directory is written again when ``zf`` closes."""
        del zf.filelist[self.listed :]
        zf.NameToInfo.pop(name, None)
        if self.named is not None:
            zf.NameToInfo[name] = self.named
        zf.start_dir = self.start_dir
        zf._writing = False  # type: ignore[attr-defined]
        zf._didModify = True  # type: ignore[attr-defined]  # the entry overwrote the directory


class Savepoint(NamedTuple):
    """An open zip as it was at one moment, to roll back to when later appends are given up.

    Example:
        >>> mark = Savepoint(owner=None, start_dir=0, entries={}, dead=0, dirty=False, cuts=0)
        >>> mark.still_a_prefix([5]), mark.foreign_changes({"b": zipfile.ZipInfo("b")}, str.isupper)
        (True, ['b'])
    """

    owner: object  # the open archive it belongs to: a reopened one cannot go back to it
    start_dir: int  # where the next entry was to start, over the directory
    entries: dict[str, zipfile.ZipInfo]  # the live entries, by name
    dead: int  # bytes of dead entries before the directory
    dirty: bool  # whether the directory must list the live entries only
    cuts: int  # roll backs of the archive before this savepoint was taken

    def still_a_prefix(self, cut_points: Sequence[int]) -> bool:
        """Whether the file still holds what it held up to the savepoint: no roll back since
        it was taken (``cut_points[cuts:]``, where each one cut the file) went to an earlier
        point, over whose end later entries may have been written."""
        return all(point >= self.start_dir for point in cut_points[self.cuts :])

    def foreign_changes(
        self, index: dict[str, zipfile.ZipInfo], owned: Callable[[str], bool]
    ) -> list[str]:
        """The keys not ``owned`` that were written, replaced or deleted since the
        savepoint, ``index`` holding the live entries now."""
        before = self.entries
        changed = [
            key for key in before.keys() | index.keys() if before.get(key) is not index.get(key)
        ]
        return sorted(key for key in changed if not owned(key))


def cut_file(zf: zipfile.ZipFile, size: int) -> None:
    """Cut ``zf``'s file to ``size`` bytes and go on writing there.

    What zipfile's buffered file still holds unwritten is dropped, never written: the
    buffered file is replaced by a new one over a copy of its descriptor, and the old
    descriptor is closed under it (which makes the old file's own close a no-op).

    Example:
        >>> import tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "c.zip")
        >>> with zipfile.ZipFile(path, "w") as zf:
        ...     _ = zf.fp.write(b"junk")
        ...     cut_file(zf, 0)
        >>> zipfile.ZipFile(path).namelist()
        []
    """
    old = zf.fp
    assert old is not None
    fd = os.dup(old.fileno())
    try:
        new = open(fd, "r+b")  # noqa: SIM115  # zipfile closes it
    except BaseException:
        os.close(fd)
        raise
    drop_file(zf)
    zf.fp = new
    new.truncate(size)
    new.seek(size)


def drop_file(zf: zipfile.ZipFile) -> None:
    """Close ``zf``'s file without writing what its buffer holds; ``zf`` then writes nothing.

    Example:
        >>> zf = zipfile.ZipFile(io.BytesIO(), "w")
        >>> drop_file(zf)
        >>> zf.close()  # a no-op: no directory is written
    """
    fp, zf.fp = zf.fp, None
    if fp is not None:
        with contextlib.suppress(OSError):
            raw = getattr(fp, "raw", fp)  # the descriptor under the buffer
            raw.close()


def list_entries(zf: zipfile.ZipFile, entries: Iterable[zipfile.ZipInfo]) -> None:
    """Make ``zf``'s directory list ``entries`` only, in file order.

    Example:
        >>> with zipfile.ZipFile(io.BytesIO(), "w") as zf:
        ...     zf.writestr("a", b"1"); zf.writestr("b", b"2")
        ...     list_entries(zf, [zf.getinfo("b")])
        ...     zf.namelist()
        ['b']
    """
    listed = sorted(entries, key=lambda info: info.header_offset)
    zf.filelist = listed
    zf.NameToInfo = {info.filename: info for info in listed}


def write_directory(zf: zipfile.ZipFile) -> OSError | None:
    """Write ``zf``'s directory now, where its next entry goes; the error if there is no room.

    The file on disk is then a whole zip; the next append overwrites the directory, as
    zipfile's appends do. Without room, the file is cut back where the directory started
    and the error returned (raised only if even the cut fails).

    Example:
        >>> zf = zipfile.ZipFile(io.BytesIO(), "w")
        >>> zf.writestr("k", b"v")
        >>> write_directory(zf), zipfile.ZipFile(zf.fp).namelist()
        (None, ['k'])
    """
    assert zf.fp is not None
    try:
        zf.fp.seek(zf.start_dir)
        zf._write_end_record()  # type: ignore[attr-defined]
        zf.fp.truncate()  # a shorter directory than the last one leaves none of it behind
        zf.fp.flush()
        return None
    except OSError as err:
        cut_file(zf, zf.start_dir)
        return err
