"""Listings of an ``FsspecStore`` over http(s): the tree walked directory by directory, each
directory's listing retried on its own, and a 404 from a directory known to exist refused."""

from __future__ import annotations

import functools
import html
import re
from typing import Any
from urllib.parse import urlsplit

from torchzarr.errors import StoreError
from torchzarr.storage.fsspec_errors import describe
from torchzarr.storage.fsspec_requests import run_concurrently
from torchzarr.storage.fsspec_settings import masked
from torchzarr.storage.http_answers import KeyRequests
from torchzarr.storage.retry import RetryPolicy, is_transient, now

__all__ = ["HttpListings", "text_marked_directories"]

#: one of them is in the directory of every Zarr node: found, it shows the directory exists
_NODE_DOCUMENTS = ("zarr.json", ".zgroup", ".zarray")
# the link text may hold other tags, never another anchor: a page of unclosed anchors is
# read in linear time (a lazy ".*?" up to "</a>" would rescan the page from each one)
#: a link of an index page: its href and its text
_LINK = re.compile(
    r"""<a\s[^>]*?href\s*=\s*["']([^"']+)["'][^>]*>([^<]*(?:<(?!/?a[\s>])[^<]*)*)</a\s*>""",
    re.I,
)
_TAG = re.compile(r"<[^>]*>")


