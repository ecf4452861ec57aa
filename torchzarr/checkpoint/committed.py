"""Which versions a checkpoint's manifest lists as committed; loads of a named version refuse others."""

from __future__ import annotations

from typing import Any

from torchzarr.checkpoint import commit
from torchzarr.errors import MetadataError, NodeNotFoundError
from torchzarr.storage import Store

__all__ = ["manifest_lists", "refuse_uncommitted"]

_UNREAD = object()


def manifest_lists(manifest: dict[str, Any], version: str) -> bool:
    """Whether ``manifest`` names ``version``: as its version, or in its ``previous`` list
    of the earlier commits it keeps.

    Example:
        >>> manifest_lists({"version": "v000002", "previous": ["v000001"]}, "v000001")
        True
    """
    kept = manifest.get("previous")
    return manifest.get("version") == version or (isinstance(kept, list) and version in kept)


def refuse_uncommitted(store: Store, version: str, manifest: Any = _UNREAD) -> None:
    """Raise when the manifest of ``store`` does not list ``version`` as committed.

    A save killed (or still running) before its commit leaves a version directory that
    no manifest names: loading it by name would read a save that never finished. Listed
    are the committed version and the earlier commits the manifest keeps (``previous``);
    a manifest written before that list existed lists every version below its own. A
    corrupt manifest (read here when ``manifest`` is not given) lets any version load by
    name, the way to recover one.

    Raises:
        NodeNotFoundError: ``version`` is not listed (the message names it and the
            versions that are).

    Example:
        >>> st = commit.checkpoint_store("memory://")
        >>> commit.commit_version(st, "v000001")
        >>> refuse_uncommitted(st, "v000001")  # committed: fine
        >>> refuse_uncommitted(st, "v000002")
        Traceback (most recent call last):
        ...
        torchzarr.errors.NodeNotFoundError: version 'v000002' of the checkpoint in ...
    """
    if manifest is _UNREAD:
        try:
            manifest = commit.read_manifest(store)
        except MetadataError:
            return  # corrupt: a version named by the user is the way to recover one
    if not isinstance(manifest, dict):
        raise NodeNotFoundError(
            f"version {version!r} of the checkpoint in {store!r} is not listed as committed: "
            "the store holds no manifest (root zarr.json naming the committed version): a "
            "first save killed before its commit leaves its data so, and loads never read "
            "a save that did not commit (if the manifest was deleted, its versions are no "
            "longer known to be whole: open one with tz.open_group to inspect it)"
        )
    current = str(manifest.get("version"))
    previous = manifest.get("previous")
    if manifest_lists(manifest, version):
        return
    if not isinstance(previous, list) and (
        0 <= commit.version_number(version) < commit.version_number(current)
    ):
        return  # a manifest of older torchzarr lists no history: every older one may be
    kept = [v for v in previous if isinstance(v, str)] if isinstance(previous, list) else []
    listed = ", ".join([current, *kept[:5]]) + (", ..." if len(kept) > 5 else "")
    raise NodeNotFoundError(
        f"version {version!r} of the checkpoint in {store!r} was never committed (its "
        f"manifest lists {listed}): a save killed or still running before its commit "
        "leaves such a version, and loads never read a save that did not commit. Load "
        "the committed version (version=None) or one the manifest lists"
    )
