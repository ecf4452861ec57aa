"""The Store protocol: bytes in, bytes out, by key; knows nothing of Zarr.

A store maps ``/``-separated string keys to bytes. A missing key reads as ``None``.
Constructors do no I/O; resources (file handles, clients, pools) open lazily and are
dropped in a forked child. Every store pickles as its spec and reopens on first use.
"""

from __future__ import annotations

import abc
import itertools
import os
import threading
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torchzarr.errors import ArgumentTypeError, InvalidArgumentError, InvalidKeyError, ReadOnlyError
from torchzarr.storage.buffers import as_buffer

_WINDOWS = os.name == "nt"
_STORE_NUMBERS = itertools.count()  # default identities
# kept beside the objects, not in them: a copy (pickle, copy.copy) is other data
_DEFAULT_IDENTITIES: dict[int, str] = {}
_DEFAULT_IDENTITIES_LOCK = threading.Lock()


def _default_identity(store: object) -> str:
    """A name of this object alone, never reused (as an id() is once its object is freed)
    and not carried by copies of it."""
    key = id(store)
    with _DEFAULT_IDENTITIES_LOCK:
        name = _DEFAULT_IDENTITIES.get(key)
        if name is None:
            name = f"{type(store).__name__}@{os.getpid()}:{next(_STORE_NUMBERS)}"
            _DEFAULT_IDENTITIES[key] = name
            try:
                weakref.finalize(store, _DEFAULT_IDENTITIES.pop, key, None)
            except TypeError:  # no weak references to it: an id() is the best there is
                del _DEFAULT_IDENTITIES[key]
                return f"{type(store).__name__}@{key:x}"
        return name


__all__ = [
    "Buffer",
    "ByteRange",
    "Store",
    "is_utf8",
    "key_part_offence",
    "keys_named",
    "options_mapping",
    "validate_dir_prefix",
    "validate_key",
]

Buffer = bytes | bytearray | memoryview


@dataclass(frozen=True)
class ByteRange:
    """A byte range of a stored value.

    ``start >= 0`` with ``length=None`` reads to the end; ``start < 0`` reads the last
    ``-start`` bytes (``length`` must be None), as the shard index at the end of a shard needs.

    Example:
        >>> ByteRange(4, 8).slice(b"0123456789abcdef")
        b'456789ab'
    """

    start: int
    length: int | None = None

    def __post_init__(self) -> None:
        if self.length is not None and (self.length < 0 or self.start < 0):
            raise InvalidArgumentError(
                f"invalid byte range start={self.start} length={self.length}"
            )

    def slice(self, data: Buffer) -> bytes:
        """Apply the range to an in-memory value (used by stores without native ranges)."""
        view = memoryview(data)
        if self.start < 0:
            return bytes(view[max(len(view) + self.start, 0) :])
        end = len(view) if self.length is None else self.start + self.length
        return bytes(view[self.start : end])


