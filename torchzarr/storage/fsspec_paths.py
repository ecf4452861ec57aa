"""Where the keys of an ``FsspecStore`` live in its filesystem: key to path, and path to key.

An object store holds names no key can spell, written by other tools or through a URL
with a doubled ``/``: ``pre//x``, ``pre/b/../c``, names that are not UTF-8, and "folder
markers" (``pre/data/``, an empty object the S3 console makes). A listing yields only
the keys the store takes back: it skips such names (with a warning, once per path; a
folder marker silently). Deleting a prefix removes them by their raw path.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, unquote

from torchzarr.errors import InvalidKeyError
from torchzarr.storage.base import validate_key
from torchzarr.storage.fsspec_settings import identity_digest, masked, same_data_url
from torchzarr.storage.key_names import spells_a_key
from torchzarr.storage.local import is_temporary

__all__ = ["HTTP_PROTOCOLS", "LOCAL_PROTOCOLS", "KeyPaths", "local_url"]

#: read-only; keys are percent-encoded in URLs
HTTP_PROTOCOLS = frozenset({"http", "https"})
LOCAL_PROTOCOLS = frozenset({"file", "local"})
_NO_KEY_PARTS = frozenset(("", ".", ".."))


def local_url(url: str) -> str:
    """A ``file://`` URL as fsspec reads it: ``file://localhost/p`` is ``file:///p``, the
    absolute path ``/p`` (as LocalStore and the URL standard read it; fsspec alone reads
    ``./localhost/p``).

    Example:
        >>> local_url("file://LOCALHOST/data/a.zarr"), local_url("file://data/a.zarr")
        ('file:///data/a.zarr', 'file://data/a.zarr')
    """
    scheme, sep, rest = url.partition("://")
    host, slash, path = rest.partition("/")
    return f"{scheme}:///{path}" if sep and slash and host.lower() == "localhost" else url


class KeyPaths:
    """The paths of a store's keys below ``root`` in a filesystem of class ``fs_class``.

    Args:
        fs_class: the fsspec filesystem class (its ``_strip_protocol`` normalizes paths).
        fs_url: the store's URL as fsspec spells it.
        protocol: the URL's protocol (``http`` keys are percent-encoded).

    Example:
        >>> from fsspec.implementations.memory import MemoryFileSystem
        >>> paths = KeyPaths(MemoryFileSystem, "memory://data/", "memory")
        >>> paths.root, paths.path("a/c/0"), paths.key_of("/data/a/c/0")
        ('/data', '/data/a/c/0', 'a/c/0')
        >>> paths.name_of("/data//x"), paths.name_of("/elsewhere/x")
        ('/x', None)
    """

    def __init__(self, fs_class: Any, fs_url: str, protocol: str) -> None:
        self._strip = fs_class._strip_protocol
        self._http = protocol in HTTP_PROTOCOLS
        self._local = protocol in LOCAL_PROTOCOLS
        fs_url = local_url(fs_url) if self._local else fs_url
        stripped = str(self._strip(fs_url))
        # "file:///" is the file system's root "/", not "" (keys relative to the cwd)
        self.root: str = "/" if self._local and stripped == "/" else stripped.rstrip("/")
        # the normalized path of a key, minus the key: listings are cut with it
        self.prefix = str(self._strip(self.join("x") if self.root else "x"))[:-1]
        self._identity: str | None = None
        parts = self.root.lstrip("/").split("/")
        # a file system reads "a//b" as "a/b"; a web server's paths are not written to
        self._root_names_no_key = bool(
            self.root and not self._local and not self._http and _NO_KEY_PARTS.intersection(parts)
        )

    def identity(self, fs_protocol: str, storage_options: Mapping[str, Any]) -> str:
        """The identity of the store of these keys (see ``Store.identity``): its root as a URL,
        with a digest of the options that tell its data apart; on a local file system, the
        root is LocalStore's (the real path: symlinks, ``.`` and ``//`` resolved).

        Example:
            >>> from fsspec.implementations.local import LocalFileSystem
            >>> KeyPaths(LocalFileSystem, "file:///./no/such//dir", "file").identity("file", {})
            'file:///no/such/dir'
        """
        if self._identity is None:  # the real path looked up once, as LocalStore does
            if self._local:
                root = "file://" + os.path.realpath(self.root)
            else:  # as the filesystem reads it: memory://a is memory:///a
                here = self.root if "://" in self.root else f"{fs_protocol}://{self.root}"
                root = masked(same_data_url(here))
            digest = identity_digest(storage_options)  # credentials left out
            self._identity = root if digest is None else f"{root}#{digest}"
        return self._identity

    def join(self, key: str) -> str:
        """The path of ``key`` (unchecked; ``""`` is the root)."""
        if self._http:  # "#", "?" and "%" in a key are part of its path
            key = quote(key, safe="/")
        if self.root and key:
            return f"/{key}" if self.root == "/" else f"{self.root}/{key}"
        return self.root or key

    def path(self, key: str) -> str:
        """The path of ``key``, checked with ``validate_key``."""
        return self.join(validate_key(key))

    def listing_base(self, prefix: str) -> str:
        """The directory a listing of the keys starting with ``prefix`` starts from."""
        head = prefix.rstrip("/") if prefix.endswith("/") else prefix.rpartition("/")[0]
        return self.path(head) if head else self.join("")

    def name_of(self, path: str) -> str | None:
        """The raw name of ``path`` below the root, as a listing gives it, whether or not a
        key can spell it; None outside the root, and for a folder marker (ending in ``/``)."""
        if path.endswith("/"):
            return None
        norm = str(self._strip(path))
        if not norm.startswith(self.prefix) or norm.endswith("/"):
            return None
        return norm[len(self.prefix) :]

    def key_of(self, path: str) -> str | None:
        """The key at ``path``; None for a path that no key names (a warning says why, once)."""
        name = self.name_of(path)
        if not name:
            return None
        if self._http:  # "?" or "#" unquoted: a link with a query or fragment
            if "?" in name or "#" in name:
                return None
            name = unquote(name)
        if self._local and is_temporary(name.rpartition("/")[2]):
            return None  # a LocalStore write in flight
        return name if spells_a_key(name, self.prefix, "FsspecStore") else None

    def check_root_takes_writes(self, url: str, key: str) -> None:
        """Refuse a write below a root with an empty, ``.`` or ``..`` component.

        ``s3://b/data/`` + ``/arr`` is ``s3://b/data//arr``: the objects written there
        would be named ``data//arr/...``, which the store of ``s3://b/data`` cannot list,
        delete or copy as keys (a file system would read ``a//b`` as ``a/b``).
        """
        if not self._root_names_no_key:
            return
        raise InvalidKeyError(
            f"cannot write {key!r} at {url!r}: its path {self.root!r} has an empty, '.' or "
            "'..' component (a doubled '/'?), so what is written there could not be listed, "
            "deleted or copied as keys through the URL above it; write the URL without it"
        )
