"""``LocalStore``: keys as files under a root directory, written atomically (temp + rename)."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, NamedTuple

from torchzarr.errors import InvalidKeyError, StoreError
from torchzarr.storage import direct_io
from torchzarr.storage.base import (
    Buffer,
    ByteRange,
    Store,
    validate_dir_prefix,
    validate_key,
    validate_prefix,
)
from torchzarr.storage.buffers import as_buffer
from torchzarr.storage.local_listing import list_entries, walk_keys
from torchzarr.storage.local_names import (
    file_in_the_way,
    is_temporary,
    longest_part,
    name_max,
    raise_unless_too_long,
    temporary_name,
    temporary_of,
)
from torchzarr.storage.local_sync import flush, on_threads, up_to_root
from torchzarr.storage.store_args import flag, local_path

__all__ = ["LocalStore", "StagedFile", "is_temporary"]

_MAKE_ATTEMPTS = 100  # a directory pruned by a concurrent delete is made again
#: a read of more bytes takes that much memory before the file says how many it holds
#: (FsspecStore's reads of local files cut at the same length)
READ_UNCHECKED = 64 << 20


class StagedFile(NamedTuple):
    """A value written to a temporary file, waiting for :meth:`LocalStore.publish`."""

    key: str
    tmp: Path
    path: Path


def _is_directory(path: Path) -> bool:
    """True if a directory (not a link to one: a rename replaces a link) is at ``path``."""
    return os.path.isdir(path) and not os.path.islink(path)


class LocalStore(Store):
    """A directory on the local file system; key ``a/b/c`` is the file ``root/a/b/c``.

    Writes go to a temporary file in the same directory and are renamed into place, so a
    reader sees the old value or the new one, never half of one. With ``fsync=True`` the
    data is flushed to disk before the rename. With ``direct_io=True`` values of 1 MiB and
    more are written past the page cache (``O_DIRECT``, where the file system allows it):
    large one-off writes (checkpoints) then run at disk speed without filling memory, but
    reading them back right after goes to the disk.

    Example:
        >>> import tempfile
        >>> store = LocalStore(tempfile.mkdtemp())
        >>> store.set("a/b", b"xyz")
        >>> store.get("a/b"), store.get_range("a/b", ByteRange(1))
        (b'xyz', b'yz')
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        read_only: bool = False,
        fsync: bool = False,
        direct_io: bool = False,
    ) -> None:
        self.root = Path(local_path("root", root))
        self.read_only = flag("read_only", read_only)
        self.fsync = fsync
        self.direct_io = direct_io

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r}{', read-only' if self.read_only else ''})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LocalStore) and (self.root, self.read_only) == (
            other.root,
            other.read_only,
        )

    def __hash__(self) -> int:
        return hash((self.root, self.read_only))

    @cached_property
    def identity(self) -> str:
        # symlinks resolved (once): a directory reached through a link is the same data
        return "file://" + os.path.realpath(self.root)

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*validate_key(key).split("/"))

    def _file(self, key: str) -> str:
        # the hot path of reads: plain string joins, no pathlib objects per chunk
        return os.path.join(self._root_str, *validate_key(key).split("/"))

    def _of_root(self, slot: str, make: Callable[[Path], Any]) -> Any:
        """``make(self.root)``, kept in ``slot`` while the root stays the same object."""
        cached = self.__dict__.get(slot)
        if cached is None or cached[0] is not self.root:
            cached = self.__dict__[slot] = (self.root, make(self.root))
        return cached[1]

    @property
    def _root_str(self) -> str:
        # cached: str() of a Path on every chunk read shows up in profiles
        return str(self._of_root("_root_text", str))

    # -- reads ----------------------------------------------------------------------------
    def get(self, key: str) -> bytes | None:
        path = self._file(key)
        try:
            with open(path, "rb") as f:
                return f.read()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None
        except OSError as err:
            raise_unless_too_long(err, f"cannot read {key!r} from {self}: {err}")
            return None

    def get_range(self, key: str, byte_range: ByteRange) -> bytes | None:
        path = self._file(key)
        try:
            with open(path, "rb") as f:
                if byte_range.start < 0:
                    size = os.fstat(f.fileno()).st_size
                    f.seek(max(size + byte_range.start, 0))
                    return f.read()
                f.seek(byte_range.start)
                length = byte_range.length
                if length is not None and length > READ_UNCHECKED:  # at most what it holds
                    length = min(length, max(os.fstat(f.fileno()).st_size - byte_range.start, 0))
                return f.read(length)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None
        except OSError as err:
            raise_unless_too_long(err, f"cannot read {key!r} from {self}: {err}")
            return None

    def exists(self, key: str) -> bool:
        return self.getsize(key) is not None

    def getsize(self, key: str) -> int | None:
        path = self._file(key)  # outside the try: InvalidKeyError is an OSError too
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as err:
            raise_unless_too_long(err, f"cannot look up {key!r} in {self}: {err}")
            return None
        return st.st_size if stat.S_ISREG(st.st_mode) else None

    # -- writes ---------------------------------------------------------------------------
    def set(self, key: str, value: Buffer) -> None:
        self.publish(self.stage_many({key: value}))

    def set_many(self, items: Mapping[str, Buffer]) -> None:
        """Write many keys; with ``fsync``, files are synced together and each directory once.

        Each value still lands by temp file + rename, after its data is synced: a failure
        leaves no key half-written and no temp file behind. With ``fsync``, a failure to
        write or flush a value, or a directory where a key's file goes, leaves every key of
        the call with its old value (a name too long for the file system is refused before
        any is written, with or without ``fsync``); should a rename itself fail (an I/O
        error), the keys renamed before it hold their new values and the others their old
        ones (see :meth:`publish`).
        """
        overridden = "set" in self.__dict__ or type(self).set is not LocalStore.set
        if not self.fsync or len(items) <= 1 or overridden:  # an overridden set sees every key
            for key in items:  # every key and value checked before the first is written
                self._target(key)
            checked = {key: as_buffer(self, key, value) for key, value in items.items()}
            for key, value in checked.items():
                self.set(key, value)
            return
        self.publish(self.stage_many(items))

    def stage_many(self, items: Mapping[str, Buffer]) -> list[StagedFile]:
        """Write each value to a temporary file beside its key, not yet flushed or visible.

        :meth:`publish` makes them the keys' values; :meth:`discard` drops them. Writers on
        several threads can stage their parts and publish them all at once.

        Example:
            >>> import tempfile
            >>> store = LocalStore(tempfile.mkdtemp(), fsync=True)
            >>> staged = store.stage_many({"a/0": b"x", "a/1": b"y"})
            >>> store.get("a/0") is None
            True
            >>> store.publish(staged)
            >>> store.get("a/1")
            b'y'
        """
        targets = {key: self._target(key) for key in items}
        values = {key: as_buffer(self, key, value) for key, value in items.items()}
        staged: list[StagedFile] = []
        key = ""
        try:
            for key, value in values.items():
                path = targets[key]
                tmp = path.with_name(temporary_name(path.name))
                fd, direct = self._create(tmp, self._direct(value))
                staged.append(StagedFile(key, tmp, path))
                try:
                    direct_io.write_new(fd, value, direct=direct)
                    if self.fsync and not direct:
                        direct_io.start_writeback(fd)  # publish's fsync then waits less
                finally:
                    os.close(fd)
        except BaseException as err:
            self.discard(staged)
            if isinstance(err, OSError) and not isinstance(err, StoreError):
                raise _write_error(self, key, targets[key], err) from err
            raise  # ReadOnlyError, InvalidKeyError, interrupts: as they are
        return staged

    def _target(self, key: str) -> Path:
        """The file a write of ``key`` goes to, once the key is checked.

        A name longer than the file system takes is refused here, before any file of the
        call is written (a failed rename would leave the keys renamed before it changed).
        """
        self._check_writable(key)
        path = self._path(key)
        if is_temporary(path.name):  # listings skip such files: it would be lost
            raise InvalidKeyError(
                f"key {key!r} has the form of a LocalStore temporary file "
                "(.<name>.<32 hex digits>.partial), which listings skip"
            )
        limit = self._name_max
        if len(key) * 4 > limit:  # else no part can be longer (UTF-8: 4 bytes at most)
            part, size = longest_part(key)
            if size > limit:
                err = StoreError(
                    f"cannot write {key!r} to {self}: its part {part[:40]!r}... is {size} "
                    f"bytes long, and the file system takes names of at most {limit} bytes"
                )
                err.errno = errno.ENAMETOOLONG
                raise err
        return path

    @property
    def _name_max(self) -> int:
        """The longest file name the root's file system takes, asked once per root."""
        return int(self._of_root("_name_limit", lambda root: name_max(str(root))))

    def publish(self, staged: Sequence[StagedFile], threads: int = 8) -> None:
        """Rename staged files into place; with ``fsync``, flush them first, together.

        The flushes run on a few threads (the file system merges concurrent ones into few
        journal commits), then every file is renamed, then each directory flushed once:
        those of the files and those above them up to the root (any may be new: made by this
        call or by another writer, whose own publish may never come).
        Nothing is renamed if a flush fails or a directory stands where one of the files
        goes. The renames are not one atomic step: should one fail (an I/O error), the
        files renamed before it stay in place. Either way the ``StoreError`` names the key
        at fault and every staged file not yet renamed is removed.
        """
        if not staged:
            return
        entry = staged[0]
        try:
            if self.fsync:
                on_threads(self._flush_staged, staged, threads)
            if len(staged) > 1:  # one rename either happens or not: no need to look first
                for entry in staged:
                    if _is_directory(entry.path):
                        raise IsADirectoryError(
                            errno.EISDIR, "a directory is in the way", str(entry.path)
                        )
            directories: dict[Path, None] = {}
            for entry in staged:
                os.replace(entry.tmp, entry.path)
                directories[entry.path.parent] = None
            if self.fsync:  # with those above: any of them may be new (made by any writer)
                on_threads(self._fsync_dir, up_to_root(directories, self.root), threads)
        except StoreError:
            self.discard(staged)
            raise
        except OSError as err:
            gone = isinstance(err, FileNotFoundError) and not os.path.lexists(entry.tmp)
            self.discard(staged)
            why = " (its temporary file was removed: a delete of the node?)" if gone else ""
            raise _write_error(self, entry.key, entry.path, err, why) from err
        except BaseException:
            self.discard(staged)
            raise

    def _flush_staged(self, entry: StagedFile) -> None:
        try:
            flush(str(entry.tmp))
        except OSError as err:  # raised on a pool thread: name the key here
            raise StoreError(f"cannot write {entry.key!r} to {self}: {err}") from err

    @staticmethod
    def discard(staged: Sequence[StagedFile]) -> None:
        """Remove staged files not yet published (those already renamed are gone)."""
        for entry in staged:
            with contextlib.suppress(OSError):
                entry.tmp.unlink()

    @staticmethod
    def _create(tmp: Path, direct: bool) -> tuple[int, bool]:
        """Create ``tmp``, and the directories above it if missing: ``(fd, direct)``.

        A concurrent :meth:`delete` removes directories it leaves empty, possibly between
        making the directory and creating the file in it: then both are made again.
        """
        with contextlib.suppress(FileNotFoundError):  # the directory is there: the fast path
            return direct_io.open_new(str(tmp), direct=direct)
        for _ in range(_MAKE_ATTEMPTS - 1):
            # FileExistsError: mkdir saw the directory, then it was pruned (a file in the
            # way of the directory fails every attempt, and the last one raises)
            with contextlib.suppress(FileNotFoundError, FileExistsError):
                _make_dirs(tmp.parent)
                return direct_io.open_new(str(tmp), direct=direct)
        _make_dirs(tmp.parent)
        return direct_io.open_new(str(tmp), direct=direct)

    def _direct(self, value: Buffer) -> bool:
        return self.direct_io and len(value) >= direct_io.DIRECT_MIN_BYTES  # flat bytes

    @staticmethod
    def _fsync_dir(directory: Path) -> None:
        with contextlib.suppress(OSError):
            flush(str(directory))

    def delete(self, key: str) -> None:
        self._delete_keys([key])

    def delete_many(self, keys: Iterable[str]) -> None:
        """Remove keys (missing ones are no error); with ``fsync``, the directories they
        were removed from are flushed once each before it returns."""
        if "delete" in self.__dict__ or type(self).delete is not LocalStore.delete:
            for key in keys:  # an overridden delete sees every key
                self.delete(key)
        else:
            self._delete_keys(keys)

    def _delete_keys(self, keys: Iterable[str]) -> None:
        self._flush_changed(self._unlink_keys(keys))

    def _flush_changed(self, changed: dict[Path, None]) -> None:
        """With ``fsync``, flush the directories a delete changed (else a crash could bring
        a deleted chunk back)."""
        if self.fsync and changed:
            on_threads(self._fsync_dir, list(changed), 8)

    def _unlink_keys(self, keys: Iterable[str]) -> dict[Path, None]:
        """Remove the files of ``keys``, pruning directories left empty: the directories
        whose entries changed."""
        changed: dict[Path, None] = {}
        for key in keys:
            self._check_writable(key)
            path = self._path(key)
            try:
                path.unlink()
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                continue
            except OSError as err:  # too long: no such file, nothing to delete
                raise_unless_too_long(err, f"cannot delete {key!r} from {self}: {err}")
                continue
            changed[self._prune(path.parent)] = None
        return changed

    def _prune(self, directory: Path) -> Path:
        """Remove now-empty directories up to, not including, the root; the directory
        left, whose entries changed."""
        below = os.path.join(self._root_str, "")  # a test per level, not a walk of parents
        while directory != self.root and str(directory).startswith(below):
            try:
                directory.rmdir()
            except OSError as err:
                # ENOTDIR: a symlinked directory, which stays
                if err.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT, errno.ENOTDIR):
                    return directory
                raise
            directory = directory.parent
        return directory

    def delete_prefix(self, prefix: str) -> None:
        """Remove every key under ``prefix``; a symlinked directory wholly under it is
        removed as a link (as ``rm -r`` does): the files it points to stay. The temporary
        files of writes under it (a killed writer's, found in the same walk) go too: a write
        still in flight then fails with ``StoreError``."""
        self._check_writable(prefix or "/")
        links: list[tuple[str, str]] = []
        temporaries: list[tuple[str, str]] = []
        head = prefix[:-1] if prefix.endswith("/") else ""
        if head and os.path.islink(self._file(head)):
            links.append((head, self._file(head)))
            keys: list[str] = []
        else:
            keys = list(self._list(prefix, links, temporaries))
        if any(  # an overridden delete or delete_many sees every key (and flushes)
            name in self.__dict__ or getattr(type(self), name) is not getattr(LocalStore, name)
            for name in ("delete", "delete_many")
        ):
            self.delete_many(keys)
            changed: dict[Path, None] = {}
        else:
            changed = self._unlink_keys(keys)
        gone = [(name, path) for name, path in links if (name + "/").startswith(prefix)]
        for name, path in temporaries:  # after the keys: the last file out prunes
            tail = name.rpartition("/")[2]  # kept if the key it is for is not under prefix
            if (name[: -len(tail)] + temporary_of(tail)).startswith(prefix):
                gone.append((name, path))
        for name, path in gone:
            try:
                os.unlink(path)
            except FileNotFoundError:
                continue
            except OSError as err:
                if is_temporary(name.rpartition("/")[2]):
                    continue  # not a key: a leftover that cannot go (another user's) stays
                raise StoreError(f"cannot delete {name!r} from {self}: {err}") from err
            changed[self._prune(Path(path).parent)] = None
        self._flush_changed(changed)  # one flush per directory, links' included

    # -- listing --------------------------------------------------------------------------
    def list_prefix(self, prefix: str) -> Iterator[str]:
        return self._list(prefix, None)

    def _list(
        self,
        prefix: str,
        links: list[tuple[str, str]] | None,
        temporaries: list[tuple[str, str]] | None = None,
    ) -> Iterator[str]:
        """Keys starting with ``prefix``, also those below symlinked directories; with
        ``links``, those are not followed but collected there as ``(name, path)``; with
        ``temporaries``, the temporary files walked past are (not only under ``prefix``)."""
        validate_prefix(prefix)
        head, _, _ = prefix.rpartition("/")
        start = os.path.join(self._root_str, *head.split("/")) if head else self._root_str
        base = head + "/" if head else ""
        for key in walk_keys(start, base, frozenset(), links, self, temporaries):
            if key.startswith(prefix):
                yield key

    def list_dir(self, prefix: str) -> tuple[list[str], list[str]]:
        prefix = validate_dir_prefix(prefix)
        directory = self.root.joinpath(*prefix.strip("/").split("/")) if prefix else self.root
        return list_entries(str(directory), prefix, self)

    def with_read_only(self, read_only: bool = True) -> LocalStore:
        return LocalStore(
            self.root, read_only=read_only, fsync=self.fsync, direct_io=self.direct_io
        )

    def __getstate__(self) -> dict[str, Any]:
        return {
            "root": str(self.root),
            "read_only": self.read_only,
            "fsync": self.fsync,
            "direct_io": self.direct_io,
        }  # no cache

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.root = Path(state["root"])
        self.read_only = state["read_only"]
        self.fsync = state["fsync"]
        self.direct_io = state.get("direct_io", False)


def _write_error(store: Store, key: str, path: Path, err: OSError, why: str = "") -> StoreError:
    """``err`` of a write of ``key`` to ``path``, naming a file where a directory must be."""
    # name the file in the way, not the temporary file
    above = file_in_the_way(path.parent) if err.errno == errno.ENOTDIR else None
    text = f"{why}: {err}" if above is None else f": {above!r} is a file, not a directory"
    return StoreError(f"cannot write {key!r} to {store}{text}")


def _make_dirs(directory: Path) -> None:
    """``directory.mkdir(parents=True, exist_ok=True)`` in a loop, not one call per level
    (which exhausts Python's stack a thousand levels down)."""
    missing = []
    while not directory.is_dir() and directory != directory.parent:
        missing.append(directory)
        directory = directory.parent
    for each in reversed(missing):
        each.mkdir(exist_ok=True)
