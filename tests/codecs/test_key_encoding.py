"""Chunk key encodings: encode/decode round trips, patterns, JSON forms, registry, errors."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from torchzarr.codecs import key_encoding
from torchzarr.codecs.key_encoding import (
    ChunkKeyEncoding,
    DefaultChunkKeyEncoding,
    V2ChunkKeyEncoding,
    chunk_key_encoding_from_json,
    register_chunk_key_encoding,
    registered_chunk_key_encodings,
)
from torchzarr.errors import MetadataError, UnknownExtensionError

ENCODINGS = [
    DefaultChunkKeyEncoding("/"),
    DefaultChunkKeyEncoding("."),
    V2ChunkKeyEncoding("."),
    V2ChunkKeyEncoding("/"),
]
coords = st.lists(st.integers(0, 2**63 - 1), min_size=0, max_size=6).map(tuple)


@pytest.mark.parametrize(
    "encoding,chunk_coords,key",
    [
        (DefaultChunkKeyEncoding(), (1, 2), "c/1/2"),
        (DefaultChunkKeyEncoding("."), (1, 2), "c.1.2"),
        (DefaultChunkKeyEncoding(), (), "c"),
        (DefaultChunkKeyEncoding(), (0,), "c/0"),
        (V2ChunkKeyEncoding(), (1, 2), "1.2"),
        (V2ChunkKeyEncoding("/"), (1, 2, 30), "1/2/30"),
        (V2ChunkKeyEncoding(), (), "0"),
        (V2ChunkKeyEncoding(), (7,), "7"),
    ],
)
def test_known_keys(encoding, chunk_coords, key):
    assert encoding.encode(chunk_coords) == key
    assert encoding.decode(key, ndim=len(chunk_coords)) == chunk_coords
    assert re.fullmatch(encoding.pattern, key)


@settings(max_examples=60, deadline=None)
@given(chunk_coords=coords, index=st.integers(0, len(ENCODINGS) - 1))
def test_encode_decode_round_trip(chunk_coords, index):
    encoding = ENCODINGS[index]
    key = encoding.encode(chunk_coords)
    assert encoding.decode(key, ndim=len(chunk_coords)) == chunk_coords
    assert re.fullmatch(encoding.pattern, key)
    if chunk_coords or encoding.name == "default":
        assert encoding.decode(key) == chunk_coords


@settings(max_examples=60, deadline=None)
@given(
    text=st.text(alphabet="c0123456789./-+ _x", max_size=12),
    index=st.integers(0, len(ENCODINGS) - 1),
)
def test_decode_accepts_exactly_the_pattern(text, index):
    """``pattern`` and ``decode`` agree, and every decoded key re-encodes to itself."""
    encoding = ENCODINGS[index]
    matches = re.fullmatch(encoding.pattern, text) is not None
    try:
        decoded = encoding.decode(text)
    except MetadataError:
        assert not matches
    else:
        assert matches
        assert encoding.encode(decoded) == text or (text == "0" and decoded == (0,))


def test_v2_zero_key_is_the_0d_chunk_only_with_ndim_0():
    enc = V2ChunkKeyEncoding()
    assert enc.decode("0") == (0,)
    assert enc.decode("0", ndim=1) == (0,)
    assert enc.decode("0", ndim=0) == ()
    assert DefaultChunkKeyEncoding().decode("c", ndim=0) == ()


@pytest.mark.parametrize(
    "encoding,key",
    [
        (DefaultChunkKeyEncoding(), "1/2"),
        (DefaultChunkKeyEncoding(), "c/01"),  # not canonical: would alias chunk (1,)
        (DefaultChunkKeyEncoding(), "c/-1"),
        (DefaultChunkKeyEncoding(), "c/1.2"),  # wrong separator
        (DefaultChunkKeyEncoding(), "c/"),
        (DefaultChunkKeyEncoding(), "c/\u0661"),  # an Arabic-Indic digit is not ASCII
        (DefaultChunkKeyEncoding(), "zarr.json"),
        (V2ChunkKeyEncoding(), "c.1"),
        (V2ChunkKeyEncoding(), "1..2"),
        (V2ChunkKeyEncoding(), "+1"),
        (V2ChunkKeyEncoding(), ".zarray"),
        (V2ChunkKeyEncoding(), ""),
    ],
)
def test_decode_refuses_non_keys(encoding, key):
    with pytest.raises(MetadataError, match="chunk key"):
        encoding.decode(key)
    assert re.fullmatch(encoding.pattern, key) is None


def test_decode_checks_ndim():
    with pytest.raises(MetadataError, match="2 dims, the array has 3"):
        DefaultChunkKeyEncoding().decode("c/1/2", ndim=3)
    with pytest.raises(MetadataError, match="1 dims, the array has 2"):
        V2ChunkKeyEncoding().decode("0", ndim=2)


def test_encode_refuses_negative_coords():
    with pytest.raises(MetadataError, match=r"\(1, -1\)"):
        DefaultChunkKeyEncoding().encode((1, -1))


@pytest.mark.parametrize("cls", [DefaultChunkKeyEncoding, V2ChunkKeyEncoding])
def test_bad_separator(cls):
    with pytest.raises(MetadataError, match=re.escape("separator must be '.' or '/', got '-'")):
        cls("-")


@pytest.mark.parametrize(
    "obj,expected",
    [
        ({"name": "default"}, DefaultChunkKeyEncoding("/")),  # tensorstore omits configuration
        ("default", DefaultChunkKeyEncoding("/")),
        ("v2", V2ChunkKeyEncoding(".")),
        ({"name": "v2"}, V2ChunkKeyEncoding(".")),
        ({"name": "default", "configuration": {"separator": "."}}, DefaultChunkKeyEncoding(".")),
        ({"name": "v2", "configuration": {"separator": "/"}}, V2ChunkKeyEncoding("/")),
        ({"name": "v2", "separator": "/"}, V2ChunkKeyEncoding("/")),  # zarr-python's short form
        ({"name": "default", "configuration": None}, DefaultChunkKeyEncoding("/")),
        (V2ChunkKeyEncoding("/"), V2ChunkKeyEncoding("/")),
    ],
)
def test_from_json(obj, expected):
    parsed = chunk_key_encoding_from_json(obj)
    assert parsed == expected
    assert type(parsed) is type(expected)


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_to_json_round_trip(encoding):
    doc = encoding.to_json()
    assert doc == {"name": encoding.name, "configuration": {"separator": encoding.separator}}
    assert chunk_key_encoding_from_json(doc) == encoding
    assert hash(chunk_key_encoding_from_json(doc)) == hash(encoding)


def test_equality_distinguishes_name_and_separator():
    assert DefaultChunkKeyEncoding("/") != DefaultChunkKeyEncoding(".")
    assert DefaultChunkKeyEncoding("/") != V2ChunkKeyEncoding("/")
    assert DefaultChunkKeyEncoding("/") != "default"
    assert repr(V2ChunkKeyEncoding("/")) == "V2ChunkKeyEncoding(separator='/')"


@pytest.mark.parametrize(
    "obj,error,message",
    [
        ({"name": "fancy"}, UnknownExtensionError, "unknown chunk_key_encoding 'fancy'"),
        ("fancy", UnknownExtensionError, "'fancy'"),
        ({"configuration": {}}, MetadataError, "must be an object with a name"),
        (42, MetadataError, "got 42"),
        ({"name": "v2", "configuration": []}, MetadataError, "configuration must be an object"),
        ({"name": "v2", "configuration": {"sep": "/"}}, MetadataError, "invalid configuration"),
        ({"name": "v2", "configuration": {"separator": "|"}}, MetadataError, "got '|'"),
    ],
)
def test_from_json_errors(obj, error, message):
    with pytest.raises(error, match=re.escape(message)):
        chunk_key_encoding_from_json(obj)


class _FlatEncoding(ChunkKeyEncoding):
    """A custom encoding: ``k_1_2``, with a configurable prefix."""

    name = "test.flat"

    def __init__(self, prefix: str = "k") -> None:
        self.prefix = prefix

    def encode(self, chunk_coords: tuple[int, ...]) -> str:
        return "_".join([self.prefix, *map(str, chunk_coords)])

    def decode(self, key: str, ndim: int | None = None) -> tuple[int, ...]:
        head, *parts = key.split("_")
        if head != self.prefix:
            raise MetadataError(f"{key!r} is not a test.flat chunk key")
        return tuple(int(p) for p in parts)

    @property
    def pattern(self) -> str:
        return re.escape(self.prefix) + r"(?:_[0-9]+)*"

    def configuration(self) -> dict[str, str]:
        return {"prefix": self.prefix}


def test_register_custom_encoding(monkeypatch):
    monkeypatch.setattr(key_encoding, "_registry", dict(key_encoding._registry))  # undone after
    register_chunk_key_encoding("test.flat", _FlatEncoding)
    register_chunk_key_encoding("test.flat", _FlatEncoding)  # the same class again is fine
    assert registered_chunk_key_encodings()["test.flat"] is _FlatEncoding
    enc = chunk_key_encoding_from_json({"name": "test.flat", "configuration": {"prefix": "p"}})
    assert enc.encode((3, 4)) == "p_3_4"
    assert enc.decode("p_3_4") == (3, 4)
    assert enc.to_json() == {"name": "test.flat", "configuration": {"prefix": "p"}}
    assert repr(enc) == "_FlatEncoding(prefix='p')"
    with pytest.raises(MetadataError, match="already registered"):
        register_chunk_key_encoding("test.flat", DefaultChunkKeyEncoding)
    register_chunk_key_encoding("test.flat", DefaultChunkKeyEncoding, overwrite=True)
    assert registered_chunk_key_encodings()["test.flat"] is DefaultChunkKeyEncoding
    register_chunk_key_encoding("test.flat", _FlatEncoding, overwrite=True)


def test_register_refuses_non_encodings():
    with pytest.raises(MetadataError, match="is not a ChunkKeyEncoding"):
        register_chunk_key_encoding("test.bad", dict)  # type: ignore[arg-type]
    with pytest.raises(MetadataError, match="non-empty str"):
        register_chunk_key_encoding("", DefaultChunkKeyEncoding)
    with pytest.raises(TypeError):
        registered_chunk_key_encodings()["x"] = DefaultChunkKeyEncoding  # type: ignore[index]
