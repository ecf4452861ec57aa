"""``Group``: a node of the hierarchy holding arrays and other groups, with attributes."""

from __future__ import annotations

import functools
from collections.abc import Callable, ItemsView, Iterator, Mapping, ValuesView
from typing import Any

from torchzarr.core import group_args, nodes
from torchzarr.core.array import Array
from torchzarr.core.attributes import Attributes
from torchzarr.core.cache import invalidate_tree_everywhere
from torchzarr.core.consolidated import consolidated_children, direct_entries, refresh_consolidated
from torchzarr.core.group_args import check_assigned, check_depth, check_required_array
from torchzarr.core.group_views import (
    MemberItems,
    MemberValues,
    OneListing,
    tree_lines,
    walk_member_metadata,
    walk_members,
)
from torchzarr.core.info import GroupInfo
from torchzarr.core.node_base import NodeBase
from torchzarr.core.placement import create_hierarchy
from torchzarr.core.printable import printable
from torchzarr.errors import (
    CodecError,
    InvalidArgumentError,
    InvalidKeyError,
    MetadataError,
    NodeExistsError,
    NodeNotFoundError,
    ReadOnlyError,
)
from torchzarr.metadata.base import GroupMetadata
from torchzarr.metadata.consolidated import V2_CONSOLIDATED_KEY
from torchzarr.storage.base import validate_key

__all__ = ["Group", "node_from_metadata"]


def node_from_metadata(
    store: Any,
    path: str,
    metadata: Any,
    read_only: bool,
    consolidated: Mapping[str, Any] | None = None,
) -> Array | Group:
    """Wrap parsed metadata in an :class:`Array` or a :class:`Group`; a ``path`` that could
    leave the store's root (``..``, ``/x``) raises ``InvalidKeyError``."""
    if path:
        validate_key(path)  # chunk keys, and the file paths of local reads, start with it
    if _is_group_metadata(metadata):
        return Group(store, path, metadata, read_only=read_only, consolidated=consolidated)
    return Array(store, path, metadata, read_only=read_only)


def _is_group_metadata(metadata: Any) -> bool:
    return getattr(metadata, "node_type", None) == "group" or not hasattr(metadata, "shape")


