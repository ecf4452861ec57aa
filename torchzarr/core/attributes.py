"""``attrs`` of arrays and groups: a JSON-only mutable mapping persisted on every change."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from typing import Any

import numpy as np
import torch

from torchzarr.dtypes import RAW_DTYPE_ATTRIBUTE, DataType, raw_bits_dtype
from torchzarr.errors import ArgumentTypeError, AttributeValueError

__all__ = [
    "RESERVED_ATTRIBUTES",
    "Attributes",
    "StoredAttributes",
    "check_json_value",
    "internal_attributes",
    "json_attributes",
    "json_ready",
    "logical_data_type",
    "user_attributes",
]


#: attribute keys torchzarr keeps for itself: refused from users, hidden from ``attrs``
RESERVED_ATTRIBUTES = frozenset({RAW_DTYPE_ATTRIBUTE})


def _raw_dtype(metadata: Any) -> DataType | None:
    """The dtype the raw-bits attribute names, when it is valid for this array: a dtype
    stored as raw unsigned bits (float8, ...) whose storage type is the one stored. Else
    (a group, no such attribute, or a value that cannot be meant so) None."""
    stored = getattr(metadata, "data_type", None)
    return None if stored is None else raw_bits_dtype(metadata.attributes, stored)


def internal_attributes(metadata: Any) -> dict[str, Any]:
    """torchzarr's own bookkeeping attributes of a node, kept when users change theirs.

    Example:
        >>> from torchzarr.metadata.v3 import GroupMetadataV3
        >>> internal_attributes(GroupMetadataV3(attributes={"_torchzarr_dtype": "x"}))
        {}
    """
    if _raw_dtype(metadata) is None:
        return {}
    return {RAW_DTYPE_ATTRIBUTE: metadata.attributes[RAW_DTYPE_ATTRIBUTE]}


def user_attributes(metadata: Any) -> dict[str, Any]:
    """The attributes a user sees: torchzarr's own bookkeeping keys left out (a reserved
    key holding what torchzarr cannot mean, written by another tool, is the user's).

    Example:
        >>> from torchzarr.metadata.v3 import GroupMetadataV3
        >>> user_attributes(GroupMetadataV3(attributes={"a": 1, "_torchzarr_dtype": "x"}))
        {'a': 1, '_torchzarr_dtype': 'x'}
    """
    internal = internal_attributes(metadata)
    return {k: v for k, v in metadata.attributes.items() if k not in internal}


def logical_data_type(metadata: Any) -> DataType:
    """The dtype an array holds: the stored one, or the one named by the raw-bits attribute
    (only where that is valid for the stored dtype: else it is a plain user attribute).

    Example:
        >>> import torch, torchzarr as tz
        >>> arr = tz.create_array("memory://", shape=(2,), dtype=torch.float8_e4m3fn)
        >>> logical_data_type(arr.metadata).name, arr.metadata.data_type.name
        ('float8_e4m3fn', 'uint8')
    """
    stored: DataType = metadata.data_type
    return _raw_dtype(metadata) or stored


def json_ready(value: Any, where: str = "value") -> Any:
    """``value`` with numpy scalars and arrays and torch tensors (also nested in lists and
    dicts) turned into Python numbers and lists; anything else as it is.

    A dict key that is not a str raises ``AttributeValueError`` naming where it is
    (``where``, then the keys and indexes down to it): JSON would turn it into a str, so
    the value would read back otherwise (and ``{1: ..., "1": ...}`` lose one); so does a
    tensor without a plain list of values (on the meta device, sparse, nested), and a list
    or dict that holds itself (JSON has no references).

    Example:
        >>> json_ready({"mean": np.float32(0.5), "shape": np.array([2, 3])})
        {'mean': 0.5, 'shape': [2, 3]}
    """
    return _ready(value, where, set())


def _ready(value: Any, where: str, enclosing: set[int]) -> Any:
    """:func:`json_ready` of ``value``, found inside the lists and dicts whose ids are
    ``enclosing``."""
    if isinstance(value, torch.Tensor):
        if value.is_meta:
            raise AttributeValueError(f"{where}: a tensor on the meta device holds no values")
        try:
            return value.detach().cpu().tolist()
        except (RuntimeError, NotImplementedError) as err:  # sparse, nested: no plain values
            raise AttributeValueError(f"{where}: tensor has no list of values ({err})") from None
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    if not isinstance(value, Mapping | list | tuple):
        return value
    if id(value) in enclosing:
        raise AttributeValueError(
            f"{where}: the value holds itself (a circular reference), which JSON cannot store"
        )
    enclosing.add(id(value))
    try:
        if isinstance(value, Mapping):
            ready = {}
            for key, item in value.items():
                if not isinstance(key, str):
                    raise AttributeValueError(
                        f"{where}: key {key!r} ({type(key).__name__}) is not a str; JSON "
                        "object keys are, so it would read back as a str: convert the keys first"
                    )
                ready[key] = _ready(item, f"{where}[{key!r}]", enclosing)
            return ready
        return [_ready(v, f"{where}[{i}]", enclosing) for i, v in enumerate(value)]
    finally:
        enclosing.discard(id(value))


class StoredAttributes(dict[str, Any]):
    """Attributes copied from a node already stored (``from_array`` keeps a source's):
    their NaN and infinities, which zarr-python writes, are carried over as they are
    instead of refused like new values.

    Example:
        >>> json_attributes(StoredAttributes(missing=float("nan")))
        {'missing': nan}
    """


def check_json_value(key: str, value: Any, *, stored: bool = False) -> Any:
    """``value`` made JSON-ready (:func:`json_ready`) if strict JSON can hold it, else
    raise naming ``key`` (NaN and infinities are not strict JSON, nor are keys other
    than str at any depth). ``stored``: the value comes from a stored node, so NaN and
    infinities are kept (written as zarr-python writes them).

    Example:
        >>> check_json_value("units", "m/s"), check_json_value("scale", np.float64(2.5))
        ('m/s', 2.5)
    """
    try:
        ready = json_ready(value, f"attribute {key!r}")
    except RecursionError:  # lists in lists ... past Python's recursion limit
        raise AttributeValueError(
            f"attribute {key!r}: value nested too deeply to be stored as JSON"
        ) from None
    try:
        json.dumps(ready, allow_nan=stored)
    except (TypeError, ValueError) as err:
        raise AttributeValueError(
            f"attribute {key!r}: value {value!r:.80} cannot be stored as JSON ({err})"
        ) from None
    return ready


def json_attributes(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    """Attributes checked and made JSON-ready, key by key (keys must be str, and not one
    of torchzarr's :data:`RESERVED_ATTRIBUTES`). :class:`StoredAttributes` keep their NaN
    and infinities.

    Example:
        >>> json_attributes({"n": np.int64(3)})
        {'n': 3}
    """
    if attributes is not None and not isinstance(attributes, Mapping):
        raise ArgumentTypeError(
            f"attributes must be a mapping of str keys to JSON values, got "
            f"{type(attributes).__name__}: {attributes!r}"
        )
    out: dict[str, Any] = {}
    for key, value in (attributes or {}).items():
        if not isinstance(key, str):
            raise AttributeValueError(f"attribute keys must be str, got {key!r}")
        if key in RESERVED_ATTRIBUTES:
            raise AttributeValueError(
                f"attribute {key!r} is reserved: torchzarr keeps the dtype of arrays stored "
                "as raw bits there (create the array with that dtype instead)"
            )
        out[key] = check_json_value(key, value, stored=isinstance(attributes, StoredAttributes))
    return out


class Attributes(MutableMapping[str, Any]):
    """The attributes of one node; each change rewrites the node's metadata.

    ``read`` gives the attributes as this node object knows them; ``change`` applies a
    function from the current attributes to the new ones and persists the result (the node
    calls it with the attributes as stored, under its lock, so concurrent changes of
    distinct keys all survive).

    Example:
        >>> import torchzarr as tz
        >>> g = tz.open_group("memory://", mode="w")
        >>> g.attrs["units"] = "m"
        >>> dict(g.attrs)
        {'units': 'm'}
    """

    def __init__(
        self,
        read: Callable[[], Mapping[str, Any]],
        change: Callable[[Callable[[dict[str, Any]], dict[str, Any]]], None],
    ) -> None:
        self._read = read
        self._change = change

    def __getitem__(self, key: str) -> Any:
        return self._read()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._read()))

    def __len__(self) -> int:
        return len(self._read())

    def __setitem__(self, key: str, value: Any) -> None:
        self.update({key: value})

    def __delitem__(self, key: str) -> None:
        def without(current: dict[str, Any]) -> dict[str, Any]:
            if key not in current:
                raise KeyError(key)
            return {k: v for k, v in current.items() if k != key}

        self._change(without)

    def update(self, *args: Any, **kwargs: Any) -> None:
        """Set many attributes with one metadata write."""
        new = json_attributes(dict(*args, **kwargs))
        self._change(lambda current: {**current, **new})

    def put(self, attributes: Mapping[str, Any]) -> None:
        """Replace all attributes at once."""
        new = json_attributes(attributes)
        self._change(lambda _: new)

    def asdict(self) -> dict[str, Any]:
        """A plain dict copy of the attributes."""
        return dict(self._read())

    def __repr__(self) -> str:
        return f"Attributes({dict(self._read())!r})"
