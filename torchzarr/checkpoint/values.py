"""Typed JSON for the non-tensor leaves of a checkpoint: exact round-trips, no code run on load.

Plain JSON strings, integers (of at most 4300 digits: what every Python reads back),
booleans and ``null`` stand for themselves; every other value is
a one-key object naming its type::

    1.5            -> {"float": 1.5}          nan / inf -> {"float": "nan"} / {"float": "inf"}
                   (a nan of another sign or payload: {"float": "nan:<its 64 bits in hex>"})
    (1, "a")       -> {"tuple": [1, "a"]}     [1, 2] -> {"list": [1, 2]}
    {1: "a"}       -> {"dict": [[1, "a"]]}    OrderedDict -> {"odict": [[k, v], ...]}
    OrderedDict with state_dict()'s _metadata -> {"odict": {"entries": [[k, v], ...],
                                                            "metadata": <typed JSON>}}
    Counter({"a": 2})              -> {"counter": [["a", 2]]}
    defaultdict(list, {1: []})     -> {"defaultdict": ["list", [[1, {"list": []}]]]}
                                      (default_factory None or a builtin type: see below)
    torch.Size     -> {"size": [2, 3]}        torch.float32 -> {"dtype": "float32"}
    1+2j           -> {"complex": [1.0, 2.0]} (nan / inf as in floats)
    b"ab"          -> {"bytes": "YWI="}       torch.device("cuda:0") -> {"device": "cuda:0"}
    np.float32(1)  -> {"numpy": ["float32", 1.0]}
    a class        -> {"class": "module:qualname"}   (one a load finds by that name; loaded
                   only from imported modules, if allowed: see :mod:`.class_names`)
    OmegaConf.create({"b": "${a}"}) -> {"omegaconf": {"class": "DictConfig", "content":
                   {"dict": [["b", "${a}"]]}}}   (see :mod:`.omegaconf_values`)
    anything else  -> {"pickle": "<base64>"}  only with ``allow_pickle=True``, on save and load

A defaultdict's ``default_factory`` is stored by name and restored only from
:data:`DEFAULT_FACTORIES` (None and builtin types): loading never calls anything else.
"""

from __future__ import annotations

import base64
import math
import sys
from collections import Counter, OrderedDict, defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from torchzarr.checkpoint.class_names import class_spec, resolve_class
from torchzarr.checkpoint.nan_bits import nan_from_text, nan_text
from torchzarr.checkpoint.numpy_scalars import decode_numpy, encode_numpy
from torchzarr.checkpoint.omegaconf_values import config_class, decode_config, encode_config
from torchzarr.dtypes import data_type
from torchzarr.errors import (
    MetadataError,
    TorchZarrError,
    UnrepresentableError,
    UnsupportedDtypeError,
)

__all__ = [
    "DEFAULT_FACTORIES",
    "UnrepresentableError",
    "decode_metadata",
    "decode_value",
    "encode_key",
    "encode_metadata",
    "encode_value",
    "format_key_path",
    "typed_container",
]

#: ``default_factory`` values a stored ``defaultdict`` may have, by the name stored.
DEFAULT_FACTORIES: dict[str, type | None] = {
    "None": None,
    **{t.__name__: t for t in (int, float, complex, bool, str, bytes, list, tuple, dict, set)},
}


def format_key_path(path: tuple[Any, ...]) -> str:
    """A key path as users write it: ``state_dict['layer.weight']`` style, exact for any key.

    Example:
        >>> format_key_path(("optimizer", "state", 0, "exp_avg"))
        "['optimizer']['state'][0]['exp_avg']"
    """
    return "".join(f"[{_key_text(key)}]" for key in path) or "<root>"


def _key_text(key: Any) -> str:
    try:
        return repr(key)
    except ValueError:  # an int of more digits than Python turns into text
        return f"<{type(key).__name__} of {key.bit_length()} bits>"


def _int_digits() -> int:
    """The most digits of an int typed JSON stores: what every Python reads back from JSON
    text (``sys.int_info.default_max_str_digits``, or less where this process set less)."""
    limits = (sys.int_info.default_max_str_digits, sys.get_int_max_str_digits())
    return min(limit for limit in limits if limit)


