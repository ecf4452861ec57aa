"""Read-only views of a group's members: ``items()``, ``values()`` and the text ``tree()``."""

from __future__ import annotations

from collections.abc import Callable, ItemsView, Iterable, Iterator, Sized, ValuesView
from typing import TYPE_CHECKING, TypeVar

from torchzarr.core import nodes
from torchzarr.core.array import Array
from torchzarr.core.info import stored_dtype_name

if TYPE_CHECKING:
    from torchzarr.core.group import Group

__all__ = ["MemberItems", "MemberValues", "OneListing", "tree_lines"]

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
    after ``indent``: a member torchzarr cannot open is shown and marked so.

    Example:
        >>> import torchzarr as tz
        >>> root = tz.open_group("memory://", mode="w")
        >>> _ = root.create_array("x", shape=(2,), dtype="int8")
        >>> lines = []
        >>> tree_lines(root, lines, "", None)
        >>> lines
        ['└── x [A] (2,) torch.int8']
    """
    children = sorted(group._children(keep_errors=True).items())
    for i, (name, meta) in enumerate(children):
        last = i == len(children) - 1
        branch = "└── " if last else "├── "
        if isinstance(meta, nodes.UnsupportedArray) and not meta.is_dtype:
            meta = meta.error()  # shown as the error: an unknown codec's
        if isinstance(meta, nodes.UnsupportedArray):
            dtype = stored_dtype_name(meta.document)
            lines.append(f"{indent}{branch}{name} [A] unsupported dtype {dtype}")
            continue
        if isinstance(meta, Exception):
            lines.append(f"{indent}{branch}{name} [?] unsupported: {meta}")
            continue
        node = group._node(name, meta)
        if isinstance(node, Array):
            lines.append(f"{indent}{branch}{name} [A] {node.shape} {node.dtype}")
            continue
        lines.append(f"{indent}{branch}{name} [G]")
        if level is None or level > 0:
            sub = indent + ("    " if last else "│   ")
            tree_lines(node, lines, sub, None if level is None else level - 1)
