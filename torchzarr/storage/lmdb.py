"""``LMDBStore``: keys and values in an LMDB environment, one environment per path and process."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from torchzarr.errors import MissingDependencyError, StoreError, UnknownStoreError
from torchzarr.storage.base import Buffer, ByteRange, Store, validate_key, validate_prefix

__all__ = ["LMDBStore"]

_DEFAULT_MAP_SIZE = 2**40 if sys.maxsize > 2**32 else 2**28
# LMDB forbids opening one environment twice in a process: every store of a path shares
# one, as (environment, opened read-only)
_envs: dict[str, tuple[Any, bool]] = {}
_envs_lock = threading.Lock()
_envs_pid = os.getpid()
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
        unknown = sorted(set(lmdb_options) - _LMDB_OPTIONS)
        if unknown:
            raise UnknownStoreError(f"unknown LMDB options {unknown} for {os.fspath(path)!r}")
        self.path = os.path.abspath(os.fspath(path))
        self.read_only = read_only
        self.map_size = map_size
        self.lmdb_options = dict(lmdb_options)

    def __repr__(self) -> str:
        return f"LMDBStore({self.path!r}{', read-only' if self.read_only else ''})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LMDBStore) and self.__getstate__() == other.__getstate__()

    def __hash__(self) -> int:
        return hash((self.path, self.read_only))

    @property
    def identity(self) -> str:
        return "lmdb://" + self.path

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
        """Close the environment of this path; every store of it reopens on its next call."""
        with _envs_lock:
            entry = _envs.pop(self.path, None) if _envs_pid == os.getpid() else None
        if entry is not None:
            entry[0].close()

    # -- the environment ----------------------------------------------------------------------
    def _env(self, write: bool = False) -> Any:
        """The shared environment; None when reading an environment that does not exist
        (only a write creates it: reading a store nothing was written to leaves no files)."""
        global _envs_lock, _envs_pid
        if _envs_pid != os.getpid():
            # forked: the parent's environments are off limits. Dropping them (never
            # closing: that would clear the parent's reader slots) lets py-lmdb forget
            # them in this process, so the files can be opened anew.
            _envs.clear()
            _envs_lock, _envs_pid = threading.Lock(), os.getpid()
        entry = _envs.get(self.path)
        if entry is not None and not (write and entry[1]):
            return entry[0]
        with _envs_lock:
            entry = _envs.get(self.path)
            env = None if entry is None else entry[0]
            if entry is not None and write and entry[1]:
                _envs.pop(self.path)[0].close()  # opened read-only: reopen for writing
                env = None
            if env is None:
                readonly = not write and self.read_only
                if not write and not os.path.exists(self.path):
                    return None
                lmdb = _lmdb()
                options = {"map_size": self.map_size, "max_dbs": 0, **self.lmdb_options}
                try:
                    env = lmdb.open(self.path, readonly=readonly, **options)
                except (lmdb.Error, TypeError) as err:
                    raise StoreError(f"cannot open LMDB environment {self.path!r}: {err}") from err
                if not readonly:
                    env.reader_check()  # free reader slots of dead processes (old workers)
                _envs[self.path] = (env, readonly)
            return env

    def _fail(self, what: str, key: str, err: Exception) -> StoreError:
        hint = ""
        name = type(err).__name__
        if name == "MapFullError":
            hint = " (the database is full: open it with a larger map_size)"
        elif name == "BadValsizeError":
            hint = " (LMDB keys are at most 511 bytes)"
        return StoreError(f"cannot {what} {key!r} in {self}: {name}: {err}{hint}")

    # -- reads --------------------------------------------------------------------------------
    def get(self, key: str) -> bytes | None:
        return self.get_many([key])[key]

    def get_many(self, keys: Sequence[str]) -> dict[str, bytes | None]:
        unique = [validate_key(key) for key in dict.fromkeys(keys)]
        env = self._env()
        if env is None:
            return dict.fromkeys(unique)
        try:
            with env.begin() as txn:
                return {key: txn.get(key.encode()) for key in unique}
        except Exception as err:
            raise self._fail("read", unique[0] if unique else "", err) from err

    def get_range(self, key: str, byte_range: ByteRange) -> bytes | None:
        env = self._env()
        if env is None:
            validate_key(key)
            return None
        try:
            with env.begin(buffers=True) as txn:  # a view of the map: slice before copying
                value = txn.get(validate_key(key).encode())
                return None if value is None else byte_range.slice(value)
        except Exception as err:
            if isinstance(err, StoreError):
                raise
            raise self._fail("read", key, err) from err

    # -- writes -------------------------------------------------------------------------------
    def set(self, key: str, value: Buffer) -> None:
        self.set_many({key: value})

    def set_many(self, items: Mapping[str, Buffer]) -> None:
        for key in items:
            self._check_writable(key)
        pairs = [(validate_key(key).encode(), bytes(value)) for key, value in items.items()]
        if not pairs:
            return
        env = self._env(write=True)
        try:
            with env.begin(write=True) as txn:
                for k, v in pairs:
                    txn.put(k, v)
        except Exception as err:
            raise self._fail("write", pairs[0][0].decode(), err) from err

    def delete(self, key: str) -> None:
        self._check_writable(key)
        k = validate_key(key).encode()
        if self._env() is None:  # nothing was ever written: nothing to delete
            return
        env = self._env(write=True)
        try:
            with env.begin(write=True) as txn:
                txn.delete(k)
        except Exception as err:
            raise self._fail("delete", key, err) from err

    def delete_prefix(self, prefix: str) -> None:
        self._check_writable(prefix or "/")
        keys = [key.encode() for key in self.list_prefix(prefix)]
        if not keys:
            return
        with self._env(write=True).begin(write=True) as txn:
            for k in keys:
                txn.delete(k)

    # -- listing ------------------------------------------------------------------------------
    def list_prefix(self, prefix: str) -> Iterator[str]:
        validate_prefix(prefix)
        env = self._env()
        if env is None:
            return iter([])
        start = prefix.encode()
        keys: list[str] = []
        with env.begin() as txn, txn.cursor() as cursor:
            if cursor.set_range(start):
                for k in cursor.iternext(keys=True, values=False):
                    if not k.startswith(start):
                        break
                    keys.append(bytes(k).decode())
        return iter(keys)
