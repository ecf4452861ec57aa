"""Read-only views of a group's members: ``items()``, ``values()`` and the text ``tree()``."""

from __future__ import annotations

from collections.abc import ItemsView, Iterator, ValuesView
from typing import TYPE_CHECKING

from torchzarr.core import nodes
from torchzarr.core.array import Array
from torchzarr.core.info import stored_dtype_name

if TYPE_CHECKING:
    from torchzarr.core.group import Group

__all__ = ["MemberItems", "MemberValues", "tree_lines"]


class MemberItems(ItemsView[str, "Array | Group"]):
    """``group.items()``: the members that open, from one listing.

    Example:
        >>> import torchzarr as tz
        >>> root = tz.open_group("memory://", mode="w")
        >>> _ = root.require_group("exp")
        >>> [name for name, _ in MemberItems(root)]
        ['exp']
    """

    def __init__(self, group: Group) -> None:
        super().__init__(group)
        self._group = group
        self._counted: tuple[tuple[str, Array | Group], ...] | None = None

    def __iter__(self) -> Iterator[tuple[str, Array | Group]]:
        return iter(_listed(self))

    def __len__(self) -> int:
        kept, self._counted = self._counted, None
        return len(kept if kept is not None else self._group.members())

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

    def __init__(self, group: Group) -> None:
        super().__init__(group)
        self._group = group
        self._counted: tuple[tuple[str, Array | Group], ...] | None = None

    def __iter__(self) -> Iterator[Array | Group]:
        return (node for _, node in _listed(self))

    def __len__(self) -> int:
        kept, self._counted = self._counted, None
        return len(kept if kept is not None else self._group.members())

    def __contains__(self, value: object) -> bool:
        return any(value is node or value == node for node in self)


def _listed(view: MemberItems | MemberValues) -> tuple[tuple[str, Array | Group], ...]:
    """The group's members, listed for an iteration of ``view`` and kept for the ``len()``
    that ``list(view)`` asks right after (one listing, not two: on an object store, a
    listing and a request per member)."""
    view._counted = listed = view._group.members()
    return listed


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
