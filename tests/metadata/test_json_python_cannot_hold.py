"""JSON that Python's json module cannot hold raises MetadataError naming where: an integer
literal of more digits than Python parses, and a str with a lone surrogate (what
``os.fsdecode`` gives for bytes that are not UTF-8), which UTF-8 cannot encode."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import torchzarr as tz
from torchzarr.cli import main
from torchzarr.errors import MetadataError, TorchZarrError
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
