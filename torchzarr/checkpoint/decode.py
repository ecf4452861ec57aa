"""Reading a checkpoint tree back: walk the groups, select keys, read tensors in parallel."""

from __future__ import annotations

import copy
import sys
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from torchzarr.checkpoint.chunk_check import check_chunks_stored
from torchzarr.checkpoint.device_map import placement
from torchzarr.checkpoint.format import (
    DCP_KEY_ATTRIBUTE,
    NODE_ATTRIBUTE,
    TENSOR_ATTRIBUTE,
)
from torchzarr.checkpoint.tensor_attrs import restore_attributes
from torchzarr.checkpoint.threads import run_all
from torchzarr.checkpoint.values import (
    decode_metadata,
    decode_value,
    format_key_path,
    typed_container,
)
from torchzarr.config import config
from torchzarr.core.array import Array
from torchzarr.errors import (
    ArgumentTypeError,
    MetadataError,
    NodeNotFoundError,
)

__all__ = ["KeySpec", "read_tree"]

#: A key to load: ``"model.layer.weight"`` (dots split keys, longest match wins nothing:
#: every way to split is tried) or an exact tuple of keys ``("model", "layer.weight")``.
KeySpec = str | tuple[Any, ...]
# (index of the spec in the caller's list, what is left of it to match)
_Selector = tuple[int, KeySpec]
_WHOLE = object()
#: at most this many tensors, and this many bytes of them, per task of the loading pool
_TENSORS_PER_TASK = 8
_BYTES_PER_TASK = 4 << 20
#: the container types a node may have (see :mod:`torchzarr.checkpoint.format`)
_NODE_TYPES = ("dict", "odict", "list", "tuple")


@dataclass
class _Node:
    kind: str
    metadata: Any = None
    items: list[tuple[Any, str, Any]] = field(default_factory=list)
    partial: bool = False


def _match(key: Any, remainder: KeySpec) -> Any:
    """What is left of ``remainder`` after ``key`` (``_WHOLE`` if nothing), or None: no match."""
    if isinstance(remainder, tuple):
        if remainder and type(remainder[0]) is type(key) and remainder[0] == key:
            return remainder[1:] or _WHOLE
        return None
    text = str(key)
    if remainder == text:
        return _WHOLE
    if remainder.startswith(text + "."):
        return remainder[len(text) + 1 :]
    return None