def is_utf8(text: str) -> bool:
    """True if ``text`` encodes as UTF-8 (it holds no lone surrogate).

    Example:
        >>> is_utf8("café"), is_utf8("caf\\udce9")
        (True, False)
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


BACKSLASH = "backslash"
NUL_BYTE = "NUL byte"
NOT_UTF8 = "not UTF-8"
NOT_A_NAME = "empty, '.' or '..'"
_NOT_NAMES = frozenset(("", ".", ".."))


def key_part_offence(part: str) -> str | None:
    """Why ``part`` cannot be a component of a store key, or None if it can.

    The reason is one of :data:`BACKSLASH`, :data:`NUL_BYTE`, :data:`NOT_UTF8` (a lone
    surrogate) and :data:`NOT_A_NAME` (an empty, ``.`` or ``..`` component), the first
    that applies in that order.

    Example:
        >>> key_part_offence("c"), key_part_offence(".."), key_part_offence("a\\\\b")
        (None, "empty, '.' or '..'", 'backslash')
    """
    if "\\" in part:
        return BACKSLASH
    if "\x00" in part:
        return NUL_BYTE
    if not part.isascii() and not is_utf8(part):
        return NOT_UTF8
    if part in _NOT_NAMES:
        return NOT_A_NAME
    return None


def keys_named(keys: Sequence[str], most: int = 8) -> str:
    """The keys an error of a batch names: every one, up to ``most`` of them.

    Example:
        >>> keys_named(["a"]), keys_named(["a", "b", "c"], most=2)
        ("'a'", "'a', 'b' and 1 more")
    """
    named = ", ".join(repr(key) for key in keys[:most])
    more = len(keys) - most
    return named if more <= 0 else f"{named} and {more} more"


def validate_key(key: str) -> str:
    """Check that ``key`` is a relative ``/``-separated key that cannot leave a store's root.

    Example:
        >>> validate_key("a/b/zarr.json")
        'a/b/zarr.json'
    """
    if not isinstance(key, str):
        raise InvalidKeyError(f"store key must be a str, got {type(key).__name__}: {key!r}")
    if not key:
        raise InvalidKeyError("store key must not be empty")
    offences = {key_part_offence(part) for part in key.split("/")}
    if BACKSLASH in offences:
        raise InvalidKeyError(f"store key {key!r} contains a backslash")
    # "C:x" is a drive path only on Windows; elsewhere "a:b" is a name like any other
    if key.startswith("/") or (_WINDOWS and len(key) > 1 and key[1] == ":"):
        raise InvalidKeyError(f"store key {key!r} is an absolute path")
    if NUL_BYTE in offences:
        raise InvalidKeyError(f"store key {key!r} contains a NUL byte")
    if NOT_UTF8 in offences:
        raise InvalidKeyError(
            f"store key {key!r} is not valid Unicode text: it has a lone surrogate "
            "(what a file name that is not UTF-8 reads as), which no store can hold"
        )
    if NOT_A_NAME in offences:
        raise InvalidKeyError(f"store key {key!r} has an empty, '.' or '..' component")
    return key


def validate_prefix(prefix: str) -> str:
    """Check a listing prefix: empty, or a valid key optionally ending in ``/``."""
    if prefix:
        validate_key(prefix.rstrip("/") or "/")
    return prefix


def options_mapping(what: str, value: Any) -> Mapping[str, Any]:
    """``value`` if it is a mapping of options (None: none), else a clear error.

    Example:
        >>> options_mapping("storage_options of 'x'", None)
        {}
    """
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ArgumentTypeError(
            f"{what} must be a mapping of store options (such as {{'anon': True}}), "
            f"got {type(value).__name__}: {value!r}"
        )
    return value


def validate_dir_prefix(prefix: str) -> str:
    """Check a :meth:`Store.list_dir` prefix and spell it ``""`` or ending in one ``/``.

    ``"a/b"`` names the same directory as ``"a/b/"``, in every store.

    Example:
        >>> validate_dir_prefix("a/b"), validate_dir_prefix("a/b/"), validate_dir_prefix("")
        ('a/b/', 'a/b/', '')
    """
    validate_prefix(prefix)
    return prefix.rstrip("/") + "/" if prefix else ""


class Store(abc.ABC):
    """Abstract key-value store of bytes.

    Subclasses implement :meth:`get`, :meth:`set`, :meth:`delete` and :meth:`list_prefix`;
    the rest have correct defaults that remote stores override to batch and overlap requests.

    Example:
        >>> from torchzarr.storage.memory import MemoryStore
        >>> store = MemoryStore()
        >>> store.set("a/b", b"xyz")
        >>> store.get("a/b"), store.get("missing")
        (b'xyz', None)
    """

    #: the URL scheme(s) this store answers in the registry (e.g. ``("file", "")``)
    read_only: bool = False

    # -- reads ------------------------------------------------------------------------
    @abc.abstractmethod
    def get(self, key: str) -> bytes | None:
        """The value at ``key``, or None if it does not exist."""

    def get_range(self, key: str, byte_range: ByteRange) -> bytes | None:
        """Part of the value at ``key``; None if the key does not exist."""
        value = self.get(key)
        return None if value is None else byte_range.slice(value)

    def get_many(self, keys: Sequence[str]) -> dict[str, bytes | None]:
        """Values of many keys at once (remote stores fetch them concurrently)."""
        return {key: self.get(key) for key in keys}

    def get_ranges(self, requests: Sequence[tuple[str, ByteRange]]) -> list[bytes | None]:
        """Many byte ranges at once, in request order (remote stores run them concurrently)."""
        return [self.get_range(key, rng) for key, rng in requests]

    def exists(self, key: str) -> bool:
        """True if ``key`` holds a value."""
        return self.get(key) is not None

    def getsize(self, key: str) -> int | None:
        """Size in bytes of the value at ``key``, or None if missing (stores override cheaply)."""
        value = self.get(key)
        return None if value is None else len(value)

    # -- writes -----------------------------------------------------------------------
    @abc.abstractmethod
    def set(self, key: str, value: Buffer) -> None:
        """Store ``value`` at ``key``, replacing any previous value atomically."""

    def set_many(self, items: Mapping[str, Buffer]) -> None:
        """Store many values (remote stores write them concurrently); every key and value
        is checked before the first is written."""
        for key in items:
            validate_key(key)
        checked = {key: as_buffer(self, key, value) for key, value in items.items()}
        for key, value in checked.items():
            self.set(key, value)

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key``; deleting a missing key is not an error."""

    def delete_many(self, keys: Iterable[str]) -> None:
        """Remove many keys."""
        for key in keys:
            self.delete(key)

    def delete_prefix(self, prefix: str) -> None:
        """Remove every key that starts with ``prefix`` (``""`` clears the store)."""
        self.delete_many(list(self.list_prefix(prefix)))

    # -- listing ----------------------------------------------------------------------
    @abc.abstractmethod
    def list_prefix(self, prefix: str) -> Iterator[str]:
        """Every key starting with ``prefix``, as full keys, in no particular order."""

    def list_dir(self, prefix: str) -> tuple[list[str], list[str]]:
        """Direct children below ``prefix`` (``""`` or a directory): (keys, sub-prefixes).

        Keys are returned as names relative to ``prefix``; sub-prefixes too, without a
        trailing slash. Both lists are sorted. ``"a/b"`` lists the same as ``"a/b/"``.
        """
        prefix = validate_dir_prefix(prefix)
        keys: set[str] = set()
        dirs: set[str] = set()
        for key in self.list_prefix(prefix):
            rest = key[len(prefix) :]
            head, sep, _ = rest.partition("/")
            (dirs if sep else keys).add(head)
        return sorted(keys), sorted(dirs)

    # -- lifecycle --------------------------------------------------------------------
    def _check_writable(self, key: str) -> None:
        if self.read_only:
            raise ReadOnlyError(f"cannot write {key!r}: store {self} is read-only")

    def with_read_only(self, read_only: bool = True) -> Store:
        """A store over the same data that refuses writes (or allows them)."""
        if not read_only:
            return self
        from torchzarr.storage.wrappers import ReadOnlyStore

        return ReadOnlyStore(self)

    def close(self) -> None:  # noqa: B027 - most stores hold nothing to release
        """Release handles and pools; the store reopens lazily if used again."""

    @property
    def identity(self) -> str:
        """A string naming the data this store reaches: its canonical URL or path.

        Chunk locks, the decoded-chunk cache and its invalidation are keyed by it, so every
        store object over the same data must give the same string (``tz.open_group(url)``
        makes a new store object at each call), and stores over other data another one.
        The default names this object only, right for data no other object reaches (an
        unnamed in-memory store): a store opened from a URL or a path overrides it.

        Example:
            >>> from torchzarr.storage.local import LocalStore
            >>> LocalStore("/data/a.zarr").identity == LocalStore("/data/./a.zarr").identity
            True
        """
        return _default_identity(self)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
