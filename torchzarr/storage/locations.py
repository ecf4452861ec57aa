"""Where a node's data lives, as one string: the store's identity joined with the node's
path, however the store is rooted (what chunk caches, chunk locks and copies compare)."""

from __future__ import annotations

import re

__all__ = ["location"]

_HEX16 = re.compile(r"[0-9a-f]{16}")  # the digest of an fsspec store's options


def location(identity: str, path: str) -> str:
    """Where a node's data lives: the store's identity joined with the node's path.

    The same however the node is reached: a directory store rooted at an array and one
    rooted at its group (path ``"sub/x"``) give one location, so cache entries and write
    invalidations of either reach the other.

    A trailing slash of the store's URL does not count, and the digest of an fsspec
    store's options (``url#0123456789abcdef``) goes first, so that the locations below a
    node start with the node's location and a slash.

    Example:
        >>> location("file:///data/g.zarr", "sub/x") == location("file:///data/g.zarr/sub/x", "")
        True
        >>> location("s3://b/g#0123456789abcdef", "x")
        '0123456789abcdef#s3://b/g/x'
    """
    base, digest = identity, ""
    if len(identity) > 17 and identity[-17] == "#" and _HEX16.fullmatch(identity[-16:]):
        base, digest = identity[:-17], identity[-16:] + "#"
    stripped = base.rstrip("/")
    if stripped.endswith(":"):  # the root of "file:///": keep the scheme's slashes
        stripped = base
    path = path.strip("/")
    if path:
        stripped = stripped + path if stripped.endswith("/") else f"{stripped}/{path}"
    return digest + stripped
