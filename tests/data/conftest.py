"""Fixtures for the dataset tests."""

from __future__ import annotations

import pytest
from datahelpers import make_array

import torchzarr as tz


@pytest.fixture
def local_array(tmp_path):
    return make_array(tz.LocalStore(tmp_path / "data.zarr"))


@pytest.fixture
def memory_array():
    return make_array(tz.MemoryStore())
