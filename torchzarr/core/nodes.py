"""Where nodes live in a store: path rules, and reading/writing their metadata documents."""

from __future__ import annotations

import contextlib
import copy
import functools
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from torchzarr.errors import (
    CodecError,
    InvalidKeyError,
    MetadataError,
    TorchZarrError,
    UnknownCodecError,
    UnknownExtensionError,
    UnsupportedDtypeError,
)
from torchzarr.forksafe import LockTable
from torchzarr.metadata.consolidated import V2_CONSOLIDATED_KEY
from torchzarr.metadata.jsonutil import json_loads, node_json_dumps
from torchzarr.metadata.v2 import ArrayMetadataV2, GroupMetadataV2
from torchzarr.metadata.v3 import parse_v3_node
from torchzarr.storage.base import validate_key
from torchzarr.storage.locations import location

if TYPE_CHECKING:
    from torchzarr.metadata.base import ArrayMetadata, GroupMetadata
    from torchzarr.storage.base import Store

__all__ = [
    "UnsupportedArray",
    "ancestors",
    "join_path",
    "names_a_node",
    "node_documents",
    "node_keys",
    "node_metadata_keys",
    "node_lock",
    "normalize_path",
    "parse_member",
    "parse_node",
    "read_kind",
    "read_member",
    "read_node",
    "reserved_names",
    "stored_format",
    "stored_kind",
    "tolerant",
    "write_node",
]

ZARR_JSON = "zarr.json"
ZARRAY = ".zarray"
ZGROUP = ".zgroup"
ZATTRS = ".zattrs"
#: the names of the metadata documents of each format: no node of that format has one
_RESERVED = {3: frozenset({ZARR_JSON}), 2: frozenset({ZARRAY, ZGROUP, ZATTRS, V2_CONSOLIDATED_KEY})}
METADATA_NAMES = _RESERVED[2] | _RESERVED[3]


def reserved_names(zarr_format: int | None) -> frozenset[str]:
    """The names no node of ``zarr_format`` (None: of either format) may have: those of
    its metadata documents. A v3 node may be called ``.zattrs``, a v2 one ``zarr.json``.

    Example:
        >>> sorted(reserved_names(3)), ".zattrs" in reserved_names(None)
        (['zarr.json'], True)
    """
    return METADATA_NAMES if zarr_format is None else _RESERVED.get(zarr_format, METADATA_NAMES)


def normalize_path(path: str | None, zarr_format: int | None = None) -> str:
    """A node path without leading/trailing slashes; ``""`` is the root.

    With ``zarr_format`` given, every component is checked: none may be the name of a
    metadata document of that format, since a node of that name could neither be written
    nor listed (its directory would hold, or be, a metadata document). Without it (a path
    to open, whose format is not known yet), only the last component is checked, against
    the names of both formats: a v3 group may be called ``.zattrs`` and hold nodes.

    Example:
        >>> normalize_path("/a/b/")
        'a/b'
        >>> normalize_path("a/.zattrs", 3)
        'a/.zattrs'
    """
    if path is None:
        return ""
    if not isinstance(path, str):
        raise InvalidKeyError(f"node path must be a str, got {type(path).__name__}")
    path = path.strip("/")
    if path:
        validate_key(path)
        reserved = reserved_names(zarr_format)
        components = path.split("/")
        for component in components if zarr_format is not None else components[-1:]:
            if component in reserved:
                owner = 3 if component == ZARR_JSON else 2
                hint = f" (pass zarr_format={5 - owner} for a node of that name)"
                raise InvalidKeyError(
                    f"node path {path!r}: {component!r} names a Zarr v{owner} metadata "
                    f"document, not a node{hint if zarr_format is None else ''}"
                )
    return path


@functools.lru_cache(maxsize=1 << 16)  # listings ask again for the same names at each call
def names_a_node(path: str, zarr_format: int | None) -> bool:
    """True if ``path``, relative to a group, names a node below it that can be opened:
    what :func:`normalize_path` takes and leaves as it is, and not the group itself.

    A listing keeps only such names: one spelled otherwise (``..``, ``a/``, ``x\\y``, a
    metadata document's name), as a store or consolidated metadata written by other tools
    may hold, would list a member that cannot be opened, the group itself, or a node
    outside the group.

    Example:
        >>> names_a_node("a/b", 3), names_a_node("..", 3), names_a_node("a/", 3)
        (True, False, False)
    """
    try:
        return bool(path) and normalize_path(path, zarr_format) == path
    except InvalidKeyError:
        return False


