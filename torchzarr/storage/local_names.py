"""LocalStore's temporary files: the name a write in flight has beside its key's file, which listings skip."""

from __future__ import annotations

import re
import uuid

from torchzarr.storage.key_names import spells_a_key

__all__ = ["is_key_name", "is_temporary", "temporary_name"]

_PARTIAL = ".partial"
#: a write in flight: ``.<name>.<32 hex digits>.partial`` beside the key's file, ``<name>``
#: cut to its first 100 bytes: at most 142 bytes, which even eCryptfs (143) takes
_TEMPORARY = re.compile(r"\..+\.[0-9a-f]{32}\.partial", re.DOTALL)
_TEMPORARY_NAME_BYTES = 100


def is_temporary(name: str) -> bool:
    """True if a file name is one of LocalStore's temporary files (listings skip them).

    Example:
        >>> is_temporary(".0." + "ab" * 16 + ".partial"), is_temporary("epoch3.partial")
        (True, False)
    """
    return name.endswith(_PARTIAL) and _TEMPORARY.fullmatch(name) is not None


def temporary_name(name: str) -> str:
    """A fresh ``.<name>.<32 hex digits>.partial``, a long name cut at a character boundary.

    Example:
        >>> temporary_name("0")[:3], len(temporary_name("n" * 255).encode())
        ('.0.', 142)
    """
    head = name.encode("utf-8")[:_TEMPORARY_NAME_BYTES].decode("utf-8", "ignore")
    return f".{head}.{uuid.uuid4().hex}{_PARTIAL}"


def is_key_name(name: str, directory: str) -> bool:
    """True if a directory entry's name can be part of a key: not a temporary file, and
    UTF-8 (a name of other bytes is skipped with a warning: no key can spell it).

    Example:
        >>> is_key_name("zarr.json", "/data"), is_key_name(temporary_name("0"), "/data")
        (True, False)
    """
    return not is_temporary(name) and spells_a_key(name, directory, "LocalStore")
