"""Lists (and tuples, nested) as one array: numpy's reading of numbers, and the one tensor
``torch.stack`` makes of tensors."""

from __future__ import annotations

import functools
from itertools import chain
from typing import Any

import numpy as np
import torch

from torchzarr.errors import (
    ArgumentTypeError,
    InvalidArgumentError,
    ShapeMismatchError,
    UnsupportedDtypeError,
)

__all__ = ["holds_tensors", "rectangular", "stack_tensors"]

_SEQUENCES = (list, tuple)


def holds_tensors(value: Any) -> bool:
    """Whether the list or tuple ``value`` holds a tensor at any depth (looked for by type,
    one pass per depth: cheap beside numpy's reading of long lists of numbers).

    Example:
        >>> holds_tensors([[1.0, 2.0], [torch.tensor(3.0), 4.0]]), holds_tensors([[1, 2]])
        (True, False)
    """
    level = [value] if isinstance(value, _SEQUENCES) else []
    while level:  # one depth of the nesting at a time
        kinds = set(map(type, chain.from_iterable(level)))
        if any(issubclass(kind, torch.Tensor) for kind in kinds):
            return True
        if not any(issubclass(kind, _SEQUENCES) for kind in kinds):
            return False
        level = [item for item in chain.from_iterable(level) if isinstance(item, _SEQUENCES)]
    return False


def rectangular(value: Any, what: str) -> np.ndarray | torch.Tensor:
    """``np.asarray(value)``; nested sequences of unequal lengths raise ShapeMismatchError
    saying ``what`` cannot be done with them. A list or tuple of tensors numpy cannot read
    (bfloat16, float8, ``requires_grad``, on a GPU) is the tensor ``torch.stack`` makes of
    them (:func:`stack_tensors`), whose values a writer checks as a list's.

    Example:
        >>> rectangular([[1, 2], [3, 4]], "").shape
        (2, 2)
        >>> rectangular([torch.ones(2, dtype=torch.bfloat16)] * 3, "").dtype
        torch.bfloat16
    """
    try:
        return np.asarray(value)  # numbers, and the tensors numpy reads, as numpy reads them
    except ValueError as err:  # ragged: tensors of different shapes are named
        if holds_tensors(value):
            return stack_tensors(value, what)
        raise ShapeMismatchError(f"data that is not rectangular: {what} ({err})") from None
    except (TypeError, RuntimeError):  # tensors numpy cannot read
        if not holds_tensors(value):
            raise
        return stack_tensors(value, what)


def stack_tensors(value: Any, what: str) -> torch.Tensor:
    """The list or tuple of tensors ``value`` (nested lists of them too) as one tensor,
    stacked as ``torch.stack`` stacks: the dtype is torch's promotion of theirs (refused
    where torch has none: uint64 with int64, float8 with others). Each tensor is detached
    and copied to the CPU first, as a single tensor written is. Tensors of different
    shapes raise :class:`~torchzarr.errors.ShapeMismatchError`, a list mixing tensors with
    other values (numbers, arrays, lists) :class:`~torchzarr.errors.ArgumentTypeError`,
    each saying ``what`` cannot be done with them.

    Example:
        >>> rows = [torch.ones(2, dtype=torch.bfloat16), torch.zeros(2, dtype=torch.bfloat16)]
        >>> stack_tensors(rows, "").dtype, stack_tensors(rows, "").shape
        (torch.bfloat16, torch.Size([2, 2]))
        >>> stack_tensors([torch.ones(2), torch.ones(3)], "cannot write it")
        Traceback (most recent call last):
        ...
        torchzarr.errors.ShapeMismatchError: tensors of different shapes: cannot write it ...
    """
    return _stacked(value, what, "")


def _stacked(value: Any, what: str, where: str) -> torch.Tensor:
    parts: list[tuple[str, torch.Tensor]] = []
    others: list[tuple[str, Any]] = []
    for i, item in enumerate(value):
        at = f"{where}[{i}]"
        if isinstance(item, torch.Tensor):
            parts.append((at, _leaf(item)))
        elif holds_tensors(item):
            parts.append((at, _stacked(item, what, at)))
        else:
            others.append((at, item))
    if others:
        at, item = parts[0]
        other_at, other = others[0]
        raise ArgumentTypeError(
            f"data mixing tensors with other values: {what} (item {at} is a tensor of "
            f"shape {tuple(item.shape)}, item {other_at} {_described(other)}): pass one "
            "tensor (torch.stack), or numbers and arrays without tensors"
        )
    shapes = {tuple(part.shape): at for at, part in parts}
    if len(shapes) > 1:
        shown = ", ".join(f"{shape} (item {at})" for shape, at in list(shapes.items())[:4])
        raise ShapeMismatchError(
            f"tensors of different shapes: {what} (shapes {shown}): each needs the same shape"
        )
    tensors = [part for _, part in parts]
    dtype = functools.reduce(_promoted(what), (t.dtype for t in tensors))
    try:
        return torch.stack([t if t.dtype == dtype else t.to(dtype) for t in tensors])
    except (RuntimeError, TypeError, NotImplementedError) as err:  # mixed layouts, kinds
        kinds = sorted({f"{t.layout} {t.dtype}" for t in tensors})
        raise InvalidArgumentError(
            f"cannot stack tensors of kinds {', '.join(kinds)}: {what} ({err}): pass one "
            "dense tensor"
        ) from None


def _leaf(tensor: torch.Tensor) -> torch.Tensor:
    """A tensor of the list as a single tensor is written: detached, its data on the CPU (a
    meta tensor stays one, and is refused as one holding no data)."""
    tensor = tensor.detach()
    return tensor if tensor.device.type in ("cpu", "meta") else tensor.cpu()


def _promoted(what: str) -> Any:
    def promote(a: torch.dtype, b: torch.dtype) -> torch.dtype:
        try:
            return torch.promote_types(a, b)
        except RuntimeError:  # uint16/32/64 and float8 promote with nothing else in torch
            raise UnsupportedDtypeError(
                f"tensors of dtypes {a} and {b}, which torch does not promote to one: "
                f"{what}: convert them to one dtype (.to)"
            ) from None

    return promote


def _described(item: Any) -> str:
    try:
        shape = f" of shape {np.shape(item)}"
    except ValueError:  # a ragged list
        shape = ""
    return f"is a {type(item).__name__}{shape}"
