"""Placing new nodes: what may stand above and at a new node's path, and writing its metadata
with its missing parent groups and the consolidated entries above it."""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from torchzarr.core import nodes
from torchzarr.core.attributes import json_attributes
from torchzarr.core.cache import invalidate_tree_everywhere
from torchzarr.core.consolidated import Change, refresh_consolidated
from torchzarr.core.create import array_metadata_from_args
from torchzarr.errors import (
    ArgumentTypeError,
    InvalidArgumentError,
    MetadataError,
    NodeExistsError,
)
from torchzarr.metadata.jsonutil import json_dumps
from torchzarr.metadata.v2 import GroupMetadataV2
from torchzarr.metadata.v3 import GroupMetadataV3

__all__ = [
    "remove_node",
    "create_hierarchy",
    "group_metadata",
    "kind_phrase",
    "missing_parents",
    "node_docs",
    "prepare_path",
    "write_documents",
    "write_new_node",
]

#: how a new node treats what is at its path: "a" refuses a node there, "w" replaces
#: everything under the path, "w-" refuses any key under it (as zarr-python's modes)
CREATION_MODES = ("a", "w", "w-")


def group_metadata(zarr_format: int, attributes: dict[str, Any] | None) -> Any:
    """The metadata of a new group, its attributes checked.

    Example:
        >>> group_metadata(2, {"a": 1}).attributes
        {'a': 1}
    """
    if zarr_format == 3:
        return GroupMetadataV3(attributes=json_attributes(attributes))
    if zarr_format == 2:
        return GroupMetadataV2(attributes=json_attributes(attributes))
    raise MetadataError(f"zarr_format must be 2 or 3, got {zarr_format!r}")


def kind_phrase(kind: str | None) -> str:
    """``nodes.stored_kind``'s answer as words.

    Example:
        >>> kind_phrase("array"), kind_phrase("node")
        ('an array', 'a node torchzarr cannot read')
    """
    return {"array": "an array", "group": "a group"}.get(kind or "", "a node torchzarr cannot read")


def _node_word(metadata: Any) -> str:
    """ "array" or "group", what ``metadata`` describes."""
    return "array" if hasattr(metadata, "shape") else "group"


def _format_mismatch(
    store: Any, group: str, docs: Mapping[str, Any], path: str, zarr_format: int, what: str
) -> InvalidArgumentError | None:
    """The error to raise when the group at ``group`` (per fetched ``docs``) is not of
    Zarr ``zarr_format``, so that it would never list the new ``what`` at ``path``."""
    own = {k: docs.get(k) for k in nodes.node_keys(group, zarr_format)}
    if nodes.stored_kind(group, own) == "group":
        return None
    found = nodes.stored_format(group, docs)
    return InvalidArgumentError(
        f"cannot create the Zarr v{zarr_format} {what} {path!r} in {store!r}: the group at "
        f"{group or '/'!r} above it is Zarr v{found}, which lists no v{zarr_format} node "
        f"(a node in it must be Zarr v{found}: pass zarr_format={found})"
    )


def missing_parents(
    store: Any, path: str, docs: Mapping[str, Any], zarr_format: int, what: str = "node"
) -> list[str]:
    """The paths of the missing parent groups of a new Zarr ``zarr_format`` ``what`` (an
    array, a group) at ``path``, the root first, from the fetched metadata ``docs`` of its
    ancestors (:func:`node_docs`).

    An array (or a node of no kind we can tell) above ``path`` is an error; so is a nearest
    group above it of the other Zarr format, which would never list the new node (the
    missing parents are to be created in the new node's format).

    Example:
        >>> import torchzarr as tz
        >>> store = tz.MemoryStore()
        >>> _ = tz.open_group(store, mode="w").create_group("a")
        >>> missing_parents(store, "a/b/c", node_docs(store, ["", "a", "a/b"]), 3)
        ['a/b']
    """
    missing, nearest = [], None
    for parent in nodes.ancestors(path)[:-1]:  # the root has no parents
        kind = nodes.stored_kind(parent, docs)
        if kind is None:
            missing.append(parent)
        elif kind != "group":
            raise NodeExistsError(
                f"cannot create {path!r} in {store!r}: {kind_phrase(kind)} exists at "
                f"{parent or '/'!r}, and nothing can be inside it"
            )
        else:
            nearest = parent
    mismatch = nearest is not None and _format_mismatch(
        store, nearest, docs, path, zarr_format, what
    )
    if mismatch:
        raise mismatch
    return missing


