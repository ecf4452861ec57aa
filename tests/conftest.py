"""Shared fixtures: stores of each kind the core supports."""

from __future__ import annotations

import pytest

import torchzarr as tz

# real-server fixtures (s3_server, gcs_server, azurite_server, ...) for any test module
pytest_plugins = ["services.servers"]


@pytest.fixture(params=["memory", "local"])
def any_store(request: pytest.FixtureRequest, tmp_path):
    """A fresh empty store: MemoryStore or LocalStore."""
    if request.param == "memory":
        return tz.MemoryStore()
    return tz.LocalStore(tmp_path / "store.zarr")
