"""The checkpoint format: a state tree <-> a Zarr group of arrays (tensors) and typed JSON.

A container holding tensors (dict, OrderedDict, list, tuple) becomes a group whose attribute
``torchzarr_node`` lists its entries in order as ``[typed key, kind, payload]``:

* ``"value"``: payload is the typed JSON of a leaf or of a container without tensors;
* ``"tensor"``: payload is the member array's name (a numeric numpy array is stored the same
  way, its array marked ``"numpy": true``, and loads as a numpy array again; one of the other
  byte order is stored in this machine's, marked ``"byteorder": ">"`` or ``"<"``, and
  loads in its own);
* ``"group"``: payload is the member group's name (a nested container);
* ``"alias"``: payload is the path, from the tree root, of an array written earlier for the
  same tensor view (tied weights are stored once and load as one tensor again).

Python attributes set on a tensor (``param.tensor_model_parallel = True``) are kept in its
``torchzarr_tensor`` attribute as ``"attributes": {name: typed JSON}`` and set again on load.

Each tensor's array stores every chunk of its grid, all-zero ones too, and says so with
``"every_chunk": [its chunk shape]`` in its ``torchzarr_tensor`` attribute (the save
sets it): a load then tells a chunk lost from the checkpoint (a partial copy, a bad disk)
from one never written. Arrays without the mark (saved by earlier versions), or rewritten
on another grid since, may leave all-zero chunks unstored.

Member names are escaped keys (``~HH`` for unsafe bytes), unique in their group; the
original keys live only in the entries, so any key round-trips.
"""

from __future__ import annotations

import hashlib
import re
import sys
import warnings
from collections import Counter, OrderedDict, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from torchzarr.checkpoint.tensor_attrs import ATTRIBUTES, encode_attributes
from torchzarr.checkpoint.values import (
    UnrepresentableError,
    encode_key,
    encode_metadata,
    encode_value,
    format_key_path,
)
from torchzarr.dtypes import data_type
from torchzarr.errors import UnsupportedDtypeError

__all__ = [
    "EVERY_CHUNK",
    "NODE_ATTRIBUTE",
    "TENSOR_ATTRIBUTE",
    "TensorItem",
    "TreePlan",
    "alias_key",
    "encode_tree",
    "is_stored_array",
    "node_name",
    "to_storable",
]

#: Group attribute holding a container's type and entries.
NODE_ATTRIBUTE = "torchzarr_node"
#: Array attribute holding a tensor's key path and torch-only properties.
TENSOR_ATTRIBUTE = "torchzarr_tensor"
#: Attribute of the version group and arrays of a torch.distributed.checkpoint save.
DCP_KEY_ATTRIBUTE = "torchzarr_dcp_key"
#: Key of :data:`TENSOR_ATTRIBUTE` (of :data:`DCP_KEY_ATTRIBUTE` in a DCP save) marking an
#: array that stores every chunk of its grid.
EVERY_CHUNK = "every_chunk"

_CONTAINERS = (dict, OrderedDict, list, tuple)
#: numpy dtypes (kind + itemsize) stored as arrays: those torch has; others stay typed JSON
_NUMPY_ARRAY_DTYPES = frozenset(
    ["b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8", "c8", "c16"]
)
_TYPE_NAMES: dict[type, str] = {dict: "dict", OrderedDict: "odict", list: "list", tuple: "tuple"}
_SAFE = re.compile(r"[A-Za-z0-9_.\-]")
_MAX_NAME = 120


@dataclass
class TensorItem:
    """One tensor to write: where (relative to the tree root), what, and its attributes."""

    path: str
    key_path: tuple[Any, ...]
    tensor: torch.Tensor
    attributes: dict[str, Any]


@dataclass
class TreePlan:
    """Everything a save writes: group attributes by relative path, and the tensors."""

    groups: dict[str, dict[str, Any]] = field(default_factory=dict)
    tensors: list[TensorItem] = field(default_factory=list)

    @property
    def nbytes(self) -> int:
        """Bytes of tensor data in the plan."""
        return sum(item.tensor.numel() * item.tensor.element_size() for item in self.tensors)


def node_name(key: Any, used: set[str]) -> str:
    """A safe, unique (case-insensitively) member name for ``key``; adds it to ``used``.

    Example:
        >>> used = set()
        >>> node_name("layer.weight", used), node_name("a/b c", used), node_name("zarr.json", used)
        ('layer.weight', 'a~2Fb~20c', 'zarr~2Ejson')
    """
    text = key if isinstance(key, str) else repr(key)
    name = "".join(
        ch if _SAFE.fullmatch(ch) else "".join(f"~{b:02X}" for b in ch.encode("utf-8"))
        for ch in text
    )
    # Names the Zarr layout reserves or that escape the hierarchy: '.', '..', '.zattrs',
    # 'zarr.json', '__*' (reserved by the v3 spec), and the empty name.
    if not name or name.startswith("."):
        name = "~2E" + name[1:] if name else "~"
    if name.startswith("__"):
        name = "~5F" + name[1:]
    if name.lower() == "zarr.json":
        name = name[:4] + "~2E" + name[5:]
    if len(name) > _MAX_NAME:
        digest = hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]
        name = f"{name[: _MAX_NAME - 17]}~{digest}"
    base, n = name, 1
    while name.lower() in used:
        n += 1
        name = f"{base}~{n}"
    used.add(name.lower())
    return name