def prepare_path(
    store: Any, path: str, docs: Mapping[str, Any], mode: str, zarr_format: int
) -> list[Change]:
    """Make room for a new Zarr ``zarr_format`` node at ``path``; the node replaced, as a
    change, if any.

    ``mode`` "a" refuses a node there (per its fetched metadata ``docs``), "w-" any key
    under ``path`` too (chunks no metadata owns any more, other files), as zarr-python
    does. "w" deletes everything under ``path``, as in zarr-python: also keys no metadata
    owns, and without parsing what was there (a node of a dtype, codec or extension
    torchzarr lacks, or with broken metadata, is replaced too).
    """
    if mode != "w":
        kind = nodes.stored_kind(path, docs)
        if kind is not None:
            found = nodes.stored_format(path, docs)
            what = kind_phrase(kind) + ("" if found == zarr_format else f" of Zarr v{found}")
            asked = "" if found == zarr_format else f", and zarr_format={zarr_format} was asked"
            raise NodeExistsError(f"{what} already exists at {path or '/'!r} in {store!r}{asked}")
        if mode == "w-" and next(iter(store.list_prefix(path + "/" if path else "")), None):
            raise NodeExistsError(
                f"cannot create {path or '/'!r} in {store!r} with mode 'w-': keys already "
                "exist under it (no node's metadata, but chunks or other files); mode 'w' "
                "deletes them first"
            )
        return []
    store.delete_prefix(path + "/" if path else "")
    store.delete_many(nodes.node_metadata_keys(path))
    invalidate_tree_everywhere(store.identity, path)  # cached chunks of the old node
    return [(path, None)]


def remove_node(store: Any, path: str, kept: frozenset[str] = frozenset()) -> None:
    """Delete the node at ``path`` with everything below it but the keys ``kept`` (there
    before it was made): its metadata first (no node opens over half its chunks), then its
    keys, its cached chunks and the consolidated entries above it.

    Example:
        >>> import torchzarr as tz
        >>> store = tz.MemoryStore()
        >>> _ = tz.create_array(store, path="a", data=[1, 2])
        >>> remove_node(store, "a"), sorted(store.list_prefix(""))  # its root group stays
        (None, ['zarr.json'])
    """
    prefix = path + "/" if path else ""
    with nodes.node_lock(store, [path]):
        store.delete_many([key for key in nodes.node_metadata_keys(path) if key not in kept])
        if kept:
            store.delete_many([key for key in store.list_prefix(prefix) if key not in kept])
        else:
            store.delete_prefix(prefix)
        invalidate_tree_everywhere(store.identity, path)
        refresh_consolidated(store, [(path, None)])


def node_docs(
    store: Any, paths: Sequence[str], attributes_of: Sequence[str] = ()
) -> dict[str, Any]:
    """The documents (both formats) telling what is at ``paths``, in one batch, with the
    v2 ``.zattrs`` of the paths ``attributes_of`` (where new v2 nodes go).

    Example:
        >>> import torchzarr as tz
        >>> sorted(node_docs(tz.MemoryStore(), ["a"], attributes_of=["a"]))
        ['a/.zarray', 'a/.zattrs', 'a/.zgroup', 'a/zarr.json']
    """
    keys = [k for path in paths for k in nodes.node_keys(path, None)]
    keys = [k for k in keys if not k.endswith(nodes.ZATTRS)]
    return store.get_many(keys + [nodes.join_path(p, nodes.ZATTRS) for p in attributes_of])


def write_new_node(store: Any, path: str, metadata: Any, mode: str) -> None:
    """Write a new node's metadata and its missing parents', and update consolidated
    metadata above it (the node it replaces, with its subtree, leaves it).

    ``mode`` is one of :data:`CREATION_MODES` (see :func:`prepare_path`); nothing is
    written or deleted when the node cannot be created.

    Example:
        >>> import torchzarr as tz
        >>> store = tz.MemoryStore()
        >>> write_new_node(store, "a/b", group_metadata(3, None), "a")
        >>> sorted(store.list_prefix(""))
        ['a/b/zarr.json', 'a/zarr.json', 'zarr.json']
    """
    if mode not in CREATION_MODES:
        raise InvalidArgumentError(f"mode must be one of {CREATION_MODES}, got {mode!r}")
    with nodes.node_lock(store, [path]):  # no change in this process lands in between
        v2_node = [path] if metadata.zarr_format == 2 else []
        docs = node_docs(store, nodes.ancestors(path), attributes_of=v2_node)
        # "a" and "w-" only check: a node already there is the error to name first; "w"
        # deletes, so the parents come first: nothing is deleted for a node that cannot be
        # created (below an array)
        changes = [] if mode == "w" else prepare_path(store, path, docs, mode, metadata.zarr_format)
        parents = missing_parents(store, path, docs, metadata.zarr_format, _node_word(metadata))
        empty_group = group_metadata(metadata.zarr_format, None)
        written = [*((parent, empty_group) for parent in parents), (path, metadata)]
        if mode == "w":
            changes = prepare_path(store, path, docs, mode, metadata.zarr_format)
        write_documents(store, written, docs)
        refresh_consolidated(store, changes + written, frozenset(p for p, _ in written))


