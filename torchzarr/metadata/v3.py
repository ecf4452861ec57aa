"""Zarr v3 metadata: the ``zarr.json`` of arrays and groups, with extension rules enforced."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from torchzarr.codecs.base import Codec
from torchzarr.codecs.key_encoding import (
    ChunkKeyEncoding,
    DefaultChunkKeyEncoding,
    chunk_key_encoding_from_json,
)
from torchzarr.codecs.transpose import with_explicit_orders
from torchzarr.dtypes import DataType, data_type, parse_v3_dtype
from torchzarr.errors import MetadataError, UnknownExtensionError
from torchzarr.metadata.base import (
    ArrayMetadata,
    GroupMetadata,
    check_attributes,
    check_int_tuple,
    chunks_of_empty_axes,
    describe_codec,
)
from torchzarr.metadata.fill import coerce_fill_value, encode_fill_value, parse_fill_value

if TYPE_CHECKING:
    from torchzarr.codecs.pipeline import V3Pipeline

__all__ = ["ArrayMetadataV3", "GroupMetadataV3", "parse_v3_node"]

_WHERE = "zarr.json"
_ARRAY_KEYS = frozenset(
    {
        "zarr_format",
        "node_type",
        "shape",
        "data_type",
        "chunk_grid",
        "chunk_key_encoding",
        "fill_value",
        "codecs",
        "attributes",
        "dimension_names",
        "storage_transformers",
    }
)
_GROUP_KEYS = frozenset({"zarr_format", "node_type", "attributes", "consolidated_metadata"})


def _ignorable(value: Any) -> bool:
    """An extension object a reader may skip: it says ``must_understand: false``."""
    return isinstance(value, dict) and value.get("must_understand") is False


def _extensions(doc: dict[str, Any], known: frozenset[str]) -> dict[str, Any]:
    """Unknown top-level keys: kept if ``must_understand`` is false, refused otherwise."""
    kept: dict[str, Any] = {}
    for key, value in doc.items():
        if key in known:
            continue
        if not _ignorable(value):
            raise UnknownExtensionError(
                f"{_WHERE}: unknown key {key!r} is an extension torchzarr does not implement "
                "(and it does not say must_understand: false)"
            )
        kept[key] = value
    return kept


def _chunk_grid(obj: Any) -> tuple[int, ...]:
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        raise MetadataError(f"{_WHERE}: chunk_grid must be an object with a name, got {obj!r}")
    if obj["name"] != "regular":
        raise UnknownExtensionError(
            f"{_WHERE}: unsupported chunk_grid {obj['name']!r} (torchzarr reads 'regular')"
        )
    config = obj.get("configuration")
    if not isinstance(config, dict) or "chunk_shape" not in config:
        raise MetadataError(
            f"{_WHERE}: chunk_grid 'regular' needs configuration.chunk_shape, got {obj!r}"
        )
    return check_int_tuple(config["chunk_shape"], key="chunk_shape", where=_WHERE, minimum=0)


def _check_transformers(value: Any) -> tuple[dict[str, Any], ...]:
    if not isinstance(value, list | tuple):
        raise MetadataError(f"{_WHERE}: storage_transformers must be a list, got {value!r}")
    for t in value:
        if not _ignorable(t):
            name = t.get("name") if isinstance(t, dict) else t
            raise UnknownExtensionError(
                f"{_WHERE}: storage transformer {name!r} is not supported by torchzarr"
            )
    return tuple(dict(t) for t in value)


def _check_names(value: Any, ndim: int) -> tuple[str | None, ...]:
    if not isinstance(value, list | tuple) or not all(
        n is None or isinstance(n, str) for n in value
    ):
        raise MetadataError(
            f"{_WHERE}: dimension_names must be a list of strings or nulls, got {value!r}"
        )
    if len(value) != ndim:
        raise MetadataError(
            f"{_WHERE}: dimension_names has {len(value)} entries but shape has {ndim} dims"
        )
    return tuple(value)


@dataclass(frozen=True, eq=False)
class ArrayMetadataV3(ArrayMetadata):
    """A parsed array ``zarr.json``.

    ``chunk_shape`` is the regular chunk grid (with sharding, the shard shape).
    ``storage_transformers`` holds only transformers marked ``must_understand: false``;
    ``extensions`` holds unknown top-level keys marked so, written back unchanged.

    Example:
        >>> meta = ArrayMetadataV3.from_json({"zarr_format": 3, "node_type": "array",
        ...     "shape": [4], "data_type": "int8", "fill_value": 0,
        ...     "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [2]}},
        ...     "chunk_key_encoding": {"name": "default"}, "codecs": [{"name": "bytes"}]})
        >>> meta.chunk_key((1,)), meta.codec_names
        ('c/1', ['bytes'])
    """

    shape: tuple[int, ...]
    chunk_shape: tuple[int, ...]
    data_type: DataType
    fill_value: np.generic
    codecs: tuple[Codec, ...]
    chunk_key_encoding: ChunkKeyEncoding = field(default_factory=DefaultChunkKeyEncoding)
    attributes: dict[str, Any] = field(default_factory=dict)
    dimension_names: tuple[str | None, ...] | None = None
    storage_transformers: tuple[dict[str, Any], ...] = ()
    extensions: dict[str, Any] = field(default_factory=dict)
    zarr_format: int = field(default=3, init=False)
    node_type: str = field(default="array", init=False)

    def __post_init__(self) -> None:
        from torchzarr.codecs.registry import codec_from_json

        set_ = object.__setattr__  # frozen: normalise fields in place, once
        set_(self, "shape", check_int_tuple(self.shape, key="shape", where=_WHERE, minimum=0))
        set_(
            self,
            "chunk_shape",
            check_int_tuple(self.chunk_shape, key="chunk_shape", where=_WHERE, minimum=1),
        )
        if len(self.chunk_shape) != len(self.shape):
            raise MetadataError(
                f"{_WHERE}: chunk_shape has {len(self.chunk_shape)} dims but shape has "
                f"{len(self.shape)}"
            )
        dt = self.data_type if isinstance(self.data_type, DataType) else data_type(self.data_type)
        if dt.v3_name is None and not dt.name.startswith("float8"):
            # float8 kinds without a registry name are still read under tensorstore's names
            raise MetadataError(f"{_WHERE}: dtype {dt.name} has no Zarr v3 data_type name")
        set_(self, "data_type", dt)
        fill = self.fill_value
        if not (isinstance(fill, np.generic) and fill.dtype == dt.storage):
            set_(self, "fill_value", coerce_fill_value(fill, dt))
        if not isinstance(self.codecs, Sequence) or isinstance(self.codecs, str | bytes):
            raise MetadataError(f"{_WHERE}: codecs must be a list, got {self.codecs!r}")
        set_(self, "codecs", tuple(codec_from_json(c) for c in self.codecs))
        set_(self, "chunk_key_encoding", chunk_key_encoding_from_json(self.chunk_key_encoding))
        set_(self, "attributes", check_attributes(self.attributes, where=_WHERE))
        if self.dimension_names is not None:
            set_(self, "dimension_names", _check_names(self.dimension_names, len(self.shape)))
        set_(self, "storage_transformers", _check_transformers(self.storage_transformers))
        extensions = dict(self.extensions)
        clash = sorted(set(extensions) & _ARRAY_KEYS)
        if clash:
            raise MetadataError(f"{_WHERE}: extensions may not redefine core keys {clash}")
        _extensions(extensions, _ARRAY_KEYS)
        set_(self, "extensions", extensions)
        self.codec_pipeline()  # the chain is valid for this dtype, or fail here, not at a read
        # transpose "C"/"F" (legacy, read still) as permutations: zarr-python reads only those
        set_(self, "codecs", with_explicit_orders(self.codecs, self.chunk_spec()))

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> ArrayMetadataV3:
        """Parse an array ``zarr.json`` document.

        Raises:
            MetadataError: naming ``zarr.json`` and the key at fault.
            UnknownExtensionError: an unknown key, chunk grid, key encoding or storage
                transformer that must be understood.
            UnknownCodecError: a codec no registry knows.
            UnsupportedDtypeError: a data type torchzarr cannot hold.
        """
        if not isinstance(doc, dict):
            raise MetadataError(f"{_WHERE}: expected a JSON object, got {type(doc).__name__}")
        if doc.get("zarr_format") != 3 or doc.get("node_type") != "array":
            raise MetadataError(
                f"{_WHERE}: expected zarr_format 3 and node_type 'array', got "
                f"{doc.get('zarr_format')!r} and {doc.get('node_type')!r}"
            )
        extensions = _extensions(doc, _ARRAY_KEYS)
        for key in ("shape", "data_type", "chunk_grid", "fill_value", "codecs"):
            if key not in doc:
                raise MetadataError(f"{_WHERE}: missing required key {key!r}")
        from torchzarr.codecs.registry import codec_from_json

        shape = check_int_tuple(doc["shape"], key="shape", where=_WHERE, minimum=0)
        chunk_shape = chunks_of_empty_axes(
            _chunk_grid(doc["chunk_grid"]), shape, key="chunk_shape", where=_WHERE
        )
        if len(chunk_shape) != len(shape):
            raise MetadataError(
                f"{_WHERE}: chunk_shape has {len(chunk_shape)} dims but shape has {len(shape)}"
            )
        dt = parse_v3_dtype(doc["data_type"])
        if not isinstance(doc["codecs"], list):
            raise MetadataError(f"{_WHERE}: codecs must be a list, got {doc['codecs']!r}")
        names = doc.get("dimension_names")
        return cls(
            shape=shape,
            chunk_shape=chunk_shape,
            data_type=dt,
            fill_value=parse_fill_value(doc["fill_value"], dt, 3),  # type: ignore[arg-type]
            codecs=tuple(codec_from_json(c) for c in doc["codecs"]),
            chunk_key_encoding=chunk_key_encoding_from_json(
                doc.get("chunk_key_encoding", {"name": "default"})
            ),
            attributes=check_attributes(doc.get("attributes", {}), where=_WHERE),
            dimension_names=_check_names(names, len(shape)) if names is not None else None,
            storage_transformers=_check_transformers(doc.get("storage_transformers") or []),
            extensions=extensions,
        )

    def to_json(self) -> dict[str, Any]:
        """The ``zarr.json`` document, with every key zarr-python writes, in its order.

        Example:
            >>> from torchzarr.dtypes import data_type
            >>> meta = ArrayMetadataV3((4,), (2,), data_type("uint8"), 0, ["bytes"])
            >>> meta.to_json()["chunk_grid"]
            {'name': 'regular', 'configuration': {'chunk_shape': [2]}}
        """
        doc: dict[str, Any] = {
            "shape": list(self.shape),
            "data_type": self.data_type.v3_name or self.data_type.name,
            "chunk_grid": {
                "name": "regular",
                "configuration": {"chunk_shape": list(self.chunk_shape)},
            },
            "chunk_key_encoding": self.chunk_key_encoding.to_json(),
            "fill_value": encode_fill_value(self.fill_value, self.data_type, 3),
            "codecs": [c.to_json() for c in self.codecs],
            "attributes": self.attributes,
        }
        if self.dimension_names is not None:
            doc["dimension_names"] = list(self.dimension_names)
        doc["zarr_format"] = 3
        doc["node_type"] = "array"
        doc["storage_transformers"] = [dict(t) for t in self.storage_transformers]
        doc.update(self.extensions)
        return doc

    def codec_pipeline(self) -> V3Pipeline:
        """The v3 codec chain of one full chunk (validates the chain's order and kinds)."""
        from torchzarr.codecs.pipeline import V3Pipeline

        return V3Pipeline(self.codecs, self.chunk_spec())

    @property
    def codec_names(self) -> list[str]:
        return [c.codec_name for c in self.codecs]

    @property
    def codecs_repr(self) -> list[str]:
        return [describe_codec(c.to_json()) for c in self.codecs]


@dataclass(frozen=True)
class GroupMetadataV3(GroupMetadata):
    """A parsed group ``zarr.json``; inline consolidated metadata is kept as raw JSON.

    Example:
        >>> GroupMetadataV3(attributes={"a": 1}).to_json()
        {'attributes': {'a': 1}, 'zarr_format': 3, 'node_type': 'group'}
    """

    attributes: dict[str, Any] = field(default_factory=dict)
    consolidated_metadata: dict[str, Any] | None = None
    extensions: dict[str, Any] = field(default_factory=dict)
    zarr_format: int = field(default=3, init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "attributes", check_attributes(self.attributes, where=_WHERE))
        if self.consolidated_metadata is not None and not isinstance(
            self.consolidated_metadata, dict
        ):
            raise MetadataError(
                f"{_WHERE}: consolidated_metadata must be an object or null, got "
                f"{self.consolidated_metadata!r}"
            )
        extensions = dict(self.extensions)
        clash = sorted(set(extensions) & _GROUP_KEYS)
        if clash:
            raise MetadataError(f"{_WHERE}: extensions may not redefine core keys {clash}")
        _extensions(extensions, _GROUP_KEYS)
        object.__setattr__(self, "extensions", extensions)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> GroupMetadataV3:
        """Parse a group ``zarr.json`` document.

        Example:
            >>> GroupMetadataV3.from_json({"zarr_format": 3, "node_type": "group"}).attributes
            {}
        """
        if not isinstance(doc, dict):
            raise MetadataError(f"{_WHERE}: expected a JSON object, got {type(doc).__name__}")
        if doc.get("zarr_format") != 3 or doc.get("node_type") != "group":
            raise MetadataError(
                f"{_WHERE}: expected zarr_format 3 and node_type 'group', got "
                f"{doc.get('zarr_format')!r} and {doc.get('node_type')!r}"
            )
        return cls(
            attributes=check_attributes(doc.get("attributes", {}), where=_WHERE),
            consolidated_metadata=doc.get("consolidated_metadata"),
            extensions=_extensions(doc, _GROUP_KEYS),
        )

    def to_json(self) -> dict[str, Any]:
        """The group ``zarr.json`` document, keys in zarr-python's order."""
        doc: dict[str, Any] = {"attributes": self.attributes, "zarr_format": 3}
        if self.consolidated_metadata is not None:
            doc["consolidated_metadata"] = self.consolidated_metadata
        doc["node_type"] = "group"
        doc.update(self.extensions)
        return doc


def parse_v3_node(doc: dict[str, Any]) -> ArrayMetadataV3 | GroupMetadataV3:
    """Parse any ``zarr.json`` by its ``node_type``.

    Example:
        >>> parse_v3_node({"zarr_format": 3, "node_type": "group"}).attributes
        {}
    """
    if not isinstance(doc, dict):
        raise MetadataError(f"{_WHERE}: expected a JSON object, got {type(doc).__name__}")
    if doc.get("zarr_format") != 3:
        raise MetadataError(f"{_WHERE}: zarr_format must be 3, got {doc.get('zarr_format')!r}")
    node_type = doc.get("node_type")
    if node_type == "array":
        return ArrayMetadataV3.from_json(doc)
    if node_type == "group":
        return GroupMetadataV3.from_json(doc)
    raise MetadataError(f"{_WHERE}: node_type must be 'array' or 'group', got {node_type!r}")
