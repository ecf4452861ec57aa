"""File names that no key can spell (not UTF-8): listings skip them, warning once per path.

A file system may hold names of any bytes; Python reads bytes that are not UTF-8 as lone
surrogates, which no store key may hold (``validate_key`` refuses them). Listings of
stores over file systems skip such names, and say so once per process for each path (a
listing repeated every epoch, or after ``warnings.catch_warnings`` reset the warning
registry, does not repeat it).
"""

from __future__ import annotations

import os
import threading
import warnings

from torchzarr.storage.base import is_utf8

__all__ = ["spells_a_key"]

_WARNED_LIMIT = 4096  # paths remembered; past it the oldest may be warned about again
_warned: dict[tuple[str, str], None] = {}  # (store kind, path), oldest first
_warned_lock = threading.Lock()


def _shown(path: str) -> str:
    """``path`` printable, its undecodable bytes escaped (``\\xe9``)."""
    try:
        raw = os.fsencode(path)
    except UnicodeEncodeError:  # a surrogate no file name decodes to
        raw = path.encode("utf-8", "backslashreplace")
    return raw.decode("utf-8", "backslashreplace")


def spells_a_key(name: str, parent: str, store: str) -> bool:
    """True if ``name``, a ``/``-separated path below ``parent``, can be (part of) a key.

    Otherwise a warning from ``store`` names the path of its first component that is not
    UTF-8 (a directory warns once for all it holds), once per process and path.

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
    """
    if name.isascii() or is_utf8(name):
        return True
    parts = name.split("/")
    first = next(i for i, part in enumerate(parts) if not is_utf8(part))
    path = "/".join([parent.rstrip("/"), *parts[: first + 1]])
    with _warned_lock:
        if (store, path) in _warned:
            return False
        if len(_warned) >= _WARNED_LIMIT:
            del _warned[next(iter(_warned))]
        _warned[store, path] = None
    warnings.warn(
        f"{store} skips '{_shown(path)}': its name is not UTF-8, so no key can name it",
        stacklevel=3,
    )
    return False