class _Walker:
    def __init__(self, root: Any, allow_pickle: bool) -> None:
        self.root = root
        self.allow_pickle = allow_pickle
        self.found: set[int] = set()
        self.tensors: dict[str, tuple[Any, ...]] = {}  # array path -> a key path naming it

    def _children(
        self, key: Any, selectors: list[_Selector] | None
    ) -> tuple[bool, list[_Selector] | None]:
        """Whether the entry ``key`` is wanted, and the selectors for what is below it."""
        if selectors is None:
            return True, None
        below: list[_Selector] = []
        whole = False
        for index, remainder in selectors:
            rest = _match(key, remainder)
            if rest is _WHOLE:
                self.found.add(index)
                whole = True
            elif rest is not None:
                below.append((index, rest))
        if whole:
            self._mark_found(below)
            return True, None
        return bool(below), below

    def _mark_found(self, selectors: list[_Selector]) -> None:
        # Deeper specs inside a subtree loaded whole are satisfied by it.
        self.found.update(index for index, _ in selectors)

    def value(
        self, value: Any, selectors: list[_Selector] | None, key_path: tuple[Any, ...]
    ) -> Any:
        if selectors is None:
            return value
        if isinstance(value, dict):  # dict, OrderedDict, Counter, defaultdict
            pairs = list(value.items())
        elif type(value) in (list, tuple):
            pairs = list(enumerate(value))
        else:
            return _WHOLE  # nothing below a leaf to select
        out = self._picked(pairs, selectors, key_path, self.value)
        if not out:
            return _WHOLE
        if isinstance(value, dict):  # its own type, with what it carries (_metadata, factory)
            picked = copy.copy(value)
            picked.clear()
            picked.update(dict(out))  # a Counter counts the pairs of a list
            return picked
        return dict(out) if len(out) < len(pairs) else type(value)(v for _, v in out)

    def typed(
        self, payload: Any, selectors: list[_Selector] | None, key_path: tuple[Any, ...]
    ) -> Any:
        """What ``selectors`` pick of the value whose typed JSON is ``payload`` (all of it
        for None; ``_WHOLE``: nothing), decoding only that: entries not picked are never
        decoded, so a class off the allowlist or a pickle beside the keys loaded does not
        stop the load (asking for it, or for a container holding it, still raises)."""
        if selectors is None:
            return decode_value(payload, key_path, allow_pickle=self.allow_pickle)
        container = typed_container(payload, key_path, allow_pickle=self.allow_pickle)
        if container is None:
            if isinstance(payload, dict) and "pickle" in payload:  # a dict subclass, maybe:
                value = decode_value(payload, key_path, allow_pickle=self.allow_pickle)
                return self.value(value, selectors, key_path)  # refused without allow_pickle
            return _WHOLE  # nothing below a leaf to select
        entries, build = container
        picked = self._picked(entries, selectors, key_path, self.typed)
        return build(picked) if picked else _WHOLE

    def _picked(
        self,
        pairs: list[tuple[Any, Any]],
        selectors: list[_Selector],
        key_path: tuple[Any, ...],
        narrow: Callable[[Any, list[_Selector] | None, tuple[Any, ...]], Any],
    ) -> list[tuple[Any, Any]]:
        """The ``(key, part)`` of each entry of ``pairs`` that ``selectors`` reach, the part
        being what ``narrow(child, selectors below, key path)`` picks of it (if anything)."""
        out = []
        for key, child in pairs:
            wanted, below = self._children(key, selectors)
            if wanted:
                part = narrow(child, below, (*key_path, key))
                if part is not _WHOLE:
                    out.append((key, part))
        return out

    def group(
        self, path: str, selectors: list[_Selector] | None, key_path: tuple[Any, ...]
    ) -> _Node:
        group = self.root[path] if path else self.root
        node_json = group.attrs.get(NODE_ATTRIBUTE)
        if not isinstance(node_json, dict) or "entries" not in node_json:
            hint = ""
            if not path and DCP_KEY_ATTRIBUTE in group.attrs:
                hint = (
                    ": it was written by torch.distributed.checkpoint; load it with "
                    "dcp.load(state, storage_reader=ZarrStorageReader(path))"
                )
            raise MetadataError(
                f"group {group.name} holds no checkpoint node (attribute {NODE_ATTRIBUTE!r})" + hint
            )
        where = f"checkpoint node {format_key_path(key_path)} (group {group.name})"
        entries = _checked_entries(node_json, where)
        node = _Node(node_json["type"])
        if "metadata" in node_json:
            node.metadata = decode_metadata(
                node_json["metadata"], key_path, allow_pickle=self.allow_pickle
            )
        for position, (typed_key, kind, payload) in enumerate(entries):
            key = decode_value(typed_key, key_path, allow_pickle=self.allow_pickle)
            _check_key(key, position, node.kind, where)
            wanted, below = self._children(key, selectors)
            if not wanted:
                node.partial = True
                continue
            child_keys = (*key_path, key)
            child_path = f"{path}/{payload}" if path else str(payload)
            if kind == "value":
                leaf = self.typed(payload, below, child_keys)
                if leaf is _WHOLE:
                    node.partial = True
                    continue
                node.items.append((key, "value", leaf))
            elif kind == "group":
                node.items.append((key, "group", self.group(child_path, below, child_keys)))
            elif kind in ("tensor", "alias"):
                target = child_path if kind == "tensor" else str(payload)
                if below is not None:
                    node.partial = True  # keys reach below a tensor: nothing to select
                    continue
                self.tensors.setdefault(target, child_keys)
                node.items.append((key, "tensor", target))
            else:
                raise MetadataError(
                    f"checkpoint entry {format_key_path(child_keys)}: kind {kind!r}"
                )
        return node


def _checked_entries(node_json: dict[str, Any], where: str) -> list[list[Any]]:
    """The entries of a node, after checking its shape (a tampered or damaged checkpoint
    raises :class:`MetadataError` naming the node, ``where``, not a bare Python error)."""
    if node_json.get("type") not in _NODE_TYPES:
        raise MetadataError(
            f"{where}: type {node_json.get('type')!r} is not one of {', '.join(_NODE_TYPES)}"
        )
    entries = node_json["entries"]
    if not isinstance(entries, list):
        raise MetadataError(f"{where}: entries {entries!r} are not a list")
    for position, entry in enumerate(entries):
        if not isinstance(entry, list) or len(entry) != 3:
            raise MetadataError(
                f"{where}: entry {position} is {entry!r}, not [typed key, kind, payload]"
            )
        if entry[1] in ("group", "tensor", "alias") and not isinstance(entry[2], str):
            raise MetadataError(
                f"{where}: entry {position} is {entry!r}: a {entry[1]} entry names a member "
                "by a str"
            )
        # One member name: '' or a path would name the node itself or an ancestor (a cycle)
        if entry[1] in ("group", "tensor") and (not entry[2] or "/" in entry[2]):
            raise MetadataError(
                f"{where}: entry {position} is {entry!r}: a {entry[1]} entry names one "
                "member of its group, not '' or a path (it would name the node itself or "
                "another node)"
            )
    return entries


