"""URL schemes to stores: ``resolve_store`` turns a path, URL or Store into a Store."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from torchzarr.errors import (
    ArgumentTypeError,
    InvalidArgumentError,
    MissingDependencyError,
    StoreError,
    TorchZarrError,
    UnknownStoreError,
)
from torchzarr.forksafe import new_lock
from torchzarr.plugins import PluginGroup
from torchzarr.storage.base import Store, options_mapping
from torchzarr.storage.fsspec_settings import CHAINING, masked

__all__ = ["StoreFactory", "register_store", "registered_stores", "resolve_store"]

#: ``factory(url, storage_options) -> Store``; ``url`` is the full URL as given
StoreFactory = Callable[[str, dict[str, Any]], Store]

ENTRY_POINT_GROUP = "torchzarr.stores"

_registry: dict[str, StoreFactory] = {}
#: the factories that entry points put in ``_registry`` (a registration replaces them)
_from_plugins: dict[str, StoreFactory] = {}
_lock = new_lock()
_plugins = PluginGroup(ENTRY_POINT_GROUP, fold_case=True)
_log = logging.getLogger("torchzarr.storage")


#: RFC 3986's scheme syntax
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*")


def register_store(scheme: str, factory: StoreFactory, *, overwrite: bool = False) -> None:
    """Make ``scheme://...`` URLs open with ``factory(url, storage_options)``.

    Schemes are case-insensitive. A registration wins over an installed plugin's entry
    point of the same scheme, loaded or not; replacing another registration takes
    ``overwrite=True``.

    Example:
        >>> from torchzarr.storage.memory import MemoryStore
        >>> register_store("scratch", lambda url, opts: MemoryStore(), overwrite=True)
        >>> type(resolve_store("scratch://x", mode="w")).__name__
        'MemoryStore'
    """
    if not isinstance(scheme, str) or not _SCHEME.fullmatch(scheme):
        raise InvalidArgumentError(
            f"a URL scheme is a letter, then letters, digits, '+', '-' or '.'; got {scheme!r}"
        )
    if not callable(factory):
        raise ArgumentTypeError(
            f"factory must be callable as factory(url, storage_options), got {factory!r}"
        )
    scheme = scheme.lower()
    with _lock:
        current = _registry.get(scheme)
        plugin = current is not None and current is _from_plugins.get(scheme)
        if current is not None and not plugin and not overwrite:
            raise InvalidArgumentError(
                f"a store is already registered for {scheme!r}:// (overwrite=True)"
            )
        _registry[scheme] = factory
        _from_plugins.pop(scheme, None)


def _plugin_factory(scheme: str) -> StoreFactory | None:
    """The factory of ``scheme``'s entry point, loaded now (None: no plugin names it).

    Each plugin loads on its own, when its scheme is first used, so a broken one fails
    only the URLs of its scheme; a failed load is tried again at the next use.
    """
    ep = _plugins.entry_point(scheme)
    if ep is None:
        return None
    where = f"entry point {ep.name} = {ep.value} in group {ENTRY_POINT_GROUP!r}"
    dist = getattr(ep, "dist", None)
    if dist is not None:
        where += f" (package {dist.name} {dist.version})"
    try:
        factory = _plugins.load(ep)
    except ImportError as err:
        raise MissingDependencyError(
            f"the store plugin for {scheme}:// cannot be imported: {where} failed with "
            f"{type(err).__name__}: {err} (install what it needs, or uninstall the package)"
        ) from err
    except Exception as err:
        raise UnknownStoreError(
            f"the store plugin for {scheme}:// failed to load: {where} raised "
            f"{type(err).__name__}: {err}"
        ) from err
    if not callable(factory):
        raise UnknownStoreError(
            f"the store plugin for {scheme}:// is not a factory: {where} is "
            f"{type(factory).__name__} {factory!r}, not callable as factory(url, storage_options)"
        )
    with _lock:  # a registration made meanwhile (the plugin's own import) wins
        if scheme not in _registry:
            _registry[scheme] = _from_plugins[scheme] = factory
        return _registry[scheme]


def _sweep() -> None:
    """Load the entry points not loaded yet: their modules may register other schemes.

    Each loads on its own; a broken one is logged and skipped here, and raises only when
    its own scheme is used. Each entry point is tried by a sweep once.
    """
    _plugins.sweep(_registry.__contains__, _plugin_factory, _log)


def _factory(scheme: str) -> StoreFactory | None:
    """The factory registered for ``scheme``, else that of its entry point.

    A scheme neither registered nor named by an entry point loads the entry points not
    loaded yet (a plugin's module may register more schemes than its entry point names)
    and is looked up again.
    """
    factory = _registry.get(scheme)
    if factory is not None:
        return factory
    if _plugins.entry_point(scheme) is not None:
        return _plugin_factory(scheme)
    _sweep()
    return _registry.get(scheme)


class _Schemes(Mapping[str, StoreFactory]):
    """The registered schemes and those of installed plugins, loaded when looked up."""

    def _names(self) -> set[str]:
        return set(_registry) | set(_plugins.installed())

    def __getitem__(self, scheme: str) -> StoreFactory:
        factory = _factory(scheme.lower()) if isinstance(scheme, str) else None
        if factory is None:
            raise KeyError(scheme)
        return factory

    def __contains__(self, scheme: object) -> bool:
        if not isinstance(scheme, str):
            return False
        scheme = scheme.lower()  # URL schemes are case-insensitive
        if scheme not in self._names():
            _sweep()  # a loaded plugin may register it
        return scheme in self._names()

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._names()))

    def __len__(self) -> int:
        return len(self._names())


def registered_stores() -> Mapping[str, StoreFactory]:
    """A read-only view of the registered schemes, installed plugins' included.

    A plugin (entry point of ``torchzarr.stores``) loads when its factory is looked up; a
    broken one raises then, naming the entry point, and leaves the others working. Looking
    up a scheme no one registered or named loads the plugins not loaded yet, whose modules
    may register more schemes; iterating lists those registered so far.

    Example:
        >>> "file" in registered_stores() and "MEMORY" in registered_stores()
        True
    """
    return _Schemes()


def _file_path(url: str) -> str:
    """The path of a plain path or ``file://`` URL (scheme in any case).

    ``file:///p`` and ``file://localhost/p`` are the absolute path ``/p``. Anything else
    after ``file://`` is a relative path, as fsspec and zarr-python read it
    (``file://data.zarr`` is ``./data.zarr``).
    """
    _, sep, rest = url.partition("://")
    if not sep:
        return url
    host, slash, path = rest.partition("/")
    if host.lower() == "localhost" and slash:
        return slash + path
    if not rest:
        raise UnknownStoreError(f"{url!r} names no path (write file:///absolute/path)")
    return rest


def _local(url: str, options: dict[str, Any]) -> Store:
    from torchzarr.storage.local import LocalStore

    return _construct(url, LocalStore, _file_path(url), **options)


def _memory(url: str, options: dict[str, Any]) -> Store:
    from torchzarr.storage.memory import MemoryStore, named_memory_store

    name = url[len("memory://") :].strip("/")
    if not name:
        return _construct(url, MemoryStore, **options)
    if options:
        raise UnknownStoreError(
            f"invalid storage_options {sorted(options)} for {url!r}: a named memory store "
            "is shared by the whole process and takes none"
        )
    return named_memory_store(name)


def _path_of(url: str, scheme: str) -> str:
    path = url[len(scheme) + 3 :] if url.lower().startswith(scheme + "://") else url
    if not path or "::" in path:
        raise UnknownStoreError(f"{url!r} names no {scheme} path (write {scheme}://path/to/file)")
    query = path.rpartition("?")[2]
    if "?" in path and "=" in query and "/" not in query:
        raise UnknownStoreError(
            f"{url!r}: a {scheme} URL takes no ?{query} query (it would name a file); pass "
            "settings as storage_options (storage_options={'immutable': True}), or give the "
            "store object itself for a file whose name holds '?'"
        )
    return path


def _construct(url: str, cls: Any, *args: Any, **options: Any) -> Store:
    try:
        store: Store = cls(*args, **options)
    except InvalidArgumentError as err:  # a value out of range (map_size=-1) or of a type
        raise type(err)(f"cannot open {url!r}: {err}") from err  # it does not take: name the URL
    except TypeError as err:
        names = sorted(options)
        raise UnknownStoreError(f"invalid storage_options {names} for {url!r}: {err}") from err
    except UnknownStoreError as err:
        raise UnknownStoreError(f"cannot open {url!r}: {err}") from err
    return store


def _zip(url: str, options: dict[str, Any]) -> Store:
    from torchzarr.storage.zip import ZipStore

    options = dict(options)
    return _construct(url, ZipStore, _path_of(url, "zip"), options.pop("mode", "a"), **options)


def _lmdb(url: str, options: dict[str, Any]) -> Store:
    from torchzarr.storage.lmdb import LMDBStore

    return _construct(url, LMDBStore, _path_of(url, "lmdb"), **options)


def _sqlite(url: str, options: dict[str, Any]) -> Store:
    from torchzarr.storage.sqlite import SQLiteStore

    return _construct(url, SQLiteStore, _path_of(url, "sqlite"), **options)


def _redis(url: str, options: dict[str, Any]) -> Store:
    from torchzarr.storage.redis import RedisStore

    return RedisStore.from_url(url, options)


def _is_zip_path(path: str) -> bool:
    """A plain path ending in ``.zip`` that is not an existing directory."""
    return path.lower().rstrip("/").endswith(".zip") and not os.path.isdir(path)


def resolve_store(
    store: Any, *, mode: str = "r", storage_options: dict[str, Any] | None = None
) -> Store:
    """The Store for a path, URL or Store; read-only when ``mode`` is ``"r"``.

    A bare ``memory://`` makes a new store; ``memory://name`` names a store shared by the
    whole process. Paths without a scheme are local directories, except a path ending in
    ``.zip`` that is not a directory, which opens as a ZipStore. ``storage_options`` go
    to the store made from a path or URL; with a Store object they raise
    ``ArgumentTypeError`` (an empty mapping or None is fine). With ``mode="r"``, a
    ``sqlite://`` URL's ``immutable`` option gets the ``read_only=True`` it needs.

    Example:
        >>> type(resolve_store("memory://", mode="w")).__name__
        'MemoryStore'
        >>> type(resolve_store("data.zip", mode="r")).__name__
        'ZipStore'
        >>> resolve_store("data.zip", mode="r").read_only
        True
    """
    read_only = mode == "r"
    if isinstance(store, Store):
        _refuse_unused_options(store, storage_options)
        if read_only and not store.read_only:
            return store.with_read_only(True)
        return store
    if isinstance(store, os.PathLike):
        store = os.fspath(store)
    if not isinstance(store, str):
        raise UnknownStoreError(
            f"cannot open a store from {type(store).__name__} {store!r}: give a path, URL or Store"
        )
    options = dict(options_mapping(f"storage_options of {store!r}", storage_options))
    scheme, sep, _ = store.partition("://")
    if not sep:
        scheme = "zip" if _is_zip_path(store) else "file"
    scheme = scheme.lower()
    if read_only and scheme == "sqlite" and "immutable" in options:
        options.setdefault("read_only", True)  # mode="r" is the read_only immutable needs
    factory = _factory(scheme)
    if factory is None and sep and "::" in scheme:
        raise UnknownStoreError(f"cannot open {masked(store)!r}: {CHAINING}")
    if factory is None:
        known = ", ".join(f"{s}://" for s in _Schemes())
        raise UnknownStoreError(f"no store handles {store!r} (scheme {scheme!r}); known: {known}")
    try:
        result = factory(store, options)
    except TorchZarrError:
        raise  # the factory's own errors (StoreError, ArgumentTypeError, ...) pass through
    except TypeError as err:  # a plugin's Store(url, **options) refusing an option
        raise UnknownStoreError(
            f"invalid storage_options {sorted(options)} for {store!r} (scheme {scheme!r}): {err}"
        ) from err
    except Exception as err:  # a factory's own failure (a bad bucket name, no network)
        raise StoreError(
            f"the store factory of scheme {scheme!r} ({factory!r}) could not open "
            f"{store!r}: {type(err).__name__}: {err}"
        ) from err
    if not isinstance(result, Store):
        raise UnknownStoreError(
            f"the store factory of scheme {scheme!r} ({factory!r}) returned "
            f"{type(result).__name__} for {store!r}, not a torchzarr Store"
        )
    if read_only and not result.read_only:
        result = result.with_read_only(True)
    return result


def _refuse_unused_options(store: Store, storage_options: Any) -> None:
    """``storage_options`` go to the store made from a path or URL; a Store takes none."""
    options = options_mapping(f"storage_options of {store!r}", storage_options)
    if options:
        hint = " (mode='r' opens it read-only)" if "read_only" in options else ""
        raise ArgumentTypeError(
            f"storage_options {sorted(map(str, options))} were given with the store object "
            f"{store!r}, which takes none: they configure a store made from a path or URL; "
            f"pass them to {type(store).__name__}(...) instead{hint}"
        )


def _fsspec(url: str, options: dict[str, Any]) -> Store:
    from torchzarr.storage.fsspec_store import FsspecStore

    return FsspecStore.from_url(url, options)


#: object stores and web servers reached through fsspec (s3fs, gcsfs, adlfs, aiohttp)
FSSPEC_SCHEMES = ("s3", "s3a", "gs", "gcs", "az", "azure", "abfs", "abfss", "http", "https")

register_store("file", _local)
register_store("memory", _memory)
register_store("zip", _zip)
register_store("lmdb", _lmdb)
register_store("sqlite", _sqlite)
register_store("redis", _redis)
register_store("rediss", _redis)
for _scheme in FSSPEC_SCHEMES:
    register_store(_scheme, _fsspec)
