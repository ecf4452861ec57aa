"""JSON that Python's json module cannot hold raises MetadataError naming where: an integer
literal of more digits than Python parses, and a str with a lone surrogate (what
``os.fsdecode`` gives for bytes that are not UTF-8), which UTF-8 cannot encode. A lone
surrogate read from a peer's document (zarr-python writes it as a JSON escape) is written
back as zarr-python writes it; a new attribute value holding one raises AttributeValueError."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import zarr

import torchzarr as tz
from torchzarr.cli import main
from torchzarr.errors import AttributeValueError, MetadataError, TorchZarrError
from torchzarr.metadata import json_dumps, json_loads

LONE_SURROGATE = "caf\udce9"


def _huge_int_literal() -> str:
    return "9" * (sys.get_int_max_str_digits() + 1)


def test_an_integer_of_too_many_digits_is_a_metadata_error_naming_the_key() -> None:
    with pytest.raises(MetadataError, match=r"a/zarr.json: not valid JSON \(Exceeds the limit"):
        json_loads('{"n": ' + _huge_int_literal() + "}", key="a/zarr.json")


@pytest.mark.parametrize("opener", [tz.open_group, tz.open])
def test_a_group_whose_attribute_has_too_many_digits_does_not_open(
    tmp_path: Path, opener: object
) -> None:
    document = '{"zarr_format": 3, "node_type": "group", "attributes": {"n": %s}}'
    (tmp_path / "zarr.json").write_text(document % _huge_int_literal())
    with pytest.raises(MetadataError, match=r"zarr.json.*not valid JSON"):
        opener(tmp_path, mode="r")  # type: ignore[operator]


def test_the_cli_reports_too_many_digits_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / ".zattrs").write_text('{"n": ' + _huge_int_literal() + "}")
    (tmp_path / ".zgroup").write_text('{"zarr_format": 2}')
    assert main(["info", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "(.zattrs)" in err and "not valid JSON" in err


def test_a_lone_surrogate_is_a_metadata_error_naming_where_it_is() -> None:
    document = {"attributes": {"names": ["ok", LONE_SURROGATE]}}
    with pytest.raises(MetadataError) as caught:
        json_dumps(document, key="zarr.json")
    assert str(caught.value) == (
        "zarr.json: metadata cannot be written as UTF-8: the str 'caf\\udce9' at "
        "['attributes']['names'][1] holds a lone surrogate, which UTF-8 cannot encode"
    )
    with pytest.raises(MetadataError, match=r"'caf\\udce9' \(a key\) at \['attributes'\]"):
        json_dumps({"attributes": {LONE_SURROGATE: 1}})


@pytest.mark.parametrize("key_holds_it", [True, False])
def test_an_attribute_with_a_lone_surrogate_is_refused_and_nothing_is_written(
    tmp_path: Path, key_holds_it: bool
) -> None:
    group = tz.open_group(tmp_path, mode="w", attributes={"kept": 1})
    before = (tmp_path / "zarr.json").read_bytes()
    with pytest.raises(TorchZarrError, match="lone surrogate"):
        if key_holds_it:
            group.attrs[LONE_SURROGATE] = 1
        else:
            group.attrs["name"] = LONE_SURROGATE
    assert (tmp_path / "zarr.json").read_bytes() == before
    assert dict(tz.open_group(tmp_path, mode="r").attrs) == {"kept": 1}


def test_a_lone_surrogate_is_written_as_zarr_python_writes_it_when_kept() -> None:
    document = {"src": LONE_SURROGATE, LONE_SURROGATE: ["é", "\\udce9 is text"]}
    data = json_dumps(document, keep_surrogates=True)
    assert data == json.dumps(document, indent=2).replace("\\u00e9", "é").encode("utf-8")
    assert json_loads(data, key="zarr.json") == document
    assert json_dumps({"a": "é"}, keep_surrogates=True) == '{\n  "a": "é"\n}'.encode()


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_a_hierarchy_with_a_peers_lone_surrogate_takes_changes_and_stays_consolidated(
    tmp_path: Path, zarr_format: int
) -> None:
    peer = zarr.open_group(tmp_path, mode="w", zarr_format=zarr_format)
    peer.create_group("g").attrs["src"] = LONE_SURROGATE  # as os.fsdecode gives
    peer.create_array("x", shape=(2,), dtype="i1")
    zarr.consolidate_metadata(tmp_path)
    group = tz.open_group(tmp_path, mode="a")
    group["x"].resize((5,))
    group.create_array("y", shape=(3,), dtype=torch.int8)
    group["g"].attrs["n"] = 1
    for reader in (tz.open_group(tmp_path, mode="r"), zarr.open_group(tmp_path, mode="r")):
        assert reader["x"].shape == (5,) and "y" in reader  # the consolidated metadata
        assert dict(reader["g"].attrs) == {"src": LONE_SURROGATE, "n": 1}
    tz.consolidate_metadata(tmp_path)
    assert dict(zarr.open_group(tmp_path, mode="r")["g"].attrs)["src"] == LONE_SURROGATE


@pytest.mark.parametrize("key_holds_it", [True, False])
def test_a_new_attribute_with_a_lone_surrogate_is_an_attribute_value_error(
    tmp_path: Path, key_holds_it: bool
) -> None:
    attributes = {LONE_SURROGATE: 1} if key_holds_it else {"names": ["ok", LONE_SURROGATE]}
    where = r"\(a key\) at the top" if key_holds_it else r"at \['names'\]\[1\]"
    with pytest.raises(AttributeValueError, match=r"'caf\\udce9' " + where + ".*lone surrogate"):
        tz.create_group(tmp_path, attributes=attributes)
    group = tz.open_group(tmp_path, mode="w")
    with pytest.raises(AttributeValueError, match="lone surrogate"):
        group.attrs.update(attributes)
    assert dict(tz.open_group(tmp_path, mode="r").attrs) == {}


def test_a_new_node_with_a_lone_surrogate_outside_its_attributes_is_refused(
    tmp_path: Path,
) -> None:
    with pytest.raises(MetadataError, match=r"x/zarr.json: .*\['dimension_names'\]\[0\]"):
        tz.open_group(tmp_path, mode="w").create_array(
            "x", shape=(2,), dtype=torch.int8, dimension_names=[LONE_SURROGATE]
        )
    assert not (tmp_path / "x").exists()


def test_from_array_keeps_a_peers_lone_surrogate(tmp_path: Path) -> None:
    source = zarr.create_array(tmp_path / "src", shape=(2,), dtype="i1")
    source.attrs["src"] = LONE_SURROGATE
    copy = tz.from_array(tmp_path / "dst", data=source)
    assert dict(copy.attrs) == {"src": LONE_SURROGATE}
    assert dict(zarr.open_array(tmp_path / "dst", mode="r").attrs) == {"src": LONE_SURROGATE}
