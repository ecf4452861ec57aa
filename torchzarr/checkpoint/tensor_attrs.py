"""Python attributes set on saved tensors (``param.tensor_model_parallel = True``), as typed JSON."""

from __future__ import annotations

import warnings
from typing import Any

from torchzarr.checkpoint.values import decode_value, encode_value, format_key_path
from torchzarr.errors import MetadataError, UnrepresentableError
from torchzarr.metadata.jsonutil import is_utf8

__all__ = ["ATTRIBUTES", "UnsavedAttributeWarning", "encode_attributes", "restore_attributes"]


class UnsavedAttributeWarning(UserWarning):
    """A tensor's Python attribute that a checkpoint's typed JSON cannot hold was left out."""


#: Key of the ``torchzarr_tensor`` array attribute holding the tensor's Python attributes:
#: ``{name: typed JSON of the value}``; absent when it has none (and in older checkpoints).
ATTRIBUTES = "attributes"


def encode_attributes(
    t: Any, key_path: tuple[Any, ...], *, allow_pickle: bool = False
) -> dict[str, Any] | None:
    """The typed JSON of the Python attributes of tensor ``t`` (its ``__dict__``), or None
    when it has none.

    An attribute typed JSON cannot hold (a function, a module, a tensor) is left out with
    an :class:`UnsavedAttributeWarning` naming the key path and the attribute (pickled
    instead with ``allow_pickle``).

    Raises:
        UnrepresentableError: an attribute name that is not a str of valid characters.

    Example:
        >>> import torch
        >>> p = torch.nn.Parameter(torch.ones(2)); p.tensor_model_parallel = True
        >>> encode_attributes(p, ("w",))
        {'tensor_model_parallel': True}
    """
    held = getattr(t, "__dict__", None)
    if not held:
        return None
    where = format_key_path(key_path)
    out: dict[str, Any] = {}
    for name, value in held.items():
        if type(name) is not str or not is_utf8(name):
            raise UnrepresentableError(
                f"tensor at {where} has the attribute name {name!r}, which the checkpoint's "
                "JSON cannot hold (a str of valid characters)"
            )
        try:
            out[name] = encode_value(value, (*key_path, name), allow_pickle=allow_pickle)
        except UnrepresentableError as err:
            # a callable or a module set on a Parameter (a loader hook, a gradient buffer):
            # saves of such tensors worked before attributes were kept, so warn, not refuse
            warnings.warn(
                f"tensor at {where}: its attribute {name!r} is not saved: {err} "
                "(allow_pickle=True pickles it)",
                UnsavedAttributeWarning,
                stacklevel=2,
            )
    return out or None


def restore_attributes(
    loaded: Any, info: dict[str, Any], key_path: tuple[Any, ...], *, allow_pickle: bool = False
) -> None:
    """Give ``loaded`` (a tensor just read) the Python attributes its array's
    ``torchzarr_tensor`` attribute ``info`` records; nothing when it records none. They go
    straight into its ``__dict__``: no property or method of the tensor runs.

    Raises:
        MetadataError: the recorded attributes are malformed, name what the tensor's class
            has (``to``, ``tolist``: an attribute would hide it), or ``loaded`` (a numpy
            array) takes no attributes.

    Example:
        >>> import torch
        >>> t = torch.zeros(2)
        >>> restore_attributes(t, {"attributes": {"note": "ema"}}, ("w",))
        >>> t.note
        'ema'
    """
    payload = info.get(ATTRIBUTES)
    if payload is None:
        return
    where = format_key_path(key_path)
    if not isinstance(payload, dict):
        raise MetadataError(f"tensor at {where}: its attributes {payload!r:.200} are not an object")
    held = getattr(loaded, "__dict__", None)
    if not isinstance(held, dict):
        raise MetadataError(
            f"tensor at {where}: attributes recorded for a {type(loaded).__name__}, which "
            "takes none"
        )
    shadowing = sorted(str(name) for name in payload if hasattr(type(loaded), str(name)))
    if shadowing:  # an entry of __dict__ would hide the method (to, tolist...) from callers
        raise MetadataError(
            f"tensor at {where}: its recorded attributes {shadowing} would hide what "
            f"{type(loaded).__name__} itself has under those names; not loaded"
        )
    values = {
        name: decode_value(value, (*key_path, name), allow_pickle=allow_pickle)
        for name, value in payload.items()
    }
    held.update(values)  # all or nothing