def _json_int(value: int) -> bool:
    """Whether the JSON text of ``value`` loads in any Python (at most :func:`_int_digits`
    digits; a longer one raises ``ValueError`` on load, or already on save)."""
    if value.bit_length() < _SURELY_SHORT_BITS:  # nearly every int: no limit looked up
        return True
    digits = _int_digits()
    return value.bit_length() < 3 * digits or abs(value) < 10**digits  # 8**n < 10**n


#: ints of fewer bits have fewer digits than the lowest limit Python lets a process set
#: (``sys.int_info.str_digits_check_threshold``, 640: 2**1920 = 8**640 < 10**640)
_SURELY_SHORT_BITS = 3 * 640


def _why_not(value: Any) -> str:
    """Why typed JSON cannot hold ``value``, where more than its type says it, for messages."""
    if type(value) is int:
        return (
            f" (it has more than the {_int_digits()} digits Python reads back from JSON "
            "text; store it as a str)"
        )
    if isinstance(value, type):
        return (
            f" (the class {value!r}: a load finds classes by name, and "
            f"{value.__module__}:{value.__qualname__} names none it can find)"
        )
    if type(value) is defaultdict:
        return (
            f" (its default_factory {value.default_factory!r} is not one of "
            f"{', '.join(DEFAULT_FACTORIES)})"
        )
    return ""


def _encode_float(value: float) -> Any:
    if math.isnan(value):
        return {"float": nan_text(value)}  # its sign and payload too
    if math.isinf(value):
        return {"float": "inf" if value > 0 else "-inf"}
    return {"float": value}


def _decode_float(payload: Any) -> float:
    if isinstance(payload, str):
        if payload.startswith("nan"):
            return float(nan_from_text(payload))
        if payload not in ("inf", "-inf"):
            raise ValueError(f"{payload!r} is not nan, inf or -inf")  # decode_value names where
    return float(payload)


def _pickle_dumps(value: Any) -> str:
    import io
    import pickle  # only on the explicit allow_pickle opt-in

    class TensorPickler(pickle.Pickler):
        def reducer_override(self, obj: Any) -> Any:
            # torch pickles tensors of dtypes such as complex32, float4 or bits8 into
            # bytes that do not unpickle; torch.save round-trips them
            if _pickles_through_torch_save(obj):
                with io.BytesIO() as saved:
                    torch.save(obj.detach(), saved)  # torch.load refuses them requiring grad
                    parameter = isinstance(obj, torch.nn.Parameter)
                    return _tensor_from_torch_save, (saved.getvalue(), parameter, obj.requires_grad)
            return NotImplemented

    with io.BytesIO() as out:
        TensorPickler(out, protocol=pickle.HIGHEST_PROTOCOL).dump(value)
        return base64.b64encode(out.getvalue()).decode("ascii")


def _pickles_through_torch_save(obj: Any) -> bool:
    """Whether ``obj`` is a tensor (or Parameter) of a dtype no Zarr array holds, which
    plain pickling does not round-trip; quantized tensors pickle as they are."""
    if type(obj) not in (torch.Tensor, torch.nn.Parameter) or obj.is_quantized:
        return False
    try:
        data_type(obj.dtype)
    except UnsupportedDtypeError:
        return True
    return False


def _tensor_from_torch_save(
    data: bytes, parameter: bool = False, requires_grad: bool = False
) -> torch.Tensor:
    """The tensor ``torch.save`` wrote to ``data``, as a Parameter or requiring grad as
    told (called when such a pickle loads: checkpoints name this function, keep its name).

    Example:
        >>> import io
        >>> saved = io.BytesIO(); torch.save(torch.ones(2), saved)
        >>> _tensor_from_torch_save(saved.getvalue())
        tensor([1., 1.])
    """
    import io

    t = torch.load(io.BytesIO(data), weights_only=True)
    if parameter:
        return torch.nn.Parameter(t, requires_grad=requires_grad)
    return t.requires_grad_(True) if requires_grad else t


def _pickle_loads(payload: str) -> Any:
    import pickle  # only on the explicit allow_pickle opt-in

    return pickle.loads(base64.b64decode(payload.encode("ascii")))  # opted in: allow_pickle=True


