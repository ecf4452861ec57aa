"""Zarr v3 metadata: ``zarr.json`` of arrays and groups, extensions checked."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torchzarr.codecs.base import Codec
from torchzarr.codecs.key_encoding import (
    ChunkKeyEncoding,
    DefaultChunkKeyEncoding,
    chunk_key_encoding_from_json,
)
from torchzarr.dtypes import DataType, parse_v3_dtype
from torchzarr.errors import MetadataError, UnknownExtensionError
from torchzarr.metadata.base import ArrayMetadata, GroupMetadata, check_int_tuple
from torchzarr.metadata.fill import encode_fill_value, parse_fill_value

__all__ = ["ArrayMetadataV3", "GroupMetadataV3", "parse_v3_node"]

_ARRAY_KEYS = {"zarr_format", "node_type", "shape", "data_type", "chunk_grid",
               "chunk_key_encoding", "fill_value", "codecs", "attributes", "dimension_names",
               "storage_transformers"}
_GROUP_KEYS = {"zarr_format", "node_type", "attributes", "consolidated_metadata"}


def _extensions(doc: dict[str, Any], known: set[str]) -> dict[str, Any]:
    """Unknown top-level keys: kept if ``must_understand`` is false, refused otherwise."""
    kept: dict[str, Any] = {}
    for key, value in doc.items():
        if key in known:
            continue
        if isinstance(value, dict) and value.get("must_understand") is False:
            kept[key] = value
            continue
        raise UnknownExtensionError(
            f"zarr.json: unknown extension {key!r} must be understood and torchzarr does not "
            "implement it"
        )
    return kept


def _chunk_grid(obj: Any) -> tuple[int, ...]:
    if not isinstance(obj, dict) or obj.get("name") != "regular":
        name = obj.get("name") if isinstance(obj, dict) else obj
        raise UnknownExtensionError(f"zarr.json: unsupported chunk_grid {name!r} (only 'regular')")
    config = obj.get("configuration") or {}
    return check_int_tuple(
        config.get("chunk_shape"), key="chunk_grid.chunk_shape", where="zarr.json", minimum=1
    )


@dataclass(frozen=True)
class ArrayMetadataV3(ArrayMetadata):
    """A parsed array ``zarr.json``.

    Example:
        >>> meta = ArrayMetadataV3.from_json({"zarr_format": 3, "node_type": "array",
        ...     "shape": [4], "data_type": "int8", "fill_value": 0,
        ...     "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [2]}},
        ...     "chunk_key_encoding": {"name": "default"}, "codecs": [{"name": "bytes"}]})
        >>> meta.chunk_key((1,))
        'c/1'
    """

    shape: tuple[int, ...]
    chunk_shape: tuple[int, ...]
    data_type: DataType
    fill_value: Any
    codecs: tuple[Codec, ...]
    chunk_key_encoding: ChunkKeyEncoding = field(default_factory=DefaultChunkKeyEncoding)
    attributes: dict[str, Any] = field(default_factory=dict)
    dimension_names: tuple[str | None, ...] | None = None
    extensions: dict[str, Any] = field(default_factory=dict)
    zarr_format: int = 3
    node_type: str = "array"

    def __post_init__(self) -> None:
        if len(self.chunk_shape) != len(self.shape):
            raise MetadataError(
                f"zarr.json: chunk_shape has {len(self.chunk_shape)} dims but shape has "
                f"{len(self.shape)}"
            )
        if self.dimension_names is not None and len(self.dimension_names) != len(self.shape):
            raise MetadataError(
                f"zarr.json: dimension_names has {len(self.dimension_names)} entries but shape "
                f"has {len(self.shape)} dims"
            )
        if self.dimension_names is not None and not all(
            n is None or isinstance(n, str) for n in self.dimension_names
        ):
            raise MetadataError(
                f"zarr.json: dimension_names must be strings or null, got {self.dimension_names!r}"
            )
        if not self.codecs:
            raise MetadataError("zarr.json: codecs must hold at least an array-to-bytes codec")

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> ArrayMetadataV3:
        """Parse an array ``zarr.json`` document."""
        from torchzarr.codecs.registry import codec_from_json

        if doc.get("zarr_format") != 3 or doc.get("node_type") != "array":
            raise MetadataError("zarr.json: expected zarr_format 3 and node_type 'array'")
        extensions = _extensions(doc, _ARRAY_KEYS)
        for key in ("shape", "data_type", "chunk_grid", "fill_value", "codecs"):
            if key not in doc:
                raise MetadataError(f"zarr.json: missing required key {key!r}")
        transformers = doc.get("storage_transformers") or []
        if transformers:
            names = [t.get("name") if isinstance(t, dict) else t for t in transformers]
            raise UnknownExtensionError(f"zarr.json: unsupported storage_transformers {names!r}")
        dt = parse_v3_dtype(doc["data_type"])
        if not isinstance(doc["codecs"], list):
            raise MetadataError(f"zarr.json: codecs must be a list, got {doc['codecs']!r}")
        names = doc.get("dimension_names")
        attributes = doc.get("attributes", {})
        if not isinstance(attributes, dict):
            raise MetadataError(f"zarr.json: attributes must be an object, got {attributes!r}")
        return cls(
            shape=check_int_tuple(doc["shape"], key="shape", where="zarr.json", minimum=0),
            chunk_shape=_chunk_grid(doc["chunk_grid"]),
            data_type=dt,
            fill_value=parse_fill_value(doc["fill_value"], dt, 3),
            codecs=tuple(codec_from_json(c) for c in doc["codecs"]),
            chunk_key_encoding=chunk_key_encoding_from_json(
                doc.get("chunk_key_encoding", {"name": "default"})
            ),
            attributes=dict(attributes),
            dimension_names=tuple(names) if names is not None else None,
            extensions=extensions,
        )

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "zarr_format": 3,
            "node_type": "array",
            "shape": list(self.shape),
            "data_type": self.data_type.v3_name,
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(self.chunk_shape)}},
            "chunk_key_encoding": self.chunk_key_encoding.to_json(),
            "fill_value": encode_fill_value(self.fill_value, self.data_type, 3),
            "codecs": [c.to_json() for c in self.codecs],
            "attributes": self.attributes,
        }
        if self.dimension_names is not None:
            doc["dimension_names"] = list(self.dimension_names)
        doc.update(self.extensions)
        return doc

    def chunk_key(self, chunk_coords: tuple[int, ...]) -> str:
        return self.chunk_key_encoding.encode(chunk_coords)

    def codec_pipeline(self) -> Any:
        from torchzarr.codecs.pipeline import V3Pipeline

        return V3Pipeline(self.codecs, self.chunk_spec())

    @property
    def codec_names(self) -> list[str]:
        return [c.codec_name for c in self.codecs]


@dataclass(frozen=True)
class GroupMetadataV3(GroupMetadata):
    """A parsed group ``zarr.json`` (consolidated metadata kept as its raw JSON).

    Example:
        >>> GroupMetadataV3(attributes={"a": 1}).to_json()
        {'zarr_format': 3, 'node_type': 'group', 'attributes': {'a': 1}}
    """

    attributes: dict[str, Any] = field(default_factory=dict)
    consolidated_metadata: dict[str, Any] | None = None
    extensions: dict[str, Any] = field(default_factory=dict)
    zarr_format: int = 3

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> GroupMetadataV3:
        """Parse a group ``zarr.json`` document."""
        if doc.get("zarr_format") != 3 or doc.get("node_type") != "group":
            raise MetadataError("zarr.json: expected zarr_format 3 and node_type 'group'")
        extensions = _extensions(doc, _GROUP_KEYS)
        attributes = doc.get("attributes", {})
        if not isinstance(attributes, dict):
            raise MetadataError(f"zarr.json: attributes must be an object, got {attributes!r}")
        consolidated = doc.get("consolidated_metadata")
        if consolidated is not None and not isinstance(consolidated, dict):
            raise MetadataError("zarr.json: consolidated_metadata must be an object or null")
        return cls(attributes=dict(attributes), consolidated_metadata=consolidated,
                   extensions=extensions)

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"zarr_format": 3, "node_type": "group", "attributes": self.attributes}
        if self.consolidated_metadata is not None:
            doc["consolidated_metadata"] = self.consolidated_metadata
        doc.update(self.extensions)
        return doc


def parse_v3_node(doc: dict[str, Any]) -> ArrayMetadataV3 | GroupMetadataV3:
    """Parse any ``zarr.json`` by its ``node_type``.

    Example:
        >>> parse_v3_node({"zarr_format": 3, "node_type": "group"}).attributes
        {}
    """
    if doc.get("zarr_format") != 3:
        raise MetadataError(f"zarr.json: zarr_format must be 3, got {doc.get('zarr_format')!r}")
    node_type = doc.get("node_type")
    if node_type == "array":
        return ArrayMetadataV3.from_json(doc)
    if node_type == "group":
        return GroupMetadataV3.from_json(doc)
    raise MetadataError(f"zarr.json: node_type must be 'array' or 'group', got {node_type!r}")