def _check_key(key: Any, position: int, kind: str, where: str) -> None:
    """Refuse a decoded entry key its node cannot have: unhashable, or not the index of
    its entry in a list or tuple."""
    try:
        hash(key)
    except TypeError:
        raise MetadataError(f"{where}: entry {position} has the unhashable key {key!r}") from None
    if kind in ("list", "tuple") and (type(key) is not int or key != position):
        raise MetadataError(
            f"{where}: entry {position} of a {kind} has the key {key!r}, not its index"
        )


def _key_specs(keys: Any) -> list[KeySpec] | None:
    """``keys`` of :func:`read_tree` as a list of specs (``str`` or ``tuple`` each).

    Example:
        >>> _key_specs("model.w"), _key_specs([("state", 0), "step"])
        (['model.w'], [('state', 0), 'step'])
    """
    if keys is None:
        return None
    if isinstance(keys, str):
        return [keys]  # one key, not its characters
    if isinstance(keys, (bytes, bytearray)) or not isinstance(keys, Iterable):
        raise ArgumentTypeError(
            f"keys must be a list of keys or one str key, got {type(keys).__name__} {keys!r}"
        )
    specs = list(keys)
    for spec in specs:
        if not isinstance(spec, (str, tuple)):
            raise ArgumentTypeError(
                f"keys holds {spec!r} of type {type(spec).__name__}: each key is a str "
                f"(dots split it: 'model.layer.weight') or a tuple of exact keys, as "
                f"({spec!r},)"
            )
    return specs


def _tensor_info(array: Any) -> dict[str, Any]:
    """The checked ``torchzarr_tensor`` attribute of ``array`` ({} when it has none)."""
    info = array.attrs.get(TENSOR_ATTRIBUTE) or {}
    problem = None
    if not isinstance(info, dict):
        problem = f"is {info!r}, not an object"
    elif not isinstance(info.get("device", "cpu"), str):
        problem = f"names the device {info['device']!r}, not a str"
    elif info.get("byteorder", "<") not in ("<", ">"):
        problem = f"names the byte order {info['byteorder']!r}, not '<' or '>'"
    if problem is not None:
        raise MetadataError(f"array {array.name}: attribute {TENSOR_ATTRIBUTE!r} {problem}")
    return info


def _read_tensor(
    array: Any,
    place: Callable[[torch.Tensor, str], torch.Tensor],
    read_array: Callable[[Any], torch.Tensor] | None = None,
) -> Any:
    info = _tensor_info(array)
    data = array[...] if read_array is None else read_array(array)
    if info.get("numpy"):
        loaded = data.numpy()  # saved as a numpy array: loaded as one, on the CPU
        if "byteorder" in info:  # saved in the other byte order: loaded in it again
            loaded = loaded.astype(loaded.dtype.newbyteorder(info["byteorder"]), copy=False)
        return loaded
    t = place(data, str(info.get("device", "cpu")))
    # only floating and complex tensors take gradients (map_location may change the dtype)
    grad = bool(info.get("requires_grad")) and (t.is_floating_point() or t.is_complex())
    if info.get("parameter"):
        return torch.nn.Parameter(t, requires_grad=grad)
    if grad:
        t.requires_grad_(True)
    return t


def _build(node: _Node, tensors: dict[str, Any]) -> Any:
    values = []
    for key, kind, payload in node.items:
        if kind == "group":
            values.append((key, _build(payload, tensors)))
        elif kind == "tensor":
            values.append((key, tensors[payload]))
        else:
            values.append((key, payload))
    if node.kind in ("dict", "odict"):
        out: Any = dict(values) if node.kind == "dict" else OrderedDict(values)
        if node.metadata is not None:
            out._metadata = node.metadata
        return out
    if node.partial:
        return dict(values)  # a partial list or tuple: index -> value
    items = [v for _, v in values]
    return items if node.kind == "list" else tuple(items)


