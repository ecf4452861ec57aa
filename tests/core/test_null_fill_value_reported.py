"""A v2 ``fill_value: null`` ("no fill value") is reported as None, as zarr-python does,
by ``Array.fill_value``, ``Array.info`` and ``torchzarr info``; unwritten chunks still read
as zeros, and copies keep it null."""

from __future__ import annotations

import re

import torch
import zarr

import torchzarr as tz
from torchzarr.cli import main


def test_v2_null_fill_value_is_reported_as_none(tmp_path):
    arr = tz.create_array(tmp_path, shape=(4,), dtype=torch.int32, chunks=(2,), zarr_format=2)
    assert arr.metadata.fill_value is None
    assert arr.fill_value is None is zarr.open_array(str(tmp_path), mode="r").fill_value
    assert arr.info.fill_value is None
    assert re.search(r"Fill value +: None", str(arr.info))
    arr[2:] = torch.tensor([5, 6], dtype=torch.int32)
    assert arr[:].tolist() == [0, 0, 5, 6]  # the unwritten chunk reads as zeros


def test_explicit_fill_values_are_reported_as_scalars():
    v2 = tz.create_array("memory://", shape=(2,), dtype="int8", zarr_format=2, fill_value=0)
    assert v2.fill_value == 0 and v2.info.fill_value == 0
    v3 = tz.create_array("memory://", shape=(2,), dtype=torch.bfloat16, fill_value=1.5)
    assert v3.fill_value == 1.5 and v3[:].tolist() == [1.5, 1.5]


def test_a_copy_with_the_reported_fill_value_keeps_it_null(tmp_path):
    source = tz.create_array(tmp_path / "a", shape=(3,), dtype="int16", zarr_format=2)
    source[:] = torch.tensor([0, 1, 0], dtype=torch.int16)
    copy = tz.create_array(
        tmp_path / "b", data=source[:], zarr_format=2, fill_value=source.fill_value
    )
    assert copy.metadata.fill_value is None and copy[:].tolist() == [0, 1, 0]
    assert tz.from_array(tmp_path / "c", data=source).metadata.fill_value is None


def test_cli_info_shows_a_null_fill_value_as_none(tmp_path, capsys):
    tz.create_array(tmp_path, shape=(2,), dtype="int8", zarr_format=2)
    assert main(["info", str(tmp_path)]) == 0
    assert re.search(r"Fill value +: None", capsys.readouterr().out)


def test_chunks_of_zeros_are_stored_in_an_array_without_a_fill_value(tmp_path):
    """With no fill value, a chunk not stored is undefined (zarr-python 2 reads whatever
    memory held): zeros are stored as any other values; with fill value 0 they are not."""
    for name, fill in (("null", None), ("zero", 0)):
        arr = tz.create_array(
            tmp_path / name,
            shape=(40,),
            dtype=torch.float32,
            chunks=(10,),
            zarr_format=2,
            fill_value=fill,
            compressors=None,
        )
        arr[:] = torch.zeros(40)
        arr[25] = 3.0
        stored = sorted(p.name for p in (tmp_path / name).iterdir() if p.name != ".zarray")
        assert stored == (["0", "1", "2", "3"] if fill is None else ["2"])
        assert arr[:].tolist() == [0.0] * 25 + [3.0] + [0.0] * 14


def test_a_shrink_of_an_array_without_a_fill_value_stores_no_chunk_never_written(tmp_path):
    arr = tz.create_array(
        tmp_path,
        shape=(100, 100),
        dtype=torch.float32,
        chunks=(10, 10),
        zarr_format=2,
        compressors=None,
    )
    arr[0:10, 0:10] = torch.ones(10, 10)
    arr[90:100, 0:10] = torch.zeros(10, 10)  # stored: zeros are values here
    arr.resize((95, 100))  # cuts the last row of chunks: only the stored one is reset
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != ".zarray") == ["0.0", "9.0"]
    arr.resize((100, 100))
    assert arr[90:100, 0:10].sum().item() == 0 and arr[0:10, 0:10].sum().item() == 100
