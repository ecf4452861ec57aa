"""Malformed DCP metadata JSON: MetadataError naming the entry and the zarr.json it is in."""

from __future__ import annotations

import copy
import pathlib
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.metadata import (
    ChunkStorageMetadata,
    Metadata,
    TensorProperties,
    TensorStorageMetadata,
)

import torchzarr as tz
from torchzarr.checkpoint.commit import MANIFEST_ATTRIBUTE
from torchzarr.checkpoint.format import DCP_KEY_ATTRIBUTE
from torchzarr.distributed import (
    ZarrStorageReader,
    ZarrStorageWriter,
    metadata_from_json,
    metadata_to_json,
)
from torchzarr.errors import MetadataError

pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled")


def _doc() -> dict[str, Any]:
    entry = TensorStorageMetadata(
        TensorProperties(torch.float32),
        torch.Size([4]),
        [ChunkStorageMetadata(torch.Size([0]), torch.Size([4]))],
    )
    return metadata_to_json(Metadata({"w": entry}))


def _entry(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["state_dict_metadata"]["w"]


EDITS: dict[str, tuple[Callable[[dict[str, Any]], Any], str]] = {
    "dtype missing": (lambda d: _entry(d).pop("dtype"), r"entry 'w'.*without \['dtype'\]"),
    "chunks missing": (lambda d: _entry(d).pop("chunks"), r"entry 'w'.*without \['chunks'\]"),
    "size a string": (lambda d: _entry(d).update(size="ab"), r"entry 'w': size is 'ab'"),
    "size negative": (lambda d: _entry(d).update(size=[-4]), r"entry 'w': size is \[-4\]"),
    "offset negative": (
        lambda d: _entry(d).update(chunks=[[[-1], [4]]]),
        r"entry 'w': offsets of chunk 0 is \[-1\]",
    ),
    "box past the size": (
        lambda d: _entry(d).update(chunks=[[[2], [4]]]),
        r"entry 'w': chunk 0 .* reaches past the tensor's size \[4\]",
    ),
    "box of another rank": (
        lambda d: _entry(d).update(chunks=[[[0, 0], [4, 1]]]),
        r"entry 'w': offsets of chunk 0 is \[0, 0\], not a list of 1 whole",
    ),
    "chunks not a list": (lambda d: _entry(d).update(chunks=3), r"entry 'w': chunks is 3"),
    "requires_grad a string": (
        lambda d: _entry(d).update(requires_grad="yes"),
        r"entry 'w': requires_grad is 'yes'",
    ),
    "format a string": (lambda d: d.update(format="x"), r"has format 'x', not a whole number"),
    "modules an int": (
        lambda d: d.update(storage_meta={"modules": 5}),
        r"storage_meta\.modules is 5",
    ),
    "save_id an int": (
        lambda d: d.update(storage_meta={"save_id": 5}),
        r"storage_meta\.save_id is 5",
    ),
    "planner_data bad typed JSON": (
        lambda d: d.update(planner_data={"tuple": None}),
        r"DCP metadata: checkpoint value at \['planner_data'\]",
    ),
}


@pytest.mark.parametrize("case", sorted(EDITS))
def test_malformed_metadata_json_is_a_metadata_error_naming_the_entry(case: str) -> None:
    edit, match = EDITS[case]
    doc = copy.deepcopy(_doc())
    edit(doc)
    with pytest.raises(MetadataError, match=match):
        metadata_from_json(doc)
    with pytest.raises(MetadataError, match=r"^in zarr\.json of ck[: ]"):
        metadata_from_json(doc, source="in zarr.json of ck")


def test_zero_sized_and_scalar_entries_still_load() -> None:
    entries = {
        "empty": TensorStorageMetadata(
            TensorProperties(torch.float32),
            torch.Size([0, 3]),
            [ChunkStorageMetadata(torch.Size([0, 0]), torch.Size([0, 3]))],
        ),
        "scalar": TensorStorageMetadata(
            TensorProperties(torch.int64, requires_grad=True),
            torch.Size([]),
            [ChunkStorageMetadata(torch.Size([]), torch.Size([]))],
        ),
    }
    back = metadata_from_json(metadata_to_json(Metadata(entries)))
    assert back.state_dict_metadata == entries


def _edit_attr(path: pathlib.Path, member: str, attribute: str, edit: Callable[[Any], Any]) -> None:
    group = tz.open_group(str(path), mode="r+", path=member, use_consolidated=False)
    value = copy.deepcopy(group.attrs[attribute])
    edit(value)
    group.attrs[attribute] = value


def test_dcp_load_names_the_manifest_and_the_entry_of_malformed_metadata(
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "ck"
    dcp.save({"w": torch.ones(4)}, storage_writer=ZarrStorageWriter(str(path)), no_dist=True)
    _edit_attr(
        path, "", MANIFEST_ATTRIBUTE, lambda m: m["dcp"]["state_dict_metadata"]["w"].pop("dtype")
    )
    with pytest.raises(MetadataError, match=r"manifest \(root zarr\.json\).*entry 'w'"):
        ZarrStorageReader(str(path)).read_metadata()
    with pytest.raises(
        CheckpointException, match=r"manifest \(root zarr\.json\).*entry 'w'"
    ) as raised:
        dcp.load({"w": torch.zeros(4)}, storage_reader=ZarrStorageReader(str(path)), no_dist=True)
    assert "KeyError" not in str(raised.value)


def test_a_versions_malformed_own_metadata_names_its_zarr_json(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "ck"
    for value in (1.0, 2.0):
        writer = ZarrStorageWriter(str(path), keep=2)
        dcp.save({"w": torch.full((4,), value)}, storage_writer=writer, no_dist=True)
    _edit_attr(
        path,
        "v000001",
        DCP_KEY_ATTRIBUTE,
        lambda a: a["dcp"]["state_dict_metadata"]["w"].update(size=[-4]),
    )
    reader = ZarrStorageReader(str(path), version="v000001")
    with pytest.raises(MetadataError, match=r"version 'v000001' \(v000001/zarr\.json\).*'w'"):
        reader.read_metadata()
    out = {"w": torch.zeros(4)}  # the committed version is untouched
    dcp.load(out, storage_reader=ZarrStorageReader(str(path)), no_dist=True)
    assert torch.equal(out["w"], torch.full((4,), 2.0))


@pytest.mark.parametrize("size", [[6], [2], [2, 2]], ids=["larger", "smaller", "other-rank"])
def test_a_manifest_size_other_than_the_arrays_shape_is_a_metadata_error_naming_the_key(
    tmp_path: pathlib.Path, size: list[int]
) -> None:
    path = tmp_path / "ck"
    dcp.save({"w": torch.arange(4.0)}, storage_writer=ZarrStorageWriter(str(path)), no_dist=True)

    def resize(manifest: dict[str, Any]) -> None:  # a hand edit, consistent in itself
        entry = manifest["dcp"]["state_dict_metadata"]["w"]
        entry.update(size=size, chunks=[[[0] * len(size), size]])

    _edit_attr(path, "", MANIFEST_ATTRIBUTE, resize)
    state = {"w": torch.zeros(size)}
    with pytest.raises(CheckpointException, match=r"key 'w' the size \[") as raised:
        dcp.load(state, storage_reader=ZarrStorageReader(str(path)), no_dist=True)
    err = raised.value.failures[0][0]
    assert isinstance(err, MetadataError) and f"{size}" in str(err) and "[4]" in str(err)
