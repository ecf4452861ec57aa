"""What arrays and groups share: where they live, their names, metadata and attribute updates."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self

from torchzarr.core.nodes import node_lock, read_node
from torchzarr.errors import ArgumentTypeError, ArrayNotFoundError, GroupNotFoundError
from torchzarr.metadata.base import ArrayMetadata
from torchzarr.storage.locations import location

__all__ = ["NodeBase"]


class NodeBase:
    """The description every node (:class:`~torchzarr.Array`, :class:`~torchzarr.Group`) has.

    Subclasses set ``_store``, ``_path``, ``_metadata`` and ``_read_only`` and provide
    ``attrs``.

    Example:
        >>> import torchzarr as tz
        >>> g = tz.open_group("memory://", mode="w").require_group("a/b")
        >>> g.name, g.basename, g.zarr_format
        ('/a/b', 'b', 3)
    """

    _store: Any
    _path: str
    _metadata: Any
    _read_only: bool

    @property
    def attrs(self) -> Any:
        raise NotImplementedError  # pragma: no cover - every node class defines it

    def __eq__(self, other: object) -> bool:
        """Two handles of one node: of the same kind, where the data lies (whatever store
        object or group reached it), and with equal metadata, as zarr-python compares them.

        Example:
            >>> import torchzarr as tz
            >>> g = tz.open_group("memory://", mode="w"); _ = g.create_group("a")
            >>> g["a"] == g["a"], g["a"] in g.values()
            (True, True)
        """
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, NodeBase)
        return self._where == other._where and self._metadata == other._metadata

    def __hash__(self) -> int:
        return hash(self._where)

    @property
    def _where(self) -> str:
        return location(self._store.identity, self._path)

    @property
    def store(self) -> Any:
        """The store holding the node."""
        return self._store

    @property
    def path(self) -> str:
        """Path inside the store (``""`` for the root)."""
        return self._path

    @property
    def name(self) -> str:
        """Absolute name in the hierarchy, e.g. ``/a/b`` (``/`` for the root)."""
        return "/" + self._path

    @property
    def basename(self) -> str:
        """Last component of the path."""
        return self._path.rsplit("/", 1)[-1]

    @property
    def metadata(self) -> Any:
        """The parsed metadata (``ArrayMetadataV2/V3`` or ``GroupMetadataV2/V3``)."""
        return self._metadata

    @property
    def zarr_format(self) -> int:
        """2 or 3."""
        return int(self._metadata.zarr_format)

    @property
    def read_only(self) -> bool:
        """True when the node was opened read-only."""
        return self._read_only

    def _stored_metadata(self) -> Any:
        """The node's metadata as stored now, for a metadata change through this handle
        (attributes, resize, append) to start from. It is read under the node's lock, so
        never in the middle of a replacement in progress in this process (``overwrite=True``
        deletes the old node, then writes the new one); a read-modify-write holds the lock
        around the whole change. Element writes do not call it: they are not checked.

        Raises:
            ArrayNotFoundError, GroupNotFoundError: since the handle was opened, the node
                was deleted, or replaced by a node of the other kind: the metadata change
                would bring the deleted node back, or write over the new one (its
                attributes, or a resize clearing chunks among its members').
        """
        with node_lock(self._store, [self._path]):  # reentrant: a caller may hold it
            stored = read_node(self._store, self._path, self.zarr_format)
        is_array = isinstance(self._metadata, ArrayMetadata)
        if stored is not None and isinstance(stored, ArrayMetadata) == is_array:
            return stored
        kind = "array" if is_array else "group"
        if stored is None:
            happened = "deleted"
        else:
            happened = (
                f"replaced by {'an array' if isinstance(stored, ArrayMetadata) else 'a group'}"
            )
        error = ArrayNotFoundError if is_array else GroupNotFoundError
        raise error(
            f"no {kind} at {self._path or '/'!r} in {self._store!r} any more: since this "
            f"handle was opened, the {kind} was {happened}; nothing was written (open the "
            "node again)"
        )

    def update_attributes(self, new_attributes: Mapping[str, Any]) -> Self:
        """Merge ``new_attributes`` into the attributes (one metadata write); returns self.

        Example:
            >>> import torchzarr as tz
            >>> dict(tz.create_array("memory://", shape=(2,), dtype="int8")
            ...      .update_attributes({"units": "m"}).attrs)
            {'units': 'm'}
        """
        if not isinstance(new_attributes, Mapping):
            raise ArgumentTypeError(
                f"new_attributes must be a mapping of str keys to JSON values, got "
                f"{type(new_attributes).__name__}: {new_attributes!r}; nothing was written"
            )
        self.attrs.update(new_attributes)
        return self
