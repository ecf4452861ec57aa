"""``FsspecStore``: any fsspec filesystem (s3, gs, az, http, memory, file) as a batched Store."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import quote, unquote

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
from torchzarr.storage.fsspec_errors import (
    batch_label,
    bucket_is_gone,
    describe,
    is_range_error,
    missing_dependency,
)
from torchzarr.storage.http_answers import KeyRequests, WholeObjectAnswer
from torchzarr.storage.key_names import spells_a_key
from torchzarr.storage.local import is_temporary
from torchzarr.storage.retry import RetryPolicy, is_transient

__all__ = ["FsspecStore"]

#: read-only; keys are percent-encoded in URLs, and answers checked (http_answers)
_HTTP = frozenset({"http", "https"})
#: protocols whose first path component is a bucket or container that must exist
_BUCKET_PROTOCOLS = frozenset({"s3", "s3a", "gs", "gcs", "az", "azure", "abfs", "abfss"})
#: protocols that answer suffix ranges (``bytes=-n``) themselves; Azure Blob cannot, so a
#: batched size lookup comes first there
_NATIVE_SUFFIX = frozenset({"s3", "s3a", "gs", "gcs", "http", "https", "memory", "file", "local"})
_GLOB_CHARS = frozenset("*?[")
_MISSING = (FileNotFoundError, NotADirectoryError, IsADirectoryError)
_SPEC = ("url", "storage_options", "read_only", "retries", "retry_backoff", "timeout")
#: URL schemes that fsspec spells differently
_ALIASES = {"azure": "az"}
_RAISE: Any = object()
_ASK: Any = object()
_CONFIG: Any = object()  # "take the default of tz.config"
# filesystems of the parent, kept alive in a forked child so that their finalizers never
# try to close sessions on the parent's event loop, whose thread does not exist there
_ORPHANS: list[Any] = []


class FsspecStore(Store):
    """A Store over any fsspec filesystem: ``s3://``, ``gs://``, ``az://``, ``http(s)://`` ...

    Reads and writes of many keys are one batched fsspec call (``cat_ranges`` / ``pipe``),
    which async filesystems run concurrently. The filesystem is created on first use, once
    per process: the store pickles as ``(url, storage_options, read_only, ...)`` and a forked
    child opens its own filesystem and event loop. Transient errors (timeouts, dropped
    connections, throttling, 5xx) are retried ``retries`` times with exponential backoff
    from ``retry_backoff`` seconds; each call to an async filesystem is bounded by
    ``timeout`` seconds. ``http(s)://`` stores are read-only; ``file://`` writes are atomic
    (temporary file and rename, through LocalStore).

    Args:
        url: ``protocol://root``; keys live below ``root``.
        storage_options: keyword arguments of the fsspec filesystem (credentials, endpoint).
        read_only: refuse writes with ReadOnlyError.
        retries: retries of a transient failure (0 disables retrying).
        retry_backoff: seconds before the first retry; doubled for each further one.
        timeout: seconds one batched call to an async filesystem may take (None: no bound).

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
        timeout: float | None = _CONFIG,
    ) -> None:
        if not isinstance(url, str) or not url or "::" in url:
            raise UnknownStoreError(f"an fsspec store needs one plain URL, got {url!r}")
        protocol, sep, rest = url.partition("://")
        protocol, rest = (protocol.lower(), rest) if sep else ("file", url)
        if protocol in _BUCKET_PROTOCOLS and not rest.strip("/"):
            raise UnknownStoreError(f"URL {url!r} names no bucket or container")
        retries = config.retries if retries is None else retries
        retry_backoff = config.retry_backoff if retry_backoff is None else retry_backoff
        timeout = config.timeout if timeout is _CONFIG else timeout
        if retries < 0 or retry_backoff < 0 or (timeout is not None and timeout <= 0):
            raise UnknownStoreError(
                f"invalid settings for {url!r}: retries={retries} (>= 0), "
                f"retry_backoff={retry_backoff} (>= 0), timeout={timeout} (> 0 or None)"
            )
        self.url, self.protocol = url, protocol
        self._fs_protocol = _ALIASES.get(protocol, protocol)
        self._fs_url = f"{self._fs_protocol}://{rest}"
        self.storage_options: dict[str, Any] = dict(storage_options or {})
        self.read_only = read_only or protocol in _HTTP
        # the options of the filesystem, and of a key's requests (HTTP answers are checked)
        self._requests = KeyRequests(self.storage_options, check_answers=protocol in _HTTP)
        self.retries, self.retry_backoff, self.timeout = retries, retry_backoff, timeout
        # the deadline is this process's setting: it is not part of the pickled spec
        self.policy = RetryPolicy(retries, retry_backoff, deadline=config.retry_deadline)
        self._fs: Any = None
        self._pid = -1
        self._root = self._prefix = ""
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
        options = dict(storage_options or {})
        names = ("read_only", "retries", "retry_backoff", "timeout")
        settings = {name: options.pop(name) for name in names if name in options}
        return cls(url, options, **settings)

    def __repr__(self) -> str:
        return f"FsspecStore({self.url!r}{', read-only' if self.read_only else ''})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FsspecStore) and self.__getstate__() == other.__getstate__()

    def __hash__(self) -> int:
        return hash((self.url, self.read_only))

    @property
    def identity(self) -> str:
        self.fs  # noqa: B018 - the root as the filesystem reads it: memory://a is memory:///a
        root = self._root if "://" in self._root else f"{self._fs_protocol}://{self._root}"
        if not self.storage_options:
            return root
        digest = hashlib.sha256(repr(sorted(self.storage_options.items())).encode()).hexdigest()
        return f"{root}#{digest[:16]}"

    def __getstate__(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _SPEC}

    def __setstate__(self, state: dict[str, Any]) -> None:
        FsspecStore.__init__(self, **state)  # no filesystem: it reopens lazily

    def with_read_only(self, read_only: bool = True) -> FsspecStore:
        return FsspecStore(**{**self.__getstate__(), "read_only": read_only})

    def close(self) -> None:
        with self._lock:
            self._fs, self._pid = None, -1

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
            raise UnknownStoreError(f"no fsspec protocol {self.protocol!r} (URL {self.url!r})")
        try:
            cls = fsspec.get_filesystem_class(self._fs_protocol)
            fs = cls(skip_instance_cache=True, **self._requests.fs_options)
        except ImportError as err:
            raise missing_dependency(self.url, self.protocol, err) from err
        except ValueError as err:
            raise UnknownStoreError(f"cannot open {self.url!r}: {err}") from err
        except Exception as err:
            raise StoreError(f"cannot open {self.url!r}: {describe(err)}") from err
        self._root = cls._strip_protocol(self._fs_url).rstrip("/")
        # the normalized path of a key, minus the key: listings are cut with it
        self._prefix = str(cls._strip_protocol(f"{self._root}/x" if self._root else "x"))[:-1]
        if self.protocol in ("file", "local"):
            from torchzarr.storage.local import LocalStore

            self._local = LocalStore(self._root, read_only=self.read_only)
        self._fs, self._pid = fs, pid

    def _join(self, key: str) -> str:
        self.fs  # noqa: B018 - opening the filesystem sets the root
        if self.protocol in _HTTP:  # "#", "?" and "%" in a key are part of its path
            key = quote(key, safe="/")
        return f"{self._root}/{key}" if self._root and key else self._root or key

    def _path(self, key: str) -> str:
        return self._join(validate_key(key))

    def _key_of(self, path: str) -> str | None:
        norm = str(self.fs._strip_protocol(path))
        if not norm.startswith(self._prefix) or norm.endswith("/"):
            return None
        key = norm[len(self._prefix) :]
        if self.protocol in _HTTP:  # "?" or "#" unquoted: a link with a query or fragment
            key = "" if "?" in key or "#" in key else unquote(key)
        if self._local is not None and is_temporary(key.rpartition("/")[2]):
            return None  # a LocalStore write in flight
        return key if key and spells_a_key(key, self._prefix, "FsspecStore") else None

    # -- calls with retries, a timeout and clear errors -------------------------------------
    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        fs = self.fs
        if self.timeout is not None and getattr(fs, "async_impl", False):
            kwargs["timeout"] = self.timeout
        return getattr(fs, method)(*args, **kwargs)

    def _run(
        self, what: str, key: str, method: str, *args: Any, missing: Any = _RAISE, **kwargs: Any
    ) -> Any:
        """``fs.method(*args, **kwargs)`` with retries; a missing path gives ``missing``."""
        try:
            return self.policy.call(
                self._call,
                method,
                *args,
                give_up=lambda e, n: self._fail(e, what, key, n),
                **kwargs,
            )
        except _MISSING as exc:
            if missing is _RAISE:
                raise self._fail(exc, what, key) from exc
            return missing
        except StoreError:
            raise
        except Exception as exc:
            raise self._fail(exc, what, key) from exc

    def _fail(self, exc: BaseException, what: str, key: str, attempts: int = 1) -> StoreError:
        """The StoreError for ``exc``, raised while doing ``what`` to ``key``."""
        if isinstance(exc, StoreError):
            return exc
        if isinstance(exc, FileNotFoundError) or "NotFound" in type(exc).__name__:
            missing = self._missing_bucket(exc)
            if missing is not None:
                return missing
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        return StoreError(f"cannot {what} {key!r} at {self.url!r}{tries}: {describe(exc)}")

    def _missing_bucket(self, exc: BaseException | None = None) -> StoreError | None:
        """A StoreError if the URL's bucket or container does not exist.

        Checked once while it exists, and again whenever an error ``exc`` says the bucket
        is gone (deleted since): its keys must not read as missing chunks.
        """
        if exc is not None and bucket_is_gone(exc):
            self._bucket_checked = False
        if self._bucket_checked or self.protocol not in _BUCKET_PROTOCOLS:
            return None
        bucket = self._root.split("/", 1)[0]
        try:
            exists = bool(self._call("exists", bucket))
        except Exception:
            return None  # the original error tells more than this one
        if exists:
            self._bucket_checked = True
            return None
        return StoreError(
            f"bucket or container {bucket!r} of {self.url!r} does not exist "
            "(create it first, or check the URL and the endpoint in storage_options)"
        )

    # -- reads --------------------------------------------------------------------------------
    def _finish(
        self, key: str, rng: ByteRange | None, value: Any, attempts: int = 1
    ) -> bytes | None:
        whole = isinstance(value, WholeObjectAnswer)  # an http server ignored the Range header
        value = value.body if whole else value
        if isinstance(value, BaseException):
            if isinstance(value, _MISSING):
                missing = (
                    self._missing_bucket(value) if isinstance(value, FileNotFoundError) else None
                )
                if missing is not None:
                    raise missing from value
                return None
            if rng is not None and is_range_error(value):
                return b""  # the object exists; the range starts past its end
            raise self._fail(value, "read", key, attempts) from value
        data = value if isinstance(value, bytes) else bytes(value)
        # an answer longer than asked for is the whole object too (some emulators send it)
        asked = None if rng is None else -rng.start if rng.start < 0 else rng.length
        if rng is not None and (whole or (asked is not None and len(data) > asked)):
            return rng.slice(data)
        return data

    def _batch(self, requests: Sequence[tuple[str, ByteRange | None]]) -> list[bytes | None]:
        """Read ``(key, range)`` pairs, one batched call per attempt; missing -> None."""
        paths = [self._path(key) for key, _ in requests]
        bounds: list[tuple[int | None, int | None]] = [(None, None)] * len(requests)
        for i, (_, rng) in enumerate(requests):
            if rng is not None:
                bounds[i] = (rng.start, None if rng.length is None else rng.start + rng.length)
        if self.protocol not in _NATIVE_SUFFIX:
            bounds = self._resolve_suffixes(paths, bounds)
        results: list[Any] = [None] * len(paths)
        pending = []
        for i, (start, end) in enumerate(bounds):
            if end is not None and start == end:
                # no valid HTTP range: an explicit zero length asks only whether the key
                # exists; a suffix of an empty object (size known) is empty
                results[i] = _ASK if requests[i][1].length == 0 else b""  # type: ignore[union-attr]
            else:
                pending.append(i)
        # s3fs sends a HEAD before each whole-object GET unless told not to split objects
        s3 = type(self.fs).__name__ == "S3FileSystem"
        kwargs = self._requests.kwargs(paths) | ({"max_concurrency": 1} if s3 else {})
        made = 0
        labels = [key for key, _ in requests]  # what an error names
        for attempt in self.policy.attempts() if pending else ():
            made = attempt + 1
            sel = [paths[i] for i in pending]
            starts = [bounds[i][0] for i in pending]
            ends = [bounds[i][1] for i in pending]
            try:
                out = self._call("cat_ranges", sel, starts, ends, on_error="return", **kwargs)
            except Exception as exc:  # the whole request failed: no key is to blame alone
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
            else self._finish(label, rng, value, made)
            for (key, rng), label, value in zip(requests, labels, results, strict=True)
        ]

    def _resolve_suffixes(
        self, paths: list[str], bounds: list[tuple[int | None, int | None]]
    ) -> list[tuple[int | None, int | None]]:
        """Suffix ranges as absolute ones, from one batched size lookup."""
        idx = [i for i, (start, _) in enumerate(bounds) if start is not None and start < 0]
        if not idx:
            return bounds
        wanted = [paths[i] for i in idx]
        sizes = self._run("look up the sizes of", wanted[0], "sizes", wanted, missing=None)
        if sizes is None:  # some are missing: find which
            sizes = [self._size_at(path) for path in wanted]
        out = list(bounds)
        for i, size in zip(idx, sizes, strict=True):
            start = bounds[i][0]
            if size is not None and start is not None:
                out[i] = (max(size + start, 0), size)
        return out

    def _size_at(self, path: str, key: str | None = None) -> int | None:
        self.fs.invalidate_cache(path)
        info = self._run("stat", path, "info", path, missing=None, **self._requests.kwargs([path]))
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
            raise ReadOnlyError(f"cannot write {key!r}: store {self.url!r} is read-only")

    def set(self, key: str, value: Buffer) -> None:
        self.set_many({key: value})

    def set_many(self, items: Mapping[str, Buffer]) -> None:
        for key in items:
            self._check_writable(key)
        paths = {self._path(key): bytes(value) for key, value in items.items()}
        if not paths:
            return
        if self._local is not None:
            for key, value in items.items():
                self._local.set(key, value)  # temp file + rename: readers never see half
            return
        try:
            self._run("write", batch_label(next(iter(items)), len(paths)), "pipe", paths)
        except StoreError as err:
            if len(paths) == 1:
                raise
            self._write_one_by_one(paths, err)

    def _write_one_by_one(self, paths: dict[str, bytes], failure: StoreError) -> None:
        """After a batched write failed: each value once on its own, in order, up to the
        first that fails, whose key the error names (a batch's error rarely says which)."""
        for path, value in paths.items():
            try:
                self._call("pipe_file", path, value)
            except Exception as exc:
                key = self._key_of(path) or path
                raise self._fail(exc, "write", key) from failure

    def delete(self, key: str) -> None:
        self.delete_many([key])

    def delete_many(self, keys: Iterable[str]) -> None:
        keys = list(dict.fromkeys(keys))
        for key in keys:
            self._check_writable(key)
        paths = [self._path(key) for key in keys]
        if self._local is not None:
            self._local.delete_many(keys)  # also prunes the directories left empty
            return
        # one bulk request where the backend has one (S3, GCS, Azure); rm() globs, so keys
        # with glob characters, and batches with missing keys, go one by one
        single = [p for p in paths if _GLOB_CHARS.intersection(p)]
        batched = [p for p in paths if not _GLOB_CHARS.intersection(p)]
        if len(batched) > 1 and self._run("delete", keys[0], "rm", batched, missing=0) != 0:
            batched = []
        for path in single + batched:
            self._run("delete", path, "rm_file", path, missing=None)
        if paths:
            self.fs.invalidate_cache(self._root)

    # -- listing ------------------------------------------------------------------------------
    def _listing_base(self, prefix: str) -> str:
        head = prefix.rstrip("/") if prefix.endswith("/") else prefix.rpartition("/")[0]
        return self._path(head) if head else self._join("")

    def list_prefix(self, prefix: str) -> Iterator[str]:
        validate_prefix(prefix)
        base = self._listing_base(prefix)
        self.fs.invalidate_cache(base)
        for path in self._run("list", prefix or "/", "find", base, missing=[]):
            key = self._key_of(path)
            if key is not None and key.startswith(prefix):
                yield key

    def list_dir(self, prefix: str) -> tuple[list[str], list[str]]:
        prefix = validate_dir_prefix(prefix)
        base = self._listing_base(prefix)
        self.fs.invalidate_cache(base)
        # detail=True: the entry types tell keys from sub-prefixes in the same request
        entries = self._run("list", prefix or "/", "ls", base, detail=True, missing=[])
        keys: set[str] = set()
        dirs: set[str] = set()
        for entry in entries:
            rel = self._key_of(str(self.fs._strip_protocol(entry["name"])).rstrip("/"))
            child = rel[len(prefix) :] if rel is not None and rel.startswith(prefix) else ""
            if child and "/" not in child:
                (dirs if entry.get("type") == "directory" else keys).add(child)
        return sorted(keys), sorted(dirs)