def join_path(*parts: str) -> str:
    """Join node path parts, skipping empty ones.

    Example:
        >>> join_path("", "a", "b/c")
        'a/b/c'
    """
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))


def ancestors(path: str) -> list[str]:
    """``path`` and every group above it, root first.

    Example:
        >>> ancestors("a/b")
        ['', 'a', 'a/b']
    """
    parts = path.split("/") if path else []
    return ["/".join(parts[:depth]) for depth in range(len(parts) + 1)]


# A lock per node location (store identity and path) in this process, for the read-modify-
# writes of metadata (attributes, shape, consolidated entries); reads take none. Held only
# while someone uses it.
_node_locks = LockTable(reentrant=True)


@contextlib.contextmanager
def node_lock(store: Store, paths: Iterable[str]) -> Iterator[None]:
    """Hold the metadata locks of the nodes at ``paths`` and of every group above them.

    A node's metadata and the consolidated entries of the groups above it change under
    these locks, so two changes in this process (through any node object, however its
    store was rooted) never overwrite each other. The locks are taken in one order
    (by location) and are reentrant: a change may hold them while it calls another one
    that takes them again for the same nodes.

    Example:
        >>> import torchzarr as tz
        >>> store = tz.MemoryStore()
        >>> with node_lock(store, ["a/b"]):
        ...     pass
    """
    identity = store.identity
    wanted = sorted({location(identity, a) for path in paths for a in ancestors(path)})
    locks = [_node_locks[where] for where in wanted]
    with contextlib.ExitStack() as stack:
        for lock in locks:
            stack.enter_context(lock)
        yield


def _key(path: str, name: str) -> str:
    return f"{path}/{name}" if path else name


@dataclass(frozen=True)
class UnsupportedArray:
    """An array of a dtype torchzarr cannot hold (strings, datetimes, ...), or whose
    metadata names a codec or extension it does not know, met while listing a group: the
    group lists it and consolidation keeps its metadata as stored, but it cannot be opened
    (:meth:`error` says why, as ``error_type``).

    Example:
        >>> member = UnsupportedArray("time", 3, {"node_type": "array"}, reason="datetime64")
        >>> str(member.error())
        "array 'time': datetime64"
    """

    path: str
    zarr_format: int
    document: dict[str, Any]  # zarr.json (v3) or .zarray (v2), as stored
    attributes: dict[str, Any] = field(default_factory=dict)  # v2 .zattrs
    reason: str = ""
    error_type: type[TorchZarrError] = UnsupportedDtypeError  # or UnknownCodecError, ...

    @property
    def is_dtype(self) -> bool:
        """Whether it is its dtype that torchzarr cannot hold (else its codecs)."""
        return self.error_type is UnsupportedDtypeError

    def to_json(self) -> dict[str, Any]:
        """The stored metadata document."""
        return copy.deepcopy(self.document)

    def error(self) -> TorchZarrError:
        """The error opening this array raises."""
        if not self.is_dtype:
            return self.error_type(self.reason)  # it names the node and its key already
        return UnsupportedDtypeError(f"array {self.path or '/'!r}: {self.reason}")


def tolerant(
    path: str,
    zarr_format: int,
    document: Any,
    attributes: Mapping[str, Any] | None,
    parse: Callable[[], Any],
) -> Any:
    """``parse()``, or an :class:`UnsupportedArray` of ``document`` when it is an array of
    a dtype, codec or extension torchzarr lacks (other metadata errors propagate)."""
    try:
        return parse()
    except UnsupportedDtypeError as err:
        return UnsupportedArray(path, zarr_format, dict(document), dict(attributes or {}), str(err))
    except (UnknownCodecError, UnknownExtensionError) as err:
        if zarr_format == 3 and document.get("node_type") != "array":
            raise
        reason = f"node {path or '/'!r}: {err}"
        kept = dict(attributes or {})
        return UnsupportedArray(path, zarr_format, dict(document), kept, reason, type(err))


def node_keys(path: str, zarr_format: int | None) -> list[str]:
    """The metadata keys of a node at ``path`` in one format (None: both).

    Example:
        >>> node_keys("a", 3)
        ['a/zarr.json']
    """
    keys: list[str] = []
    if zarr_format in (None, 3):
        keys.append(_key(path, ZARR_JSON))
    if zarr_format in (None, 2):
        keys += [_key(path, ZARRAY), _key(path, ZGROUP), _key(path, ZATTRS)]
    if zarr_format not in (None, 2, 3):
        raise MetadataError(f"zarr_format must be 2 or 3, got {zarr_format!r}")
    return keys