class HttpListings:
    """The listings of the directories of an http(s) store, from the pages a server answers
    for directory URLs.

    A recursive listing goes down the tree one level at a time, the directories of a level
    side by side, and retries each directory that fails transiently on its own (as
    ``policy`` allows, with one deadline for the whole listing), so a server that fails
    now and then still lists a deep tree. A 404 from a directory reads as an empty one
    only while nothing says that it exists: a 404 from a directory that a listing linked
    to, or from one holding a Zarr document (checked once, while unknown, after a 404: the
    store's root listed, else the node documents of the directory and of the root looked
    up), raises StoreError, as a server that does not list directories answers (GitHub
    Pages, S3 website endpoints, many CDNs).

    Args:
        fs: the store's filesystem (an async one with ``_ls`` and ``_exists``).
        root: the URL of the store's root directory.
        policy: how each directory's listing is retried.
        timeout: seconds requests may go without one finishing (None: no bound).
        requests: the keyword arguments of requests for keys (the store's answer checks).
        shown: how errors name the store (its URL with the password masked).

    Example:
        >>> from fsspec.asyn import AsyncFileSystem
        >>> class Site(AsyncFileSystem):  # serves http://h/d/zarr.json, lists no directory
        ...     async def _ls(self, path, detail=True, **kwargs):
        ...         raise FileNotFoundError(path)
        ...     async def _exists(self, path, **kwargs):
        ...         return path == "http://h/d/zarr.json"
        >>> listings = HttpListings(
        ...     Site(skip_instance_cache=True), "http://h/d", RetryPolicy(), 5,
        ...     KeyRequests({}, check_answers=False), "http://h/d",
        ... )
        >>> listings.find("http://h/d", "/")
        Traceback (most recent call last):
            ...
        torchzarr.errors.StoreError: cannot list '/' at 'http://h/d': the server answered 404 \
for the directory URL 'http://h/d', which holds zarr.json: ...
        >>> listings.find("http://h/elsewhere", "x/")  # known not to list: refused too
        Traceback (most recent call last):
            ...
        torchzarr.errors.StoreError: cannot list 'x/' at 'http://h/d': the server answered 404 ...
    """

    def __init__(
        self,
        fs: Any,
        root: str,
        policy: RetryPolicy,
        timeout: float | None,
        requests: KeyRequests,
        shown: str,
    ) -> None:
        self.fs, self.root, self.policy, self.timeout = fs, root.rstrip("/"), policy, timeout
        self._requests, self._shown = requests, shown
        #: whether the server lists directories: True once a listing named something, False
        #: once a directory known to exist answered 404; None while unknown
        self.lists: bool | None = None
        #: True once a listing linked to a directory with an href ending in "/" (the links
        #: of its pages tell directories apart); else each page of files is read again for
        #: links whose text ends in "/" (aiohttp's static pages link "/d/arr" as "arr/")
        self.hrefs_mark_directories = False

    def find(self, base: str, label: str) -> list[str]:
        """The URLs of the objects below the directory URL ``base`` (``label``: the prefix
        listed, as errors name it), one request per directory.

        Example:
            >>> from fsspec.asyn import AsyncFileSystem
            >>> class Tree(AsyncFileSystem):  # "http://h/r" holds "k" and "c/0"
            ...     pages = {"http://h/r": ["k", "c/"], "http://h/r/c": ["0"]}
            ...     async def _ls(self, path, detail=True, **kwargs):
            ...         names = [f"{path}/{name}" for name in self.pages[path]]
            ...         return [{"name": n, "type": "directory" if n.endswith("/") else "file"}
            ...                 for n in names]
            >>> listings = HttpListings(Tree(skip_instance_cache=True), "http://h/r",
            ...     RetryPolicy(), 5, KeyRequests({}, check_answers=False), "http://h/r")
            >>> listings.find("http://h/r", "/"), listings.lists
            (['http://h/r/k', 'http://h/r/c/0'], True)
        """
        since = now()
        found: dict[str, None] = {}
        level, seen = [base], {base}
        while level:
            deeper: list[str] = []
            listed = self._list(level, label, since, base)
            for directory, entries in zip(level, listed, strict=True):
                for entry in entries:
                    name = str(entry["name"]).rstrip("/")
                    if name == directory or name.rpartition("/")[2] in ("", ".", ".."):
                        continue
                    if entry.get("type") != "directory":
                        found[name] = None
                    elif name not in seen:
                        seen.add(name)
                        deeper.append(name)
            level = deeper
        return list(found)

    def ls(self, base: str, label: str) -> list[dict[str, Any]]:
        """The entries of the directory URL ``base``, as ``fs.ls(base, detail=True)`` gives.

        Example:
            >>> from fsspec.asyn import AsyncFileSystem
            >>> class Page(AsyncFileSystem):
            ...     async def _ls(self, path, detail=True, **kwargs):
            ...         return [{"name": path + "/k", "type": "file"}]
            >>> HttpListings(Page(skip_instance_cache=True), "http://h/r", RetryPolicy(), 5,
            ...     KeyRequests({}, check_answers=False), "http://h/r").ls("http://h/r", "/")
            [{'name': 'http://h/r/k', 'type': 'file'}]
        """
        return self._list([base], label, now(), base)[0]

    def _list(
        self, directories: list[str], label: str, since: float, base: str
    ) -> list[list[dict[str, Any]]]:
        """The entries of each of ``directories``, each retried on its own while it fails
        transiently; the first that fails for good raises StoreError."""
        results: list[Any] = [None] * len(directories)
        tried = [0] * len(directories)
        pending = list(range(len(directories)))
        for attempt in self.policy.attempts(since=since):
            calls = [functools.partial(self._entries, directories[i]) for i in pending]
            try:
                out = run_concurrently(self.fs, calls, self.timeout)
            except Exception as exc:  # the whole round failed
                out = [exc] * len(pending)
            for i, value in zip(pending, out, strict=True):
                results[i], tried[i] = value, attempt + 1
            pending = [i for i in pending if is_transient(results[i])]
            if not pending:
                break
        listings = []
        for directory, value, made in zip(directories, results, tried, strict=True):
            if isinstance(value, FileNotFoundError):
                value = self._absent(directory, label, linked=directory != base)
            elif isinstance(value, BaseException):
                tries = f" after {made} attempts" if made > 1 else ""
                raise StoreError(
                    f"cannot list {label!r} at {self._shown!r}{tries}: {masked(describe(value))}"
                ) from value
            elif value:
                self.lists = True
            listings.append(list(value))
        return listings

    async def _entries(self, directory: str) -> list[dict[str, Any]]:
        """``fs._ls(directory)``, with the entries that the page's link texts mark as
        directories (``<a href="/d/arr">arr/</a>``) typed so."""
        entries = list(await self.fs._ls(directory, detail=True))
        if any(entry.get("type") == "directory" for entry in entries):
            self.hrefs_mark_directories = True
        if self.hrefs_mark_directories or not entries:
            return entries
        try:
            page = await self.fs._cat_file(directory)
        except NotImplementedError:  # a filesystem that gives no pages: its types stand
            return entries
        marked = text_marked_directories(bytes(page).decode(errors="ignore"), directory)
        return [
            {**entry, "type": "directory"} if str(entry["name"]).rstrip("/") in marked else entry
            for entry in entries
        ]

    def _absent(self, directory: str, label: str, linked: bool) -> list[dict[str, Any]]:
        """No entries for ``directory``, which answered 404, unless it is known to exist."""
        why: str | None
        if linked:
            why = "which the listing above it links to"
        elif self.lists:
            return []
        elif self.lists is False:
            why = "as it did before for a directory known to exist"
        else:
            why = self._exists_why(directory)
            if why is None:
                return []
            self.lists = False
        raise StoreError(
            f"cannot list {label!r} at {self._shown!r}: the server answered 404 for the "
            f"directory URL {masked(directory)!r}, {why}: it does not list "
            "directories (as GitHub Pages, S3 website endpoints and many CDNs do not). Read "
            "the hierarchy through consolidated metadata: run tz.consolidate_metadata on a "
            "copy that can be written and serve that (a v2 group's .zmetadata, a v3 group's "
            "zarr.json), then open it with mode='r' (see 'HTTP(S) servers' in docs/storage.md)"
        )

    def _exists_why(self, directory: str) -> str | None:
        """Why ``directory`` exists (it or the root holds a node document while the root's
        listing answers 404 too), or None when nothing says so: the root listed (below it), then
        the node documents of both looked up side by side."""
        directory = directory.rstrip("/")
        at_root = directory == self.root
        if not at_root:
            try:  # the root lists: this directory is not there
                entries = run_concurrently(
                    self.fs, [functools.partial(self.fs._ls, self.root)], self.timeout
                )[0]
            except Exception:
                return None  # the 404 tells more than this
            if not isinstance(entries, BaseException) and entries:
                self.lists = True
                return None
            if not isinstance(entries, FileNotFoundError):
                return None
        places = [directory] if at_root else [directory, self.root]
        docs = [f"{place}/{name}" for place in places for name in _NODE_DOCUMENTS]
        kwargs = self._requests.kwargs(docs)
        calls = [functools.partial(self.fs._exists, doc, **kwargs) for doc in docs]
        try:
            found = run_concurrently(self.fs, calls, self.timeout)
        except Exception:
            return None
        for doc, there in zip(docs, found, strict=True):
            if there is True:
                place, _, name = doc.rpartition("/")
                if place == directory:
                    return f"which holds {name}"
                return (
                    f"below the store's root {masked(self.root)!r}, which holds {name} "
                    "and answered 404 for its own listing too"
                )
        return None


def text_marked_directories(page: str, url: str) -> set[str]:
    """The URLs that the index ``page`` of the directory ``url`` links to with a text ending
    in "/" (a directory, as aiohttp's static pages mark them) but an href that does not
    (resolved as fsspec resolves them).

    Example:
        >>> page = '<a href="/g/arr">arr/</a> <a href="/g/zarr.json">zarr.json</a>'
        >>> text_marked_directories(page, "http://h/g")
        {'http://h/g/arr'}
    """
    parts, marked = urlsplit(url), set()
    for href, text in _LINK.findall(page):
        if href.endswith("/") or not html.unescape(_TAG.sub("", text)).strip().endswith("/"):
            continue
        if href.startswith("/") and len(href) > 1:
            href = f"{parts.scheme}://{parts.netloc}{href}"
        elif not href.startswith("http"):
            href = "/".join([url.rstrip("/"), href.lstrip("/")])
        marked.add(href)
    return marked
