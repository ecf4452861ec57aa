"""Indented metadata JSON is written by a faster encoder than the ``json`` module's
pure-Python indenting one, byte for byte the same text; what it does not handle plainly
(subclasses, other keys, cycles, refused values) the ``json`` module still encodes or refuses."""

from __future__ import annotations

import collections
import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from torchzarr.errors import MetadataError
from torchzarr.metadata.jsonutil import json_dumps, node_json_dumps


def _reference(doc: Any, allow_nan: bool = False) -> bytes:
    return json.dumps(doc, indent=2, ensure_ascii=False, allow_nan=allow_nan).encode("utf-8")


_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(exclude_categories=("Cs",)), max_size=8)
)
_DOCS = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(
            st.text(st.characters(exclude_categories=("Cs",)), max_size=5), inner, max_size=4
        )
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(_DOCS)
def test_same_text_as_the_json_module(doc: Any) -> None:
    assert json_dumps(doc) == _reference(doc)
    assert json_dumps(doc, compact=True) == json.dumps(
        doc, separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")


def test_node_documents_do_not_use_the_pure_python_encoder(monkeypatch: pytest.MonkeyPatch) -> None:
    doc = {
        "shape": [64],
        "data_type": "float32",
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [64]}},
        "fill_value": 0.0,
        "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}],
        "attributes": {
            "t": {"key_path": {"tuple": ["a", 'é\u2028"\\\x00']}, "x": [None, True, {}, []]}
        },
        "zarr_format": 3,
        "node_type": "array",
        "storage_transformers": [],
    }
    expected = _reference(doc)

    def slow(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("json's pure-Python indenting encoder was used")

    monkeypatch.setattr(json.encoder, "_make_iterencode", slow)
    assert node_json_dumps(doc) == json_dumps(doc) == expected


def test_non_finite_values_as_before() -> None:
    doc = {"a": [math.nan, math.inf, -math.inf, -0.0, 1e300]}
    assert node_json_dumps(doc) == _reference(doc, allow_nan=True)
    with pytest.raises(MetadataError, match="k: metadata cannot be written as strict JSON"):
        json_dumps(doc, key="k")


def test_unusual_values_left_to_the_json_module() -> None:
    class Number(int):
        pass

    doc = {
        1: "int key",
        None: [True],
        "od": collections.OrderedDict(b=1),
        "n": Number(3),
        "f": 2.0,
    }
    assert json_dumps(doc) == _reference(doc)
    cycle: list[Any] = []
    cycle.append(cycle)
    with pytest.raises(MetadataError, match="Circular reference"):
        json_dumps({"a": cycle})
    with pytest.raises(MetadataError, match="not JSON serializable"):
        json_dumps({"a": {1, 2}})


def test_lone_surrogates_as_before() -> None:
    doc = {"name": "caf\udce9", "k\udce9": 1}
    assert node_json_dumps(doc) == json.dumps(doc, indent=2, ensure_ascii=False).encode(
        "utf-8", "backslashreplace"
    )
    assert node_json_dumps(doc, compact=True) == b'{"name":"caf\\udce9","k\\udce9":1}'
    with pytest.raises(MetadataError, match="lone surrogate"):
        json_dumps(doc)