def encode_value(value: Any, path: tuple[Any, ...] = (), *, allow_pickle: bool = False) -> Any:
    """The typed JSON of a non-tensor value; raise naming ``path`` when it cannot be held.

    Args:
        value: the leaf (containers of leaves included, tensors excluded).
        path: its key path in the checkpoint, for error messages.
        allow_pickle: pickle what typed JSON cannot hold instead of raising.

    Example:
        >>> encode_value({"lr": 0.1, 3: (1, None)})
        {'dict': [['lr', {'float': 0.1}], [3, {'tuple': [1, None]}]]}
    """
    if type(value) is str:  # not str subclasses (StrEnum)
        return _checked_text(value, path, "value")
    if value is None or type(value) is bool:
        return value
    if type(value) is int and _json_int(value):
        return value
    if type(value) is float:
        return _encode_float(value)
    if type(value) is complex:
        return {"complex": [_encode_float(value.real)["float"], _encode_float(value.imag)["float"]]}
    if isinstance(value, np.generic):
        numpy_json = encode_numpy(value)
        if numpy_json is not None:
            return numpy_json
    if isinstance(value, torch.dtype):
        return {"dtype": str(value).removeprefix("torch.")}
    if isinstance(value, torch.Size):
        return {"size": list(value)}
    if type(value) is bytes:
        return {"bytes": base64.b64encode(value).decode("ascii")}
    if isinstance(value, torch.device):
        return {"device": str(value)}
    if type(value) in (list, tuple):
        tag = "list" if type(value) is list else "tuple"
        return {
            tag: [
                encode_value(v, (*path, i), allow_pickle=allow_pickle) for i, v in enumerate(value)
            ]
        }
    if type(value) in (dict, OrderedDict, Counter):
        items = _encode_pairs(value, path, allow_pickle)
        metadata = encode_metadata(value, path, allow_pickle=allow_pickle)
        if metadata is not None:
            return {"odict": {"entries": items, "metadata": metadata}}
        return {_MAPPING_TAGS[type(value)]: items}
    if type(value) is defaultdict and _factory_name(value.default_factory) is not None:
        factory = _factory_name(value.default_factory)
        return {"defaultdict": [factory, _encode_pairs(value, path, allow_pickle)]}
    spec = class_spec(value) if isinstance(value, type) else None
    if spec is not None:
        return {"class": spec}
    if config_class(value) is not None:  # omegaconf's DictConfig, ListConfig (Hydra)
        try:
            return encode_config(value, path, lambda c: encode_value(c, path))
        except UnrepresentableError:
            if not allow_pickle:  # else the whole config, pickled
                raise
    if allow_pickle:
        try:
            return {"pickle": _pickle_dumps(value)}
        except Exception as err:  # a lambda, a lock, an open file: nothing can hold it
            raise UnrepresentableError(
                f"checkpoint value at {format_key_path(path)} of type {type(value).__qualname__} "
                f"cannot be pickled: {err}"
            ) from err
    raise UnrepresentableError(
        f"checkpoint value at {format_key_path(path)} of type {type(value).__qualname__}"
        f"{_why_not(value)} cannot be stored as typed JSON; convert it, or pass allow_pickle=True "
        "to pickle it"
    )


def _checked_text(text: str, path: tuple[Any, ...], what: str) -> str:
    """``text``, if UTF-8 can encode it (the store's JSON is UTF-8); else raise naming ``path``.

    Example:
        >>> _checked_text("lr", ("lr",), "key")
        'lr'
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate, as os.fsdecode gives for undecodable bytes
        raise UnrepresentableError(
            f"checkpoint {what} at {format_key_path(path)}: the str {text!r} holds a lone "
            "surrogate, which UTF-8 (and so the checkpoint's JSON) cannot hold; store it as "
            "bytes (os.fsencode) or a str of valid characters"
        ) from None
    return text


_MAPPING_TAGS: dict[type, str] = {dict: "dict", OrderedDict: "odict", Counter: "counter"}


def _factory_name(factory: Any) -> str | None:
    """The stored name of a defaultdict's ``default_factory``, None if it cannot be stored."""
    name = "None" if factory is None else getattr(factory, "__name__", None)
    if name in DEFAULT_FACTORIES and DEFAULT_FACTORIES[name] is factory:
        return name
    return None


