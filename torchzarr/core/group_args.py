"""Checks of the arguments of ``Group``'s methods: depths, ``require_array``'s match, assigned values."""

from __future__ import annotations

from typing import Any

import torch

from torchzarr.arguments import whole_number
from torchzarr.core.array import Array
from torchzarr.core.chunking import normalize_shape
from torchzarr.errors import ArgumentTypeError, NodeExistsError

__all__ = ["check_assigned", "check_depth", "check_required_array", "member_array_options"]


def member_array_options(kwargs: dict[str, Any], zarr_format: int) -> dict[str, Any]:
    """The options of ``Group.create_array(name, **kwargs)`` for ``create_array``: the
    group's format by default; ``store`` and ``path`` refused (the group and ``name`` say
    where), as Python's "multiple values" error would, unclearly.

    Example:
        >>> member_array_options({"shape": (2,)}, 2)
        {'shape': (2,), 'zarr_format': 2}
    """
    placed = sorted({"store", "path"} & set(kwargs))
    if placed:
        raise ArgumentTypeError(
            f"Group.create_array takes the member's name, not {', '.join(placed)}= (the "
            "group and the name say where the array goes)"
        )
    return {**kwargs, "zarr_format": kwargs.get("zarr_format", zarr_format)}


def check_depth(name: str, value: Any) -> int | None:
    """``max_depth`` or ``level``: None (no limit) or an int of at least 0, as zarr-python
    takes it (never True, 1.5 or "1").

    Example:
        >>> check_depth("max_depth", None), check_depth("level", 2)
        (None, 2)
    """
    if value is None:
        return None
    try:
        return whole_number(name, value, 0)
    except ArgumentTypeError:
        raise ArgumentTypeError(f"{name} must be None or an int >= 0, got {value!r}") from None


def check_assigned(key: str, value: Any) -> None:
    """``group[key] = value``: a group is no array data (an array is, and is copied).

    Example:
        >>> import torchzarr as tz
        >>> check_assigned("x", [1, 2])
        >>> check_assigned("x", tz.open_group("memory://", mode="w"))
        Traceback (most recent call last):
        ...
        torchzarr.errors.ArgumentTypeError: cannot assign group / to 'x': a group is not array data (use create_group, or copy its arrays one by one)
    """
    from torchzarr.core.group import Group

    if isinstance(value, Group):
        raise ArgumentTypeError(
            f"cannot assign group {value.name} to {key!r}: a group is not array data "
            "(use create_group, or copy its arrays one by one)"
        )
    if value is None:  # else create_array would ask for shape= and dtype=, never given
        raise ArgumentTypeError(
            f"cannot assign None to {key!r}: group[name] = data takes array data (a tensor, "
            "numpy array, list or number); delete a member with del group[name]"
        )


def _wanted_shape_and_dtype(kwargs: dict[str, Any]) -> tuple[Any, Any]:
    """The shape and dtype ``create_array(**kwargs)`` would give the array (None where it
    would take none): ``data``'s own unless ``shape``/``dtype`` are given, and a ``shape``
    that is not ``data``'s raises ``ShapeMismatchError``, as ``create_array`` does."""
    from torchzarr.core.api import _shape_and_dtype_of

    shape, dtype, data = kwargs.get("shape"), kwargs.get("dtype"), kwargs.get("data")
    if data is None:
        return shape, dtype
    if isinstance(data, Array):  # what ``data[...]`` would be, without reading it
        data = torch.empty(data.shape, dtype=data.dtype, device="meta")
    return _shape_and_dtype_of(data, shape, dtype)


def check_required_array(node: Array, kwargs: dict[str, Any]) -> None:
    """``Group.require_array(name, **kwargs)`` of an existing array ``node``: the shape and
    dtype that ``create_array(**kwargs)`` would give it (``shape=``, ``dtype=``, else
    ``data``'s) must be its own, else ``NodeExistsError`` naming it.

    Example:
        >>> import torchzarr as tz, torch
        >>> root = tz.open_group("memory://", mode="w")
        >>> x = root.create_array("x", shape=(2,), dtype="int8")
        >>> check_required_array(x, {"data": torch.zeros(3, dtype=torch.int8)})
        Traceback (most recent call last):
        ...
        torchzarr.errors.NodeExistsError: array /x exists with shape (2,), not (3,)
    """
    from torchzarr.dtypes import data_type

    shape, dtype = _wanted_shape_and_dtype(kwargs)
    if shape is not None and node.shape != normalize_shape(shape):
        raise NodeExistsError(f"array {node.name} exists with shape {node.shape}, not {shape!r}")
    if dtype is not None and node.data_type != data_type(dtype):
        raise NodeExistsError(f"array {node.name} exists with dtype {node.dtype}, not {dtype}")
