"""``attrs`` of arrays and groups: a JSON-only mutable mapping persisted on every change."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from typing import Any

import numpy as np
import torch

from torchzarr.dtypes import RAW_DTYPE_ATTRIBUTE, DataType, raw_bits_dtype
from torchzarr.errors import ArgumentTypeError, AttributeValueError
from torchzarr.metadata.jsonutil import is_utf8, lone_surrogate_at

__all__ = [
    "MAX_JSON_NESTING",
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


#: the most levels of lists and dicts within one another an attribute value may have.
#: JSON sets no limit, but Python's json module, with which torchzarr and zarr-python
#: write and read metadata, stops about ``sys.getrecursionlimit()`` (1000) levels deep,
#: fewer when called from a deep call stack. Values stay inside that with room for the
#: levels of the metadata documents around them and for the calls of a reader.
MAX_JSON_NESTING = 900


def json_ready(value: Any, where: str = "value") -> Any:
    """``value`` with numpy scalars and arrays and torch tensors (also nested in lists and
    dicts) turned into Python numbers and lists; anything else as it is.

    A dict key that is not a str raises ``AttributeValueError`` naming where it is
    (``where``, then the keys and indexes down to it): JSON would turn it into a str, so
    the value would read back otherwise (and ``{1: ..., "1": ...}`` lose one); so does a
    tensor without a plain list of values (on the meta device, sparse, nested), a list
    or dict that holds itself (JSON has no references), and lists and dicts nested more
    than :data:`MAX_JSON_NESTING` levels deep. It walks the value without recursing, so
    any depth is checked, not only what Python's call stack holds.

    Example:
        >>> json_ready({"mean": np.float32(0.5), "shape": np.array([2, 3])})
        {'mean': 0.5, 'shape': [2, 3]}
    """
    if not isinstance(value, Mapping | list | tuple):
        return _plain(value, where, where, 0)
    root: dict[str, Any] | list[Any] = {} if isinstance(value, Mapping) else []
    # the containers being filled, outermost first: (the ready copy, the members left,
    # the key or index of the container in its parent, the container's id)
    stack: list[tuple[Any, Iterator[tuple[Any, Any]], Any, int]] = [
        (root, _members(value, where), None, id(value))
    ]
    enclosing = {id(value)}
    while stack:
        ready, members, _, _ = stack[-1]
        for key, item in members:
            if not isinstance(item, Mapping | list | tuple):
                item = _plain(item, where, _where(where, stack, key), len(stack))
            else:
                item_where = _where(where, stack, key)
                if id(item) in enclosing:
                    raise AttributeValueError(
                        f"{item_where}: the value holds itself (a circular reference), "
                        "which JSON cannot store"
                    )
                if len(stack) >= MAX_JSON_NESTING:
                    raise _too_deep(where)
                copy: Any = {} if isinstance(item, Mapping) else []
                _put(ready, key, copy)
                enclosing.add(id(item))
                stack.append((copy, _members(item, item_where), key, id(item)))
                break  # fill the inner container first, then carry on with this one
            _put(ready, key, item)
        else:
            enclosing.discard(stack.pop()[3])
    return root


def _members(value: Any, where: str) -> Iterator[tuple[Any, Any]]:
    """``(key, item)`` of a mapping (refusing keys other than str), ``(index, item)`` of
    a list or tuple."""
    if not isinstance(value, Mapping):
        yield from enumerate(value)
        return
    for key, item in value.items():
        if not isinstance(key, str):
            raise AttributeValueError(
                f"{where}: key {key!r} ({type(key).__name__}) is not a str; JSON "
                "object keys are, so it would read back as a str: convert the keys first"
            )
        yield key, item


def _put(ready: dict[str, Any] | list[Any], key: Any, item: Any) -> None:
    if isinstance(ready, dict):
        ready[key] = item
    else:
        ready.append(item)  # members come in order


def _where(where: str, stack: list[tuple[Any, Any, Any, int]], key: Any) -> str:
    """Where the member ``key`` of the innermost container of ``stack`` is."""
    keys = [entry[2] for entry in stack[1:]] + [key]
    return where + "".join(f"[{k!r}]" for k in keys)


def _too_deep(where: str) -> AttributeValueError:
    return AttributeValueError(
        f"{where}: lists and dicts nested more than {MAX_JSON_NESTING} levels deep; JSON "
        "sets no limit, but Python's json module, which writes and reads metadata (here "
        f"and in zarr-python), stops at about {sys.getrecursionlimit()} levels "
        "(sys.getrecursionlimit(), less the calls in progress)"
    )


def _plain(value: Any, top: str, where: str, depth: int) -> Any:
    """A value other than a list, tuple or mapping, at ``where``, ``depth`` levels deep
    in the value ``top`` names, with tensors and numpy values as Python numbers and lists."""
    if isinstance(value, torch.Tensor):
        if value.is_meta:
            raise AttributeValueError(f"{where}: a tensor on the meta device holds no values")
        ndim = value.ndim
        try:
            value = value.detach().cpu().tolist()
        except (RuntimeError, NotImplementedError) as err:  # sparse, nested: no plain values
            raise AttributeValueError(f"{where}: tensor has no list of values ({err})") from None
    elif isinstance(value, np.ndarray | np.generic):
        ndim = value.ndim
        value = value.tolist()
    else:
        return value
    if depth + ndim > MAX_JSON_NESTING:
        raise _too_deep(top)
    return value


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
    than str at any depth, nor a str in ``key`` or ``value`` holding a lone surrogate:
    UTF-8 has no form for it). ``stored``: the value comes from a stored node, so NaN,
    infinities and lone surrogates are kept (written as zarr-python writes them).

    Example:
        >>> check_json_value("units", "m/s"), check_json_value("scale", np.float64(2.5))
        ('m/s', 2.5)
    """
    ready = json_ready(value, f"attribute {key!r}")
    try:
        text = json.dumps({key: ready}, allow_nan=stored, ensure_ascii=False)
    except (TypeError, ValueError) as err:
        raise AttributeValueError(
            f"attribute {key!r}: value {value!r:.80} cannot be stored as JSON ({err})"
        ) from None
    except RecursionError:  # within MAX_JSON_NESTING, but called from a very deep stack
        raise AttributeValueError(
            f"attribute {key!r}: value nested too deeply for Python's json module to write "
            f"from this call stack (it stops at about sys.getrecursionlimit() = "
            f"{sys.getrecursionlimit()} levels, less the calls in progress)"
        ) from None
    if not stored and not text.isascii() and not is_utf8(text):
        raise AttributeValueError(
            f"attribute {key!r}: the str {lone_surrogate_at({key: ready})} holds a lone "
            "surrogate (what os.fsdecode gives for bytes that are not UTF-8), which UTF-8 "
            "JSON cannot hold (zarr-python writes it as an escape that tensorstore refuses "
            "to read): decode the bytes first, e.g. os.fsencode(name).decode('utf-8', 'replace')"
        )
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
        """Set many attributes with one metadata write (a mapping, or pairs, as ``dict``)."""
        try:
            given = dict(*args, **kwargs)
        except (TypeError, ValueError):
            raise ArgumentTypeError(
                "attrs.update takes a mapping of str keys to JSON values (or key-value "
                f"pairs), got {', '.join(repr(a) for a in args)}; nothing was written"
            ) from None
        new = json_attributes(given)
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
