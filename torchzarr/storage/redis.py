"""``RedisStore``: keys under a prefix of a Redis database, batched with MGET and pipelines."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

from torchzarr.errors import (
    InvalidArgumentError,
    MissingDependencyError,
    StoreError,
    UnknownStoreError,
)
from torchzarr.storage.base import Buffer, ByteRange, Store, validate_key, validate_prefix
from torchzarr.storage.buffers import as_buffer
from torchzarr.storage.key_names import spells_a_key
from torchzarr.storage.store_args import flag

__all__ = ["RedisStore"]

_BATCH = 1000  # keys per MGET / MSET / DEL command
#: the largest value a Redis server takes by default (its proto-max-bulk-len): a longer
#: one makes the server drop the connection while it is still being sent
MAX_VALUE_BYTES = 512 << 20
_GLOB = str.maketrans({c: "\\" + c for c in "*?[]^\\"})


def _check_db(url: str, db: str) -> None:
    """Refuse a database that is not a number: redis-py would silently use database 0."""
    if db and not (db.isascii() and db.isdigit()):
        raise UnknownStoreError(
            f"{_redact(url)!r}: the Redis database must be a number, got {db!r} "
            "(write redis://host:port/db/prefix, e.g. redis://host:6379/0/" + db + ")"
        )


def _database(parts: Any, client_options: Mapping[str, Any]) -> int | str:
    """The database a client of the URL ``parts`` and ``client_options`` uses, as
    ``redis.Redis.from_url`` picks it: the ``db`` query option, the URL's path, the ``db``
    option, else 0."""
    query = parse_qs(parts.query).get("db")
    path = parts.path.strip("/") if parts.scheme != "unix" else ""
    for found in (query[0] if query else None, path, client_options.get("db")):
        if found not in (None, ""):
            try:
                return int(found)
            except (TypeError, ValueError):  # the client refuses it when it connects
                return str(found)
    return 0


def _redact(url: str) -> str:
    """The URL without its password, for messages and reprs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname or ''}"
    netloc += f":{parts.port}" if parts.port else ""
    return urlunsplit(parts._replace(netloc=netloc))


def _check_client_options(url: str, options: dict[str, Any]) -> None:
    """Refuse options redis-py's connections do not take now, not at the first request
    (building a connection object opens no socket), and responses decoded to text."""
    # redis-py decodes with any value in the URL's query (even "False"), which wins
    if options.get("decode_responses") or parse_qs(urlsplit(url).query).get("decode_responses"):
        raise InvalidArgumentError(
            f"RedisStore {_redact(url)!r} needs bytes responses (values are bytes, not "
            "text): leave decode_responses out of its options and URL"
        )
    if not options:
        return
    try:
        import redis
    except ImportError:
        return  # reported when the store is first used
    # what redis.Redis.from_url takes for itself before the pool gets the rest
    pooled = {k: v for k, v in options.items() if k != "single_connection_client"}
    try:
        pool = redis.ConnectionPool.from_url(url, **pooled)
        pool.connection_class(**pool.connection_kwargs)
    except (TypeError, ValueError) as err:
        raise UnknownStoreError(
            f"invalid storage_options {sorted(options)} for {_redact(url)!r}: {err}"
        ) from err


def _release(client: Any) -> None:
    """Close the idle connections of a client that :meth:`RedisStore.close` let go, never
    one in use: ``client.close()`` would disconnect those under the calls of other threads
    (errors), so their connections go back to the old pool and close with it once the last
    call is over and nothing refers to it (garbage collected)."""
    client.auto_close_connection_pool = False  # its __del__ must not close the pool either
    lock = getattr(client, "single_connection_lock", None)  # redis-py >= 5.1
    if getattr(client, "connection", None) is not None and lock is not None:
        with lock:  # a single_connection_client's one connection, once its command ends
            client.close()  # hands it back to the pool, now idle
    client.connection_pool.disconnect(inuse_connections=False)