def read_node(
    store: Store, path: str, zarr_format: int | None = None
) -> ArrayMetadata | GroupMetadata | None:
    """Read the metadata of the node at ``path``: v3 first, then v2, in one batched fetch.

    Returns None when no node is there.
    """
    return parse_node(path, store.get_many(node_keys(path, zarr_format)), store)


def read_member(store: Store, path: str, zarr_format: int | None = None) -> Any:
    """:func:`read_node`, with an :class:`UnsupportedArray` for an array of a dtype
    torchzarr cannot hold instead of an error."""
    return parse_member(path, store.get_many(node_keys(path, zarr_format)), store)


def parse_member(path: str, docs: Mapping[str, Any], where: Any = None) -> Any:
    """:func:`parse_node`, with an :class:`UnsupportedArray` for an array of a dtype
    torchzarr cannot hold instead of an error."""
    try:
        return _parse_located(path, docs, where)
    except (UnsupportedDtypeError, UnknownCodecError, UnknownExtensionError) as err:
        # only then are the documents needed as they are
        v3_key, zarray_key, zattrs_key = (_key(path, n) for n in (ZARR_JSON, ZARRAY, ZATTRS))
        kind = type(err)
        if docs.get(v3_key) is not None:
            document = json_loads(docs[v3_key], key=v3_key)
            if not isinstance(document, dict) or document.get("node_type") != "array":
                raise  # a group naming an extension torchzarr lacks: not an array's listing
            return UnsupportedArray(path, 3, document, {}, str(err), kind)
        if docs.get(zarray_key) is None:
            raise
        raw_attrs = docs.get(zattrs_key)
        attrs = json_loads(raw_attrs, key=zattrs_key) if raw_attrs is not None else {}
        document = json_loads(docs[zarray_key], key=zarray_key)
        return UnsupportedArray(path, 2, document, attrs, str(err), kind)


def parse_node(
    path: str, docs: Mapping[str, Any], where: Any = None
) -> ArrayMetadata | GroupMetadata | None:
    """Parse the node at ``path`` from fetched metadata documents (key -> bytes or None).

    Errors name the node, its metadata key and ``where``, its store, when given: an array
    of a dtype torchzarr cannot hold raises ``UnsupportedDtypeError``; malformed metadata,
    an unknown codec or extension raise ``MetadataError``, ``UnknownCodecError``, ...

    Example:
        >>> parse_node("a", {"a/zarr.json": b'{"zarr_format": 3, "node_type": "group"}'}).node_type
        'group'
    """
    try:
        return _parse_located(path, docs, where)
    except UnsupportedDtypeError as err:
        place = f" in {where!r}" if where is not None else ""
        raise UnsupportedDtypeError(f"array {path or '/'!r}{place}: {err}") from None


def _parse_located(
    path: str, docs: Mapping[str, Any], where: Any
) -> ArrayMetadata | GroupMetadata | None:
    """:func:`_parse_node`, its metadata and codec errors naming the node and its key (an
    unknown codec says only its own name, a metadata error only ``zarr.json``)."""
    try:
        return _parse_node(path, docs)
    except UnsupportedDtypeError:
        raise
    except (MetadataError, CodecError) as err:
        message = str(err)
        stored = [_key(path, n) for n in (ZARR_JSON, ZARRAY, ZGROUP, ZATTRS)]
        stored = [k for k in stored if docs.get(k) is not None] or [path]
        key = next((k for k in stored if message.startswith(k + ": ")), stored[0])
        for said in (key, key.rsplit("/", 1)[-1]):
            if message.startswith(said + ": "):
                message = message[len(said) + 2 :]
                break
        place = f" in {where!r}" if where is not None else ""
        raise type(err)(f"node {path or '/'!r} ({key}){place}: {message}") from None


