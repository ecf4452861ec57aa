"""Typed JSON holds only what a save writes: strs UTF-8 can encode, ints JSON loaders read
back and classes a load finds on save; on load, numeric numpy scalars, int64 sizes, and
classes of modules already imported, without importing any."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from torchzarr.checkpoint import (
    AsyncCheckpointer,
    UnrepresentableError,
    load_checkpoint,
    save_checkpoint,
)
from torchzarr.checkpoint.values import decode_value, encode_value
from torchzarr.errors import MetadataError

LONE_SURROGATE = "caf\udce9"  # what os.fsdecode gives for the Latin-1 bytes of "café"


@pytest.mark.parametrize(
    ("state", "where"),
    [
        ({LONE_SURROGATE: torch.ones(2)}, r"key at \['caf\\udce9'\]"),
        ({"w": torch.ones(2), "lr": LONE_SURROGATE}, r"value at \['lr'\]"),
        ({"w": torch.ones(2), "meta": {LONE_SURROGATE: 1}}, r"key at \['meta'\]\['caf\\udce9'\]"),
        ({"w": torch.ones(2), "names": ("a", LONE_SURROGATE)}, r"value at \['names'\]\[1\]"),
    ],
)
def test_a_str_with_a_lone_surrogate_is_refused_naming_it_before_anything_is_written(
    tmp_path: Path, state: dict[Any, Any], where: str
) -> None:
    with pytest.raises(UnrepresentableError, match=where + ".*lone surrogate"):
        save_checkpoint(state, tmp_path / "ckpt")
    assert not (tmp_path / "ckpt").exists()


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"numpy": ["V8", 2**31 - 1]}, "'V8' is not a numeric numpy scalar type"),
        ({"numpy": ["V8", 2**31]}, "'V8' is not a numeric numpy scalar type"),
        ({"numpy": ["<U4", "abcd"]}, "'<U4' is not a numeric numpy scalar type"),
        ({"numpy": ["(1000,)<f8", 0]}, "is not a numeric numpy scalar type"),
        ({"numpy": ["O", 1]}, "'O' is not a numeric numpy scalar type"),
        ({"numpy": [None, 1]}, "dtype None is not a str"),
        ({"numpy": ["<i8", 2**70]}, "bad typed JSON for 'numpy'"),
        ({"size": [2**70]}, r"\[1180591620717411303424\] is not a list of int64 sizes"),
        ({"size": [True, 2]}, r"\[True, 2\] is not a list of int64 sizes"),
        ({"size": [2.0]}, r"\[2.0\] is not a list of int64 sizes"),
        ({"size": 3}, "3 is not a list of int64 sizes"),
    ],
)
def test_typed_json_a_save_never_writes_is_a_metadata_error(payload: Any, message: str) -> None:
    with pytest.raises(MetadataError, match=r"checkpoint value at \['x'\]: .*" + message):
        decode_value(payload, ("x",))


def test_a_crafted_numpy_scalar_in_a_checkpoint_is_refused_naming_its_key(tmp_path: Path) -> None:
    save_checkpoint({"w": torch.ones(2)}, tmp_path)
    document_path = tmp_path / "v000001" / "zarr.json"
    document = json.loads(document_path.read_text())
    entry = ["x", "value", {"numpy": ["V8", 2**31 - 1]}]  # 2 GiB from 30 bytes of JSON
    document["attributes"]["torchzarr_node"]["entries"].append(entry)
    document_path.write_text(json.dumps(document))
    with pytest.raises(MetadataError, match=r"checkpoint value at \['x'\]"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize(
    "value",
    [torch.Size([]), torch.Size([0, 3]), torch.Size([2**63 - 1]), torch.Size([-1, 4])],
    ids=str,
)
def test_sizes_torch_holds_round_trip(value: torch.Size) -> None:
    assert decode_value(json.loads(json.dumps(encode_value(value)))) == value


# Each payload names, through a module's __getattr__, a submodule not imported in a fresh
# interpreter that imported torchzarr (numpy's and torch's __getattr__ import them).
_LAZY_PAYLOADS = {
    "numpy:polynomial.Polynomial": ({"class": "numpy:polynomial.Polynomial"}, "numpy.polynomial"),
    "numpy:ma.MaskedArray": ({"class": "numpy:ma.MaskedArray"}, "numpy.ma"),
    "torch:_dynamo.__class__": ({"class": "torch:_dynamo.__class__"}, "torch._dynamo"),
    "dtype _dynamo": ({"dtype": "_dynamo"}, "torch._dynamo"),
}
_CHECK = """
import sys, json
import torchzarr
from torchzarr.checkpoint.values import decode_value
from torchzarr.errors import TorchZarrError
payload, module = json.loads(sys.argv[1]), sys.argv[2]
assert module not in sys.modules, module
try:
    decode_value(payload, ("x",))
    outcome = "loaded"
