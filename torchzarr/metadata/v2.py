"""Zarr v2 metadata: ``.zarray`` and ``.zgroup`` (attributes live in ``.zattrs``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torchzarr.codecs.key_encoding import V2ChunkKeyEncoding
from torchzarr.dtypes import DataType, parse_v2_dtype, v2_typestr
from torchzarr.errors import MetadataError
from torchzarr.metadata.base import ArrayMetadata, GroupMetadata, check_int_tuple
from torchzarr.metadata.fill import encode_fill_value, parse_fill_value

__all__ = ["ArrayMetadataV2", "GroupMetadataV2"]



@dataclass(frozen=True)
class ArrayMetadataV2(ArrayMetadata):
    """A parsed ``.zarray`` plus the array's ``.zattrs``.

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
    fill_value: Any = None
    order: str = "C"
    dimension_separator: str = "."
    attributes: dict[str, Any] = field(default_factory=dict)
    zarr_format: int = 2
    dimension_names: tuple[str | None, ...] | None = None

    def __post_init__(self) -> None:
        if len(self.chunk_shape) != len(self.shape):
            raise MetadataError(
                f".zarray: chunks has {len(self.chunk_shape)} dims but shape has {len(self.shape)}"
            )
        if self.order not in ("C", "F"):
            raise MetadataError(f".zarray: order must be 'C' or 'F', got {self.order!r}")
        if self.dimension_separator not in (".", "/"):
            raise MetadataError(
                f".zarray: dimension_separator must be '.' or '/', got {self.dimension_separator!r}"
            )
        if self.compressor is not None and not isinstance(self.compressor.get("id"), str):
            raise MetadataError(f".zarray: compressor needs an 'id', got {self.compressor!r}")
        for f in self.filters or ():
            if not isinstance(f, dict) or not isinstance(f.get("id"), str):
                raise MetadataError(f".zarray: each filter needs an 'id', got {f!r}")

    @classmethod
    def from_json(
        cls, doc: dict[str, Any], attributes: dict[str, Any] | None = None
    ) -> ArrayMetadataV2:
        """Parse a ``.zarray`` document (and the ``.zattrs`` beside it)."""
        if doc.get("zarr_format") != 2:
            raise MetadataError(f".zarray: zarr_format must be 2, got {doc.get('zarr_format')!r}")
        for key in ("shape", "chunks", "dtype"):
            if key not in doc:
                raise MetadataError(f".zarray: missing required key {key!r}")
        shape = check_int_tuple(doc["shape"], key="shape", where=".zarray", minimum=0)
        chunks = check_int_tuple(doc["chunks"], key="chunks", where=".zarray", minimum=1)
        dt, byteorder = parse_v2_dtype(doc["dtype"])
        compressor = doc.get("compressor")
        if compressor is not None and not isinstance(compressor, dict):
            raise MetadataError(f".zarray: compressor must be an object or null, got {compressor!r}")
        filters = doc.get("filters")
        if filters is not None and not isinstance(filters, list):
            raise MetadataError(f".zarray: filters must be a list or null, got {filters!r}")
        return cls(
            shape=shape,
            chunk_shape=chunks,
            data_type=dt,
            byteorder=byteorder,
            compressor=compressor,
            filters=tuple(filters) if filters else None,
            fill_value=parse_fill_value(doc.get("fill_value"), dt, 2),
            order=doc.get("order", "C"),
            dimension_separator=doc.get("dimension_separator") or ".",
            attributes=dict(attributes or {}),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "zarr_format": 2,
            "shape": list(self.shape),
            "chunks": list(self.chunk_shape),
            "dtype": v2_typestr(self.data_type, self.byteorder),
            "compressor": self.compressor,
            "fill_value": encode_fill_value(self.fill_value, self.data_type, 2),
            "order": self.order,
            "filters": list(self.filters) if self.filters else None,
            "dimension_separator": self.dimension_separator,
        }

    def chunk_key(self, chunk_coords: tuple[int, ...]) -> str:
        return V2ChunkKeyEncoding(self.dimension_separator).encode(chunk_coords)

    def codec_pipeline(self) -> Any:
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
        names = [f["id"] for f in self.filters or ()]
        if self.compressor is not None:
            names.append(str(self.compressor["id"]))
        return names


@dataclass(frozen=True)
class GroupMetadataV2(GroupMetadata):
    """A ``.zgroup`` plus the group's ``.zattrs``.

    Example:
        >>> GroupMetadataV2().to_json()
        {'zarr_format': 2}
    """

    attributes: dict[str, Any] = field(default_factory=dict)
    zarr_format: int = 2

    def to_json(self) -> dict[str, Any]:
        return {"zarr_format": 2}
