"""A v2 ``.zattrs`` left where no node is (a delete cut short, another tool) is not taken
over by a node created there: its attributes are exactly the new node's, as zarr-python's."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import zarr

import torchzarr as tz

STALE = {"_ARRAY_DIMENSIONS": ["t"], "_torchzarr_dtype": "float8_e4m3fn", "units": "m"}


def _with_stale_zattrs(root: Path, path: str) -> None:
    tz.open_group(root, mode="w", zarr_format=2)
    tz.consolidate_metadata(root)
    (root / path).mkdir(parents=True)
    (root / path / ".zattrs").write_text(json.dumps(STALE))


CREATORS: dict[str, Callable[[Path], Any]] = {
    "create_array": lambda root: tz.open_group(root, mode="a").create_array(
        "x", data=torch.tensor([56, 64, 200], dtype=torch.uint8)
    ),
    "create_group": lambda root: tz.open_group(root, mode="a").create_group("x"),
    "tz.create_group": lambda root: tz.create_group(root, path="x", zarr_format=2),
    "open_group(mode='a')": lambda root: tz.open_group(root, path="x", mode="a", zarr_format=2),
    "create_hierarchy": lambda root: tz.open_group(root, mode="a").create_hierarchy(
        {"x": {"shape": (3,), "dtype": torch.uint8}}
    )["x"],
}


@pytest.mark.parametrize("how", list(CREATORS))
def test_a_new_v2_node_drops_a_stale_zattrs_at_its_path(tmp_path: Path, how: str) -> None:
    _with_stale_zattrs(tmp_path, "x")
    node = CREATORS[how](tmp_path)
    assert dict(node.attrs) == {}
    assert not (tmp_path / "x" / ".zattrs").exists()
    for opened in (
        tz.open(tmp_path, path="x", mode="r", use_consolidated=False),
        tz.open_group(tmp_path, mode="r")["x"],  # from the consolidated metadata
        zarr.open(tmp_path, path="x", mode="r"),
    ):
        assert dict(opened.attrs) == {}
        if isinstance(node, tz.Array):
            assert opened.dtype in (torch.uint8, "uint8")  # not reinterpreted as float8


def test_a_new_v2_node_with_attributes_replaces_a_stale_zattrs(tmp_path: Path) -> None:
    _with_stale_zattrs(tmp_path, "x")
    tz.open_group(tmp_path, mode="a").create_group("x", attributes={"a": 1})
    assert json.loads((tmp_path / "x" / ".zattrs").read_text()) == {"a": 1}


def test_a_parent_created_on_the_way_keeps_its_stale_zattrs_as_in_zarr_python(
    tmp_path: Path,
) -> None:
    _with_stale_zattrs(tmp_path, "p")
    tz.open_group(tmp_path, mode="a").create_group("p/x")
    assert dict(tz.open_group(tmp_path, path="p", mode="r").attrs) == STALE
