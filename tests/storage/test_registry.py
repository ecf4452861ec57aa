"""The store registry: custom schemes, and what it refuses."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import torchzarr as tz
from torchzarr.errors import ArgumentTypeError, InvalidArgumentError, UnknownStoreError
from torchzarr.storage import (
    MemoryStore,
    register_store,
    registered_stores,
    registry,
    resolve_store,
)


def test_a_registered_scheme_opens_through_the_public_api():
    made = []

    def factory(url, options):
        made.append((url, options))
        return MemoryStore()

    register_store("tz-test+mem", factory, overwrite=True)
    arr = tz.create_array("TZ-TEST+MEM://data", shape=(3,), dtype=torch.int8)  # any case
    arr[:] = 1
    assert made[0][0].lower().startswith("tz-test+mem://") and "tz-test+mem" in registered_stores()
    with pytest.raises(InvalidArgumentError, match="already registered"):
        register_store("tz-test+mem", factory)


@pytest.mark.parametrize("scheme", ["", "no good", "1abc", "a/b", "s3:"])
def test_malformed_schemes_are_refused(scheme):
    with pytest.raises(InvalidArgumentError, match="URL scheme"):
        register_store(scheme, lambda url, options: MemoryStore())


def test_a_factory_must_be_callable_and_unknown_schemes_are_named(monkeypatch):
    with pytest.raises(ArgumentTypeError, match="callable"):
        register_store("tz-test-bad", "MemoryStore")
    monkeypatch.setattr(registry, "_registry", dict(registry._registry))  # undone after
    register_store("tz-test-dict", lambda url, options: {})
    with pytest.raises(UnknownStoreError, match=r"returned dict .* not a torchzarr Store"):
        tz.open_group("tz-test-dict://x", mode="a")
    with pytest.raises(UnknownStoreError, match="tz-nope"):
        resolve_store("tz-nope://x")


@pytest.mark.parametrize(
    "form", ["FILE://{}", "File://{}", "file://localhost{}", "file://LOCALHOST{}"]
)
def test_file_urls_in_any_case_and_with_localhost(tmp_path, monkeypatch, form):
    monkeypatch.chdir(tmp_path)
    target = tmp_path / "abs" / "a.zarr"
    store = resolve_store(form.format(target), mode="a")
    assert store.root == target
    tz.create_array(form.format(target), shape=(2,), dtype=torch.int8)
    assert (target / "zarr.json").is_file() and sorted(p.name for p in tmp_path.iterdir()) == [
        "abs"
    ]


def test_file_urls_without_an_absolute_path_are_relative_as_in_fsspec(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_store("file://data.zarr", mode="a").root == tmp_path / "data.zarr"
    assert resolve_store("FILE://sub/d.zarr", mode="a").root == tmp_path / "sub" / "d.zarr"
    with pytest.raises(UnknownStoreError, match="names no path"):
        resolve_store("file://", mode="a")


@pytest.mark.parametrize("url", ["{}/x.zarr", "file://{}/x.zarr", "memory://", "memory://named"])
def test_unknown_storage_options_name_the_url_and_the_options(tmp_path, url):
    url = url.format(tmp_path)
    with pytest.raises(UnknownStoreError, match=r"storage_options \['bogus_option'\]") as info:
        resolve_store(url, mode="a", storage_options={"bogus_option": 1})
    assert repr(url) in str(info.value)
    assert resolve_store(url, mode="a", storage_options={}) is not None


@pytest.mark.parametrize("url", ["data.zarr", "memory://", "s3://bucket/x", "x.zip"])
@pytest.mark.parametrize("options", [[1, 2], "anon", 5, [("fsync", True)]])
def test_storage_options_that_are_not_a_mapping_are_refused_for_every_store(
    url: str, options: object, tmp_path: Path
) -> None:
    with pytest.raises(ArgumentTypeError, match=r"storage_options of .* must be a mapping"):
        resolve_store(str(tmp_path / url) if "://" not in url else url, storage_options=options)
