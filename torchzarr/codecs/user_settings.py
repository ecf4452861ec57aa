"""Checks of the codec settings users give create_array: numpy scalars, and filter dtypes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import numpy as np

from torchzarr.codecs.base import ChunkSpec, Codec
from torchzarr.codecs.numcodecs_adapter import (
    EVOLVED_FROM_DTYPE,
    NumcodecsArrayArrayCodec,
    numcodecs_object,
    numcodecs_v3_codec,
)
from torchzarr.errors import CodecError

__all__ = ["check_v2_filters", "check_v3_filters", "plain_numbers"]

#: the setting of each numcodecs filter that names the dtype it views its input as (delta's
#: is required; the others' are those v3 fills in from the array's dtype)
_VIEWS_AS = {"delta": "dtype", **EVOLVED_FROM_DTYPE}
#: filters whose view of their input may be any integer dtype of its item size: ``delta``
#: is a bijection on the bits of any integer view, ``astype`` casts it (its other dtype is
#: the user's choice); ``fixedscaleoffset`` and ``quantize`` do arithmetic on the values
_ANY_INTEGER_VIEW = ("delta", "astype")


def plain_numbers(value: Any) -> Any:
    """``value`` with numpy scalars, in dicts and lists too, as the Python numbers they hold
    (``np.float32(10)`` -> ``10.0``, ``np.int8(3)`` -> ``3``): what codec JSON records.

    Example:
        >>> plain_numbers({"id": "zlib", "level": np.int8(3), "x": [np.float32(0.5)]})
        {'id': 'zlib', 'level': 3, 'x': [0.5]}
    """
    if isinstance(value, np.generic) and not isinstance(value, np.str_ | np.bytes_):
        return value.item()
    if isinstance(value, dict):
        return {k: plain_numbers(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(plain_numbers(v) for v in value)
    return value


def _view_problem(
    codec_id: str, key: str, wanted: np.dtype[Any], incoming: np.dtype[Any], zarr_format: int
) -> str | None:
    """Why viewing ``incoming`` chunks as ``wanted`` would not read back as written, or None.

    A same-size integer view keeps the bits both ways: in v2 the decoded bytes are viewed
    as the array's dtype again (any dtype round-trips), in v3 they are cast by value (only
    ints and bools round-trip: a float viewed as ints comes back as the ints' values).
    """
    if codec_id == "delta" and wanted.kind == "b":
        return (
            "numcodecs' delta cannot invert bool data (it encodes XORs of neighbours and "
            "decodes their running sum, so every value from the first True on reads True); "
            "give it dtype='|u1'"
        )
    if wanted == incoming:
        return None
    same_size = wanted.itemsize == incoming.itemsize and codec_id in _ANY_INTEGER_VIEW
    # v3 casts by value: a view in the other byte order reads back byte-swapped values
    same_order = wanted.itemsize == 1 or (wanted.str[0] == ">") == (incoming.str[0] == ">")
    by_value = incoming.kind in "iub" and same_order
    if same_size and wanted.kind in "iu" and (zarr_format == 2 or by_value):
        return None  # the same bits back
    fit = "|u1" if incoming.kind == "b" and codec_id == "delta" else incoming.str
    return (
        f"it views its input as {key}={wanted.str!r}, which would reinterpret the bytes "
        f"of {incoming} and read back other values; give it {key}={fit!r}"
    )


def _problem(codec: Any, incoming: np.dtype[Any], zarr_format: int) -> str | None:
    """Why numcodecs filter ``codec`` (a v3 ``numcodecs.<id>`` codec) cannot take chunks of
    ``incoming``, or None."""
    codec_id, obj = codec.codec_id, codec.numcodecs_codec
    if codec_id in _VIEWS_AS:
        key = _VIEWS_AS[codec_id]
        return _view_problem(codec_id, key, np.dtype(getattr(obj, key)), incoming, zarr_format)
    if codec_id == "bitround" and (incoming.kind != "f" or incoming.itemsize not in (2, 4, 8)):
        return "it rounds float16, float32 or float64 data only"
    if codec_id == "packbits" and incoming.kind != "b":
        return "it packs bool data only (it views its input as bool)"
    return None


def check_v2_filters(filters: Sequence[Any], dtype: np.dtype[Any]) -> None:
    """Refuse v2 ``filters`` (numcodecs configs or objects, in encode order) that would not
    read back what is written, as :func:`check_v3_filters`; ``dtype`` is the stored dtype,
    in its byte order. Any view of the same item size as an integer keeps the bits here:
    v2 views the decoded bytes as the array's dtype again.

    Raises:
        CodecError: naming the filter, its setting and the dtype it gets.

    Example:
        >>> check_v2_filters([{"id": "delta", "dtype": "<i4"}], np.dtype("<f4"))
        >>> check_v2_filters([{"id": "packbits"}], np.dtype("<i4"))
        Traceback (most recent call last):
        ...
        torchzarr.errors.CodecError: filter numcodecs.packbits {} does not fit int32 (the array's stored dtype): it packs bool data only (it views its input as bool)
    """
    chain = []
    for value in filters:
        config = dict(numcodecs_object(value).get_config())
        chain.append(numcodecs_v3_codec(str(config.pop("id")), config))
    check_v3_filters(chain, dtype, zarr_format=2)


def check_v3_filters(codecs: Sequence[Codec], dtype: np.dtype[Any], zarr_format: int = 3) -> None:
    """Refuse the ``numcodecs.<id>`` filters of a chain (and of sharding's inner chain)
    that would not read back what is written: one viewing the dtype reaching it (the
    array's, or the previous filter's output) as another (``Delta(dtype="<i4")`` on
    float32 reads back the ints' values; of another item size, garbage), ``BitRound`` on
    non-floats, ``PackBits`` on non-bools, ``Delta`` on bools. Same-size integer views
    of ints and bools keep the bits and pass. Checking stops at the first codec whose
    output dtype is not known here (past the filters, or a plugin's filter).

    Raises:
        CodecError: naming the filter, its setting and the dtype it gets.

    Example:
        >>> from torchzarr.codecs.numcodecs_adapter import numcodecs_v3_codec
        >>> delta = numcodecs_v3_codec("delta", {"dtype": "<i4"})
        >>> check_v3_filters([delta], np.dtype("uint32"))  # the same bits
        >>> check_v3_filters([delta], np.dtype("float32"))
        Traceback (most recent call last):
        ...
        torchzarr.errors.CodecError: filter numcodecs.delta {'dtype': '<i4'} does not fit float32 (the array's stored dtype): it views its input as dtype='<i4', which would reinterpret the bytes of float32 and read back other values; give it dtype='<f4'
    """
    from torchzarr.codecs.sharding import ShardingCodec
    from torchzarr.codecs.transpose import TransposeCodec

    spec = ChunkSpec((1,), np.dtype(dtype), np.dtype(dtype).type(0))
    source = "the array's stored dtype"
    for codec in codecs:
        if isinstance(codec, NumcodecsArrayArrayCodec):
            # the dtype settings v3 lets one leave out, filled in (the same class)
            evolved = cast(NumcodecsArrayArrayCodec, codec.evolve(spec))
            problem = _problem(evolved, spec.dtype, zarr_format)
            if problem is not None:
                label = f"{evolved.codec_name} {evolved.configuration()}"
                raise CodecError(f"filter {label} does not fit {spec.dtype} ({source}): {problem}")
            spec = evolved.resolve_spec(spec)
            source = f"the output of {evolved.codec_name}"
        elif isinstance(codec, ShardingCodec):
            check_v3_filters(codec.codecs, spec.dtype)
            return
        elif not isinstance(codec, TransposeCodec):
            return  # past the filters, or a plugin filter whose output is its own affair
