"""``FsspecStore``: any fsspec filesystem (s3, gs, az, http, memory, file) as a batched Store."""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from torchzarr.config import config
from torchzarr.errors import ReadOnlyError, StoreError, UnknownStoreError
from torchzarr.storage.base import Buffer, ByteRange, Store, validate_dir_prefix, validate_prefix
from torchzarr.storage.buffers import as_buffer, as_bytes
from torchzarr.storage.fsspec_bounds import read_bounds
from torchzarr.storage.fsspec_deletes import fill_note, names_under, remove
from torchzarr.storage.fsspec_errors import (
    batch_label,
    describe,
    hidden,
    hiding_secrets,
    is_range_error,
    missing_bucket,
    missing_dependency,
    secrets_of,
)
from torchzarr.storage.fsspec_paths import HTTP_PROTOCOLS, LOCAL_PROTOCOLS, KeyPaths
from torchzarr.storage.fsspec_requests import (
    call_method,
    close_connections,
    read_ranges,
    set_request_limit,
    timeout_error,
    write_all,
)
from torchzarr.storage.fsspec_settings import (
    FROM_CONFIG,
    constructor_settings,
    masked,
    open_filesystem,
    url_options,
    url_password,
)
from torchzarr.storage.http_answers import KeyRequests, WholeObjectAnswer, cut_to_range
from torchzarr.storage.http_listing import HttpListings
from torchzarr.storage.retry import RetryPolicy, is_transient

__all__ = ["FsspecStore"]

_MISSING = (FileNotFoundError, NotADirectoryError, IsADirectoryError)
_SPEC = ("url", "storage_options", "read_only", "retries", "retry_backoff", "timeout", "batch_size")
_RAISE: Any = object()
_ASK: Any = object()
# filesystems of the parent, kept alive in a forked child so that their finalizers never
# try to close sessions on the parent's event loop, whose thread does not exist there
_ORPHANS: list[Any] = []
_PUBLIC = ("get", "get_range", "get_many", "get_ranges", "getsize", "exists", "set")
_PUBLIC_TOO = ("set_many", "delete", "delete_many", "delete_prefix", "list_prefix", "list_dir")


