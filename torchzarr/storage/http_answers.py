"""The requests of ``FsspecStore``'s keys over HTTP: answers that are not what a key's
request asked for (a directory, a whole object sent for a range, more bytes than asked
for), and the user's own ``raise_for_status`` kept."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

from torchzarr.errors import StoreError
from torchzarr.storage.base import ByteRange

__all__ = ["KeyRequests", "WholeObjectAnswer", "check_http_answer", "cut_to_range"]


class WholeObjectAnswer(Exception):
    """An HTTP server answered a Range request with the whole object (status 200, not 206).

    ``body`` is that object: the store cuts the range asked for out of it.
    """

    def __init__(self, body: bytes) -> None:
        super().__init__(f"the server ignored the Range header and sent all {len(body)} bytes")
        self.body = body


async def check_http_answer(response: Any, requested: Collection[str]) -> None:
    """aiohttp's ``raise_for_status`` hook for the requests of keys' values or sizes.

    ``requested`` holds the decoded URL paths of the keys asked for. An answer from one
    of them plus ``/`` comes from a redirect to a directory (``c`` to ``c/``, as
    http.server, nginx, Apache and Caddy answer), which is no key: FileNotFoundError. A key's
    URL never ends in ``/``, so only a redirect leads there (aiohttp shows the hook no
    redirects). Any other redirect, also to a URL ending in ``/`` (a download URL such as
    ``/get/?id=c``), leads to the key's value; a directory page served at the key's own
    URL, without a redirect, cannot be told from a value. A Range request answered with
    status 200 carries the whole object: WholeObjectAnswer. Any other status is left to
    fsspec.

    Example:
        >>> import asyncio, types
        >>> answer = types.SimpleNamespace(url=types.SimpleNamespace(path="/data/c/"))
        >>> asyncio.run(check_http_answer(answer, {"/data/c"}))
        Traceback (most recent call last):
            ...
        FileNotFoundError: the URL of key '/data/c' was redirected to the directory '/data/c/'
    """
    path = response.url.path
    if path.endswith("/") and path[:-1] in requested:
        raise FileNotFoundError(
            f"the URL of key {path[:-1]!r} was redirected to the directory {path!r}"
        )
    if response.status == 200 and "Range" in response.request_info.headers:
        raise WholeObjectAnswer(await response.read())


class KeyRequests:
    """The options of an fsspec filesystem, and the keyword arguments of a key's requests.

    Over HTTP (``check_answers``) a key's requests pass a ``raise_for_status`` hook:
    :func:`check_http_answer`, then the user's own ``raise_for_status`` (from
    ``storage_options``, else from ``client_kwargs``), whose 404 is a missing key. fsspec
    passes ``storage_options`` on to every request, and aiohttp prefers a request's hook
    to the session's: the user's moves to ``client_kwargs``, so listings keep it and no
    request receives the keyword twice. Other protocols keep their options as they are.

    Example:
        >>> requests = KeyRequests({"raise_for_status": True}, check_answers=True)
        >>> requests.fs_options, list(requests.kwargs(["http://host/data/c/0"]))
        ({'client_kwargs': {'raise_for_status': True}}, ['raise_for_status'])
    """

    def __init__(self, storage_options: Mapping[str, Any], check_answers: bool) -> None:
        self.fs_options = dict(storage_options)
        self.check_answers = check_answers
        self._own: Any = None
        if not check_answers:
            return
        session = dict(self.fs_options.get("client_kwargs") or {})
        own = self.fs_options.pop("raise_for_status", None)
        if own is not None:  # a request's own wins over the session's
            session["raise_for_status"] = own
            self.fs_options["client_kwargs"] = session
        self._own = session.get("raise_for_status")

    def kwargs(self, urls: Iterable[str]) -> dict[str, Any]:
        """The keyword arguments of the requests of the keys at ``urls`` (empty but over HTTP)."""
        if not self.check_answers:
            return {}
        requested = frozenset(unquote(urlsplit(url).path) for url in urls)
        return {"raise_for_status": _answer_hook(requested, self._own)}


def _answer_hook(requested: Collection[str], own: Any) -> Callable[[Any], Awaitable[None]]:
    """:func:`check_http_answer`, then ``own``: a ``raise_for_status`` as aiohttp takes it
    (a bool or an async callable)."""

    async def check(response: Any) -> None:
        await check_http_answer(response, requested)
        if not own:
            return
        try:
            if callable(own):
                await own(response)
            else:
                response.raise_for_status()
        except Exception as exc:
            if getattr(exc, "status", None) != 404:
                raise
            raise FileNotFoundError(f"{response.url} answered 404") from exc

    return check


def cut_to_range(
    key: str,
    rng: ByteRange | None,
    data: bytes,
    whole: bool,
    size_of: Callable[[], int | None],
    where: str,
) -> bytes:
    """The bytes of range ``rng`` (None: all) of ``key`` from the answer ``data``.

    ``whole``: the answer is the whole object (a server that ignored the Range header). An
    answer longer than the range is the whole object too (as some emulators send it) when
    it is as long as the object: ``size_of()``, looked up only then. Any other (a server
    that sends an aligned block around the range: ``bytes 4-7/16`` for ``bytes=5-6``)
    cannot be placed: StoreError naming the key, the range and what came, rather than
    bytes from the wrong offset.

    Example:
        >>> cut_to_range("k", ByteRange(5, 2), b"0123456789", False, lambda: 10, "memory://x")
        b'56'
        >>> cut_to_range("k", ByteRange(5, 2), b"4567", False, lambda: 16, "http://h/x")
        Traceback (most recent call last):
            ...
        torchzarr.errors.StoreError: cannot read 'k' at 'http://h/x': asked for bytes 5-6 \
(2 bytes), the server sent 4 bytes, neither that range nor the whole object of 16 bytes
    """
    if rng is None:
        return data
    asked = -rng.start if rng.start < 0 else rng.length
    if whole or asked is None or len(data) <= asked:
        return rng.slice(data) if whole else data
    size = size_of()
    if size is not None and len(data) == size:
        return rng.slice(data)
    if rng.start < 0:
        wanted = f"the last {-rng.start} bytes"
    else:
        wanted = f"bytes {rng.start}-{rng.start + asked - 1} ({asked} bytes)"
    whole_size = "of unknown size" if size is None else f"of {size} bytes"
    raise StoreError(
        f"cannot read {key!r} at {where!r}: asked for {wanted}, the server sent {len(data)} "
        f"bytes, neither that range nor the whole object {whole_size}"
    )
