"""Zarr v2 metadata: ``.zarray`` and ``.zgroup`` (attributes live beside them in ``.zattrs``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from torchzarr.codecs.key_encoding import V2ChunkKeyEncoding
from torchzarr.codecs.numcodecs_adapter import numcodecs_codec_class
from torchzarr.dtypes import DataType, data_type, has_v2_form, parse_v2_dtype, v2_typestr
from torchzarr.errors import MetadataError
from torchzarr.metadata.base import (
    ArrayMetadata,
    GroupMetadata,
    check_attributes,
    check_int_tuple,
    chunks_of_empty_axes,
    describe_codec,
)
from torchzarr.metadata.fill import (
    coerce_fill_value,
    encode_fill_value,
    parse_fill_value,
    standard_nans,
)

if TYPE_CHECKING:
    from torchzarr.codecs.v2_pipeline import V2Pipeline

__all__ = ["ArrayMetadataV2", "GroupMetadataV2"]

_WHERE = ".zarray"


def _check_codec(obj: Any, what: str) -> dict[str, Any]:
    if not isinstance(obj, dict) or not isinstance(obj.get("id"), str):
        raise MetadataError(f"{_WHERE}: {what} must be an object with a str 'id', got {obj!r}")
    return obj


@dataclass(frozen=True, eq=False)
class ArrayMetadataV2(ArrayMetadata):
    """A parsed ``.zarray`` plus the array's ``.zattrs``.

    ``fill_value`` is None for a ``null`` fill (no fill: missing chunks read as zero).
    ``filters`` is None when there are none (``[]`` in a document reads as None).

    Example:
        >>> meta = ArrayMetadataV2.from_json({"zarr_format": 2, "shape": [4], "chunks": [2],
        ...     "dtype": "<f8", "compressor": None, "fill_value": "NaN", "order": "C",
        ...     "filters": None})
        >>> meta.chunk_key((1,)), meta.fill_value
        ('1', np.float64(nan))
    """

    shape: tuple[int, ...]
    chunk_shape: tuple[int, ...]
    data_type: DataType
    byteorder: str = "<"
    compressor: dict[str, Any] | None = None
    filters: tuple[dict[str, Any], ...] | None = None
    fill_value: np.generic | None = None
    order: str = "C"
    dimension_separator: str = "."
    attributes: dict[str, Any] = field(default_factory=dict)
    zarr_format: int = field(default=2, init=False)
    dimension_names: tuple[str | None, ...] | None = field(default=None, init=False)
    chunk_key_encoding: V2ChunkKeyEncoding = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise fields in place, once
        set_(self, "shape", check_int_tuple(self.shape, key="shape", where=_WHERE, minimum=0))
        set_(
            self,
            "chunk_shape",
            check_int_tuple(self.chunk_shape, key="chunks", where=_WHERE, minimum=1),
        )
        if len(self.chunk_shape) != len(self.shape):
            raise MetadataError(
                f"{_WHERE}: chunks has {len(self.chunk_shape)} dims but shape has {len(self.shape)}"
            )
        dt = self.data_type if isinstance(self.data_type, DataType) else data_type(self.data_type)
        if not has_v2_form(dt):
            raise MetadataError(f"{_WHERE}: dtype {dt.name} has no Zarr v2 form (use Zarr v3)")
        set_(self, "data_type", dt)
        byteorder = "|" if dt.itemsize == 1 else self.byteorder
        if byteorder not in ("<", ">") and dt.itemsize > 1:
            raise MetadataError(
                f"{_WHERE}: byteorder must be '<' or '>' for {dt.name}, got {self.byteorder!r}"
            )
        set_(self, "byteorder", "<" if dt.name == "bfloat16" else byteorder)
        if self.order not in ("C", "F"):
            raise MetadataError(f"{_WHERE}: order must be 'C' or 'F', got {self.order!r}")
        if self.dimension_separator not in (".", "/"):
            raise MetadataError(
                f"{_WHERE}: dimension_separator must be '.' or '/', got "
                f"{self.dimension_separator!r}"
            )
        if self.compressor is not None:
            set_(self, "compressor", dict(_check_codec(self.compressor, "compressor")))
        if self.filters is not None:
            if not isinstance(self.filters, list | tuple):
                raise MetadataError(
                    f"{_WHERE}: filters must be a list or null, got {self.filters!r}"
                )
            checked = tuple(dict(_check_codec(f, "each filter")) for f in self.filters)
            set_(self, "filters", checked or None)
        fill = self.fill_value
        if fill is not None and not (isinstance(fill, np.generic) and fill.dtype == dt.storage):
            set_(self, "fill_value", coerce_fill_value(fill, dt))
        # what the document says ("NaN" for every NaN), so reopening reads the same fill
        set_(self, "fill_value", standard_nans(self.fill_value, dt))
        for codec in [*(self.filters or ()), *([self.compressor] if self.compressor else [])]:
            numcodecs_codec_class(codec["id"])  # one numcodecs lacks: known now, as in v3
        set_(self, "attributes", check_attributes(self.attributes, where=".zattrs"))
        set_(self, "chunk_key_encoding", V2ChunkKeyEncoding(self.dimension_separator))

    @property
    def chunks(self) -> tuple[int, ...]:
        """The ``chunks`` of the document (the same as ``chunk_shape``)."""
        return self.chunk_shape

    @classmethod
    def from_json(
        cls, doc: dict[str, Any], attributes: dict[str, Any] | None = None
    ) -> ArrayMetadataV2:
        """Parse a ``.zarray`` document and the ``.zattrs`` beside it.

        Keys other than the v2 spec's are ignored (v2 has no extension mechanism).

        Raises:
            MetadataError: naming ``.zarray`` and the key at fault.
            UnsupportedDtypeError: a dtype torchzarr cannot hold (strings, structs, ...).

        Example:
            >>> ArrayMetadataV2.from_json({"zarr_format": 2, "shape": [3], "chunks": [3],
            ...     "dtype": ">i4", "fill_value": None}).byteorder
            '>'
        """
        if not isinstance(doc, dict):
            raise MetadataError(f"{_WHERE}: expected a JSON object, got {type(doc).__name__}")
        if doc.get("zarr_format") != 2:
            raise MetadataError(f"{_WHERE}: zarr_format must be 2, got {doc.get('zarr_format')!r}")
        for key in ("shape", "chunks", "dtype"):
            if key not in doc:
                raise MetadataError(f"{_WHERE}: missing required key {key!r}")
        dt, byteorder = parse_v2_dtype(doc["dtype"])
        filters = doc.get("filters")
        if filters is not None and not isinstance(filters, list):
            raise MetadataError(f"{_WHERE}: filters must be a list or null, got {filters!r}")
        shape = check_int_tuple(doc["shape"], key="shape", where=_WHERE, minimum=0)
        chunks = check_int_tuple(doc["chunks"], key="chunks", where=_WHERE, minimum=0)
        return cls(
            shape=shape,
            chunk_shape=chunks_of_empty_axes(chunks, shape, key="chunks", where=_WHERE),
            data_type=dt,
            byteorder=byteorder,
            compressor=doc.get("compressor"),
            filters=tuple(filters) if filters else None,
            fill_value=parse_fill_value(doc.get("fill_value"), dt, 2, byteorder=byteorder),
            order=doc.get("order", "C"),
            dimension_separator=doc.get("dimension_separator") or ".",
            attributes=check_attributes(attributes or {}, where=".zattrs"),
        )

    def to_json(self) -> dict[str, Any]:
        """The ``.zarray`` document, keys in zarr-python's order (attributes go to ``.zattrs``).

        Example:
            >>> from torchzarr.dtypes import data_type
            >>> ArrayMetadataV2((4,), (2,), data_type("int16")).to_json()["dtype"]
            '<i2'
        """
        return {
            "shape": list(self.shape),
            "chunks": list(self.chunk_shape),
            "dtype": v2_typestr(self.data_type, self.byteorder),
            "fill_value": encode_fill_value(self.fill_value, self.data_type, 2),
            "order": self.order,
            "filters": [dict(f) for f in self.filters] if self.filters else None,
            "dimension_separator": self.dimension_separator,
            "compressor": dict(self.compressor) if self.compressor is not None else None,
            "zarr_format": 2,
        }

    def codec_pipeline(self) -> V2Pipeline:
        """The numcodecs pipeline (filters, compressor, order, byte order) of one chunk."""
        from torchzarr.codecs.v2_pipeline import V2Pipeline

        return V2Pipeline(
            self.chunk_spec(),
            compressor=self.compressor,
            filters=list(self.filters) if self.filters else None,
            order=self.order,
            byteorder=self.byteorder,
        )

    @property
    def codec_names(self) -> list[str]:
        names = [str(f["id"]) for f in self.filters or ()]
        if self.compressor is not None:
            names.append(str(self.compressor["id"]))
        return names

    @property
    def codecs_repr(self) -> list[str]:
        codecs = [*(self.filters or ()), *([self.compressor] if self.compressor else [])]
        return [describe_codec(c) for c in codecs]


@dataclass(frozen=True)
class GroupMetadataV2(GroupMetadata):
    """A ``.zgroup`` plus the group's ``.zattrs``.

    Example:
        >>> GroupMetadataV2(attributes={"a": 1}).to_json()
        {'zarr_format': 2}
    """

    attributes: dict[str, Any] = field(default_factory=dict)
    zarr_format: int = field(default=2, init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "attributes", check_attributes(self.attributes, where=".zattrs"))

    @classmethod
    def from_json(
        cls, doc: dict[str, Any], attributes: dict[str, Any] | None = None
    ) -> GroupMetadataV2:
        """Parse a ``.zgroup`` document and the ``.zattrs`` beside it.

        Example:
            >>> GroupMetadataV2.from_json({"zarr_format": 2}, {"k": 1}).attributes
            {'k': 1}
        """
        if not isinstance(doc, dict) or doc.get("zarr_format") != 2:
            got = doc.get("zarr_format") if isinstance(doc, dict) else doc
            raise MetadataError(f".zgroup: zarr_format must be 2, got {got!r}")
        return cls(attributes=attributes or {})

    def to_json(self) -> dict[str, Any]:
        """The ``.zgroup`` document (attributes go to ``.zattrs``)."""
        return {"zarr_format": 2}