def is_stored_array(value: Any) -> bool:
    """Whether a checkpoint stores ``value`` as an array: a tensor, or a numeric numpy array.

    Example:
        >>> is_stored_array(torch.ones(2)), is_stored_array(np.ones(2)), is_stored_array([1])
        (True, True, False)
    """
    if isinstance(value, torch.Tensor):
        return True
    if type(value) is not np.ndarray:  # subclasses (masked arrays, matrices) hold more
        return False
    return value.dtype.kind + str(value.dtype.itemsize) in _NUMPY_ARRAY_DTYPES


def _numpy_as_tensor(value: np.ndarray) -> torch.Tensor:
    """A tensor sharing ``value``'s memory where torch can (native byte order, strides >= 0)."""
    if not value.dtype.isnative:
        value = value.astype(value.dtype.newbyteorder("="))
    if any(stride < 0 for stride in value.strides):
        value = np.ascontiguousarray(value)
    with warnings.catch_warnings():
        # Read-only arrays: the tensor is only read from, never written.
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(value)


def _has_tensor(value: Any) -> bool:
    if is_stored_array(value):
        return True
    if type(value) in (dict, OrderedDict):
        return any(_has_tensor(v) for v in value.values())
    if type(value) in (list, tuple):
        return any(_has_tensor(v) for v in value)
    return False


def alias_key(t: torch.Tensor) -> tuple[Any, ...] | None:
    """Identity of a tensor view: equal keys hold the same values and load as one tensor
    (None: never aliased: empty, meta, nested and sparse tensors). A conjugate or negative
    view, a Parameter and a plain view of it, or views that differ in ``requires_grad``
    are not aliases: each loads as saved.

    Example:
        >>> w = torch.ones(3)
        >>> alias_key(w) == alias_key(w.detach()), alias_key(w) == alias_key(w[1:])
        (True, False)
    """
    # nested and sparse tensors have no single storage (or no sizes) to compare
    if t.is_nested or t.layout != torch.strided:
        return None
    if t.numel() == 0 or t.device.type == "meta":
        return None
    return (
        t.device,
        t.untyped_storage().data_ptr(),
        t.storage_offset(),
        tuple(t.shape),
        tuple(t.stride()),
        t.dtype,
        t.is_conj(),
        t.is_neg(),
        isinstance(t, torch.nn.Parameter),
        t.requires_grad,
    )


def _check_tensor(t: torch.Tensor, key_path: tuple[Any, ...]) -> None:
    where = format_key_path(key_path)
    if type(t) not in (torch.Tensor, torch.nn.Parameter):
        raise UnrepresentableError(
            f"tensor at {where} is a {type(t).__qualname__}; save plain tensors (e.g. "
            "DTensor.full_tensor()) or pass allow_pickle=True"
        )
    kind = _unstorable_kind(t)
    if kind is not None:
        raise UnrepresentableError(
            f"tensor at {where} is {kind}: only dense tensors with data are stored as "
            "arrays; pass allow_pickle=True to pickle it"
        )
    try:
        data_type(t.dtype)
    except UnsupportedDtypeError as err:
        # complex32, float4, bits8, int4, ...: no Zarr data type holds them; allow_pickle
        # pickles those torch can serialise
        raise UnrepresentableError(
            f"tensor at {where}: {err}; pass allow_pickle=True to pickle it"
        ) from None


def _unstorable_kind(t: torch.Tensor) -> str | None:
    """What keeps ``t`` from being stored as an array (None: nothing), for messages."""
    if t.is_nested:
        return "a nested tensor"
    if t.layout != torch.strided:
        return f"a tensor of layout {t.layout}"
    if t.is_quantized:
        return f"a quantized tensor ({t.dtype})"
    if t.device.type == "meta":
        return "a meta tensor (it has no data)"
    return None


def to_storable(t: torch.Tensor) -> torch.Tensor:
    """A plain, contiguous, CPU tensor with the elements of ``t`` (no copy when it already is).

    Example:
        >>> to_storable(torch.arange(6).reshape(2, 3).T).is_contiguous()
        True
    """
    t = t.detach()
    if type(t) is not torch.Tensor:
        t = t.as_subclass(torch.Tensor)
    if t.is_conj():
        t = t.resolve_conj()
    if t.is_neg():
        t = t.resolve_neg()
    return t.to("cpu").contiguous()