def write_documents(
    store: Any, written: Sequence[tuple[str, Any]], found: Mapping[str, Any]
) -> None:
    """Write the metadata documents of new nodes (``(path, metadata)`` pairs) in one batch.

    A v2 node without attributes writes no ``.zattrs``: one left at its path (by a delete
    cut short, or another tool), fetched into ``found`` (:func:`node_docs`), is deleted
    first, so the node's attributes are exactly its own, as zarr-python's (which writes
    ``{}``) are. Parent groups created on the way, whose ``.zattrs`` are not fetched, keep
    such a document, as in zarr-python. A lone surrogate outside the attributes (in
    ``dimension_names``, ...) is refused: new text must be UTF-8 (the attributes were
    checked as they came in; those copied from a stored node keep theirs).

    Example:
        >>> import torchzarr as tz
        >>> store = tz.MemoryStore()
        >>> store.set("g/.zattrs", b'{"stale": 1}')
        >>> found = node_docs(store, ["g"], attributes_of=["g"])
        >>> write_documents(store, [("g", group_metadata(2, None))], found)
        >>> sorted(store.list_prefix(""))
        ['g/.zgroup']
    """
    new_docs: dict[str, bytes] = {}
    for node_path, metadata in written:
        docs = nodes.node_documents(node_path, metadata)
        if any(b"\\u" in doc for doc in docs.values()):  # an escape: maybe a surrogate
            _refuse_surrogates(node_path, metadata)
        new_docs.update(docs)
    zattrs = (nodes.join_path(path, nodes.ZATTRS) for path, _ in written)
    stale = [key for key in zattrs if found.get(key) is not None and key not in new_docs]
    if stale:
        store.delete_many(stale)
    store.set_many(new_docs)


def _refuse_surrogates(path: str, metadata: Any) -> None:
    """Raise ``MetadataError`` naming where when the metadata of the new node at ``path``
    holds a lone surrogate outside its attributes."""
    doc = metadata.to_json()
    doc.pop("attributes", None)
    name = nodes.ZARR_JSON if metadata.zarr_format == 3 else nodes.ZARRAY
    json_dumps(doc, key=nodes.join_path(path, name), keep_nonfinite=True)


#: the keys of an array's spec in ``Group.create_hierarchy``: ``create_array``'s metadata
#: arguments (no ``data``: only metadata is written)
ARRAY_SPEC_KEYS = frozenset(inspect.signature(array_metadata_from_args).parameters)
#: the keys of a group's spec (a dict without ``"shape"``)
GROUP_SPEC_KEYS = frozenset({"attributes"})


def _named(keys: Iterable[Any]) -> str:
    return ", ".join(repr(k) for k in keys)


def _spec_metadata(rel: str, spec: Any, zarr_format: int) -> Any:
    """The metadata of the node ``spec`` describes at ``rel`` (``Group.create_hierarchy``):
    a key that neither an array's spec nor a group's takes is refused, naming it."""
    if hasattr(spec, "zarr_format") and hasattr(spec, "to_json"):
        return spec
    if spec is None:
        return group_metadata(zarr_format, None)
    if not isinstance(spec, Mapping):
        raise MetadataError(f"create_hierarchy: cannot make a node of {spec!r} at {rel!r}")
    if "shape" not in spec:
        others = [k for k in spec if k not in GROUP_SPEC_KEYS]
        if not others:
            return group_metadata(zarr_format, spec.get("attributes"))
        array_like = [k for k in others if k in ARRAY_SPEC_KEYS or k == "data"]
        if array_like:
            raise InvalidArgumentError(
                f"create_hierarchy: the spec at {rel!r} has {_named(array_like)} but no "
                "'shape': an array spec needs 'shape' and 'dtype' (a group spec takes only "
                "'attributes')"
            )
        raise InvalidArgumentError(
            f"create_hierarchy: the group spec at {rel!r} has unknown key(s) {_named(others)}: "
            "a group spec takes only 'attributes' (an array spec needs 'shape' and 'dtype')"
        )
    if "data" in spec:
        raise InvalidArgumentError(
            f"create_hierarchy: the array spec at {rel!r} has 'data', but create_hierarchy "
            "writes metadata only: write the data into the array it returns, or use "
            "create_array(data=...)"
        )
    unknown = [k for k in spec if k not in ARRAY_SPEC_KEYS]
    if unknown:
        raise InvalidArgumentError(
            f"create_hierarchy: the array spec at {rel!r} has unknown key(s) "
            f"{_named(unknown)}; it takes create_array's arguments {_named(sorted(ARRAY_SPEC_KEYS))}"
        )
    if "dtype" not in spec:
        raise InvalidArgumentError(
            f"create_hierarchy: the array spec at {rel!r} has no 'dtype': an array spec "
            "needs 'shape' and 'dtype'"
        )
    return array_metadata_from_args(**{"zarr_format": zarr_format, **spec})