@hiding_secrets(*_PUBLIC, *_PUBLIC_TOO)  # no traceback shows the URL's password
class FsspecStore(Store):
    """A Store over any fsspec filesystem: ``s3://``, ``gs://``, ``az://``, ``http(s)://`` ...

    Reads and writes of many keys run their requests concurrently (one batched fsspec call
    over a sync filesystem). The filesystem is created on first use, once per process: the
    store pickles as ``(url, storage_options, read_only, ...)`` and a forked child opens
    its own filesystem and event loop. Transient errors (timeouts, dropped connections,
    throttling, 5xx) are retried ``retries`` times with exponential backoff from
    ``retry_backoff`` seconds. Over an async filesystem one request may take ``timeout``
    seconds, and a batch of them fails only when one running alone does not finish in
    ``timeout`` seconds; another call (a listing) is bounded by ``timeout`` as a whole.
    Deletes on object stores check each key's outcome and raise naming the keys left.
    ``http(s)://`` stores are read-only; ``file://`` writes are atomic (temporary file and
    rename, through LocalStore). Listings skip names no key can spell (a warning says
    which, once); deleting a prefix removes them too.

    Args:
        url: ``protocol://root``; keys live below ``root``.
        storage_options: keyword arguments of the fsspec filesystem (credentials, endpoint).
        read_only: refuse writes with ReadOnlyError.
        retries: torchzarr's retries of a transient failure (0: none; see docs/storage.md).
        retry_backoff: seconds before the first retry; doubled for each further one.
        timeout: seconds an async filesystem's request may take, alone or in a batch
            that makes no progress (None: no bound).
        batch_size: the requests of a batch in flight at once (None: 64).

    Example:
        >>> store = FsspecStore("memory://doc-example")
        >>> store.set_many({"a/0": b"x", "a/1": b"yz"})
        >>> store.get_many(["a/0", "a/1", "a/2"])
        {'a/0': b'x', 'a/1': b'yz', 'a/2': None}
        >>> store.get_range("a/1", ByteRange(-1)), sorted(store.list_prefix("a/"))
        (b'z', ['a/0', 'a/1'])
    """

    def __init__(
        self,
        url: str,
        storage_options: Mapping[str, Any] | None = None,
        read_only: bool = False,
        *,
        retries: int | None = None,
        retry_backoff: float | None = None,
        timeout: float | None = FROM_CONFIG,
        batch_size: int | None = None,
    ) -> None:
        # retries, retry_backoff, timeout, batch_size and read_only may ride in storage_options
        settings, read_only = constructor_settings(
            url, storage_options, read_only, retries, retry_backoff, timeout, batch_size
        )
        self.url, self.protocol = url, settings.protocol
        self._shown = masked(url)  # what reprs and errors show: the password masked
        self._secrets = secrets_of(url_password(url))  # what no error shows
        self._fs_protocol, self._fs_url = settings.fs_protocol, settings.fs_url
        self.storage_options: dict[str, Any] = settings.storage_options
        self.read_only = read_only or self.protocol in HTTP_PROTOCOLS
        # the options of the filesystem, and of a key's requests (HTTP answers are checked)
        self._requests = KeyRequests(
            self.storage_options, check_answers=self.protocol in HTTP_PROTOCOLS
        )
        self.retries, self.retry_backoff = settings.retries, settings.retry_backoff
        self.timeout, self.batch_size = settings.timeout, settings.batch_size
        # the deadline is this process's setting: it is not part of the pickled spec
        self.policy = RetryPolicy(self.retries, self.retry_backoff, deadline=config.retry_deadline)
        self._fs: Any = None
        self._pid = -1
        self._paths: KeyPaths | None = None
        self._listings: HttpListings | None = None  # http(s): directory by directory
        self._bucket_checked = False
        self._local: Store | None = None
        self._lock, self._lock_pid = threading.Lock(), os.getpid()

    @classmethod
    def from_url(cls, url: str, storage_options: Mapping[str, Any] | None = None) -> FsspecStore:
        """Registry factory: ``retries``, ``retry_backoff``, ``timeout`` and ``read_only``
        may ride in ``storage_options``; the rest goes to the fsspec filesystem.

        Example:
            >>> FsspecStore.from_url("memory://x", {"retries": 0}).retries
            0
        """
        return cls(url, storage_options)

    def __repr__(self) -> str:
        return f"FsspecStore({self._shown!r}{', read-only' if self.read_only else ''})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FsspecStore) and self.__getstate__() == other.__getstate__()

    def __hash__(self) -> int:
        return hash((self.url, self.read_only))

    @property
    def identity(self) -> str:
        from_url = dict(url_options(self._fs_protocol, self._fs_url))  # an FTP host ...
        return self.paths.identity(self._fs_protocol, {**from_url, **self.storage_options})

    def __getstate__(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _SPEC}

    def __setstate__(self, state: dict[str, Any]) -> None:
        FsspecStore.__init__(self, **state)  # no filesystem: it reopens lazily

    def with_read_only(self, read_only: bool = True) -> FsspecStore:
        return FsspecStore(**{**self.__getstate__(), "read_only": read_only})

    def close(self) -> None:
        with self._lock:
            fs, pid = self._fs, self._pid
            self._fs, self._pid = None, -1
        if fs is not None and pid == os.getpid():  # a parent's belongs to the parent
            close_connections(fs)

    # -- the filesystem, opened lazily once per process ------------------------------------
    @property
    def fs(self) -> Any:
        """The fsspec filesystem of this process (created on first use, again after fork)."""
        pid = os.getpid()
        if self._fs is not None and self._pid == pid:
            return self._fs
        if self._lock_pid != pid:  # forked: the parent's lock may have been held at fork
            self._lock, self._lock_pid = threading.Lock(), pid
        with self._lock:
            if self._fs is None or self._pid != pid:
                if self._fs is not None:
                    _ORPHANS.append(self._fs)
                self._open(pid)
        return self._fs

    def _open(self, pid: int) -> None:
        import fsspec

        if self._fs_protocol not in fsspec.available_protocols():
            raise UnknownStoreError(f"no fsspec protocol {self.protocol!r} (URL {self._shown!r})")
        try:
            cls = fsspec.get_filesystem_class(self._fs_protocol)
            # the URL's options (an FTP host) under the user's; a filesystem of its own (forks)
            fs = open_filesystem(cls, self._fs_url, self._requests.fs_options)
        except ImportError as err:
            raise missing_dependency(self._shown, self.protocol, err) from err
        except ValueError as err:
            raise UnknownStoreError(f"cannot open {self._shown!r}: {self._hide(str(err))}") from err
        except Exception as err:
            raise StoreError(
                f"cannot open {self._shown!r}: {self._hide(describe(err, self._secrets))}"
            ) from err
        if self.timeout is not None and getattr(fs, "async_impl", False):  # bounds an attempt
            self.policy = dataclasses.replace(self.policy, attempt_timeout=self.timeout)
        set_request_limit(fs, self.batch_size)
        self._paths = KeyPaths(cls, self._fs_url, self.protocol)
        if self.protocol in HTTP_PROTOCOLS:
            args = (self._paths.root, self.policy, self.timeout, self._requests, self._shown)
            self._listings = HttpListings(fs, *args)
        if self.protocol in LOCAL_PROTOCOLS:
            from torchzarr.storage.local import LocalStore

            self._local = LocalStore(self._paths.root, read_only=self.read_only)
        self._fs, self._pid = fs, pid

    @property
    def paths(self) -> KeyPaths:
        """Where the keys live in the filesystem (known once it is open)."""
        self.fs  # noqa: B018 - opening the filesystem sets the root
        assert self._paths is not None
        return self._paths

    def _path(self, key: str) -> str:
        return self.paths.path(key)

    # -- calls with retries, a timeout and clear errors -------------------------------------
    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        # an async filesystem's: cancelled, not left running, when this thread is interrupted
        return call_method(self.fs, method, self.timeout, *args, **kwargs)

    def _run(
        self,
        what: str,
        key: str,
        method: str,
        *args: Any,
        missing: Any = _RAISE,
        more: str = "",
        **kwargs: Any,
    ) -> Any:
        """``fs.method(*args, **kwargs)`` with retries; a missing path gives ``missing``."""
        try:
            return self.policy.call(
                self._call,
                method,
                *args,
                give_up=lambda e, n: self._fail(e, what, key, n, more),
                **kwargs,
            )
        except _MISSING as exc:
            if missing is _RAISE:
                raise self._fail(exc, what, key, more=more) from exc
            return missing
        except StoreError:
            raise
        except Exception as exc:
            raise self._fail(exc, what, key, more=more) from exc

    def _hide(self, text: str) -> str:
        """``text`` without the URL's password (in a URL or not)."""
        return hidden(masked(text), self._secrets)

    def _fail(
        self, exc: BaseException, what: str, key: str, attempts: int = 1, more: str = ""
    ) -> StoreError:
        """The StoreError for ``exc``, raised while doing ``what`` to ``key`` (``more``:
        what follows the key in the message)."""
        if isinstance(exc, StoreError):
            return exc
        if isinstance(exc, FileNotFoundError) or "NotFound" in type(exc).__name__:
            missing = missing_bucket(self, exc)
            if missing is not None:
                return missing
        if isinstance(exc, TimeoutError) and not str(exc) and self.timeout is not None:
            exc = timeout_error(exc, self.timeout)  # fsspec's FSTimeoutError(): no bound named
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        url = self.url
        return StoreError(
            self._hide(
                f"cannot {what} {key!r}{more} at {url!r}{tries}: {describe(exc, self._secrets)}"
            )
        )

    # -- reads --------------------------------------------------------------------------------
    def _finish(
        self, key: str, rng: ByteRange | None, value: Any, attempts: int = 1, label: str = ""
    ) -> bytes | None:
        whole = isinstance(value, WholeObjectAnswer)  # an http server ignored the Range header
        value = value.body if whole else value
        if isinstance(value, BaseException):
            if isinstance(value, _MISSING):
                missing = (
                    missing_bucket(self, value) if isinstance(value, FileNotFoundError) else None
                )
                if missing is not None:
                    raise missing from value
                return None
            if rng is not None and is_range_error(value):
                return b""  # the object exists; the range starts past its end
            raise self._fail(value, "read", label or key, attempts) from value
        data = value if isinstance(value, bytes) else bytes(value)
        # an answer longer than asked for: the whole object, if it is as long (some emulators)
        return cut_to_range(key, rng, data, whole, lambda: self.getsize(key), self._shown)

    def _batch(self, requests: Sequence[tuple[str, ByteRange | None]]) -> list[bytes | None]:
        """Read ``(key, range)`` pairs, one batch of requests per attempt; missing -> None."""
        paths = [self._path(key) for key, _ in requests]
        ranges = [rng for _, rng in requests]
        local = self._local is not None  # long ranges cut at the file's end
        bounds = read_bounds(ranges, paths, self.protocol, self._sizes, local=local)
        results: list[Any] = [None] * len(paths)
        pending = []
        for i, (start, end) in enumerate(bounds):
            if end is not None and start == end:
                # no valid HTTP range: an explicit zero length asks only whether the key
                # exists; a suffix of an empty object (size known) is empty
                results[i] = _ASK if requests[i][1].length == 0 else b""  # type: ignore[union-attr]
            else:
                pending.append(i)
        kwargs = self._requests.kwargs(paths)
        made = 0
        labels = [key for key, _ in requests]  # what an error names
        for attempt in self.policy.attempts() if pending else ():
            made = attempt + 1
            sel = [paths[i] for i in pending]
            starts = [bounds[i][0] for i in pending]
            ends = [bounds[i][1] for i in pending]
            try:
                out = read_ranges(self.fs, sel, starts, ends, self.timeout, **kwargs)
            except Exception as exc:  # the whole batch failed: no key is to blame alone
                out = [exc] * len(pending)
                for i in pending:
                    labels[i] = batch_label(requests[i][0], len(pending))
            for i, value in zip(pending, out, strict=True):
                results[i] = value
            pending = [i for i in pending if is_transient(results[i])]
            if not pending:
                break
        return [
            (b"" if self.exists(key) else None)
            if value is _ASK
            else self._finish(key, rng, value, made, label)
            for (key, rng), label, value in zip(requests, labels, results, strict=True)
        ]

    def _sizes(self, paths: list[str]) -> list[int | None]:
        """The sizes of the objects at ``paths`` (None: missing), in one batched lookup."""
        key = self.paths.name_of(paths[0]) or paths[0]  # what an error names
        sizes = self._run("look up the sizes of", key, "sizes", paths, missing=None)
        return [self._size_at(path) for path in paths] if sizes is None else list(sizes)

    def _size_at(self, path: str, key: str | None = None) -> int | None:
        self.fs.invalidate_cache(path)
        label = key or self.paths.name_of(path) or path  # what an error names
        info = self._run("stat", label, "info", path, missing=None, **self._requests.kwargs([path]))
        if info is None or info.get("type", "file") != "file":
            return None
        if info.get("size") is None and key is not None:  # a server that sends no length
            value = self.get(key)  # (with the store's checks of the answer): count the bytes
            return None if value is None else len(value)
        return None if info.get("size") is None else int(info["size"])

    def get(self, key: str) -> bytes | None:
        return self._batch([(key, None)])[0]

    def get_range(self, key: str, byte_range: ByteRange) -> bytes | None:
        return self._batch([(key, byte_range)])[0]

    def get_many(self, keys: Sequence[str]) -> dict[str, bytes | None]:
        unique = list(dict.fromkeys(keys))
        return dict(zip(unique, self._batch([(k, None) for k in unique]), strict=True))

    def get_ranges(self, requests: Sequence[tuple[str, ByteRange]]) -> list[bytes | None]:
        return self._batch(list(requests)) if requests else []

    def getsize(self, key: str) -> int | None:
        return self._size_at(self._path(key), key)

    def exists(self, key: str) -> bool:
        return self.getsize(key) is not None

    # -- writes -------------------------------------------------------------------------------
    def _check_writable(self, key: str) -> None:
        if self.read_only:
            raise ReadOnlyError(f"cannot write {key!r}: store {self._shown!r} is read-only")
        self.paths.check_root_takes_writes(self._shown, key)

    def set(self, key: str, value: Buffer) -> None:
        self.set_many({key: value})

    def set_many(self, items: Mapping[str, Buffer]) -> None:
        for key in items:
            self._check_writable(key)
        keys = {self._path(key): key for key in items}  # what an error names
        values = {key: as_buffer(self, key, value) for key, value in items.items()}
        if self._local is not None:  # temp file + rename: readers never see half
            self._local.set_many(values)
            return
        paths = {path: as_bytes(self, key, values[key]) for path, key in keys.items()}
        if not paths:
            return
        if getattr(self.fs, "async_impl", False):
            failures, made = write_all(self.fs, paths, self.timeout, self.policy)
            if failures:  # the first key that failed, and how many more did
                path = next(path for path in paths if path in failures)
                more = f" (and {len(failures) - 1} more that failed)" if len(failures) > 1 else ""
                cause = failures[path]
                raise self._fail(cause, "write", keys[path] + more, made) from cause
            return
        try:
            self._run("write", batch_label(next(iter(items)), len(paths)), "pipe", paths)
        except StoreError as err:
            if len(paths) == 1:
                raise
            self._write_one_by_one(paths, keys, err)

    def _write_one_by_one(
        self, paths: dict[str, bytes], keys: dict[str, str], failure: StoreError
    ) -> None:
        """After a batched write failed: each value once on its own, in order, up to the
        first that fails, whose key the error names (a batch's error rarely says which)."""
        for path, value in paths.items():
            try:
                self._call("pipe_file", path, value)
            except Exception as exc:
                raise self._fail(exc, "write", keys[path]) from failure

    def delete(self, key: str) -> None:
        self.delete_many([key])

    def delete_many(self, keys: Iterable[str]) -> None:
        keys = list(dict.fromkeys(keys))
        for key in keys:
            self._check_writable(key)
        paths = {self._path(key): key for key in keys}  # what an error names
        if self._local is not None:
            self._local.delete_many(keys)  # also prunes the directories left empty
            return
        remove(self, paths, note=fill_note(keys))

    def delete_prefix(self, prefix: str) -> None:
        """Remove every object whose name below the root starts with ``prefix``: the keys,
        and the names no key can spell (``pre//x``, written by other tools), by their path.

        Example:
            >>> store = FsspecStore("memory://doc-delete-prefix")
            >>> store.set_many({"a/0": b"x", "a/1": b"y", "b/0": b"z"})
            >>> store.fs.pipe_file(store.paths.join("a//stray"), b"written by another tool")
            >>> store.delete_prefix("a/")
            >>> store.fs.find(store.paths.root)
            ['/doc-delete-prefix/b/0']
        """
        validate_prefix(prefix)
        self._check_writable(prefix or "/")
        if self._local is not None:
            self._local.delete_prefix(prefix)
            return
        doomed = names_under(self, prefix)
        # objects left by a delete are found with one more listing of the prefix
        remove(self, doomed, lambda: set(names_under(self, prefix)))

    # -- listing ------------------------------------------------------------------------------
    def list_prefix(self, prefix: str) -> Iterator[str]:
        validate_prefix(prefix)
        base = self.paths.listing_base(prefix)
        self.fs.invalidate_cache(base)
        if self._listings is not None:  # over http(s): one request per directory
            found = self._listings.find(base, prefix or "/")
        else:
            found = self._run("list", prefix or "/", "find", base, missing=[])
        for path in found:
            key = self.paths.key_of(path)
            if key is not None and key.startswith(prefix):
                yield key

    def list_dir(self, prefix: str) -> tuple[list[str], list[str]]:
        prefix = validate_dir_prefix(prefix)
        base = self.paths.listing_base(prefix)
        self.fs.invalidate_cache(base)
        # detail=True: the entry types tell keys from sub-prefixes in the same request
        if self._listings is not None:
            entries = self._listings.ls(base, prefix or "/")
        else:
            entries = self._run("list", prefix or "/", "ls", base, detail=True, missing=[])
        keys: set[str] = set()
        dirs: set[str] = set()
        for entry in entries:
            rel = self.paths.key_of(str(self.fs._strip_protocol(entry["name"])).rstrip("/"))
            child = rel[len(prefix) :] if rel is not None and rel.startswith(prefix) else ""
            if child and "/" not in child:
                (dirs if entry.get("type") == "directory" else keys).add(child)
        return sorted(keys), sorted(dirs)
