"""LocalStore's listings: the keys below a directory (symlinked directories followed, loops
not) and the entries of one directory."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

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
    """Keys below ``directory``, each prefixed with ``base``.

    ``above`` identifies the directories being walked, so a symlink back to one of them
    (a loop) is not followed. With ``links``, symlinked directories are not followed but
    collected there as ``(name, path)``. With ``temporaries``, the store's temporary files
    (never keys) are collected there as ``(name, path)``, in the same walk (a delete
    removes them). ``store`` names the store in errors.

    Example:
        >>> import os, tempfile
        >>> root = tempfile.mkdtemp(); os.makedirs(root + "/a"); open(root + "/a/0", "w").close()
        >>> list(walk_keys(root, "", frozenset(), None, "store"))
        ['a/0']
    """
    try:
        st = os.stat(directory)
        if (st.st_dev, st.st_ino) in above:
            return
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return
    except OSError as err:  # a name too long: no such directory, nothing below it
        raise_unless_too_long(err, f"cannot list {base or '/'!r} in {store}: {err}")
        return
    above = above | {(st.st_dev, st.st_ino)}
    for entry in entries:
        if temporaries is not None and is_temporary(entry.name):
            with contextlib.suppress(OSError):  # gone since: nothing to collect
                if entry.is_file(follow_symlinks=False):
                    temporaries.append((base + entry.name, entry.path))
            continue
        if not is_key_name(entry.name, directory):
            continue
        try:
            is_dir = entry.is_dir()  # through a symlink
            is_file = not is_dir and entry.is_file()
        except OSError:  # a symlink looping on itself: no key
            continue
        if is_file:
            yield base + entry.name
        elif is_dir and links is not None and entry.is_symlink():
            links.append((base + entry.name, entry.path))
        elif is_dir:
            yield from walk_keys(
                entry.path, base + entry.name + "/", above, links, store, temporaries
            )


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
