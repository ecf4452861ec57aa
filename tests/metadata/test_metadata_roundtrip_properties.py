"""Hypothesis: random v2/v3 metadata survives to_json -> strict JSON text -> from_json."""

from __future__ import annotations

import json

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from torchzarr.dtypes import all_data_types
from torchzarr.metadata import (
    ArrayMetadataV2,
    ArrayMetadataV3,
    GroupMetadataV2,
    GroupMetadataV3,
    build_array_metadata,
    json_dumps,
    json_loads,
    parse_v3_node,
)
from torchzarr.metadata.fill import fill_key

V2_TYPES = [dt for dt in all_data_types() if dt.v2_typestr is not None]
V3_TYPES = [dt for dt in all_data_types() if dt.v3_name is not None]

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
attributes = st.dictionaries(st.text(max_size=8), json_values, max_size=4)


@st.composite
def grids(draw):
    ndim = draw(st.integers(0, 4))
    shape = tuple(draw(st.lists(st.integers(0, 10**6), min_size=ndim, max_size=ndim)))
    chunks = tuple(draw(st.lists(st.integers(1, 10**4), min_size=ndim, max_size=ndim)))
    return shape, chunks


@st.composite
def fills(draw, dt):
    """Any bit pattern of the storage dtype (NaN payloads, -0.0, infinities included)."""
    if dt.name == "bool":
        return np.bool_(draw(st.booleans()))
    raw = draw(st.binary(min_size=dt.itemsize, max_size=dt.itemsize))
    return np.frombuffer(raw, dtype=dt.storage)[0]


def strict_text(doc) -> bytes:
    data = json_dumps(doc)

    def refuse(name):
        raise AssertionError(f"non-strict JSON literal {name} written")

    json.loads(data, parse_constant=refuse)
    return data


V3_CHAINS = [
    [],
    [{"name": "gzip", "configuration": {"level": 5}}],
    [{"name": "zstd", "configuration": {"level": 3, "checksum": True}}],
    [{"name": "crc32c"}],
]


@st.composite
def v3_metadata(draw):
    shape, chunks = draw(grids())
    dt = draw(st.sampled_from(V3_TYPES))
    endian = draw(st.sampled_from(["little", "big"]))
    codecs = (
        [{"name": "bytes", "configuration": {"endian": endian}}]
        if dt.itemsize > 1
        else [{"name": "bytes"}]
    )
    if shape and draw(st.booleans()):
        order = draw(st.permutations(range(len(shape))))
        codecs.insert(0, {"name": "transpose", "configuration": {"order": list(order)}})
    codecs += draw(st.sampled_from(V3_CHAINS))
    names = draw(
        st.none()
        | st.lists(st.none() | st.text(max_size=4), min_size=len(shape), max_size=len(shape))
    )
    encoding = draw(
        st.sampled_from(
            [
                {"name": "default", "configuration": {"separator": "/"}},
                {"name": "default", "configuration": {"separator": "."}},
                {"name": "v2", "configuration": {"separator": "."}},
                {"name": "v2", "configuration": {"separator": "/"}},
            ]
        )
    )
    return ArrayMetadataV3(
        shape=shape,
        chunk_shape=chunks,
        data_type=dt,
        fill_value=draw(fills(dt)),
        codecs=tuple(codecs),  # type: ignore[arg-type]
        chunk_key_encoding=encoding,  # type: ignore[arg-type]
        attributes=draw(attributes),
        dimension_names=tuple(names) if names is not None else None,
    )


@st.composite
def v2_metadata(draw):
    shape, chunks = draw(grids())
    dt = draw(st.sampled_from(V2_TYPES))
    compressor = draw(
        st.sampled_from([None, {"id": "zlib", "level": 1}, {"id": "zstd", "level": 0}])
    )
    filters = draw(st.sampled_from([None, ({"id": "crc32"},)]))
    fill = draw(st.none() | fills(dt))
    return ArrayMetadataV2(
        shape=shape,
        chunk_shape=chunks,
        data_type=dt,
        byteorder=draw(st.sampled_from(["<", ">"])),
        compressor=compressor,
        filters=filters,
        fill_value=fill,
        order=draw(st.sampled_from(["C", "F"])),
        dimension_separator=draw(st.sampled_from([".", "/"])),
        attributes=draw(attributes),
    )


@settings(max_examples=120, deadline=None)
@given(meta=v3_metadata())
def test_v3_round_trip(meta):
    doc = meta.to_json()
    again = ArrayMetadataV3.from_json(json_loads(strict_text(doc), key="zarr.json"))
    assert again == meta
    assert again.to_json() == doc
    assert again.fill_value.tobytes() == meta.fill_value.tobytes()  # v3 keeps every bit
    assert parse_v3_node(doc) == meta


@settings(max_examples=120, deadline=None)
@given(meta=v2_metadata())
def test_v2_round_trip(meta):
    doc = meta.to_json()
    attrs = json_loads(strict_text(meta.attributes), key=".zattrs")
    again = ArrayMetadataV2.from_json(json_loads(strict_text(doc), key=".zarray"), attrs)
    assert again == meta
    assert again.to_json() == doc
    assert fill_key(again.fill_value, meta.data_type) == fill_key(meta.fill_value, meta.data_type)


@settings(max_examples=60, deadline=None)
@given(
    zarr_format=st.sampled_from([2, 3]),
    grid=grids(),
    index=st.integers(0, 100),
    value=st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-300, 300),
        st.floats(width=16),
        st.complex_numbers(max_magnitude=1e4, allow_nan=False),
    ),
    attrs=attributes,
)
def test_build_round_trip_or_clear_error(zarr_format, grid, index, value, attrs):
    """Any user fill either builds metadata that round-trips, or fails with MetadataError."""
    from torchzarr.errors import MetadataError

    types = V2_TYPES if zarr_format == 2 else V3_TYPES
    dt = types[index % len(types)]
    try:
        meta = build_array_metadata(
            zarr_format=zarr_format,
            shape=grid[0],
            chunk_shape=grid[1],
            data_type=dt,
            fill_value=value,
            attributes=attrs,
        )
    except MetadataError as err:
        assert dt.name in str(err)
        return
    doc = json_loads(strict_text(meta.to_json()), key="doc")
    again = (
        ArrayMetadataV2.from_json(doc, attrs)
        if zarr_format == 2
        else ArrayMetadataV3.from_json(doc)
    )
    assert again == meta


@settings(max_examples=40, deadline=None)
@given(attrs=attributes, consolidated=st.none() | st.dictionaries(st.text(max_size=4), json_values))
def test_group_round_trip(attrs, consolidated):
    v3 = GroupMetadataV3(attributes=attrs, consolidated_metadata=consolidated)
    assert GroupMetadataV3.from_json(json_loads(strict_text(v3.to_json()), key="g")) == v3
    v2 = GroupMetadataV2(attributes=attrs)
    assert GroupMetadataV2.from_json(v2.to_json(), json_loads(strict_text(attrs), key="a")) == v2
