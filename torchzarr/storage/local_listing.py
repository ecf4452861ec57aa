"""LocalStore's listings: the keys below a directory (symlinked directories followed, loops
not) and the entries of one directory."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import NamedTuple

from torchzarr.storage.local_names import is_key_name, is_temporary, raise_unless_too_long

__all__ = ["list_entries", "walk_keys"]


def walk_keys(
    directory: str,
    base: str,
    above: frozenset[tuple[int, int]],
    links: list[tuple[str, str]] | None,
    store: object,
    temporaries: list[tuple[str, str]] | None = None,
) -> Iterator[str]:
    """Keys below ``directory``, each prefixed with ``base``, depth first.

    ``above`` identifies the directories being walked, so a symlink back to one of them
    (a loop) is not followed. With ``links``, symlinked directories are not followed but
    collected there as ``(name, path)``. With ``temporaries``, the store's temporary files
    (never keys) are collected there as ``(name, path)``, in the same walk (a delete
    removes them). ``store`` names the store in errors. The walk keeps its own stack, so
    no depth of directories exhausts Python's.

    Example:
        >>> import os, tempfile
        >>> root = tempfile.mkdtemp(); os.makedirs(root + "/a"); open(root + "/a/0", "w").close()
        >>> list(walk_keys(root, "", frozenset(), None, "store"))
        ['a/0']
    """
    walking = set(above)  # the directories from the top down to the one walked
    stack: list[_Level] = []
    level = _open_level(directory, base, walking, store)
    while level is not None or stack:
        if level is not None:
            walking.add(level.identity)
            stack.append(level)
        level = None
        top = stack[-1]
        entry = next(top.entries, None)
        if entry is None:
            stack.pop()
            walking.discard(top.identity)
            continue
        if temporaries is not None and is_temporary(entry.name):
            with contextlib.suppress(OSError):  # gone since: nothing to collect
                if entry.is_file(follow_symlinks=False):
                    temporaries.append((top.base + entry.name, entry.path))
            continue
        if not is_key_name(entry.name, top.directory):
            continue
        try:
            is_dir = entry.is_dir()  # through a symlink
            is_file = not is_dir and entry.is_file()
        except OSError:  # a symlink looping on itself: no key
            continue
        if is_file:
            yield top.base + entry.name
        elif is_dir and links is not None and entry.is_symlink():
            links.append((top.base + entry.name, entry.path))
        elif is_dir:
            level = _open_level(entry.path, top.base + entry.name + "/", walking, store)


class _Level(NamedTuple):
    """One directory of a walk: what is left of its entries."""

    directory: str
    base: str
    identity: tuple[int, int]  # (st_dev, st_ino)
    entries: Iterator[os.DirEntry[str]]


def _open_level(
    directory: str, base: str, walking: set[tuple[int, int]], store: object
) -> _Level | None:
    """``directory``'s entries to walk, or None: gone, not a directory, one of ``walking``
    (a symlink loop) or a name too long (nothing below it)."""
    try:
        st = os.stat(directory)
        if (st.st_dev, st.st_ino) in walking:
            return None
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as err:  # a name too long: no such directory, nothing below it
        raise_unless_too_long(err, f"cannot list {base or '/'!r} in {store}: {err}")
        return None
    return _Level(directory, base, (st.st_dev, st.st_ino), iter(entries))


def list_entries(directory: str, prefix: str, store: object) -> tuple[list[str], list[str]]:
    """``(keys, directories)`` directly in ``directory`` (listed as ``prefix`` of ``store``),
    sorted; symlinked directories count as directories.

    Example:
        >>> import os, tempfile
        >>> root = tempfile.mkdtemp(); os.makedirs(root + "/d"); open(root + "/f", "w").close()
        >>> list_entries(root, "", "store")
        (['f'], ['d'])
    """
    keys: list[str] = []
    dirs: list[str] = []
    try:
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return [], []
    except OSError as err:
        raise_unless_too_long(err, f"cannot list {prefix or '/'!r} in {store}: {err}")
        return [], []
    for entry in entries:
        if not is_key_name(entry.name, directory):
            continue
        try:
            if entry.is_dir():  # symlinked directories too
                dirs.append(entry.name)
            elif entry.is_file():
                keys.append(entry.name)
        except OSError:  # a symlink looping on itself: no key
            continue
    return sorted(keys), sorted(dirs)
