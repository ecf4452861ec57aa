"""A zip reached through a symlink: the file it names is the one read and rewritten."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from torchzarr.storage.zip import ZipStore


@pytest.mark.parametrize("writer", ["link", "real", "link-mode-w"])
def test_rewriting_a_zip_reached_through_a_symlink_keeps_the_link(
    tmp_path: Path, writer: str
) -> None:
    real, link = tmp_path / "real.zip", tmp_path / "link.zip"
    with ZipStore(real, mode="w") as store:
        store.set("k", b"0")
    link.symlink_to(real)
    ZipStore(link).get("k")  # the link opens the shared archive first
    store = {
        "link": ZipStore(link, mode="a"),
        "real": ZipStore(real, mode="a"),
        "link-mode-w": ZipStore(link, mode="w"),  # truncates the file it links to
    }[writer]
    for i in range(5):  # overwrites: the close rewrites the file without the dead entries
        store.set("k", b"x" * 1000 + bytes([i]))
    store.close()
    assert link.is_symlink() and link.resolve() == real.resolve()
    ZipStore(link, mode="a").set("new", b"through the link")
    ZipStore(link).close()
    with zipfile.ZipFile(real) as zf:
        assert zf.read("new") == b"through the link" and zf.read("k") == b"x" * 1000 + b"\x04"
    assert ZipStore(real).identity == ZipStore(link).identity
