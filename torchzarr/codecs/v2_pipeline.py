"""Zarr v2 chunks: memory order and byte order, numcodecs filters, then one compressor.

Reads and writes exactly what zarr-python 3.1 does: encode casts to the stored dtype in
``order``, runs the filters in order, then the compressor; decode reverses that and
reinterprets the bytes the last filter gives back as the stored dtype.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
from numcodecs.abc import Codec as NumcodecsObject

from torchzarr.codecs.base import ChunkSpec
from torchzarr.codecs.bounded import (
    DECODES_INTO,
    decompress_at_most,
    max_encoded_size,
    nbytes_of,
)
from torchzarr.codecs.bytes_codec import as_byte_view
from torchzarr.codecs.compressors import BloscCodec, decode_into, gzip_compress
from torchzarr.codecs.numcodecs_adapter import (
    ARRAY_TO_ARRAY_IDS,
    EVOLVED_FROM_DTYPE,
    NumcodecsArrayArrayCodec,
    numcodecs_object,
    numcodecs_v3_codec,
)
from torchzarr.codecs.pipeline import check_out, decode_error
from torchzarr.codecs.user_settings import plain_numbers
from torchzarr.errors import (
    ChunkDecodeError,
    CodecError,
    MetadataError,
    ShapeMismatchError,
    TorchZarrError,
)

__all__ = ["V2Pipeline", "filter_encoded_size", "numcodecs_equivalent", "v2_codec_config"]

_NATIVE = "<" if sys.byteorder == "little" else ">"
#: the setting naming the dtype a numcodecs filter views its input as (others: bytes)
_INPUT_DTYPE = {**EVOLVED_FROM_DTYPE, "delta": "dtype"}


def filter_encoded_size(codec: NumcodecsObject, nbytes: int) -> int:
    """A bound on numcodecs filter ``codec``'s encoding of ``nbytes`` bytes: for the array
    filters (astype, delta, packbits, ...) the exact size of the output a v3 chain resolves
    for them, else :func:`~torchzarr.codecs.bounded.max_encoded_size`'s.

    Example:
        >>> import numcodecs
        >>> filter_encoded_size(numcodecs.PackBits(), 17), filter_encoded_size(
        ...     numcodecs.AsType(encode_dtype="u1", decode_dtype="<f8"), 80)
        (4, 10)
    """
    codec_id = codec.codec_id
    if codec_id not in ARRAY_TO_ARRAY_IDS:
        return max_encoded_size(codec_id, nbytes)
    config = {k: v for k, v in codec.get_config().items() if k != "id"}
    try:
        dtype = np.dtype(config.get(_INPUT_DTYPE.get(codec_id, ""), "u1"))
        as_v3 = numcodecs_v3_codec(codec_id, config)
        assert isinstance(as_v3, NumcodecsArrayArrayCodec)
        spec = ChunkSpec((-(-nbytes // dtype.itemsize),), dtype, None)  # numcodecs views as dtype
        return as_v3.resolve_spec(spec).nbytes
    except Exception:  # a dtype numpy does not know (or of no size): the loose bound
        return max_encoded_size(codec_id, nbytes)


def numcodecs_equivalent(codec: Any) -> Any:
    """The numcodecs object a v3 codec runs on (zstd, gzip, blosc, ``numcodecs.*``), or None
    (``bytes``, ``transpose``, ``crc32c``, sharding: v2 has no codec for them).

    Example:
        >>> from torchzarr.codecs.compressors import ZstdCodec
        >>> numcodecs_equivalent(ZstdCodec(3))
        Zstd(level=3)
    """
    impl = getattr(codec, "_impl", None)
    return impl if isinstance(impl, NumcodecsObject) else None


def v2_codec_config(codec: Any) -> dict[str, Any]:
    """The ``.zarray`` JSON of a numcodecs codec, config dict or short name.

    ``checksum: false`` is left out of zstd's config: it is numcodecs' default, and
    tensorstore's v2 driver refuses the key. numpy scalar settings become plain numbers.

    Example:
        >>> v2_codec_config("zstd")
        {'id': 'zstd', 'level': 0}
        >>> v2_codec_config(numcodecs_object({"id": "delta", "dtype": "<i4"}))
        {'id': 'delta', 'dtype': '<i4', 'astype': '<i4'}
    """
    config = plain_numbers(dict(numcodecs_object(codec).get_config()))  # np.int8(3) -> 3
    if config.get("id") == "blosc":  # refused now, not at the first write
        BloscCodec(config.get("cname", "lz4")).check_available()
    if config.get("id") == "zstd" and config.get("checksum") is False:
        del config["checksum"]
    return config


def _codec(config: Any) -> NumcodecsObject:
    try:
        return numcodecs_object(config)
    except TorchZarrError:
        raise
    except Exception as err:  # numcodecs constructors raise what they like
        raise CodecError(f"numcodecs codec {config!r}: {type(err).__name__}: {err}") from None


class V2Pipeline:
    """The chunk pipeline of a v2 array (implements ``ChunkPipeline``).

    Args:
        spec: the decoded chunk: shape, native storage dtype, fill value.
        compressor: the ``.zarray`` compressor config (or a numcodecs codec), or None.
        filters: the ``.zarray`` filter configs in encode order, or None / ``[]``.
        order: ``"C"`` or ``"F"``, the memory order of the stored chunk.
        byteorder: ``"<"``, ``">"`` or ``"|"``, that of the stored dtype.

    Raises:
        MetadataError: a bad ``order`` or ``byteorder``.
        UnknownCodecError: a numcodecs id nobody provides, naming it.

    Example:
        >>> spec = ChunkSpec((2, 3), np.dtype("int32"), np.int32(0))
        >>> pipe = V2Pipeline(spec, compressor={"id": "zlib", "level": 1}, filters=None,
        ...                   order="F", byteorder=">")
        >>> data = np.arange(6, dtype=np.int32).reshape(2, 3)
        >>> pipe.decode(pipe.encode(data)).tolist()
        [[0, 1, 2], [3, 4, 5]]
    """

    def __init__(
        self,
        spec: ChunkSpec,
        *,
        compressor: dict[str, Any] | None,
        filters: list[dict[str, Any]] | None,
        order: str,
        byteorder: str,
    ) -> None:
        if order not in ("C", "F"):
            raise MetadataError(f".zarray: order must be 'C' or 'F', got {order!r}")
        if byteorder not in ("<", ">", "|"):
            raise MetadataError(f".zarray: byteorder must be '<', '>' or '|', got {byteorder!r}")
        if byteorder == "|" and spec.dtype.itemsize > 1:
            raise MetadataError(
                f".zarray: byteorder '|' does not fit the {spec.dtype.itemsize}-byte dtype "
                f"{spec.dtype}; use '<' or '>'"
            )
        self.spec = spec
        self.order = order
        self.byteorder = byteorder
        self.stored_dtype: np.dtype[Any] = (
            spec.dtype.newbyteorder("<" if byteorder == "<" else ">")
            if spec.dtype.itemsize > 1
            else spec.dtype
        )
        self.compressor = _codec(compressor) if compressor is not None else None
        self.filters = tuple(_codec(f) for f in filters or ())
        self._compressor_id: str | None = (
            self.compressor.get_config()["id"] if self.compressor is not None else None
        )
        # F order lays out memory like C order when at most one axis is longer than 1
        same_layout = order == "C" or sum(n > 1 for n in spec.shape) <= 1
        self._swap = spec.dtype.itemsize > 1 and byteorder != _NATIVE
        self._direct = (
            not self.filters
            and same_layout
            and (self._compressor_id is None or self._compressor_id in DECODES_INTO)
        )
        # the most each filter, then the compressor, may decode to: the chunk's size, then
        # what each filter may add to it; a decompression bomb stops there
        bounds = [spec.nbytes]
        for codec in self.filters:
            bounds.append(filter_encoded_size(codec, bounds[-1]))
        self._filter_limits = tuple(bounds[:-1])
        self._compressor_limit = bounds[-1]
        self._refuse_over = bounds[-1] if self.filters and self.compressor is None else None

    @property
    def zstd_frame_codec(self) -> Any:
        """The numcodecs ``Zstd`` compressor when a stored chunk is one zstd frame of the
        chunk's native C-order bytes (no filters, this machine's byte order), else None.

        Example:
            >>> import numcodecs
            >>> spec = ChunkSpec((2,), np.dtype("<i4"), 0)
            >>> pipe = V2Pipeline(spec, compressor=numcodecs.Zstd(1), filters=None, order="C",
            ...                   byteorder="<")
            >>> pipe.zstd_frame_codec.codec_id
            'zstd'
        """
        if self._compressor_id != "zstd" or not self._direct or self._swap:
            return None
        return self.compressor

    def decoding(self) -> list[Any]:
        """How a chunk decodes, in one spelling whatever the metadata's: the filters' and
        the compressor's numcodecs configurations (their defaults filled in), the order and
        the stored dtype.

        Example:
            >>> spec = ChunkSpec((4,), np.dtype("int32"), np.int32(0))
            >>> V2Pipeline(spec, compressor=None, filters=None, order="C", byteorder="<").decoding()
            [[], None, 'C', '<i4']
        """
        return [
            [f.get_config() for f in self.filters],
            self.compressor.get_config() if self.compressor is not None else None,
            self.order,
            self.stored_dtype.str,
        ]

    @property
    def supports_direct_decode(self) -> bool:
        """True when ``decode(out=...)`` decompresses straight into ``out`` (no extra copy).

        That holds without filters, in C order (or F order on effectively 1-d chunks), with
        no compressor or zstd, blosc or lz4; big-endian data is then swapped in place.
        """
        return self._direct

    def encode(self, chunk: np.ndarray) -> bytes:
        """Encode a chunk of the spec's shape (any memory layout) to its stored bytes.

        Raises:
            ShapeMismatchError: ``chunk`` is not of the spec's shape.
            CodecError: a codec failed, naming it.
        """
        array = np.asarray(chunk)
        if array.shape != self.spec.shape:
            raise ShapeMismatchError(
                f"cannot encode an array of shape {array.shape} as a chunk of shape "
                f"{self.spec.shape}"
            )
        data: Any = array.astype(
            self.stored_dtype, order="F" if self.order == "F" else "C", copy=False
        )
        codec: Any = None
        key = ""
        try:
            for i, codec in enumerate(self.filters):
                key = f"filters[{i}]"
                data = codec.encode(data)
            if self.compressor is not None:
                codec, key = self.compressor, "compressor"
                if codec.codec_id == "gzip":  # the same bytes, without the time stamp
                    data = gzip_compress(data, codec.level)
                else:
                    data = codec.encode(data)
        except Exception as err:
            raise CodecError(
                f"cannot encode a chunk with numcodecs codec {codec.codec_id!r} (.zarray "
                f"{key} {codec.get_config()!r}): {type(err).__name__}: {err}"
            ) from err
        if isinstance(data, np.ndarray):
            return data.tobytes(order="A")
        return bytes(data)

    def decode(
        self, data: bytes | memoryview, out: np.ndarray | None = None, *, key: str | None = None
    ) -> np.ndarray:
        """Decode a stored chunk to an array of the spec; into ``out`` when given.

        Without ``out`` the result may be a read-only view of ``data``.

        Raises:
            ChunkDecodeError: corrupt or truncated data, or a decoded size that does not match
                the spec, naming ``key`` (when given) and the codec.
            CodecError: ``out`` of the wrong shape, dtype or layout.
        """
        if out is not None:
            check_out(out, self.spec)
        codec: Any = self.compressor
        try:
            if out is not None and self._direct:
                flat = out.reshape(-1).view(np.uint8)
                if self.compressor is None:
                    codec = None
                    flat[...] = self._bytes(data)
                else:
                    decode_into(self.compressor, str(self._compressor_id), data, flat)
                if self._swap:
                    out.byteswap(inplace=True)
                return out
            raw: Any = data
            if self._refuse_over is not None and nbytes_of(data) > self._refuse_over:
                raise ChunkDecodeError(  # the filters' input, stored as is: no more than
                    f"the stored chunk is {nbytes_of(data)} bytes, more than the "
                    f"{self._refuse_over} its filters encode this chunk to"
                )
            if self.compressor is not None:
                limit = self._compressor_limit
                raw = decompress_at_most(self.compressor, str(self._compressor_id), data, limit)
            for codec, limit in zip(self.filters[::-1], self._filter_limits[::-1], strict=True):
                raw = decompress_at_most(codec, codec.codec_id, raw, limit)
            codec = None
            array = self._as_chunk(raw)
        except Exception as err:
            raise decode_error(err, codec, key) from err
        if out is not None:
            out[...] = array
            return out
        return array

    def _bytes(self, raw: Any) -> np.ndarray:
        flat = np.frombuffer(as_byte_view(raw), dtype=np.uint8)
        if flat.size != self.spec.nbytes:
            raise ChunkDecodeError(
                f"the chunk decodes to {flat.size} bytes, expected {self.spec.nbytes} for "
                f"shape {self.spec.shape} of {self.stored_dtype}"
            )
        return flat

    def _as_chunk(self, raw: Any) -> np.ndarray:
        # zarr-python views whatever the last filter returns as the stored dtype: bytes rule.
        flat = self._bytes(raw).view(self.stored_dtype)
        array = flat.reshape(self.spec.shape, order=self.order)  # type: ignore[call-overload]
        if self._swap:
            array = array.astype(self.spec.dtype)
        return array

    def __repr__(self) -> str:
        filters = [f.get_config() for f in self.filters]
        comp = self.compressor.get_config() if self.compressor is not None else None
        return (
            f"V2Pipeline(shape={self.spec.shape}, dtype='{self.stored_dtype.str}', "
            f"order={self.order!r}, filters={filters}, compressor={comp})"
        )
