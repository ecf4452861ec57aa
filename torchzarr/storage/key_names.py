"""Names that no key can spell: listings skip them, warning once per path.

A file system may hold names of any bytes; Python reads bytes that are not UTF-8 as lone
surrogates, which no store key may hold (``validate_key`` refuses them). An object store, a
zip file or a database may also hold names with an empty, ``.`` or ``..`` component
(``pre//x``, ``pre/b/../c``, ``/abs``, ``../x``, written by other tools), or with a
backslash, which no key may have either. Listings skip such names, so that every key a
store lists is one it takes back, and say so once per process for each path (a listing
repeated every epoch, or after ``warnings.catch_warnings`` reset the warning registry, does
not repeat it).

Readers that turn keys into file paths themselves check each key with
:func:`confined_key`, so that no key, whatever metadata it came from, reaches a file
outside the store's root.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Iterable

from torchzarr.storage.base import (
    BACKSLASH,
    NOT_A_NAME,
    NOT_UTF8,
    NUL_BYTE,
    key_part_offence,
    validate_key,
)

__all__ = ["confined_key", "listed_keys", "spells_a_key"]

_WARNED_LIMIT = 4096  # paths remembered; past it the oldest may be warned about again
_warned: dict[tuple[str, str], None] = {}  # (store kind, path), oldest first
_warned_lock = threading.Lock()
_REASONS = {  # what a listing's warning says of each offence
    BACKSLASH: "its name holds a backslash or a NUL byte",
    NUL_BYTE: "its name holds a backslash or a NUL byte",
    NOT_UTF8: "its name is not UTF-8",
    NOT_A_NAME: "it has an empty, '.' or '..' path component",
}


def _shown(path: str) -> str:
    """``path`` printable, its undecodable bytes escaped (``\\xe9``)."""
    try:
        raw = os.fsencode(path)
    except UnicodeEncodeError:  # a surrogate no file name decodes to
        raw = path.encode("utf-8", "backslashreplace")
    return raw.decode("utf-8", "backslashreplace")


def _first_offence(parts: list[str]) -> tuple[int, str] | None:
    """The index of the first component no key may have, and why; None if there is none."""
    for index, part in enumerate(parts):
        offence = key_part_offence(part)
        if offence is not None:
            return index, _REASONS[offence]
    return None


def spells_a_key(name: str, parent: str, store: str) -> bool:
    """True if ``name``, a ``/``-separated path below ``parent``, can be (part of) a key.

    Otherwise a warning from ``store`` names the path up to its first component that no
    key may have (not UTF-8; empty, ``.`` or ``..``; holding a backslash or a NUL byte), so
    a directory or prefix warns once for all it holds, once per process and path.

    Example:
        >>> spells_a_key("a/caf\\u00e9", "/data", "LocalStore")
        True
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     [spells_a_key(f"d\\udce9j/{i}", "/data", "Doc") for i in range(2)]
        [False, False]
        >>> [str(w.message) for w in caught]
        ["Doc skips '/data/d\\\\xe9j': its name is not UTF-8, so no key can name it"]
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     spells_a_key("b/../c", "bucket/data", "Doc")
        False
        >>> str(caught[0].message)[:40]
        "Doc skips 'bucket/data/b/..': it has an "
    """
    if (
        name.isascii()
        and "/." not in f"/{name}"
        and "//" not in f"/{name}/"
        and "\\" not in name
        and "\x00" not in name
    ):
        return True  # the common case, decided without splitting
    parts = name.split("/")
    offence = _first_offence(parts)
    if offence is None:
        return True
    first, reason = offence
    below = "/".join(parts[: first + 1])
    if parts[first] == "" and first < len(parts) - 1:
        below += "/"  # "pre//x": the empty component between the slashes
    head = parent.rstrip("/")
    path = f"{head}/{below}" if parent else below
    with _warned_lock:
        if (store, path) in _warned:
            return False
        if len(_warned) >= _WARNED_LIMIT:
            del _warned[next(iter(_warned))]
        _warned[store, path] = None
    warnings.warn(f"{store} skips '{_shown(path)}': {reason}, so no key can name it", stacklevel=3)
    return False


def listed_keys(names: Iterable[object], prefix: str, parent: str, store: str) -> list[str]:
    """The names among ``names`` that start with ``prefix`` and :func:`spells_a_key` accepts.

    What a store that keeps names written by other tools (a zip file, a database) lists:
    a stray ``../x`` or ``/abs`` there is skipped (with a warning naming it), never handed
    to a caller that the store would then refuse it to.

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     listed_keys(["a/0", "../x", "/abs", "b"], "", "/data.zip", "Doc")
        ['a/0', 'b']
    """
    keys = []
    for name in names:  # a loop, not a comprehension: the warning points at the store
        if isinstance(name, str) and name.startswith(prefix) and spells_a_key(name, parent, store):
            keys.append(name)
    return keys


def confined_key(key: str) -> str:
    """``key``, checked to name a path below a store's root; else ``validate_key``'s
    ``InvalidKeyError``.

    For readers that join keys to a root directory themselves: the keys of chunks (no
    ``..``, backslash, colon, NUL or leading slash, nothing a path could leave the root by)
    pass at the cost of a few substring tests, anything else is checked in full.

    Example:
        >>> confined_key("x/c/0/1")
        'x/c/0/1'
        >>> confined_key("../victim/c/0")
        Traceback (most recent call last):
        ...
        torchzarr.errors.InvalidKeyError: store key '../victim/c/0' has an empty, '.' or '..' component
    """
    if (
        key[:1] not in ("", "/")
        and ".." not in key
        and "\\" not in key
        and ":" not in key
        and "\x00" not in key
    ):
        return key
    return validate_key(key)
