"""Checks of the codec settings users give create_array: numpy scalars, and filter dtypes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import numpy as np

from torchzarr.codecs.base import ChunkSpec, Codec
from torchzarr.errors import CodecError

__all__ = ["check_v2_filters", "check_v3_filters", "plain_numbers"]

#: the setting of each numcodecs filter that names the dtype it views its input as
_VIEWS_AS = {
    "delta": "dtype",
    "fixedscaleoffset": "dtype",
    "quantize": "dtype",
    "astype": "decode_dtype",
}
#: the setting that names the dtype each of those filters outputs
_OUTPUTS = {
    "delta": "astype",
    "fixedscaleoffset": "astype",
    "quantize": "astype",
    "astype": "encode_dtype",
}


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


def _problem(codec_id: str, obj: Any, incoming: np.dtype[Any]) -> str | None:
    """Why numcodecs filter ``obj`` cannot take chunks of ``incoming``, or None."""
    if codec_id in _VIEWS_AS:
        key = _VIEWS_AS[codec_id]
        wanted = np.dtype(getattr(obj, key))
        if codec_id == "delta" and wanted.kind == "b":
            return (
                "numcodecs' delta cannot invert bool data (it encodes XORs of neighbours and "
                "decodes their running sum, so every value from the first True on reads True)"
            )
        if wanted != incoming:
            return (
                f"it views its input as {key}={wanted.str!r}, which would reinterpret the "
                f"bytes of {incoming} and store garbage; give it {key}={incoming.str!r}"
            )
    elif codec_id == "bitround":
        if incoming.kind != "f" or incoming.itemsize not in (2, 4, 8):
            return "it rounds float16, float32 or float64 data only"
    elif codec_id == "packbits" and incoming.kind != "b":
        return "it packs bool data only (it views its input as bool)"
    return None


def _refuse(where: str, label: str, problem: str, incoming: np.dtype[Any], source: str) -> None:
    raise CodecError(f"{where} {label} does not fit {incoming} ({source}): {problem}")


def check_v2_filters(filters: Sequence[Any], dtype: np.dtype[Any]) -> None:
    """Refuse v2 ``filters`` (numcodecs configs or objects, in encode order) whose dtype
    setting does not fit the dtype reaching them: ``dtype`` (the stored dtype, in its byte
    order) for the first, the previous one's output after. Checking stops at a filter whose
    output dtype is not known (a bytes -> bytes filter such as ``Shuffle``).

    Raises:
        CodecError: naming the filter, its setting and the dtype it gets.

    Example:
        >>> check_v2_filters([{"id": "delta", "dtype": "<i4"}], np.dtype("<i4"))
        >>> check_v2_filters([{"id": "packbits"}], np.dtype("<i4"))
        Traceback (most recent call last):
        ...
        torchzarr.errors.CodecError: filter 0 packbits {} does not fit int32 (the array's dtype): it packs bool data only (it views its input as bool)
    """
    from torchzarr.codecs.numcodecs_adapter import numcodecs_object

    current, source = np.dtype(dtype), "the array's dtype"
    for position, value in enumerate(filters):
        obj = numcodecs_object(value)
        codec_id = str(obj.codec_id)
        problem = _problem(codec_id, obj, current)
        if problem is not None:
            config = {k: v for k, v in plain_numbers(obj.get_config()).items() if k != "id"}
            _refuse(f"filter {position}", f"{codec_id} {config}", problem, current, source)
        if codec_id in _OUTPUTS:
            current = np.dtype(getattr(obj, _OUTPUTS[codec_id]))
        elif codec_id == "packbits":
            current = np.dtype("u1")
        elif codec_id != "bitround":  # bitround keeps the dtype (its ints are the floats' bits)
            return
        source = f"the output of filter {position} ({codec_id})"


def check_v3_filters(codecs: Sequence[Codec], dtype: np.dtype[Any]) -> None:
    """Refuse the ``numcodecs.<id>`` filters of a v3 chain (and of sharding's inner chain)
    whose dtype setting does not fit the dtype reaching them, as :func:`check_v2_filters`.

    Raises:
        CodecError: naming the filter, its setting and the dtype it gets.

    Example:
        >>> from torchzarr.codecs.numcodecs_adapter import numcodecs_v3_codec
        >>> delta = numcodecs_v3_codec("delta", {"dtype": "<i4"})
        >>> check_v3_filters([delta], np.dtype("float32"))
        Traceback (most recent call last):
        ...
        torchzarr.errors.CodecError: filter numcodecs.delta {'dtype': '<i4'} does not fit float32 (the array's dtype): it views its input as dtype='<i4', which would reinterpret the bytes of float32 and store garbage; give it dtype='<f4'
    """
    from torchzarr.codecs.numcodecs_adapter import NumcodecsArrayArrayCodec
    from torchzarr.codecs.sharding import ShardingCodec
    from torchzarr.codecs.transpose import TransposeCodec

    spec = ChunkSpec((1,), np.dtype(dtype), np.dtype(dtype).type(0))
    source = "the array's dtype"
    for codec in codecs:
        if isinstance(codec, NumcodecsArrayArrayCodec):
            # the dtype settings v3 lets one leave out, filled in (the same class)
            evolved = cast(NumcodecsArrayArrayCodec, codec.evolve(spec))
            problem = _problem(evolved.codec_id, evolved.numcodecs_codec, spec.dtype)
            if problem is not None:
                label = f"{evolved.codec_name} {evolved.configuration()}"
                _refuse("filter", label, problem, spec.dtype, source)
            spec = evolved.resolve_spec(spec)
            source = f"the output of {evolved.codec_name}"
        elif isinstance(codec, ShardingCodec):
            check_v3_filters(codec.codecs, spec.dtype)
            return
        elif not isinstance(codec, TransposeCodec):
            return  # past the filters, or a plugin filter whose output is its own affair