except TorchZarrError as err:
    outcome = type(err).__name__ + ": " + str(err)
print(json.dumps([outcome, module in sys.modules]))
"""


@pytest.mark.parametrize("name", list(_LAZY_PAYLOADS))
def test_loading_a_class_or_dtype_imports_nothing(name: str) -> None:
    payload, module = _LAZY_PAYLOADS[name]
    argv = [sys.executable, "-c", _CHECK, json.dumps(payload), module]
    run = subprocess.run(argv, capture_output=True, text=True, check=True)
    outcome, imported = json.loads(run.stdout.strip().splitlines()[-1])
    assert not imported
    if "class" in payload:
        assert outcome.startswith("UnrepresentableError: checkpoint value at ['x'] is the class")
        assert f"if {module} is a module, import it before loading" in outcome
    else:
        assert outcome == "MetadataError: checkpoint value at ['x']: no dtype '_dynamo'"


def test_classes_of_imported_modules_and_nested_classes_resolve() -> None:
    # allow_pickle=True: any class of an imported module (the allowlist is in
    # test_ckpt_class_allowlist.py)
    class_specs = {
        "collections:OrderedDict": "OrderedDict",
        "torch.nn.modules.linear:Linear": "Linear",
        "json.decoder:JSONDecoder": "JSONDecoder",
        "torch:Tensor": "Tensor",
    }
    for spec, name in class_specs.items():
        assert decode_value({"class": spec}, allow_pickle=True).__name__ == name
    assert decode_value(encode_value(_Outer.Inner), allow_pickle=True) is _Outer.Inner
    with pytest.raises(MetadataError, match=r"no class 'collections:OrderedDict\.nothing'"):
        decode_value({"class": "collections:OrderedDict.nothing"})
    with pytest.raises(MetadataError, match="no class 'json:dumps'"):
        decode_value({"class": "json:dumps"})  # a function, not a class


class _Outer:
    class Inner:
        pass


@pytest.mark.parametrize(
    "cls", [type(None), types.FunctionType, type(...), type({}.keys())], ids=lambda c: c.__name__
)
def test_a_class_a_load_cannot_find_by_name_is_refused_on_save(tmp_path: Path, cls: type) -> None:
    save_checkpoint({"step": 1}, tmp_path)
    with pytest.raises(UnrepresentableError, match=rf"value at \['c'\]\['k'\].*{cls.__name__}"):
        save_checkpoint({"w": torch.ones(2), "c": {"k": cls}}, tmp_path)
    assert load_checkpoint(tmp_path) == {"step": 1}  # nothing written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v000001", "zarr.json"]


def test_classes_a_load_finds_are_stored() -> None:
    for cls in (int, torch.Tensor, np.float64, type(np.dtype("f8"))):
        assert decode_value(json.loads(json.dumps(encode_value(cls)))) is cls
    payload = json.loads(json.dumps(encode_value(torch.nn.Linear)))  # stored, not allowed
    assert decode_value(payload, allow_pickle=True) is torch.nn.Linear


BIG = 10**5000  # more digits than Python turns into text or back (4300 by default)


@pytest.mark.parametrize(
    ("state", "where"),
    [
        ({"x": BIG}, r"value at \['x'\] of type int"),
        ({"w": torch.ones(1), "y": [1, -BIG]}, r"value at \['y'\]\[1\] of type int"),
        ({"w": {BIG: torch.ones(1)}}, r"key at \['w'\]\[<int of 16610 bits>\] of type int"),
    ],
)
def test_ints_too_long_for_json_are_refused_naming_their_key_path(
    tmp_path: Path, state: dict[Any, Any], where: str
) -> None:
    with pytest.raises(UnrepresentableError, match=where + r".*more than the 4300 digits"):
        save_checkpoint(state, tmp_path / "ck")
    assert not (tmp_path / "ck").exists()
    saver = AsyncCheckpointer()
    with pytest.raises(UnrepresentableError, match=where):
        saver.save(state, tmp_path / "ck")  # in the caller, as other unstorable leaves
    assert saver.wait() is None
    saver.close()


def test_ints_up_to_the_json_digit_limit_round_trip_and_longer_ones_pickle(tmp_path: Path) -> None:
    edge = 10**4300 - 1  # 4300 digits
    save_checkpoint({"x": edge, "n": -edge}, tmp_path / "a")
    assert load_checkpoint(tmp_path / "a") == {"x": edge, "n": -edge}
    save_checkpoint({"x": BIG}, tmp_path / "b", allow_pickle=True)
    assert load_checkpoint(tmp_path / "b", allow_pickle=True) == {"x": BIG}