class _Encoder:
    def __init__(self, allow_pickle: bool) -> None:
        self.allow_pickle = allow_pickle
        self.plan = TreePlan()
        self.aliases: dict[tuple[Any, ...], str] = {}

    def _value(self, value: Any, key_path: tuple[Any, ...]) -> list[Any]:
        return ["value", encode_value(value, key_path, allow_pickle=self.allow_pickle)]

    def _tensor(self, value: Any, path: str, key_path: tuple[Any, ...]) -> list[Any] | None:
        from_numpy = isinstance(value, np.ndarray)
        t = _numpy_as_tensor(value) if from_numpy else value
        try:
            _check_tensor(t, key_path)
        except UnrepresentableError:
            if not self.allow_pickle:
                raise
            return self._value(t, key_path)
        alias = alias_key(t)
        if alias is not None:
            alias = (*alias, from_numpy)  # a tensor and a numpy view of it load as both kinds
        if alias is not None and alias in self.aliases:
            return ["alias", self.aliases[alias]]
        if alias is not None:
            self.aliases[alias] = path
        # its keys were encoded (and checked) by the containers: this cannot fail
        attrs: dict[str, Any] = {"key_path": encode_value(key_path, allow_pickle=self.allow_pickle)}
        if from_numpy:
            attrs["numpy"] = True
            if not value.dtype.isnative:  # stored in native order: loads swap it back
                attrs["byteorder"] = value.dtype.byteorder
        if isinstance(t, torch.nn.Parameter):
            attrs["parameter"] = True
        if t.requires_grad:
            attrs["requires_grad"] = True
        if t.device.type != "cpu":
            attrs["device"] = str(t.device)
        extra = encode_attributes(t, key_path, allow_pickle=self.allow_pickle)
        if extra is not None:
            attrs[ATTRIBUTES] = extra
        self.plan.tensors.append(TensorItem(path, key_path, t, {TENSOR_ATTRIBUTE: attrs}))
        return None

    def container(self, value: Any, path: str, key_path: tuple[Any, ...]) -> None:
        kind = _TYPE_NAMES[type(value)]
        pairs = value.items() if isinstance(value, Mapping) else enumerate(value)
        used: set[str] = set()
        entries: list[list[Any]] = []
        for key, child in pairs:
            child_keys = (*key_path, key)
            typed_key = encode_key(key, child_keys, allow_pickle=self.allow_pickle)
            if is_stored_array(child):
                name = node_name(key, used)
                child_path = f"{path}/{name}" if path else name
                alias = self._tensor(child, child_path, child_keys)
                entries.append([typed_key, *(alias or ["tensor", name])])
            elif type(child) in _CONTAINERS and _has_tensor(child):
                name = node_name(key, used)
                self.container(child, f"{path}/{name}" if path else name, child_keys)
                entries.append([typed_key, "group", name])
            else:
                entries.append([typed_key, *self._value(child, child_keys)])
        node: dict[str, Any] = {"type": kind, "entries": entries}
        # nn.Module.state_dict() versions its modules here; load_state_dict reads it.
        metadata = encode_metadata(value, key_path, allow_pickle=self.allow_pickle)
        if metadata is not None:
            node["metadata"] = metadata
        self.plan.groups[path] = {NODE_ATTRIBUTE: node}


def _first_cycle(value: Any, key_path: tuple[Any, ...], active: set[int]) -> Any:
    """The key path at which a container holds one of its ancestors, or None."""
    if type(value) not in (*_CONTAINERS, Counter, defaultdict):
        return None
    if id(value) in active:
        return key_path
    active.add(id(value))
    pairs = value.items() if isinstance(value, Mapping) else enumerate(value)
    for key, child in pairs:
        found = _first_cycle(child, (*key_path, key), active)
        if found is not None:
            return found
    active.discard(id(value))
    return None


def encode_tree(state: Any, *, allow_pickle: bool = False) -> TreePlan:
    """Plan the groups and arrays that store ``state`` (a dict, OrderedDict, list or tuple).

    Args:
        state: the state tree; tensors anywhere inside, other leaves as typed JSON.
        allow_pickle: pickle leaves typed JSON cannot hold instead of raising.

    Raises:
        UnrepresentableError: a leaf cannot be stored, or a container holds itself; the
            message names the key path. Or containers nest past the recursion limit.

    Example:
        >>> plan = encode_tree({"w": torch.zeros(2), "step": 3})
        >>> [t.path for t in plan.tensors], plan.groups[""]["torchzarr_node"]["entries"]
        (['w'], [['w', 'tensor', 'w'], ['step', 'value', 3]])
    """
    if type(state) not in _CONTAINERS:
        raise UnrepresentableError(
            f"a checkpoint must be a dict, OrderedDict, list or tuple, not {type(state).__name__}"
        )
    try:
        cycle = _first_cycle(state, (), set())
        if cycle is not None:
            raise UnrepresentableError(
                f"checkpoint value at {format_key_path(cycle)} holds a container it is inside "
                "of (a reference cycle); a checkpoint must be a tree"
            )
        encoder = _Encoder(allow_pickle)
        encoder.container(state, "", ())
    except RecursionError:
        raise UnrepresentableError(
            "the checkpoint nests containers deeper than Python's recursion limit "
            f"({sys.getrecursionlimit()}) lets it store"
        ) from None
    return encoder.plan
