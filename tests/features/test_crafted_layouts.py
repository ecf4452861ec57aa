"""Feature stores whose published-state attribute or ids array was tampered with: refused
with a MetadataError naming the group and the store, never misread nor written into."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
import torch

import torchzarr as tz
from torchzarr.errors import MetadataError
from torchzarr.features import FeatureStore

_NAMED = re.escape("attribute of group /sub in LocalStore(")


def _store(tmp_path: Path, zarr_format: int) -> str:
    """A store of ids 10..40 in the group ``sub`` (not the root: the key path is checked)."""
    path = str(tmp_path / "fs.zarr")
    with FeatureStore(path, mode="w", path="sub", zarr_format=zarr_format) as fs:
        fs.write([10, 20, 30, 40], {"emb": torch.arange(8.0).reshape(4, 2)})
    return path


def _set_state(path: str, **fields: Any) -> None:
    group = tz.open_group(path, mode="r+", path="sub")
    state = dict(group.attrs["feature_store"])
    for key, value in fields.items():
        if value is _DROP:
            del state[key]
        else:
            state[key] = value
    group.attrs["feature_store"] = state


_DROP = object()


def _refused(path: str, message: str) -> None:
    """Reads and writes both refuse the store, and the write stores nothing."""
    ids = tz.open_group(path, mode="r", path="sub")["ids"]
    shape = ids.shape
    with pytest.raises(MetadataError, match=message) as err:
        FeatureStore(path, mode="r", path="sub").read([10])
    assert "/sub" in str(err.value) and path in str(err.value)
    with pytest.raises(MetadataError, match=message):
        FeatureStore(path, mode="r+", path="sub").write([50], {"emb": torch.ones(1, 2)})
    assert tz.open_group(path, mode="r", path="sub")["ids"].shape == shape


@pytest.mark.parametrize("zarr_format", [2, 3])
@pytest.mark.parametrize(
    ("layout", "shown"),
    [
        (999, "has format 999"),
        (_DROP, "has no format"),
        ("1", "has format '1'"),
        (True, "True"),
        (1.0, "has format 1.0"),
    ],
    ids=["future", "missing", "string", "true", "float"],
)
def test_a_layout_format_other_than_the_one_written_is_refused(
    tmp_path: Path, zarr_format: int, layout: Any, shown: str
) -> None:
    path = _store(tmp_path, zarr_format)
    _set_state(path, format=layout)
    _refused(path, f"{_NAMED}.*{shown}.*only format 1")


@pytest.mark.parametrize(
    "features",
    ["emb", {"emb": 1}, ["emb", 3], None, _DROP],
    ids=["string", "dict", "non-string", "null", "missing"],
)
def test_features_that_are_not_a_list_of_names_are_refused(tmp_path: Path, features: Any) -> None:
    path = _store(tmp_path, 3)
    _set_state(path, features=features)
    _refused(path, f"{_NAMED}.*its features must be a list of names")


@pytest.mark.parametrize("state", [[1, 2], None, "x"])
def test_a_state_that_is_not_an_object_is_refused(tmp_path: Path, state: Any) -> None:
    path = _store(tmp_path, 3)
    tz.open_group(path, mode="r+", path="sub").attrs["feature_store"] = state
    with pytest.raises(MetadataError, match=f"{_NAMED}.*not an object"):
        len(FeatureStore(path, mode="r", path="sub"))


def test_a_missing_row_count_names_the_store(tmp_path: Path) -> None:
    path = _store(tmp_path, 3)
    _set_state(path, num_rows=_DROP)
    _refused(path, f"{_NAMED}.*it has no 'num_rows'")


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_an_id_stored_twice_names_the_group_and_the_store(tmp_path: Path, zarr_format: int) -> None:
    path = _store(tmp_path, zarr_format)
    tz.open_group(path, mode="r+", path="sub")["ids"][2] = 10
    message = r"feature store /sub in LocalStore\(.*'ids' array holds id 10 more than once$"
    _refused(path, message)


@pytest.mark.parametrize(("zarr_format", "key"), [(2, "sub/ids/0"), (3, "sub/ids/c/0")])
def test_lost_ids_chunks_are_named_not_reported_as_id_0_twice(
    tmp_path: Path, zarr_format: int, key: str
) -> None:
    path = _store(tmp_path, zarr_format)
    os.remove(os.path.join(path, *key.split("/")))
    _refused(
        path, rf"holds id 0 more than once, its fill value: chunks of it are not stored \('{key}'\)"
    )


def test_an_id_0_stored_twice_in_stored_chunks_is_not_called_lost(tmp_path: Path) -> None:
    path = str(tmp_path / "fs.zarr")
    with FeatureStore(path, mode="w", path="sub") as fs:
        fs.write([0, 1, 2], {"emb": torch.ones(3, 2)})
    tz.open_group(path, mode="r+", path="sub")["ids"][2] = 0  # its chunk [0, 1, 0] is stored
    with pytest.raises(MetadataError, match=r"holds id 0 more than once$"):
        len(FeatureStore(path, mode="r", path="sub"))