class RedisStore(Store):
    """Keys as Redis strings named ``prefix + key`` in one database of a Redis server.

    The client (and its connection pool) is created on first use, once per process, so a
    forked DataLoader worker opens its own connections. ``get_many`` is one ``MGET`` per
    batch of keys, ``set_many`` one ``MSET`` (atomic), ``get_range`` one ``GETRANGE``.
    Listings skip names below the prefix that no key can spell (not UTF-8; an empty, ``.``
    or ``..`` component), with a warning once per name; ``delete_prefix`` removes them too.
    Values are limited to 512 MiB, as by a Redis server's default ``proto-max-bulk-len``.

    Args:
        url: ``redis://[user:password@]host:port/db`` (``rediss://`` for TLS); ``db`` is
            a number (0 if left out).
        prefix: prepended to every key, so several stores can share one database; a
            ``/`` is added if missing. Empty: the whole database is the store.
        read_only: refuse writes.
        client_options: keyword arguments of ``redis.Redis.from_url`` (timeouts, TLS ...).

    Example:
        >>> store = RedisStore("redis://127.0.0.1:6379/0", prefix="experiments/run1")
        >>> store.prefix, store.identity
        ('experiments/run1/', 'redis://127.0.0.1:6379/0/experiments/run1/')
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "",
        read_only: bool = False,
        **client_options: Any,
    ) -> None:
        if not isinstance(url, str) or urlsplit(url).scheme not in ("redis", "rediss", "unix"):
            raise UnknownStoreError(f"a Redis store needs a redis:// or rediss:// URL, got {url!r}")
        parts = urlsplit(url)
        if parts.scheme != "unix":  # a unix:// path names the socket
            db = parts.path.strip("/")
            if "/" in db:
                raise UnknownStoreError(
                    f"{_redact(url)!r}: RedisStore takes redis://host:port/db, and the key "
                    "prefix as prefix= (resolve_store reads it from a longer URL)"
                )
            _check_db(url, db)
        if prefix:
            validate_key(prefix.rstrip("/") or "/")
            prefix = prefix if prefix.endswith("/") else prefix + "/"
        self.url = url
        self.prefix = prefix
        self.read_only = flag("read_only", read_only)
        self.client_options = dict(client_options)
        _check_client_options(url, self.client_options)
        self._client: Any = None
        self._pid = -1
        self._lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str, options: Mapping[str, Any] | None = None) -> RedisStore:
        """Registry factory: ``redis://host:port/db/some/prefix`` puts keys under ``some/prefix/``.

        Example:
            >>> RedisStore.from_url("redis://localhost:6379/2/exp/a").prefix
            'exp/a/'
        """
        parts = urlsplit(url)
        db, _, rest = parts.path.lstrip("/").partition("/")
        _check_db(url, db)
        options = dict(options or {})
        if rest:
            if "prefix" in options:
                raise UnknownStoreError(f"{_redact(url)!r} has a key prefix and prefix= too")
            options["prefix"] = rest
        base = urlunsplit(parts._replace(path=f"/{db}" if db else ""))
        try:
            return cls(base, **options)
        except TypeError as err:
            raise UnknownStoreError(f"invalid storage_options for {_redact(url)!r}: {err}") from err

    def __repr__(self) -> str:
        ro = ", read-only" if self.read_only else ""
        return f"RedisStore({_redact(self.url)!r}, prefix={self.prefix!r}{ro})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RedisStore) and self.__getstate__() == other.__getstate__()

    def __hash__(self) -> int:
        return hash((self.url, self.prefix, self.read_only))

    @property
    def identity(self) -> str:
        """The server, the database and the prefix, spelt one way: ``redis://h:6379`` and
        ``redis://h:6379/0`` are one database, ``db=1`` given as an option another.

        Example:
            >>> RedisStore("redis://Cache", prefix="a", db=2).identity
            'redis://cache:6379/2/a/'
        """
        parts = urlsplit(self.url)
        db = _database(parts, self.client_options)
        # the prefix as a path below the database: a store rooted at a group's member and
        # the group's store reach one location (``location``)
        if parts.scheme == "unix":
            return f"unix://{parts.path}?db={db}/{self.prefix}"
        host = (parts.hostname or "localhost").lower()
        return f"{parts.scheme}://{host}:{parts.port or 6379}/{db}/{self.prefix}"

    def __getstate__(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "prefix": self.prefix,
            "read_only": self.read_only,
            **self.client_options,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        RedisStore.__init__(self, **state)

    def with_read_only(self, read_only: bool = True) -> RedisStore:
        return RedisStore(**{**self.__getstate__(), "read_only": read_only})

    def close(self) -> None:
        """Drop this process's client and close its idle connections; the next call
        connects anew.

        Safe while other threads use the store: a call in flight finishes on its
        connection, which closes once that call ends and the old client is let go.
        """
        with self._lock:
            client, self._client = self._client, None
        if client is not None and self._pid == os.getpid():
            _release(client)

    # -- the client ---------------------------------------------------------------------------
    @property
    def client(self) -> Any:
        """The ``redis.Redis`` client of this process (created on first use, again after fork)."""
        pid = os.getpid()
        client = self._client
        if client is not None and self._pid == pid:
            return client
        if self._pid != pid:
            self._lock = threading.Lock()  # the parent's may have been held at fork
        with self._lock:
            if self._client is None or self._pid != pid:
                try:
                    import redis
                except ImportError as err:
                    raise MissingDependencyError(
                        "RedisStore needs the 'redis' package: pip install redis "
                        "(or torchzarr[all])"
                    ) from err
                try:
                    client = redis.Redis.from_url(self.url, **self.client_options)
                except (ValueError, TypeError) as err:
                    raise UnknownStoreError(f"cannot open {_redact(self.url)!r}: {err}") from err
                # the parent's client is dropped, not closed: its sockets belong to the parent
                self._client, self._pid = client, pid
            return self._client

    def _run(self, what: str, key: str, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except StoreError:
            raise
        except Exception as err:
            raise StoreError(
                f"cannot {what} {key!r} at {_redact(self.url)!r}: {type(err).__name__}: {err}"
            ) from err

    def _name(self, key: str) -> bytes:
        return (self.prefix + validate_key(key)).encode()

    # -- reads --------------------------------------------------------------------------------
    def get(self, key: str) -> bytes | None:
        value = self._run("read", key, self.client.get, self._name(key))
        return None if value is None else bytes(value)

    def get_many(self, keys: Sequence[str]) -> dict[str, bytes | None]:
        unique = list(dict.fromkeys(keys))
        names = [self._name(key) for key in unique]
        out: dict[str, bytes | None] = {}
        for i in range(0, len(unique), _BATCH):
            values = self._run("read", unique[i], self.client.mget, names[i : i + _BATCH])
            out.update(zip(unique[i : i + _BATCH], values, strict=True))
        return out

    def get_range(self, key: str, byte_range: ByteRange) -> bytes | None:
        name = self._name(key)
        if byte_range.start < 0:
            first, last = byte_range.start, -1
        elif byte_range.length == 0:
            return b"" if self.exists(key) else None
        else:
            first = byte_range.start
            last = -1 if byte_range.length is None else first + byte_range.length - 1

        def ranged() -> list[Any]:
            # EXISTS tells a missing key from an empty range; MULTI makes both one snapshot
            with self.client.pipeline(transaction=True) as pipe:
                pipe.exists(name)
                pipe.getrange(name, first, last)
                return list(pipe.execute())

        exists, value = self._run("read", key, ranged)
        return bytes(value) if exists else None

    def exists(self, key: str) -> bool:
        return bool(self._run("read", key, self.client.exists, self._name(key)))

    def getsize(self, key: str) -> int | None:
        if not self.exists(key):
            return None
        return int(self._run("read", key, self.client.strlen, self._name(key)))

    # -- writes -------------------------------------------------------------------------------
    def _check_size(self, key: str, value: Buffer) -> Buffer:
        if len(value) > MAX_VALUE_BYTES:
            raise StoreError(
                f"cannot write {key!r} at {_redact(self.url)!r}: its value of {len(value)} "
                f"bytes is over Redis's limit of {MAX_VALUE_BYTES} bytes (512 MiB) per value "
                "(use smaller chunks or shards, or another store)"
            )
        return value

    def set(self, key: str, value: Buffer) -> None:
        self._check_writable(key)
        name = self._name(key)
        data = self._check_size(key, as_buffer(self, key, value))
        self._run("write", key, self.client.set, name, data)

    def set_many(self, items: Mapping[str, Buffer]) -> None:
        for key in items:
            self._check_writable(key)
        # every key and size is checked before the first batch is sent
        pairs = {
            key: (self._name(key), self._check_size(key, as_buffer(self, key, v)))
            for key, v in items.items()
        }
        keys = list(pairs)
        for i in range(0, len(keys), _BATCH):
            batch = dict(pairs[key] for key in keys[i : i + _BATCH])
            self._run("write", keys[i], self.client.mset, batch)

    def delete(self, key: str) -> None:
        self.delete_many([key])

    def delete_many(self, keys: Iterable[str]) -> None:
        keys = list(keys)
        for key in keys:
            self._check_writable(key)
        self._delete_names([self._name(key) for key in keys], keys)

    def _delete_names(self, names: Sequence[bytes], labels: Sequence[str]) -> None:
        """Delete Redis ``names``; an error names the first key (``labels``) of its batch."""
        for i in range(0, len(names), _BATCH):
            self._run("delete", labels[i], self.client.delete, *names[i : i + _BATCH])

    def delete_prefix(self, prefix: str) -> None:
        """Remove every name below the store's prefix that starts with ``prefix``: the keys,
        and the names no key can spell (written by other clients).

        Example:
            >>> store = RedisStore("redis://127.0.0.1:6379/0", prefix="experiments")
            >>> store.delete_prefix("run1/")  # doctest: +SKIP
        """
        validate_prefix(prefix)
        self._check_writable(prefix or "/")
        names = self._names_below(prefix)
        start = len(self.prefix.encode())
        self._delete_names(
            names, [name[start:].decode(errors="backslashreplace") for name in names]
        )

    # -- listing ------------------------------------------------------------------------------
    def _names_below(self, prefix: str) -> list[bytes]:
        """The Redis names that start with the store's prefix and ``prefix``, as stored."""
        pattern = (self.prefix + prefix).translate(_GLOB) + "*"

        def scan() -> list[bytes]:
            names = self.client.scan_iter(match=pattern.encode(), count=1000)
            return sorted({bytes(name) for name in names})

        return list(self._run("list", prefix or "/", scan))

    def list_prefix(self, prefix: str) -> Iterator[str]:
        validate_prefix(prefix)
        start = len(self.prefix.encode())
        # bytes that are not UTF-8 read as lone surrogates, which spells_a_key refuses
        keys = [
            name[start:].decode("utf-8", "surrogateescape") for name in self._names_below(prefix)
        ]
        return iter([key for key in keys if key and spells_a_key(key, self.prefix, "RedisStore")])
