"""The store registry: custom schemes, and what it refuses."""

from __future__ import annotations

import pytest
import torch

import torchzarr as tz
from torchzarr.errors import ArgumentTypeError, InvalidArgumentError, UnknownStoreError
from torchzarr.storage import MemoryStore, register_store, registered_stores, resolve_store


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


def test_a_factory_must_be_callable_and_unknown_schemes_are_named():
    with pytest.raises(ArgumentTypeError, match="callable"):
        register_store("tz-test-bad", "MemoryStore")
    with pytest.raises(UnknownStoreError, match="tz-nope"):
        resolve_store("tz-nope://x")
