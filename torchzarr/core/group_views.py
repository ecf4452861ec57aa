"""Read-only views of a group's members: ``items()``, ``values()`` and the text ``tree()``."""

from __future__ import annotations

from collections.abc import Callable, ItemsView, Iterable, Iterator, Sized, ValuesView
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from torchzarr.core import nodes
from torchzarr.core.array import Array
from torchzarr.core.info import stored_dtype_name
from torchzarr.core.printable import printable

if TYPE_CHECKING:
    from torchzarr.core.group import Group

__all__ = [
    "MemberItems",
    "MemberValues",
    "OneListing",
    "tree_lines",
    "walk_member_metadata",
    "walk_members",
]

T = TypeVar("T")


class OneListing:
    """A listing made for an iteration, kept for the ``len()`` that ``list()`` asks before
    the first item (one listing, not two: on an object store, a listing and a request per
    member). Once the iteration has begun, or after a change to the group (:meth:`forget`,
    on this listing or the group's it ``follows``), ``len()`` lists anew.

    Example:
        >>> once = OneListing()
        >>> items = once.iterate(("a", "b"))
        >>> once.count(lambda: ("listed", "again", "!"))
        2
        >>> once.count(lambda: ("listed", "again", "!"))
        3
    """

    def __init__(self, follows: OneListing | None = None) -> None:
        self._kept: Sized | None = None
        self._kept_at = 0  # the changes counted when it was kept
        self._follows = follows
        self.changes = 0  # calls of forget(): a listing kept before one is stale

    def _changes(self) -> int:
        """The changes counted by the group's listing (this one, or the one it follows)."""
        return (self._follows or self).changes

    def forget(self) -> None:
        """Drop the kept listing: the group is about to change."""
        self._kept = None
        self.changes += 1

    def iterate(self, listed: Iterable[T]) -> Iterator[T]:
        """An iterator over ``listed``, kept for a ``count`` until its first item."""
        listed = tuple(listed)
        self._kept, self._kept_at = listed, self._changes()
        return self._walk(listed)

    def _walk(self, listed: tuple[T, ...]) -> Iterator[T]:
        if self._kept is listed:
            self._kept = None
        yield from listed

    def count(self, listing: Callable[[], Sized]) -> int:
        """The length of the kept listing if an iteration has not begun and the group has
        not changed since, else of a new listing."""
        kept, self._kept = self._kept, None
        if kept is None or self._kept_at != self._changes():
            kept = listing()
        return len(kept)


class MemberItems(ItemsView[str, "Array | Group"]):
    """``group.items()``: the members that open, from one listing.

    Example:
        >>> import torchzarr as tz
        >>> root = tz.open_group("memory://", mode="w")
        >>> _ = root.require_group("exp")
        >>> [name for name, _ in MemberItems(root)]
        ['exp']
    """

    def __init__(self, group: Group, follows: OneListing | None = None) -> None:
        super().__init__(group)
        self._group = group
        self._listing = OneListing(follows)  # kept no longer than the group's own (writes)

    def __iter__(self) -> Iterator[tuple[str, Array | Group]]:
        return self._listing.iterate(self._group.members())

    def __len__(self) -> int:
        return self._listing.count(self._group.members)

    def __contains__(self, item: object) -> bool:
        return any(item == pair for pair in self)


class MemberValues(ValuesView["Array | Group"]):
    """``group.values()``: the member nodes that open, from one listing.

    Example:
        >>> import torchzarr as tz
        >>> root = tz.open_group("memory://", mode="w")
        >>> _ = root.require_group("exp")
        >>> [node.name for node in MemberValues(root)]
        ['/exp']
    """

    def __init__(self, group: Group, follows: OneListing | None = None) -> None:
        super().__init__(group)
        self._group = group
        self._listing = OneListing(follows)  # kept no longer than the group's own (writes)

    def __iter__(self) -> Iterator[Array | Group]:
        return self._listing.iterate(node for _, node in self._group.members())

    def __len__(self) -> int:
        return self._listing.count(self._group.members)

    def __contains__(self, value: object) -> bool:
        return any(value is node or value == node for node in self)