def _encode_pairs(value: Any, path: tuple[Any, ...], allow_pickle: bool) -> list[list[Any]]:
    return [
        [
            encode_key(k, (*path, k), allow_pickle=allow_pickle),
            encode_value(v, (*path, k), allow_pickle=allow_pickle),
        ]
        for k, v in value.items()
    ]


def encode_key(key: Any, path: tuple[Any, ...], *, allow_pickle: bool = False) -> Any:
    """The typed JSON of a mapping key; raise naming ``path`` (which ends with ``key``)
    as a key when it cannot be held.

    Example:
        >>> encode_key(3, ("state", 3)), encode_key("lr", ("lr",))
        (3, 'lr')
    """
    if type(key) is str:
        return _checked_text(key, path, "key")
    try:
        return encode_value(key, path, allow_pickle=allow_pickle)
    except UnrepresentableError:
        raise UnrepresentableError(
            f"checkpoint key at {format_key_path(path)} of type {type(key).__qualname__}"
            f"{_why_not(key)} cannot be stored as typed JSON; convert it, or pass "
            "allow_pickle=True to pickle it"
        ) from None


def encode_metadata(value: Any, path: tuple[Any, ...], *, allow_pickle: bool = False) -> Any:
    """The typed JSON of an OrderedDict's ``_metadata`` (set by ``nn.Module.state_dict()``,
    read by ``load_state_dict``), or None when ``value`` carries none.

    Example:
        >>> sd = torch.nn.ReLU().state_dict()
        >>> encode_metadata(sd, ())
        {'odict': [['', {'dict': [['version', 1]]}]]}
    """
    metadata = getattr(value, "_metadata", None)
    if type(value) is not OrderedDict or metadata is None:
        return None
    return encode_value(metadata, (*path, "_metadata"), allow_pickle=allow_pickle)


def decode_metadata(payload: Any, path: tuple[Any, ...], *, allow_pickle: bool = False) -> Any:
    """The ``_metadata`` whose typed JSON is ``payload`` (see :func:`encode_metadata`).

    Example:
        >>> dict(decode_metadata({"odict": [["", {"dict": [["version", 1]]}]]}, ()))
        {'': {'version': 1}}
    """
    return decode_value(payload, (*path, "_metadata"), allow_pickle=allow_pickle)


def _decode_size(payload: Any) -> torch.Size:
    """A torch.Size of the int64 sizes torch holds (torch.Size itself takes any int, and
    then fails to print or to size a tensor)."""
    if not isinstance(payload, list) or not all(
        type(n) is int and -(2**63) <= n < 2**63 for n in payload
    ):
        raise ValueError(f"{payload!r:.200} is not a list of int64 sizes")  # named by the caller
    return torch.Size(payload)


def typed_container(
    payload: Any, path: tuple[Any, ...] = (), *, allow_pickle: bool = False
) -> tuple[list[tuple[Any, Any]], Callable[[list[tuple[Any, Any]]], Any]] | None:
    """If ``payload`` is the typed JSON of a container (else None): its entries, ``(key,
    typed JSON of the value)``, keys decoded, and what builds the container of some of
    them, values decoded (of a list or tuple fewer than all: ``{index: value}``).

    Example:
        >>> entries, build = typed_container({"dict": [["a", 1], ["b", {"class": "m:C"}]]})
        >>> entries, build([("a", 1)])
        ([('a', 1), ('b', {'class': 'm:C'})], {'a': 1})
    """
    tag = next(iter(payload)) if isinstance(payload, dict) and len(payload) == 1 else None
    if tag not in ("list", "tuple", "dict", "odict", "counter", "defaultdict"):
        return None
    try:
        return _taken_apart(tag, payload[tag], path, allow_pickle)
    except TorchZarrError:
        raise
    except (TypeError, ValueError, IndexError, KeyError) as err:
        raise MetadataError(
            f"checkpoint value at {format_key_path(path)}: bad typed JSON for {tag!r} ({err})"
        ) from None


