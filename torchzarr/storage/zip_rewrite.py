"""Compacting a zip file: rewriting it with its live entries only, in place of the original."""

from __future__ import annotations

import contextlib
import copy
import os
import stat
import zipfile
from collections.abc import Iterable

from torchzarr.storage.local_names import temporary_name
from torchzarr.storage.local_sync import flush

__all__ = ["rewrite_live"]


def rewrite_live(path: str, live: Iterable[zipfile.ZipInfo]) -> None:
    """Rewrite the zip at ``path`` with only the entries ``live`` (temp file + rename).

    The new file gets copies of the entries' infos: zipfile sets the offsets and sizes of
    what it writes in them, and reads still in flight use the originals to find the bytes
    in the old file. It takes the original's permission bits, and is flushed to disk before
    it is renamed over the original (it replaces the only copy), the directory after.

    Example:
        >>> import tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "r.zip")
        >>> with zipfile.ZipFile(path, "w") as zf:
        ...     zf.writestr("old", b"1"); zf.writestr("new", b"2")
        >>> os.chmod(path, 0o600)
        >>> rewrite_live(path, [zipfile.ZipFile(path).getinfo("new")])
        >>> zipfile.ZipFile(path).namelist(), oct(stat.S_IMODE(os.stat(path).st_mode))
        (['new'], '0o600')
    """
    # ``.<file>.zip.<32 hex digits>.partial`` beside it, as LocalStore names its temporaries:
    # a leftover of a killed rewrite is hidden, skipped by listings, and safe to delete
    tmp = os.path.join(os.path.dirname(path), temporary_name(os.path.basename(path)))
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
        # made with no access for others, then given the original's bits before any entry
        # is written: a private zip's entries never sit in a file others may open
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with open(fd, "wb") as out:
            os.chmod(out.fileno(), mode)  # not the umask's default (0o644 for 0o600)
            with zipfile.ZipFile(path, "r") as src, zipfile.ZipFile(out, "w") as dst:
                for info in live:
                    with src.open(info) as f:
                        dst.writestr(copy.copy(info), f.read())
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # the rename itself, durable (where dirs sync)
        flush(os.path.dirname(os.path.abspath(path)))
