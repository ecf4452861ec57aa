"""What arrays and groups share: where they live, their names, metadata and attribute updates."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self

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

    def update_attributes(self, new_attributes: Mapping[str, Any]) -> Self:
        """Merge ``new_attributes`` into the attributes (one metadata write); returns self.

        Example:
            >>> import torchzarr as tz
            >>> dict(tz.create_array("memory://", shape=(2,), dtype="int8")
            ...      .update_attributes({"units": "m"}).attrs)
            {'units': 'm'}
        """
        self.attrs.update(new_attributes)
        return self