class Group(NodeBase, Mapping[str, "Array | Group"]):
    """A Zarr group: a mapping of member names to arrays and groups.

    An array of a dtype torchzarr cannot hold as a tensor (strings, datetimes, as xarray
    writes them) is a member by name: ``keys()``, ``len()`` and ``in`` count it,
    ``group[name]`` and ``get(name)`` raise ``UnsupportedDtypeError`` naming it, and
    ``items()``, ``values()`` and :meth:`members` leave it out (``info.unsupported`` and
    :meth:`tree` name it). It can be deleted and replaced like any other member.

    Member keys are relative paths (``"a/b"``); ``""`` and ``"/"`` name the group itself,
    as in zarr-python. A name of a metadata document of the group's format (``zarr.json``
    in v3; ``.zarray``, ``.zgroup``, ``.zattrs``, ``.zmetadata`` in v2) names no member.

    Example:
        >>> import torchzarr as tz, torch
        >>> root = tz.open_group("memory://", mode="w")
        >>> _ = root.create_array("exp/x", shape=(4,), dtype=torch.int64, chunks=(2,))
        >>> sorted(root["exp"])
        ['x']
    """

    def __init__(
        self,
        store: Any,
        path: str,
        metadata: Any,
        *,
        read_only: bool = False,
        consolidated: Mapping[str, Any] | None = None,
    ) -> None:
        self._store = store
        self._path = path
        self._metadata = metadata
        self._read_only = read_only
        # {relative path: metadata} of every node below, when opened read-only from consolidated
        # metadata (a writable group lists the store: that copy would not follow its changes)
        self._consolidated = consolidated if read_only else None
        self._listing = OneListing()  # ``list(group)`` lists once

    def __getstate__(self) -> dict[str, Any]:
        # the spec only (the store pickles as its own spec): nothing of this process
        names = ("_store", "_path", "_metadata", "_read_only", "_consolidated")
        return {name: self.__dict__[name] for name in names}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _listing=OneListing())

    # -- description (store, path, names, metadata: NodeBase) --------------------------------
    @property
    def attrs(self) -> Attributes:
        """User attributes, persisted as JSON on every change."""
        return Attributes(lambda: self._metadata.attributes, self._change_attributes)

    def _change_attributes(self, change: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        """Apply ``change`` to the attributes as stored, under the node's lock (a concurrent
        change through any Group object in this process is kept), and write the group."""
        self._check_writable()
        with nodes.node_lock(self._store, [self._path]):
            stored = self._stored_metadata()  # refuses a group deleted or now an array
            self._metadata = stored.evolve(attributes=change(dict(stored.attributes)))
            nodes.write_node(self._store, self._path, self._metadata)
            refresh_consolidated(self._store, [(self._path, self._metadata)])

    def _check_writable(self) -> None:
        self._listing.forget()  # before every change: a listing kept for a len() is stale
        if self._read_only:
            raise ReadOnlyError(f"group {self.name} in {self._store!r} is read-only")

    def __repr__(self) -> str:
        ro = " read-only" if self._read_only else ""
        return f"<torchzarr.Group {self._store!r} {self.name}{ro}>"

    # -- members ----------------------------------------------------------------------------
    def _relative(self, key: object) -> str:
        """``key`` as a checked path relative to this group, ``""`` for the group itself."""
        if not isinstance(key, str):
            raise InvalidKeyError(f"member keys are str, got {type(key).__name__}: {key!r}")
        return nodes.normalize_path(key, self.zarr_format)

    def _child_path(self, key: str) -> str:
        """The path of member ``key``, to create, replace or delete: never the group itself
        (``""``, ``"/"``), which replacing would wipe with everything below it."""
        rel = self._relative(key)
        if not rel:
            raise InvalidArgumentError(
                f"{key!r} names group {self.name} itself, not a member: a group cannot replace "
                "or delete itself; do that from its parent group (or clear it with mode='w')"
            )
        return nodes.join_path(self._path, rel)

    def _fetch_children(self) -> tuple[list[str], dict[str, Any]]:
        """Names below this group, and their metadata documents, fetched in one batch."""
        prefix = self._path + "/" if self._path else ""
        _, listed = self._store.list_dir(prefix)
        # a name of a metadata document of this format is none (a v2 ".zattrs" directory),
        # nor one no key can spell ("..", "" from a stray "/x", "x\\y")
        names = [name for name in listed if nodes.names_a_node(name, self.zarr_format)]
        # only this group's format: a member of the other one is none of its members
        keys = [
            k
            for name in names
            for k in nodes.node_keys(nodes.join_path(self._path, name), self.zarr_format)
        ]
        return names, self._store.get_many(keys)

    def _child_kinds(self) -> dict[str, str]:
        """The kind of every direct child (``nodes.stored_kind``): its metadata unparsed,
        so one child of a codec or extension torchzarr lacks does not hide the others."""
        if self._consolidated is not None:
            return {
                rel: "group" if isinstance(m, GroupMetadata) else "array"
                for rel, m in direct_entries(self._consolidated, self.zarr_format).items()
            }
        names, found = self._fetch_children()
        paths = {name: nodes.join_path(self._path, name) for name in names}
        kinds = {name: nodes.stored_kind(paths[name], found) for name in names}
        return {name: kind for name, kind in kinds.items() if kind is not None}

    def _children(self, keep_errors: bool = False) -> dict[str, Any]:
        """Metadata of every direct child, fetched in one batch; with ``keep_errors`` a
        child whose metadata cannot be parsed maps to the error (naming it) instead."""
        if self._consolidated is not None:
            return direct_entries(self._consolidated, self.zarr_format)
        names, found = self._fetch_children()
        children = {}
        for name in names:
            try:
                meta = nodes.parse_member(nodes.join_path(self._path, name), found, self._store)
            except (MetadataError, CodecError) as err:
                if not keep_errors:
                    raise
                meta = err
            if meta is not None:
                children[name] = meta
        return children

    def _node(self, rel: str, meta: Any) -> Array | Group:
        if isinstance(meta, nodes.UnsupportedArray):
            raise meta.error()
        path = nodes.join_path(self._path, rel)
        below = self._consolidated if not rel else None  # the group itself: all of them
        if rel and self._consolidated is not None and not hasattr(meta, "shape"):
            # a subgroup's share of the entries (an array has none), found by bisection:
            # a scan of every entry per node made opening a checkpoint's nodes quadratic
            keys = self.__dict__.get("_consolidated_keys")
            if keys is None:
                keys = self.__dict__["_consolidated_keys"] = sorted(self._consolidated)
            below = consolidated_children(self._consolidated, rel, keys)
        return node_from_metadata(self._store, path, meta, self._read_only, below)

    def __getitem__(self, key: str) -> Array | Group:
        rel = self._relative(key)
        if self._consolidated is not None:
            meta = self._consolidated.get(rel) if rel else self._metadata
        else:
            path = nodes.join_path(self._path, rel)
            meta = nodes.read_member(self._store, path, self.zarr_format)
        if meta is None:
            raise NodeNotFoundError(f"no array or group at {key!r} in group {self.name}")
        return self._node(rel, meta)

    def get(self, key: str, default: Any = None) -> Any:  # Mapping.get catches KeyError too
        """The member at ``key``, or ``default``: also for a name no member can have (one
        of the format's metadata documents, ``..``), as ``in`` answers False for it; a
        key that is not a str is an error.

        Example:
            >>> import torchzarr as tz
            >>> root = tz.open_group("memory://group-get-doc", mode="w")
            >>> root.get("zarr.json", "none"), root.get("missing") is None
            ('none', True)
        """
        try:
            return self[key]
        except NodeNotFoundError:
            return default
        except InvalidKeyError:
            if not isinstance(key, str):
                raise
            return default

    def __contains__(self, key: object) -> bool:
        try:
            rel = self._relative(key)
        except InvalidKeyError:
            return False  # a key no member can have, as zarr-python answers
        if not rel:
            return True  # the group itself, as ``self[""]``
        if self._consolidated is not None:
            return rel in self._consolidated
        path = nodes.join_path(self._path, rel)
        return nodes.read_kind(self._store, path, self.zarr_format) is not None

    def __iter__(self) -> Iterator[str]:
        return self._listing.iterate(sorted(self._child_kinds()))

    def __len__(self) -> int:
        return self._listing.count(self._child_kinds)

    def items(self) -> ItemsView[str, Array | Group]:
        """``(name, node)`` of the direct members, as :meth:`members` (an array of a dtype
        torchzarr cannot hold is left out; ``keys()`` names it), in one listing.

        Example:
            >>> [name for name, _ in root.items()]  # doctest: +SKIP
            ['exp']
        """
        return MemberItems(self, self._listing)

    def values(self) -> ValuesView[Array | Group]:
        """The direct member nodes, as :meth:`items`.

        Example:
            >>> [type(node).__name__ for node in root.values()]  # doctest: +SKIP
            ['Group']
        """
        return MemberValues(self, self._listing)

    def members(self, max_depth: int | None = 0) -> tuple[tuple[str, Array | Group], ...]:
        """``(relative path, node)`` pairs, sorted; ``max_depth=None`` walks the whole tree.

        Arrays of dtypes torchzarr cannot hold (strings, datetimes) are left out: the group
        still lists their names, and opening one raises ``UnsupportedDtypeError``.

        Example:
            >>> [name for name, _ in root.members(max_depth=None)]  # doctest: +SKIP
            ['exp', 'exp/x']
        """
        return walk_members(self, check_depth("max_depth", max_depth))

    def member_metadata(self) -> list[tuple[str, Any]]:
        """``(relative path, metadata)`` of every node below, sorted, arrays of dtypes
        torchzarr cannot hold included (as ``nodes.UnsupportedArray``): what consolidation
        writes.

        Example:
            >>> [rel for rel, _ in root.member_metadata()]  # doctest: +SKIP
            ['exp', 'exp/x']
        """
        return walk_member_metadata(self)

    def arrays(self) -> Iterator[tuple[str, Array]]:
        """Direct member arrays, as ``(name, array)``."""
        for name, node in self.members():
            if isinstance(node, Array):
                yield name, node

    def groups(self) -> Iterator[tuple[str, Group]]:
        """Direct member groups, as ``(name, group)``."""
        for name, node in self.members():
            if isinstance(node, Group):
                yield name, node

    def array_keys(self) -> list[str]:
        """Names of the member arrays."""
        return [name for name, _ in self.arrays()]

    def group_keys(self) -> list[str]:
        """Names of the member groups."""
        return [name for name, _ in self.groups()]

    # -- creation ---------------------------------------------------------------------------
    def create_group(
        self, name: str, *, overwrite: bool = False, attributes: dict[str, Any] | None = None
    ) -> Group:
        """Create a member group (parents too); refuse an existing node unless ``overwrite``."""
        from torchzarr.core.api import create_group

        self._check_writable()
        return create_group(
            self._store,
            path=self._child_path(name),
            zarr_format=self.zarr_format,
            overwrite=overwrite,
            attributes=attributes,
        )

    def require_group(self, name: str) -> Group:
        """The member group at ``name`` (``"a/b/c"`` allowed), created with its parents if absent.

        Example:
            >>> root.require_group("exp1/run2").path  # doctest: +SKIP
            'exp1/run2'
        """
        from torchzarr.core.api import _create_or_open_raced

        path = self._child_path(name)
        meta = nodes.read_node(self._store, path, self.zarr_format)
        if meta is not None:
            node = node_from_metadata(self._store, path, meta, self._read_only)
            if isinstance(node, Array):
                raise NodeExistsError(f"an array exists at {name!r} in group {self.name}")
            return node
        return _create_or_open_raced(  # another thread may create it first: opened then
            lambda: self.create_group(name), self._store, path, self.zarr_format, "a", Group
        )

    def create_array(self, name: str, **kwargs: Any) -> Array:
        """Create a member array; takes the arguments of :func:`torchzarr.create_array`."""
        from torchzarr.core.api import create_array

        self._check_writable()
        options = group_args.member_array_options(kwargs, self.zarr_format)
        return create_array(self._store, path=self._child_path(name), **options)

    def require_array(self, name: str, **kwargs: Any) -> Array:
        """The member array at ``name``, created if absent; an existing one must have the
        shape and dtype asked (``shape=``/``dtype=``, else ``data``'s; its data is kept).

        Example:
            >>> root.require_array("x", data=torch.zeros(4)).shape  # doctest: +SKIP
            (4,)
        """
        from torchzarr.core.api import _create_or_open_raced

        path = self._child_path(name)
        meta = nodes.read_node(self._store, path, self.zarr_format)
        if meta is None:  # another thread may create it first: opened then, if it fits
            create = functools.partial(self.create_array, name, **kwargs)
            fits = functools.partial(check_required_array, kwargs=kwargs)
            st, fmt = self._store, self.zarr_format
            return _create_or_open_raced(create, st, path, fmt, "a", Array, fits)
        node = node_from_metadata(self._store, path, meta, self._read_only)
        if not isinstance(node, Array):
            raise NodeExistsError(f"a group exists at {name!r} in group {self.name}")
        check_required_array(node, kwargs)
        return node

    def __setitem__(self, key: str, value: Any) -> None:
        """``group[name] = data``: a new array holding ``data`` (a tensor, numpy array or
        list), replacing any node at ``name`` (as zarr-python's groups do).

        Example:
            >>> root["labels"] = torch.tensor([0, 1, 1])  # doctest: +SKIP
        """
        check_assigned(key, value)
        self.create_array(key, data=value, overwrite=True)

    @property
    def info(self) -> GroupInfo:
        """A summary: format, store, direct member arrays and groups, attributes.

        Example:
            >>> print(root.info)  # doctest: +SKIP
        """
        children = sorted(self._children(keep_errors=True).items())  # one listing for all
        odd = {n: m for n, m in children if isinstance(m, nodes.UnsupportedArray)}
        unsupported = tuple(n for n, m in odd.items() if m.is_dtype)
        unreadable = tuple(  # as tree(): an unknown codec's, malformed metadata
            n for n, m in children if isinstance(m, Exception) or (n in odd and not m.is_dtype)
        )
        supported = [(n, m) for n, m in children if n not in unsupported + unreadable]
        groups = tuple(n for n, m in supported if _is_group_metadata(m))
        arrays = tuple(n for n, m in supported if not _is_group_metadata(m))
        consolidated = (
            self._consolidated is not None
            or bool(getattr(self._metadata, "consolidated_metadata", None))
            or (
                self.zarr_format == 2
                and self._store.exists(nodes.join_path(self._path, V2_CONSOLIDATED_KEY))
            )
        )
        return GroupInfo(
            name=self.name,
            zarr_format=self.zarr_format,
            store=repr(self._store),
            read_only=self._read_only,
            arrays=arrays,
            groups=groups,
            unsupported=unsupported,
            unsupported_metadata=unreadable,
            attributes=tuple(sorted(self.attrs)),
            consolidated=consolidated,
        )

    def nmembers(self, max_depth: int | None = 0) -> int:
        """How many members :meth:`members` lists with the same ``max_depth``.

        Example:
            >>> root.nmembers(max_depth=None)  # exp and exp/x  # doctest: +SKIP
            2
        """
        return len(self.members(max_depth))

    def __delitem__(self, key: str) -> None:
        self._check_writable()
        path = self._child_path(key)
        with nodes.node_lock(self._store, [path]):
            # its kind only: an array of a dtype torchzarr cannot hold is deleted too
            if nodes.read_kind(self._store, path, self.zarr_format) is None:
                raise NodeNotFoundError(f"no array or group at {key!r} in group {self.name}")
            self._store.delete_prefix(path + "/")
            invalidate_tree_everywhere(self._store.identity, path)  # cached chunks of the node
            refresh_consolidated(self._store, [(path, None)])

    def create_hierarchy(
        self, specs: Mapping[str, Any], *, overwrite: bool = False
    ) -> dict[str, Array | Group]:
        """Create many nodes, writing all their metadata in one batch.

        ``specs`` maps relative paths to array metadata, group metadata, or dicts: a dict
        with ``shape`` holds :func:`create_array` arguments (``dtype`` too; no ``data``:
        only metadata is written), any other dict (``{}`` or ``{"attributes": ...}``) makes
        a group. Any other key, or two keys naming one path (``"k"``, ``"/k/"``), raises
        ``InvalidArgumentError`` naming them. Missing parent groups are created too,
        existing ones kept. A node already at a path of ``specs`` raises
        ``NodeExistsError`` unless ``overwrite`` (then it is deleted, with everything below
        it, first), as in zarr-python; so does an array where a parent group is needed.

        Example:
            >>> nodes = root.create_hierarchy({"a": {}, "a/x": {"shape": (3,), "dtype": "int8"}})  # doctest: +SKIP
        """
        self._check_writable()
        metas = create_hierarchy(self._store, self._path, specs, self.zarr_format, overwrite)
        return {
            rel: node_from_metadata(self._store, nodes.join_path(self._path, rel), meta, False)
            for rel, meta in metas.items()
        }

    # -- display ----------------------------------------------------------------------------
    def tree(self, level: int | None = None) -> str:
        """The hierarchy below this group as text, ``[G]`` for groups, ``[A]`` for arrays.

        ``level`` is the deepest level shown, as zarr-python's: 0 shows the direct members
        only, 1 their members too; None shows everything. A member torchzarr cannot open
        (a dtype it cannot hold, metadata it cannot read) is shown and marked so.

        Example:
            >>> print(root.tree())  # doctest: +SKIP
            /
            └── exp [G]
                └── x [A] (4,) torch.int64
        """
        level = check_depth("level", level)
        lines = [printable(self.name) if self._path else "/"]
        tree_lines(self, lines, "", level)
        return "\n".join(lines)
