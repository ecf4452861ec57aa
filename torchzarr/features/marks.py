"""The feature arrays' marker: which arrays a store made (and may delete), v2 markers first."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Collection

from torchzarr.core.array import Array
from torchzarr.core.create import XARRAY_DIMENSIONS
from torchzarr.core.group import Group
from torchzarr.errors import NodeExistsError, TorchZarrError
from torchzarr.features.rows import IDS
from torchzarr.storage.locations import location

__all__ = ["FEATURE_ATTRIBUTE", "clear_lone_markers", "create_marked", "is_own_feature"]

#: feature array attribute: the store id of the feature store that made the array (null in
#: stores made before store ids): only such arrays are ever deleted by the store
FEATURE_ATTRIBUTE = "feature_store_id"

_CLEARED: set[tuple[str, str | None]] = set()  # (group location, store id) swept here


def is_own_feature(group: Group, name: str, store_id: str | None) -> bool:
    """Whether the node ``name`` of ``group`` is a feature array the feature store
    ``store_id`` made: an array with a feature's dimension names (``ids``, ``<name>_1``, ...)
    marked with :data:`FEATURE_ATTRIBUTE`. A nested group, a user's array, the ``ids``
    array or a feature of another store is not.

    Example:
        >>> store_id = fs.group.attrs["feature_store"]["store_id"]  # doctest: +SKIP
        >>> is_own_feature(fs.group, "emb", store_id)  # doctest: +SKIP
        True
    """
    try:
        node = group.get(name)
    except TorchZarrError:  # a dtype torchzarr cannot hold, unreadable metadata: not ours
        return False
    if not isinstance(node, Array) or name == IDS or FEATURE_ATTRIBUTE not in node.attrs:
        return False
    dims = (IDS, *(f"{name}_{i}" for i in range(1, node.ndim)))
    return node.attrs[FEATURE_ATTRIBUTE] == store_id and node.dimension_names == dims


def create_marked(
    group: Group, name: str, store_id: str | None, dims: list[str], create: Callable[[], Array]
) -> Array:
    """``create()``, which makes the feature array ``name`` marked as the store
    ``store_id``'s; if it fails, what it wrote goes, and nothing else.

    In Zarr v2 the marker (``.zattrs``: the store id and ``dims``) is written first, where
    no node is: ``create_array`` writes ``.zarray`` before ``.zattrs``, and a write dying
    between them would leave an array :func:`is_own_feature` cannot tell from a user's. A
    lone marker of this store there (a write killed before its ``.zarray``) is written
    over; any other ``.zattrs`` there is refused. A node another writer makes at ``name``
    meanwhile (processes writing at once are unsupported) raises
    :class:`~torchzarr.errors.NodeExistsError` saying so; that node is kept, only this
    call's marker is taken off it (its own attributes were overwritten by then).

    Example:
        >>> create_marked(group, "emb", store_id, ["ids", "emb_1"], make)  # doctest: +SKIP
    """
    marker = _key(group, name, ".zattrs")
    document = json.dumps({FEATURE_ATTRIBUTE: store_id, XARRAY_DIMENSIONS: dims}).encode()
    v2 = group.zarr_format == 2
    if v2:
        _check_free(group, name, store_id)
        group.store.set(marker, document)
        if _taken(group, name):  # made by another writer right then
            raise _made_meanwhile(group, name, _take_back(group, marker, document))
    try:
        return create()
    except NodeExistsError:  # another writer's node, made since the check: never deleted
        raise _made_meanwhile(group, name, v2 and _take_back(group, marker, document)) from None
    except BaseException:
        with contextlib.suppress(Exception):
            if is_own_feature(group, name, store_id):
                del group[name]  # half made here: its metadata written, then a failure
            elif v2 and not _taken(group, name):
                _take_back(group, marker, document)  # refused before its .zarray
        raise


def clear_lone_markers(group: Group, store_id: str | None, known: Collection[str]) -> None:
    """Delete the lone v2 markers of the store ``store_id`` in ``group``: a ``.zattrs``
    marked with it and no ``.zarray`` or ``.zgroup`` beside it, as a write killed while
    creating a feature leaves (zarr-python and xarray warn about it at every listing,
    ``open_array(..., mode="w-")`` refuses the name). Run by writes, once per process
    and store (it lists the group: not at every open, which each DataLoader worker's copy
    makes); the ``known`` features are not looked at. A marker whose array appears as it
    is deleted (a creation under way elsewhere) is put back. Best effort: a failure here
    fails no write.

    Example:
        >>> clear_lone_markers(fs.group, store_id, fs.features)  # doctest: +SKIP
    """
    done = (location(group.store.identity, group.path), store_id)
    if group.zarr_format != 2 or group.read_only or done in _CLEARED:
        return
    with contextlib.suppress(Exception):
        for name in group.store.list_dir(group.path)[1]:
            if name in known or name == IDS:
                continue
            marker = _key(group, name, ".zattrs")
            raw = group.store.get(marker)
            if raw is None or not _is_marker(raw, store_id) or _taken(group, name):
                continue
            group.store.delete(marker)
            if _taken(group, name):  # a creation made its array meanwhile: put it back
                group.store.set(marker, raw)
        _CLEARED.add(done)


def _key(group: Group, name: str, leaf: str) -> str:
    return "/".join(part for part in (group.path, name, leaf) if part)


def _taken(group: Group, name: str) -> bool:
    """Whether a v2 array or group is at ``name`` (its metadata document, read afresh)."""
    return any(group.store.exists(_key(group, name, doc)) for doc in (".zarray", ".zgroup"))


def _is_marker(raw: bytes | None, store_id: str | None) -> bool:
    """Whether ``raw`` is a marker :func:`create_marked` writes for the store ``store_id``."""
    try:
        document = json.loads(raw) if raw is not None else None
    except ValueError:
        return False
    return (
        isinstance(document, dict)
        and set(document) == {FEATURE_ATTRIBUTE, XARRAY_DIMENSIONS}
        and document[FEATURE_ATTRIBUTE] == store_id
        and isinstance(document[XARRAY_DIMENSIONS], list)
        and document[XARRAY_DIMENSIONS][:1] == [IDS]
    )


def _check_free(group: Group, name: str, store_id: str | None) -> None:
    """Refuse to mark ``name`` where a node is now, or a ``.zattrs`` that is not a lone
    marker of this store (it is no node, but somebody's data)."""
    if _taken(group, name):
        raise _made_meanwhile(group, name, False)
    key = _key(group, name, ".zattrs")
    raw = group.store.get(key)
    if raw is not None and not _is_marker(raw, store_id):
        raise NodeExistsError(
            f"cannot create feature {name!r}: key {key!r} in {group.store!r} holds attributes "
            "of no array or group, which this feature store did not write; move or delete it"
        )


def _take_back(group: Group, marker: str, document: bytes) -> bool:
    """Delete the ``marker`` key if it still holds this call's ``document``; whether it did."""
    if group.store.get(marker) != document:
        return False
    group.store.delete(marker)
    return True


def _made_meanwhile(group: Group, name: str, unmarked: bool) -> NodeExistsError:
    lost = (
        " This write's marker had overwritten its .zattrs and was taken off: the attributes "
        "the other writer gave it are lost."
        if unmarked
        else ""
    )
    return NodeExistsError(
        f"cannot create feature {name!r}: another writer created node {name!r} in group "
        f"{group.name} of {group.store!r} while this write was creating it (write from one "
        f"process at a time); that node was kept.{lost}"
    )