def _hierarchy_metadata(specs: Mapping[str, Any], zarr_format: int) -> dict[str, Any]:
    """The metadata of the nodes ``Group.create_hierarchy`` names, by relative path; two
    keys naming the same path (``"k"``, ``"/k/"``) are refused."""
    if not isinstance(specs, Mapping):
        raise ArgumentTypeError(
            "create_hierarchy: specs must be a mapping of relative paths to node specs, got "
            f"{type(specs).__name__}: {specs!r}"
        )
    metas: dict[str, Any] = {}
    keys: dict[str, Any] = {}
    for key, spec in specs.items():
        rel = nodes.normalize_path(key, zarr_format)
        if not rel:
            raise InvalidArgumentError("create_hierarchy: the group itself is not one of its nodes")
        if rel in keys:
            raise InvalidArgumentError(
                f"create_hierarchy: the keys {keys[rel]!r} and {key!r} both name the node "
                f"{rel!r}; give each node once"
            )
        keys[rel] = key
        meta = _spec_metadata(rel, spec, zarr_format)
        if meta.zarr_format != zarr_format:
            raise MetadataError(
                f"create_hierarchy: {rel!r} is v{meta.zarr_format}, group is v{zarr_format}"
            )
        metas[rel] = meta
    for rel in metas:
        for parent in nodes.ancestors(rel)[1:-1]:
            if hasattr(metas.get(parent), "shape"):
                raise NodeExistsError(
                    f"create_hierarchy: {parent!r} is an array, {rel!r} is below it"
                )
    return metas


def create_hierarchy(
    store: Any, root: str, specs: Mapping[str, Any], zarr_format: int, overwrite: bool
) -> dict[str, Any]:
    """Create the nodes of ``Group.create_hierarchy`` below the group at ``root``.

    One batched fetch tells what is already there (no request per node): an existing
    node named in ``specs`` is an error unless ``overwrite`` (then its subtree is cleared
    first, as zarr-python does); a missing parent group is created, an existing one kept
    as it is; an array where a parent group is needed is an error. All metadata is then
    written in one batch. Returns ``{relative path: metadata}`` of the nodes written.

    Example:
        >>> import torchzarr as tz
        >>> root = tz.open_group("memory://hierarchy-doc", mode="w")
        >>> sorted(create_hierarchy(root.store, "", {"a/x": {"shape": (2,), "dtype": "int8"}}, 3, False))
        ['a', 'a/x']
    """
    metas = _hierarchy_metadata(specs, zarr_format)
    named = set(metas)
    parents = sorted({p for rel in metas for p in nodes.ancestors(rel)[1:-1]} - named)
    where = {rel: nodes.join_path(root, rel) for rel in [*metas, *parents]}
    with nodes.node_lock(store, list(where.values())):
        v2_nodes = [where[rel] for rel in sorted(named)] if zarr_format == 2 else []
        docs = node_docs(store, list(where.values()), attributes_of=v2_nodes)
        for rel in parents:
            kind = nodes.stored_kind(where[rel], docs)
            if kind is None:
                metas[rel] = group_metadata(zarr_format, None)
            elif kind != "group":
                raise NodeExistsError(
                    f"create_hierarchy: {kind_phrase(kind)} exists at {where[rel]!r} in "
                    f"{store!r}, where nodes below it were to be created"
                )
            else:
                below = next(r for r in named if r.startswith(rel + "/"))
                new = metas[below]
                err = _format_mismatch(
                    store, where[rel], docs, where[below], new.zarr_format, _node_word(new)
                )
                if err is not None:
                    raise InvalidArgumentError(f"create_hierarchy: {err}")
        changes: list[Change] = []
        for rel in sorted(named):
            if overwrite and named.intersection(nodes.ancestors(rel)[1:-1]):
                continue  # cleared with the node above it
            try:
                mode = "w" if overwrite else "a"
                changes += prepare_path(store, where[rel], docs, mode, zarr_format)
            except NodeExistsError as err:
                raise NodeExistsError(
                    f"create_hierarchy: {err} (overwrite=True replaces it)"
                ) from None
        written = [(where[rel], meta) for rel, meta in metas.items()]
        write_documents(store, written, docs)
        refresh_consolidated(store, changes + written, frozenset(p for p, _ in written))
    return metas
