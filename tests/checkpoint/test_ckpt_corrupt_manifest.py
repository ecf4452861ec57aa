"""A checkpoint whose manifest (the root zarr.json) is corrupt: loads and saves name the
file and touch none of the versions in the store."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException

from torchzarr.checkpoint import load_checkpoint, save_checkpoint
from torchzarr.checkpoint.commit import MANIFEST_ATTRIBUTE
from torchzarr.checkpoint.prune import wait_pruned
from torchzarr.distributed import ZarrStorageReader
from torchzarr.errors import MetadataError, NodeExistsError, NodeNotFoundError

pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled")


def _saved(tmp_path: Path) -> Path:
    path = tmp_path / "ckpt"
    save_checkpoint({"w": torch.arange(4.0)}, path)
    wait_pruned()
    return path


def _files(path: Path) -> dict[str, bytes]:
    out = {}
    for directory, _, names in os.walk(path):
        for name in names:
            full = Path(directory) / name
            out[str(full.relative_to(path))] = full.read_bytes()
    return out


def _truncate_manifest(path: Path) -> None:
    manifest = path / "zarr.json"
    text = manifest.read_text()
    manifest.write_text(text[: len(text) // 2])


def test_load_of_a_truncated_manifest_names_the_file(tmp_path: Path) -> None:
    path = _saved(tmp_path)
    _truncate_manifest(path)
    with pytest.raises(MetadataError, match=r"root zarr\.json\) is corrupt.*v000001") as info:
        load_checkpoint(path)
    assert isinstance(info.value.__cause__, MetadataError)
    assert "not valid JSON" in str(info.value)


def test_named_version_still_loads_when_the_manifest_is_corrupt(tmp_path: Path) -> None:
    path = _saved(tmp_path)
    _truncate_manifest(path)
    assert torch.equal(load_checkpoint(path, version="v000001")["w"], torch.arange(4.0))


def test_save_over_a_corrupt_manifest_refuses_and_writes_nothing(tmp_path: Path) -> None:
    path = _saved(tmp_path)
    _truncate_manifest(path)
    before = _files(path)
    with pytest.raises(MetadataError, match=r"zarr\.json\) is corrupt"):
        save_checkpoint({"w": torch.zeros(4)}, path)
    wait_pruned()
    assert _files(path) == before


def test_malformed_manifest_attribute_is_reported(tmp_path: Path) -> None:
    path = _saved(tmp_path)
    doc = json.loads((path / "zarr.json").read_text())
    doc["attributes"][MANIFEST_ATTRIBUTE] = "v000001"
    (path / "zarr.json").write_text(json.dumps(doc))
    with pytest.raises(MetadataError, match="attribute 'torchzarr_checkpoint' is 'v000001'"):
        load_checkpoint(path)


@pytest.mark.parametrize("format_value", ["x", None, [1], 1.5, True])
def test_a_manifest_whose_format_is_no_int_is_reported(tmp_path: Path, format_value) -> None:
    path = _saved(tmp_path)
    doc = json.loads((path / "zarr.json").read_text())
    doc["attributes"][MANIFEST_ATTRIBUTE]["format"] = format_value
    (path / "zarr.json").write_text(json.dumps(doc))
    with pytest.raises(MetadataError, match="is corrupt"):
        load_checkpoint(path)
    with pytest.raises(MetadataError, match="is corrupt"):
        save_checkpoint({"w": torch.ones(2)}, path)


def test_dcp_reader_reports_a_corrupt_manifest(tmp_path: Path) -> None:
    path = _saved(tmp_path)
    _truncate_manifest(path)
    with pytest.raises(CheckpointException, match=r"zarr\.json\) is corrupt"):
        dcp.load({"w": torch.zeros(4)}, storage_reader=ZarrStorageReader(path), no_dist=True)


def test_a_store_without_a_checkpoint_is_still_reported_as_such(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(NodeNotFoundError, match="no committed checkpoint"):
        load_checkpoint(tmp_path / "empty")


def test_a_save_into_a_zarr_v2_group_is_refused_before_writing(tmp_path: Path) -> None:
    import zarr

    zarr.open_group(str(tmp_path / "run"), mode="w", zarr_format=2).attrs["note"] = "run dir"
    before = sorted(os.listdir(tmp_path / "run"))
    with pytest.raises(NodeExistsError, match="holds a Zarr v2 group at its root"):
        save_checkpoint({"w": torch.ones(2)}, tmp_path / "run")
    assert sorted(os.listdir(tmp_path / "run")) == before
