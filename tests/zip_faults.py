"""Test helpers for zip stores that run out of room: a file size limit, zips of known
entries, and a directory write that fails once."""

from __future__ import annotations

import contextlib
import errno
import resource
import signal
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from torchzarr.storage import zip_archive
from torchzarr.storage.zip import ZipStore
from torchzarr.storage.zip_io import cut_file


@contextlib.contextmanager
def room_left(path: Path, extra: int) -> Iterator[None]:
    """Within the block, files may grow to ``path``'s size plus ``extra`` bytes only."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    limit = path.stat().st_size + extra
    if hard != resource.RLIM_INFINITY and hard < limit:
        pytest.skip("the hard file size limit is below what the test needs")
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


def make_zip(path: Path, values: Mapping[str, bytes]) -> Path:
    """A closed zip at ``path`` holding ``values``."""
    with ZipStore(path, mode="w") as store:
        for key, value in values.items():
            store.set(key, value)
    return path


def entries(path: Path) -> dict[str, bytes]:
    """The entries of the zip at ``path``, after checking every CRC."""
    with zipfile.ZipFile(path) as zf:
        assert zf.testzip() is None
        return {name: zf.read(name) for name in zf.namelist()}


def directory_fails_once(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Make the next directory write of any zip fail for lack of room (the file cut where
    the directory began, as a full disk leaves it); later ones write as usual. The list
    returned is non-empty once it failed."""
    write_directory = zip_archive.write_directory
    failed: list[int] = []

    def no_room_once(zf: zipfile.ZipFile) -> OSError | None:
        if failed:
            return write_directory(zf)
        failed.append(1)
        cut_file(zf, zf.start_dir)
        return OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(zip_archive, "write_directory", no_room_once)
    return failed
