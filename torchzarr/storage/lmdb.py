"""``LMDBStore``: keys and values in an LMDB environment, one environment per path and process."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import cached_property
from typing import Any

from torchzarr.arguments import whole_number
from torchzarr.errors import (
    InvalidArgumentError,
    MissingDependencyError,
    StoreError,
    UnknownStoreError,
)
from torchzarr.forksafe import LockTable
from torchzarr.storage.base import (
    Buffer,
    ByteRange,
    Store,
    keys_named,
    validate_key,
    validate_prefix,
)
from torchzarr.storage.buffers import as_buffer
from torchzarr.storage.key_names import listed_keys
from torchzarr.storage.lmdb_env import Closed, SharedEnv, check_forked, envs, opening
from torchzarr.storage.store_args import flag, local_path, settings_of

__all__ = ["LMDBStore"]

_DEFAULT_MAP_SIZE = 2**40 if sys.maxsize > 2**32 else 2**28
_path_locks = LockTable()  # opening or closing one path's environment; others never wait
_RECHECK = 1.0  # seconds a read trusts that its environment's file is still the path's
# known options of lmdb.open besides path, map_size and readonly
_LMDB_OPTIONS = frozenset(
    (
        *("subdir", "metasync", "sync", "map_async", "mode", "create", "readahead"),
        *("writemap", "meminit", "max_readers", "max_dbs", "max_spare_txns", "lock"),
        "lib_version",
    )
)


def _lmdb() -> Any:
    try:
        import lmdb
    except ImportError as err:
        raise MissingDependencyError(
            "LMDBStore needs the 'lmdb' package: pip install lmdb (or torchzarr[all])"
        ) from err
    return lmdb


class LMDBStore(Store):
    """An LMDB database: memory-mapped, many readers, one writer, crash-safe transactions.

    All stores of one path in a process share one environment, opened on first use (and
    anew in a forked child, which never touches the parent's). ``get_many`` and ``list_prefix`` run in one read transaction;
    ``get_range`` slices the memory map, so only the requested pages are read.

    Args:
        path: the environment: a directory (``subdir=True``, default) or a file.
        read_only: refuse writes; a missing environment reads as an empty store.
        map_size: the largest size the database may grow to (sparse; 1 TiB by default).
            A larger one than the environment of this path was opened with grows it.
        lmdb_options: more keyword arguments for ``lmdb.open`` (``subdir``, ``lock``,
            ``sync``, ``max_readers``, ...).

    Example:
        >>> import os, tempfile
        >>> store = LMDBStore(os.path.join(tempfile.mkdtemp(), "data.lmdb"))
        >>> store.set_many({"a/0": b"xyz", "a/1": b"w"})
        >>> store.get_many(["a/0", "b"]), sorted(store.list_prefix("a/"))
        ({'a/0': b'xyz', 'b': None}, ['a/0', 'a/1'])
        >>> store.close()
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        read_only: bool = False,
        map_size: int = _DEFAULT_MAP_SIZE,
        **lmdb_options: Any,
    ) -> None:
        path = local_path("path", path)
        unknown = sorted(set(lmdb_options) - _LMDB_OPTIONS)
        if unknown:
            raise UnknownStoreError(f"unknown LMDB options {unknown} for {path!r}")
        mode = lmdb_options.get("mode", 0o755)
        if isinstance(mode, bool) or not isinstance(mode, int):
            # not ArgumentTypeError: storage_options' TypeErrors read as unknown options
            raise InvalidArgumentError(
                f"LMDB option mode={mode!r} for {path!r} is not an int: it is lmdb's file "
                "permission bits for new files (such as 0o644); to open the store read-only "
                "pass mode='r' to tz.open_array / tz.open_group, or read_only=True"
            )
        self.path = path
        with settings_of(f"LMDBStore({path!r})"):
            self.read_only = flag("read_only", read_only)
            # a size_t for lmdb, which maps that much address space: at most sys.maxsize
            # here (0: lmdb's own default, or the size an existing environment has)
            self.map_size = whole_number("map_size", map_size, 0, sys.maxsize)
        self.lmdb_options = dict(lmdb_options)

    def __repr__(self) -> str:
        return f"LMDBStore({self.path!r}{', read-only' if self.read_only else ''})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LMDBStore) and self.__getstate__() == other.__getstate__()

    def __hash__(self) -> int:
        return hash((self.path, self.read_only))

    @cached_property
    def identity(self) -> str:
        # symlinks resolved (once), as LocalStore does: a file reached through a link is the same
        return "lmdb://" + os.path.realpath(self.path)

    def __getstate__(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "read_only": self.read_only,
            "map_size": self.map_size,
            **self.lmdb_options,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        LMDBStore.__init__(self, **state)

    def with_read_only(self, read_only: bool = True) -> LMDBStore:
        return LMDBStore(**{**self.__getstate__(), "read_only": read_only})

    def close(self) -> None:
        """Close the environment of this path (once the transactions running in it end);
        every store of it reopens on its next call."""
        check_forked()  # a forked child never closes its parent's environment
        with _path_locks[self.identity]:  # closed before any store opens it again
            shared = envs.pop(self.identity, None)
            if shared is not None:
                shared.close()

    # -- the environment ----------------------------------------------------------------------
    def _call(
        self,
        what: str,
        key: str | list[str],
        work: Callable[[Any], Any],
        *,
        write: bool = False,
        missing: Any = None,
    ) -> Any:
        """``work(env)`` in the shared environment, its errors as StoreErrors.

        ``write`` opens (or creates) the environment for writing; ``missing`` is returned,
        without calling ``work``, when reading an environment that does not exist. When
        another process grew the map past this process's size (``MDB_MAP_RESIZED``), the
        new size is adopted and ``work`` runs again.
        """
        resized = False
        while True:
            shared = self._env(write)
            if shared is None:
                return missing
            try:
                return shared.run(work)
            except Closed:
                continue  # closed by another thread meanwhile: reopen
            except StoreError:
                raise
            except Exception as err:
                if type(err).__name__ != "MapResizedError" or resized:
                    raise self._fail(what, key, err) from err
                resized = True
            try:
                shared.resize(0)
            except Exception as err:
                raise self._fail(what, key, err) from err

    def _env(self, write: bool = False) -> SharedEnv | None:
        """The shared environment; None when reading an environment that does not exist
        (only a write creates it: reading a store nothing was written to leaves no files)."""
        check_forked()  # forked without Python's fork handlers: drop the parent's
        shared = envs.get(self.identity)
        if shared is not None and (write or time.monotonic() - shared.checked > _RECHECK):
            # a stat per write, and per second of reads (a stat costs as much as a small read)
            shared.checked = time.monotonic()
            if shared.file != self._data_file():
                self.close()  # deleted or replaced on disk: not the data the path holds
                shared = None
        if shared is None or (write and shared.readonly):
            shared = self._open(write)
        if shared is not None and self.map_size > shared.map_size:
            try:  # a store asking for more room than the environment was opened with
                shared.resize(self.map_size)
            except Exception as err:
                raise StoreError(f"cannot grow LMDB environment {self.path!r}: {err}") from err
        return shared

    def _data_file(self) -> tuple[int, int] | None:
        """(device, inode) of the environment's data file now; None when it is missing."""
        subdir = self.lmdb_options.get("subdir", True)
        try:
            found = os.stat(os.path.join(self.path, "data.mdb") if subdir else self.path)
        except OSError:
            return None
        return found.st_dev, found.st_ino

    def _missing(self) -> bool:
        """Whether no environment is at the path: nothing there, or a folder (``subdir``,
        the default) without its data file (an empty folder made for it)."""
        if not os.path.exists(self.path):
            return True
        if not self.lmdb_options.get("subdir", True) or not os.path.isdir(self.path):
            return False  # a file where a folder goes: opening it says what is wrong
        return not os.path.exists(os.path.join(self.path, "data.mdb"))

    def _open(self, write: bool) -> SharedEnv | None:
        with _path_locks[self.identity]:
            shared = envs.get(self.identity)
            if shared is not None and write and shared.readonly:
                envs.pop(self.identity).close()  # opened read-only: reopen for writing
                shared = None
            if shared is None:
                if not write and self._missing():
                    return None  # reads create nothing, and an empty environment reads so
                with opening:  # a fork waits: no frame of this thread may hold the new env
                    shared = self._opened(write)
                envs[self.identity] = shared
            return shared

    def _opened(self, write: bool) -> SharedEnv:
        """The environment, opened anew (created by a write, with its parent folders)."""
        readonly = not write and self.read_only
        lmdb = _lmdb()
        options = {"map_size": self.map_size, "max_dbs": 0, **self.lmdb_options}
        try:
            if write and options.get("create", True):  # parent folders, as zip and SQLite do
                os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            env = lmdb.open(self.path, readonly=readonly, **options)
        except (lmdb.Error, TypeError, OSError) as err:  # OSError: a file where a folder goes
            raise StoreError(f"cannot open LMDB environment {self.path!r}: {err}") from err
        try:
            if not readonly:
                env.reader_check()  # free reader slots of dead processes (old workers)
            return SharedEnv(env, readonly, self._data_file())
        except lmdb.Error as err:
            env.close()
            raise StoreError(f"cannot open LMDB environment {self.path!r}: {err}") from err

    def _fail(self, what: str, key: str | list[str], err: Exception) -> StoreError:
        hint = ""
        name = type(err).__name__
        if name == "MapFullError":
            hint = " (the database is full: open it with a larger map_size)"
        elif name == "BadValsizeError":
            hint = " (LMDB keys are at most 511 bytes)"
        named = repr(key) if isinstance(key, str) else keys_named(key)
        return StoreError(f"cannot {what} {named} in {self}: {name}: {err}{hint}")

    # -- reads --------------------------------------------------------------------------------
    def get(self, key: str) -> bytes | None:
        return self.get_many([key])[key]

    def get_many(self, keys: Sequence[str]) -> dict[str, bytes | None]:
        unique = [validate_key(key) for key in dict.fromkeys(keys)]

        def read(env: Any) -> dict[str, bytes | None]:
            with env.begin() as txn:
                return {key: txn.get(key.encode()) for key in unique}

        first = unique[0] if unique else ""
        result: dict[str, bytes | None] = self._call(
            "read", first, read, missing=dict.fromkeys(unique)
        )
        return result

    def get_range(self, key: str, byte_range: ByteRange) -> bytes | None:
        name = validate_key(key).encode()

        def read(env: Any) -> bytes | None:
            with env.begin(buffers=True) as txn:  # a view of the map: slice before copying
                value = txn.get(name)
                return None if value is None else byte_range.slice(value)

        result: bytes | None = self._call("read", key, read)
        return result

    # -- writes -------------------------------------------------------------------------------
    def set(self, key: str, value: Buffer) -> None:
        self.set_many({key: value})

    def set_many(self, items: Mapping[str, Buffer]) -> None:
        for key in items:
            self._check_writable(key)
        pairs = [
            (validate_key(key).encode(), as_buffer(self, key, value))
            for key, value in items.items()
        ]
        if pairs:  # an error of the batch names its keys
            self._call("write", list(items), self._putter(pairs), write=True)

    def _putter(self, pairs: Sequence[tuple[bytes, Buffer]]) -> Callable[[Any], None]:
        def put(env: Any) -> None:
            most = env.max_key_size()  # checked first: LMDB's error would not say which key
            for name, _ in pairs:
                if len(name) > most:
                    raise StoreError(
                        f"cannot write {name.decode()!r} in {self}: its key is {len(name)} "
                        f"bytes, over LMDB's limit of {most} bytes per key"
                    )
            with env.begin(write=True) as txn:
                for k, v in pairs:
                    txn.put(k, v)

        return put

    def delete(self, key: str) -> None:
        self._check_writable(key)
        k = validate_key(key).encode()
        if self._env() is None:  # nothing was ever written: nothing to delete
            return
        self._call("delete", key, _deleter([k]), write=True)

    def delete_prefix(self, prefix: str) -> None:
        """Remove every key starting with ``prefix``, names no key can spell included (other
        tools wrote them; listings skip them), so nothing stale stays below it."""
        self._check_writable(prefix or "/")
        keys = self._stored_names(prefix)
        if keys:
            self._call("delete", prefix or "/", _deleter(keys), write=True)

    # -- listing ------------------------------------------------------------------------------
    def list_prefix(self, prefix: str) -> Iterator[str]:
        # bytes that are not UTF-8 read as lone surrogates: no key, skipped
        keys = [k.decode("utf-8", "surrogateescape") for k in self._stored_names(prefix)]
        return iter(listed_keys(keys, prefix, self.path, "LMDBStore"))

    def _stored_names(self, prefix: str) -> list[bytes]:
        """The stored names starting with ``prefix``, as they are stored."""
        validate_prefix(prefix)
        start = prefix.encode()

        def scan(env: Any) -> list[bytes]:
            keys: list[bytes] = []
            with env.begin() as txn, txn.cursor() as cursor:
                if cursor.set_range(start):
                    for k in cursor.iternext(keys=True, values=False):
                        if not k.startswith(start):
                            break
                        keys.append(bytes(k))
            return keys

        return list(self._call("list", prefix or "/", scan, missing=[]))


def _deleter(keys: list[bytes]) -> Callable[[Any], None]:
    def delete(env: Any) -> None:
        with env.begin(write=True) as txn:
            for k in keys:
                txn.delete(k)

    return delete