def tree_lines(group: Group, lines: list[str], indent: str, level: int | None) -> None:
    """Append the lines of ``group.tree(level)`` below its own name to ``lines``, each
    after ``indent``: a member torchzarr cannot open is shown and marked so, names
    :func:`~torchzarr.core.printable.printable`. A stack of its own: no depth of groups
    exhausts Python's.

    Example:
        >>> import torchzarr as tz
        >>> root = tz.open_group("memory://", mode="w")
        >>> _ = root.create_array("x", shape=(2,), dtype="int8")
        >>> lines = []
        >>> tree_lines(root, lines, "", None)
        >>> lines
        ['└── x [A] (2,) torch.int8']
    """
    stack = [_Shown(group, indent, level, _shown_children(group))]
    while stack:
        top = stack[-1]
        item = next(top.children, None)
        if item is None:
            stack.pop()
            continue
        last, name, meta = item
        line = f"{top.indent}{'└── ' if last else '├── '}{printable(name)}"
        if isinstance(meta, nodes.UnsupportedArray) and not meta.is_dtype:
            meta = meta.error()  # shown as the error: an unknown codec's
        if isinstance(meta, nodes.UnsupportedArray):
            lines.append(
                f"{line} [A] unsupported dtype {printable(stored_dtype_name(meta.document))}"
            )
            continue
        if isinstance(meta, Exception):
            lines.append(f"{line} [?] unsupported: {printable(meta)}")
            continue
        node = top.group._node(name, meta)
        if isinstance(node, Array):
            lines.append(f"{line} [A] {node.shape} {node.dtype}")
            continue
        lines.append(f"{line} [G]")
        if top.level is None or top.level > 0:
            sub = top.indent + ("    " if last else "│   ")
            deeper = None if top.level is None else top.level - 1
            stack.append(_Shown(node, sub, deeper, _shown_children(node)))


def _shown_children(group: Group) -> Iterator[tuple[bool, str, Any]]:
    """``(last, name, metadata or error)`` of the children of ``group``, sorted."""
    children = sorted(group._children(keep_errors=True).items())
    return ((i == len(children) - 1, name, meta) for i, (name, meta) in enumerate(children))


class _Shown(NamedTuple):
    """A group on the stack of :func:`tree_lines`: what is left of its children."""

    group: Group
    indent: str
    level: int | None
    children: Iterator[tuple[bool, str, Any]]


def walk_members(group: Group, max_depth: int | None) -> tuple[tuple[str, Array | Group], ...]:
    """``group.members(max_depth)``: ``(relative path, node)`` depth first, each group's
    members sorted and right after it; a stack of its own, so no depth of groups exhausts
    Python's.

    Example:
        >>> import torchzarr as tz
        >>> root = tz.open_group("memory://", mode="w")
        >>> _ = root.create_array("exp/x", shape=(2,), dtype="int8")
        >>> [rel for rel, _ in walk_members(root, None)]
        ['exp', 'exp/x']
    """
    out: list[tuple[str, Array | Group]] = []

    def visit(parent: Group, name: str, rel: str, meta: Any) -> Group | None:
        if isinstance(meta, nodes.UnsupportedArray):
            return None
        node = parent._node(name, meta)
        out.append((rel, node))
        return None if isinstance(node, Array) else node

    _walk(group, max_depth, visit)
    return tuple(out)


def walk_member_metadata(group: Group) -> list[tuple[str, Any]]:
    """``group.member_metadata()``: ``(relative path, metadata)`` of every node below,
    in the order of :func:`walk_members`, arrays of dtypes torchzarr cannot hold
    included (as ``nodes.UnsupportedArray``).

    Example:
        >>> import torchzarr as tz
        >>> root = tz.open_group("memory://", mode="w")
        >>> _ = root.create_array("exp/x", shape=(2,), dtype="int8")
        >>> [rel for rel, _ in walk_member_metadata(root)]
        ['exp', 'exp/x']
    """
    out: list[tuple[str, Any]] = []

    def visit(parent: Group, name: str, rel: str, meta: Any) -> Group | None:
        out.append((rel, meta))
        if isinstance(meta, nodes.UnsupportedArray) or hasattr(meta, "shape"):
            return None  # an array
        sub = parent._node(name, meta)
        assert not isinstance(sub, Array)
        return sub

    _walk(group, None, visit)
    return out


def _walk(
    group: Group, max_depth: int | None, visit: Callable[[Group, str, str, Any], Group | None]
) -> None:
    """Call ``visit(parent, name, relative path, metadata)`` for each node below ``group``, depth
    first, each group's children sorted and right after it; ``visit`` returns the group to
    walk into (None: none). A stack of its own: no depth of groups exhausts Python's."""
    stack = [_Walked(group, "", max_depth, iter(sorted(group._children().items())))]
    while stack:
        top = stack[-1]
        item = next(top.children, None)
        if item is None:
            stack.pop()
            continue
        name, meta = item
        rel = top.prefix + name
        sub = visit(top.group, name, rel, meta)
        if sub is not None and (top.depth is None or top.depth > 0):
            deeper = None if top.depth is None else top.depth - 1
            stack.append(_Walked(sub, f"{rel}/", deeper, iter(sorted(sub._children().items()))))


class _Walked(NamedTuple):
    """A group on the stack of a walk: what is left of its children."""

    group: Group
    prefix: str  # its path relative to the group walked, with a trailing "/"
    depth: int | None  # how many levels more below it are walked; None: all
    children: Iterator[tuple[str, Any]]
