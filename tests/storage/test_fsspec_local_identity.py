"""An FsspecStore over the local file system names its data as LocalStore does: symlinks,
``.`` and ``//`` resolved, ``file://localhost/p`` the absolute path ``/p``; so both share
chunk locks and cache invalidation over one directory."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import torchzarr as tz
from torchzarr.storage.fsspec_store import FsspecStore
from torchzarr.storage.local import LocalStore
from torchzarr.storage.locations import location


def test_file_urls_of_one_directory_have_the_identity_of_its_local_store(tmp_path: Path) -> None:
    real = tmp_path / "real.zarr"
    real.mkdir()
    (tmp_path / "link.zarr").symlink_to(real)
    expected = LocalStore(real).identity
    spellings = [f"{tmp_path}/link.zarr", f"{tmp_path}/./real.zarr", f"{tmp_path}//real.zarr"]
    spellings += [f"{tmp_path}/real.zarr/", f"localhost{tmp_path}/link.zarr"]
    for spelling in spellings:
        assert FsspecStore(f"file://{spelling}").identity == expected, spelling
    assert FsspecStore(f"local://{tmp_path}/link.zarr").identity == expected
    assert location(FsspecStore(f"file://{tmp_path}/link.zarr").identity, "c/0") == location(
        expected, "c/0"
    )  # one chunk lock for writers through either store


def test_a_cached_array_sees_writes_through_a_symlinked_fsspec_store(tmp_path: Path) -> None:
    real, link = tmp_path / "real.zarr", tmp_path / "link.zarr"
    direct = tz.create_array(real, shape=(40,), dtype=torch.int32, chunks=(10,))
    link.symlink_to(real)
    direct[:] = 1
    hot = direct.with_cache()
    assert hot[:3].tolist() == [1, 1, 1]
    tz.open_array(FsspecStore(f"file://{link}"), mode="r+")[:] = 7
    assert hot[:3].tolist() == [7, 7, 7]


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST"])
def test_file_localhost_names_an_absolute_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, host: str
) -> None:
    monkeypatch.chdir(tmp_path)
    target = tmp_path / "abs" / "a.zarr"
    store = FsspecStore(f"file://{host}{target}")
    tz.create_array(store, shape=(4,), dtype=torch.float32, chunks=(2,))[:] = 1
    assert (target / "zarr.json").is_file()
    assert not (tmp_path / host).exists()  # not ./localhost/abs/a.zarr
    assert tz.open_array(target, mode="r")[:].tolist() == [1.0] * 4
    assert store.identity == LocalStore(target).identity
    # a host that is not localhost is still a relative path, as fsspec reads it
    assert FsspecStore("file://data.zarr").identity == LocalStore(tmp_path / "data.zarr").identity


def test_the_file_system_root_url_names_the_root_not_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = tz.create_array(tmp_path / "real", shape=(3,), dtype=torch.int8, chunks=(3,))
    real[:] = 5
    cwd = tmp_path / "cwd"
    decoy = tz.create_array(cwd / str(tmp_path).lstrip("/") / "real", shape=(3,), dtype=torch.int8)
    decoy[:] = 9  # where keys relative to the working directory would land
    monkeypatch.chdir(cwd)
    root = FsspecStore("file:///")
    assert root.identity == "file:///"
    assert tz.open_array(root, path=f"{str(tmp_path).lstrip('/')}/real")[:].tolist() == [5, 5, 5]
    assert "real" in root.list_dir(str(tmp_path).lstrip("/"))[1]