def _taken_apart(tag: str, body: Any, path: tuple[Any, ...], allow_pickle: bool) -> Any:
    factory, pairs, metadata = None, body, None
    if tag == "defaultdict":
        factory, pairs = _stored_factory(body[0], path), body[1]
    elif tag == "odict" and isinstance(body, dict):  # with state_dict()'s _metadata
        pairs, metadata = body["entries"], [body["metadata"]]
    if not isinstance(pairs, list):
        raise TypeError(f"{pairs!r:.200} is not a list")  # typed_container names where
    sequence = tag in ("list", "tuple")
    entries = list(enumerate(pairs))
    if not sequence:
        entries = [(decode_value(k, path, allow_pickle=allow_pickle), v) for k, v in pairs]
        for key, _ in entries:
            hash(key)  # an unhashable key: TypeError, bad typed JSON

    def build(got: list[tuple[Any, Any]]) -> Any:
        if sequence:
            values = [v for _, v in got]
            whole = values if tag == "list" else tuple(values)
            return whole if len(got) == len(pairs) else dict(got)
        if tag in ("dict", "counter"):
            return dict(got) if tag == "dict" else Counter(dict(got))
        if tag == "defaultdict":
            return defaultdict(factory, got)
        out: Any = OrderedDict(got)
        if metadata is not None:
            out._metadata = decode_metadata(metadata[0], path, allow_pickle=allow_pickle)
        return out

    return entries, build


def _stored_factory(name: Any, path: tuple[Any, ...]) -> Any:
    if not isinstance(name, str) or name not in DEFAULT_FACTORIES:
        raise MetadataError(
            f"checkpoint value at {format_key_path(path)}: defaultdict factory {name!r} is "
            f"not one of {', '.join(DEFAULT_FACTORIES)}"
        )
    return DEFAULT_FACTORIES[name]


def decode_value(payload: Any, path: tuple[Any, ...] = (), *, allow_pickle: bool = False) -> Any:
    """The value whose typed JSON is ``payload`` (inverse of :func:`encode_value`).

    Example:
        >>> decode_value({"tuple": [1, {"float": "inf"}]})
        (1, inf)
    """
    if payload is None or isinstance(payload, (bool, str, int)):
        return payload
    if not isinstance(payload, dict) or len(payload) != 1:
        raise MetadataError(f"checkpoint value at {format_key_path(path)}: bad typed JSON")
    if (container := typed_container(payload, path, allow_pickle=allow_pickle)) is not None:
        entries, build = container  # values decoded each under its key
        return build(
            [(k, decode_value(v, (*path, k), allow_pickle=allow_pickle)) for k, v in entries]
        )
    (tag, body), *_ = payload.items()
    decoders: dict[str, Callable[[Any], Any]] = {
        "float": _decode_float,
        "complex": lambda b: complex(_decode_float(b[0]), _decode_float(b[1])),
        "size": _decode_size,
        "bytes": lambda b: base64.b64decode(b.encode("ascii"), validate=True),
        "device": lambda b: torch.device(b),
        "dtype": lambda b: vars(torch)[b],
        "numpy": decode_numpy,
        "class": lambda b: resolve_class(b, path, allow_pickle=allow_pickle),
        "omegaconf": lambda b: decode_config(
            b, path, lambda c: decode_value(c, path, allow_pickle=allow_pickle), allow_pickle
        ),
    }
    if tag == "pickle":
        if not allow_pickle:
            raise UnrepresentableError(
                f"checkpoint value at {format_key_path(path)} was pickled; loading it runs "
                "code, pass allow_pickle=True if you trust this checkpoint"
            )
        return _pickle_loads(body)
    decoder = decoders.get(tag)
    if decoder is None:
        raise MetadataError(f"checkpoint value at {format_key_path(path)}: unknown tag {tag!r}")
    # vars, not getattr: torch's module __getattr__ imports submodules by name
    if tag == "dtype" and not isinstance(vars(torch).get(str(body)), torch.dtype):
        raise MetadataError(f"checkpoint value at {format_key_path(path)}: no dtype {body!r}")
    try:
        return decoder(body)
    except TorchZarrError:
        raise
    except (
        TypeError,
        ValueError,
        IndexError,
        KeyError,
        AttributeError,
        RuntimeError,
        OverflowError,
    ) as err:
        raise MetadataError(
            f"checkpoint value at {format_key_path(path)}: bad typed JSON for {tag!r} ({err})"
        ) from None
