"""Whether two stores' data overlap on disk: a zip, SQLite or LMDB file inside a directory store's directory."""

from __future__ import annotations

import os
import re

from torchzarr.errors import InvalidArgumentError
from torchzarr.storage.base import Store
from torchzarr.storage.locations import location

__all__ = ["refuse_overlap"]

#: a store's location on the local disk: a directory (``file``) or a file holding all keys
_ON_DISK = re.compile(r"(file|zip|sqlite|lmdb)://(/.*)")


def refuse_overlap(verb: str, source: Store, path: str, dest: Store, where: str) -> None:
    """Refuse, before anything is written, to ``verb`` the node at ``path`` of ``source`` to
    ``where`` of ``dest`` when one is a zip, SQLite or LMDB file (or LMDB directory) that
    lies inside the other's directory, or both are the same file: writing would change the
    data read (a re-run would copy the old zip into the new one). Two directory stores, or
    two stores of one file, are left to the copy's own check of their locations.

    Example:
        >>> from torchzarr.storage.local import LocalStore
        >>> from torchzarr.storage.zip import ZipStore
        >>> try:
        ...     refuse_overlap("copy", LocalStore("/d/a.zarr"), "", ZipStore("/d/a.zarr/b.zip"), "")
        ... except InvalidArgumentError as err:
        ...     print(str(err).rpartition(": ")[2])
        the two overlap (the same data, or one inside the other)
    """
    here, there = _on_disk(source, path), _on_disk(dest, where)
    if here is None or there is None or source.identity == dest.identity:
        return
    if here[0] == there[0] == "file":  # directories: the copy compares their locations
        return
    inside = os.path.commonpath([here[1], there[1]]) in (here[1], there[1])
    if inside:
        path, where = path.strip("/"), where.strip("/")
        raise InvalidArgumentError(
            f"cannot {verb} {path or '/'!r} of {source!r} onto {where or '/'!r} of {dest!r}: "
            "the two overlap (the same data, or one inside the other)"
        )


def _on_disk(store: Store, path: str) -> tuple[str, str] | None:
    """The kind (``file``: a directory) and the real path on disk of the node at ``path``
    of ``store``: a file store's file, whatever the path in it; None off the local disk."""
    found = _ON_DISK.fullmatch(location(store.identity, ""))
    if found is None:
        return None
    kind, where = found.groups()
    if kind == "file" and path.strip("/"):
        where = os.path.join(where, *path.strip("/").split("/"))
    return kind, where
