"""Where loaded checkpoint tensors go: ``map_location`` checked, then applied per tensor."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from torchzarr.errors import ArgumentTypeError, InvalidArgumentError

__all__ = ["placement"]


def placement(map_location: Any) -> Callable[[torch.Tensor, str], torch.Tensor]:
    """A function placing a loaded CPU tensor as ``torch.load(map_location=...)`` would.
    ``map_location`` of a type that names no device is refused here, before any read.

    Example:
        >>> place = placement("cpu")
        >>> place(torch.ones(2), "cuda:0").device
        device(type='cpu')
    """
    if isinstance(map_location, np.integer):
        map_location = int(map_location)  # a device index, as torch.device takes it
    if not (
        map_location is None
        or isinstance(map_location, str | bytes | torch.device | dict)
        or (isinstance(map_location, int) and not isinstance(map_location, bool))
        or (callable(map_location) and not isinstance(map_location, torch.Tensor))
    ):
        raise ArgumentTypeError(
            f"map_location must be None, a device (a str, torch.device or index), a dict of "
            f"saved device names to devices, or a callable (tensor, saved) -> tensor, as in "
            f"torch.load; got {type(map_location).__name__}: {map_location!r}"
        )

    def place(t: torch.Tensor, saved: str) -> torch.Tensor:
        target: Any = saved
        if callable(map_location) and not isinstance(map_location, (str, torch.device)):
            moved = map_location(t, saved)
            if isinstance(moved, torch.Tensor):
                return moved
        elif isinstance(map_location, dict):
            target = map_location.get(saved, saved)
        elif map_location is not None:
            target = map_location
        try:
            return t if torch.device(target).type == "cpu" else t.to(target)
        except (AssertionError, RuntimeError, TypeError, ValueError) as err:
            # no such device on this machine, or (from a dict) a value naming none
            raise InvalidArgumentError(
                f"cannot place a tensor saved on {saved!r} on {str(target)!r}: {err}; pass "
                f"map_location='cpu' or a device this machine has"
            ) from err

    return place