def _parse_node(path: str, docs: Mapping[str, Any]) -> ArrayMetadata | GroupMetadata | None:
    v3_key = _key(path, ZARR_JSON)
    v3_doc = docs.get(v3_key)
    if v3_doc is not None:
        return parse_v3_node(json_loads(v3_doc, key=v3_key))
    attrs_raw = docs.get(_key(path, ZATTRS))
    attributes = json_loads(attrs_raw, key=_key(path, ZATTRS)) if attrs_raw is not None else {}
    zarray = docs.get(_key(path, ZARRAY))
    if zarray is not None:
        return ArrayMetadataV2.from_json(json_loads(zarray, key=_key(path, ZARRAY)), attributes)
    zgroup = docs.get(_key(path, ZGROUP))
    if zgroup is not None:
        doc = json_loads(zgroup, key=_key(path, ZGROUP))
        if doc.get("zarr_format") != 2:
            raise MetadataError(f"{_key(path, ZGROUP)}: zarr_format must be 2")
        return GroupMetadataV2(attributes=attributes)
    return None


def stored_kind(path: str, docs: Mapping[str, Any]) -> str | None:
    """What fetched metadata documents say is at ``path``, without parsing them beyond
    the node type: ``"array"``, ``"group"``, ``"node"`` (a document torchzarr cannot tell
    the kind of: not JSON, or an unknown node type) or None (no node).

    A node of a dtype, codec or extension torchzarr lacks still counts: deleting,
    replacing or listing it needs no more than this.

    Example:
        >>> stored_kind("a", {"a/zarr.json": b'{"zarr_format": 3, "node_type": "group"}'})
        'group'
        >>> stored_kind("a", {"a/.zarray": b"{"}), stored_kind("b", {})
        ('array', None)
    """
    raw = docs.get(_key(path, ZARR_JSON))
    if raw is not None:
        try:
            doc = json_loads(raw, key=_key(path, ZARR_JSON))
        except MetadataError:
            return "node"
        kind = doc.get("node_type") if isinstance(doc, dict) else None
        return kind if kind in ("array", "group") else "node"
    if docs.get(_key(path, ZARRAY)) is not None:
        return "array"
    if docs.get(_key(path, ZGROUP)) is not None:
        return "group"
    return None


def stored_format(path: str, docs: Mapping[str, Any]) -> int | None:
    """The Zarr format of the node that fetched metadata documents show at ``path`` (v3
    first, as :func:`stored_kind`), or None when none is there.

    Example:
        >>> stored_format("a", {"a/.zgroup": b'{"zarr_format": 2}'}), stored_format("b", {})
        (2, None)
    """
    for zarr_format in (3, 2):
        if stored_kind(path, {k: docs.get(k) for k in node_keys(path, zarr_format)}):
            return zarr_format
    return None


def read_kind(store: Store, path: str, zarr_format: int | None = None) -> str | None:
    """:func:`stored_kind` of the node at ``path`` in ``store`` (one batched fetch).

    Example:
        >>> import torchzarr as tz
        >>> store = tz.MemoryStore()
        >>> _ = tz.create_group(store, path="g")
        >>> read_kind(store, "g"), read_kind(store, "missing")
        ('group', None)
    """
    return stored_kind(path, store.get_many(node_keys(path, zarr_format)))


def node_documents(path: str, metadata: ArrayMetadata | GroupMetadata) -> dict[str, bytes]:
    """The metadata documents of a node, by store key.

    Example:
        >>> from torchzarr.metadata.v3 import GroupMetadataV3
        >>> list(node_documents("a", GroupMetadataV3(attributes={})))
        ['a/zarr.json']
    """
    if metadata.zarr_format == 3:
        return {_key(path, ZARR_JSON): node_json_dumps(metadata.to_json())}
    name = ZARRAY if isinstance(metadata, ArrayMetadataV2) else ZGROUP
    docs = {_key(path, name): node_json_dumps(metadata.to_json())}
    if metadata.attributes:
        docs[_key(path, ZATTRS)] = node_json_dumps(metadata.attributes)
    return docs


def write_node(store: Store, path: str, metadata: ArrayMetadata | GroupMetadata) -> None:
    """Write the metadata documents of a node (``zarr.json``, or ``.zarray``/``.zgroup`` + ``.zattrs``)."""
    docs = node_documents(path, metadata)
    store.set_many(docs)
    if metadata.zarr_format == 2 and _key(path, ZATTRS) not in docs:
        store.delete(_key(path, ZATTRS))


def node_metadata_keys(path: str) -> list[str]:
    """Every metadata key a node at ``path`` can have (v2 and v3)."""
    return [_key(path, name) for name in (ZARR_JSON, ZARRAY, ZGROUP, ZATTRS)]
