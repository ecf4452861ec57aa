"""LocalStore's file names: the temporary name a write in flight has beside its key's file,
which listings skip, the longest name the file system takes, and a file standing where a
directory must be."""

from __future__ import annotations

import errno
import os
import re
import uuid

from torchzarr.errors import StoreError
from torchzarr.storage.key_names import spells_a_key

__all__ = [
    "file_in_the_way",
    "file_note",
    "is_key_name",
    "is_temporary",
    "longest_part",
    "name_max",
    "not_a_directory",
    "raise_unless_too_long",
    "temporary_name",
    "temporary_of",
]

_PARTIAL = ".partial"
#: a write in flight: ``.<name>.<32 hex digits>.partial`` beside the key's file, ``<name>``
#: cut to its first 100 bytes: at most 142 bytes, which even eCryptfs (143) takes
_TEMPORARY = re.compile(r"\..+\.[0-9a-f]{32}\.partial", re.DOTALL)
_TEMPORARY_NAME_BYTES = 100
#: the longest file name most file systems take, where ``pathconf`` cannot say
_NAME_MAX = 255


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


def temporary_of(name: str) -> str:
    """The name a temporary file (:func:`is_temporary`) was written for, cut as
    :func:`temporary_name` cuts it.

    Example:
        >>> temporary_of(temporary_name("zarr.json"))
        'zarr.json'
    """
    return name[1 : -len(_PARTIAL) - 33]  # ".<name>" less ".<32 hex digits>.partial"


def is_key_name(name: str, directory: str) -> bool:
    """True if a directory entry's name can be part of a key: not a temporary file, and
    UTF-8 (a name of other bytes is skipped with a warning: no key can spell it).

    Example:
        >>> is_key_name("zarr.json", "/data"), is_key_name(temporary_name("0"), "/data")
        (True, False)
    """
    return not is_temporary(name) and spells_a_key(name, directory, "LocalStore")


def name_max(root: str) -> int:
    """The longest file name, in bytes, that the file system of ``root`` takes: asked of
    ``root`` or the nearest directory above it that exists (255 where none says).

    Example:
        >>> import tempfile
        >>> name_max(tempfile.gettempdir() + "/not/made/yet") >= 14
        True
    """
    path = os.path.abspath(root)
    while True:
        try:
            found = os.pathconf(path, "PC_NAME_MAX")
        except (FileNotFoundError, NotADirectoryError):  # not made yet: ask the one above
            parent = os.path.dirname(path)
            if parent == path:
                return _NAME_MAX
            path = parent
            continue
        except (OSError, ValueError, AttributeError):  # no answer, or no pathconf here
            return _NAME_MAX
        return int(found) if found > 0 else _NAME_MAX


def longest_part(key: str) -> tuple[str, int]:
    """The longest ``/``-separated part of ``key`` and its length in bytes (UTF-8).

    Example:
        >>> longest_part("a/bcd/e"), longest_part("caf\u00e9")[1]
        (('bcd', 3), 5)
    """
    part = max(key.split("/"), key=lambda name: len(name.encode("utf-8")))
    return part, len(part.encode("utf-8"))


def raise_unless_too_long(err: OSError, message: str) -> None:
    """Raise ``StoreError(message)`` from ``err``, unless the name is too long for any file
    (``ENAMETOOLONG``): no such file can exist, and the caller reads it as missing.

    Example:
        >>> raise_unless_too_long(OSError(errno.ENAMETOOLONG, "File name too long"), "x")
        >>> raise_unless_too_long(OSError(errno.EIO, "I/O error"), "cannot read 'k'")
        Traceback (most recent call last):
        torchzarr.errors.StoreError: cannot read 'k'
    """
    if err.errno != errno.ENAMETOOLONG:
        raise StoreError(message) from err


def file_in_the_way(path: str | os.PathLike[str]) -> str | None:
    """The file that ``path`` or its nearest existing ancestor is, where a directory must
    be (a write below it fails with ``ENOTDIR``); None if that one is a directory.

    Example:
        >>> import tempfile
        >>> top = tempfile.mkdtemp()
        >>> open(os.path.join(top, "f"), "w").close()
        >>> file_in_the_way(os.path.join(top, "f", "a", "b")) == os.path.join(top, "f")
        True
        >>> file_in_the_way(os.path.join(top, "missing", "b")) is None
        True
    """
    found = os.fspath(path)
    while not os.path.exists(found) and os.path.dirname(found) != found:
        found = os.path.dirname(found)  # "/" at the latest
    return None if os.path.isdir(found) else found


def file_note(root: str | os.PathLike[str]) -> str:
    """What an error that found nothing in the local store at ``root`` adds when ``root``,
    or a directory above it, is a file (a note in parentheses); "" otherwise.

    Example:
        >>> import tempfile
        >>> top = tempfile.mkdtemp()
        >>> open(os.path.join(top, "f"), "w").close()
        >>> file_note(os.path.join(top, "f")), file_note(top)
        (' (it is a file, not a directory)', '')
    """
    found = file_in_the_way(root)
    if found is None:
        return ""
    return f" ({'it' if found == os.fspath(root) else repr(found)} is a file, not a directory)"


def not_a_directory(path: str | os.PathLike[str], err: BaseException) -> str | None:
    """For ``err``, an ``ENOTDIR`` of a file at ``path``: the words naming the file where a
    directory above ``path`` must be; None for any other error.

    Example:
        >>> import tempfile
        >>> top = tempfile.mkdtemp()
        >>> open(os.path.join(top, "f"), "w").close()
        >>> err = NotADirectoryError(errno.ENOTDIR, "Not a directory")
        >>> said = not_a_directory(os.path.join(top, "f", "a.zip"), err)
        >>> said == f"{os.path.join(top, 'f')!r} is a file, not a directory"
        True
    """
    if not isinstance(err, OSError) or err.errno != errno.ENOTDIR:
        return None
    found = file_in_the_way(os.path.dirname(os.fspath(path)))
    return None if found is None else f"{found!r} is a file, not a directory"
