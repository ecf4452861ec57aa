"""The ``out=`` tensor of a read: what it must be, and whether a read fills it in place."""

from __future__ import annotations

from typing import Any

import torch

from torchzarr.errors import ArgumentTypeError, InvalidArgumentError, ShapeMismatchError

__all__ = ["check_out", "fills_in_place"]


def check_out(out: Any, shape: tuple[int, ...], dtype: torch.dtype, array_name: str) -> None:
    """Refuse an ``out`` a read of ``shape`` and ``dtype`` from array ``array_name`` cannot
    fill: not a tensor, another shape or dtype, no dense storage, requiring grad, or
    elements sharing memory (an ``expand``ed view, refused as torch's own ``out=`` does).

    Example:
        >>> check_out(torch.empty(2, 3), (2, 3), torch.float32, "/x")
        >>> check_out(torch.empty(3), (2, 3), torch.float32, "/x")
        Traceback (most recent call last):
        ...
        torchzarr.errors.ShapeMismatchError: out has shape (3,) but the selection has shape (2, 3)
    """
    if not isinstance(out, torch.Tensor):
        raise ArgumentTypeError(
            f"out must be a torch.Tensor, got {type(out).__module__}."
            f"{type(out).__qualname__} (reads of array {array_name} fill tensors)"
        )
    if tuple(out.shape) != shape:
        raise ShapeMismatchError(
            f"out has shape {tuple(out.shape)} but the selection has shape {shape}"
        )
    if out.dtype != dtype:
        raise ShapeMismatchError(
            f"out has dtype {out.dtype} but array {array_name} has dtype {dtype}"
        )
    if out.is_meta or out.layout != torch.strided:
        raise InvalidArgumentError(
            f"out must be a dense tensor with storage (any device), got a "
            f"{'meta' if out.is_meta else out.layout} tensor"
        )
    if out.requires_grad:
        raise InvalidArgumentError(
            "out requires grad: pass out.detach() (reads are not differentiable)"
        )
    for axis, (size, stride) in enumerate(zip(out.shape, out.stride(), strict=True)):
        if stride == 0 and size > 1:
            raise InvalidArgumentError(
                f"out has overlapping memory (stride 0 along axis {axis} of size {size}, an "
                f"expanded view): pass a tensor whose elements each have their own memory"
            )


def fills_in_place(out: torch.Tensor) -> bool:
    """Whether a read can decode straight into ``out``'s memory: a contiguous CPU tensor
    without torch's conjugate or negative bit (whose memory holds other values than it
    shows: ``.conj()``, ``._neg_view()``). Any other ``out`` is filled by a copy.

    Example:
        >>> fills_in_place(torch.empty(4)), fills_in_place(torch.empty(4, 2).t())
        (True, False)
    """
    return out.device.type == "cpu" and out.is_contiguous() and not (out.is_conj() or out.is_neg())