def _tasks(arrays: list[Any]) -> list[list[Any]]:
    """Arrays grouped, in order, for the loading pool: small tensors several to a task
    (thousands of them cost more in futures than in reads), large ones alone (spread over
    the threads)."""
    parts: list[list[Any]] = []
    part: list[Any] = []
    size = 0
    for array in arrays:
        if part and (len(part) == _TENSORS_PER_TASK or size + array.nbytes > _BYTES_PER_TASK):
            parts.append(part)
            part, size = [], 0
        part.append(array)
        size += array.nbytes
    if part:
        parts.append(part)
    return parts


def read_tree(
    root: Any,
    *,
    map_location: Any = None,
    keys: Sequence[KeySpec] | str | None = None,
    allow_pickle: bool = False,
    threads: int | None = None,
    read_array: Callable[[Any], torch.Tensor] | None = None,
    verify_chunks: bool = True,
) -> Any:
    """The state tree stored in the group ``root`` (as written by the checkpoint format).

    Args:
        root: an open :class:`torchzarr.Group` (ideally opened with consolidated metadata).
        map_location: as in :func:`torch.load`: None (saved device), a device, a dict
            mapping saved device names to devices, or a callable ``(tensor, saved) -> tensor``.
        keys: load only these keys (a list of :data:`KeySpec`; one string is one key);
            lists and tuples partly loaded come back as ``{index: value}`` dicts.
        allow_pickle: needed to load leaves that were pickled at save time, and classes
            off the allowlist.
        threads: tensors read at once (default ``tz.config.threads``).
        read_array: reads a whole :class:`torchzarr.Array` as a CPU tensor (default
            ``array[...]``); the lazy loader passes one that memory-maps raw local chunks.
        verify_chunks: check that tensors saved with every chunk still have them all,
            before any tensor is read (one listing; a damaged checkpoint raises at once).

    Raises:
        NodeNotFoundError: a key in ``keys`` names nothing in the checkpoint.
        ArgumentTypeError: ``keys`` holds something other than str and tuple keys.
        MetadataError: a node or tensor attribute of the checkpoint is malformed.
        ChunkDecodeError: a chunk of a tensor saved with every chunk stored is missing
            (the message names the tensor's key path and the chunk's key).

    Example:
        >>> read_tree(group, keys=["model.w"])  # doctest: +SKIP
        {'model': {'w': tensor([...])}}
    """
    specs = _key_specs(keys)
    place = placement(map_location)
    walker = _Walker(root, allow_pickle)
    selectors = None if specs is None else list(enumerate(specs))
    try:
        tree = walker.group("", selectors, ())
    except RecursionError:  # groups nested deeper than the stack, or a loop in the store
        raise MetadataError(
            f"checkpoint {root.name} in {root.store!r}: its groups nest deeper than Python's "
            f"recursion limit ({sys.getrecursionlimit()}) lets it read"
        ) from None
    if specs is not None:
        missing = [specs[i] for i in range(len(specs)) if i not in walker.found]
        if missing:
            raise NodeNotFoundError(f"keys {missing!r} are not in the checkpoint {root!r}")
    paths = list(walker.tensors)
    arrays = [root[p] for p in paths]  # each opened once (from the consolidated metadata)
    for path, array in zip(paths, arrays, strict=True):
        if not isinstance(array, Array):
            raise MetadataError(
                f"checkpoint entry {format_key_path(walker.tensors[path])} names {path!r} in "
                f"{root.name}, which is not an array"
            )
    if verify_chunks:  # before reading: a damaged checkpoint fills no memory first
        check_chunks_stored(root, dict(zip(paths, arrays, strict=True)), walker.tensors)
    workers = max(1, min(threads or config.threads, len(paths)))
    if workers == 1:
        loaded = [_read_tensor(a, place, read_array) for a in arrays]
    else:

        def read_part(part: list[Any]) -> list[Any]:
            return [_read_tensor(a, place, read_array) for a in part]

        parts = run_all(read_part, _tasks(arrays), workers, "torchzarr-ckpt-load")
        loaded = [t for part in parts for t in part]
    for path, array, tensor in zip(paths, arrays, loaded, strict=True):
        key_path = walker.tensors[path]
        restore_attributes(tensor, _tensor_info(array), key_path, allow_pickle=allow_pickle)
    return _build(tree, dict(zip(paths, loaded, strict=True)))
