"""``snapshot``: CPU copies of a state tree's tensors, keeping their sharing and attributes."""

from __future__ import annotations

from collections import Counter, OrderedDict, defaultdict
from typing import Any

import numpy as np
import torch

from torchzarr.checkpoint.format import alias_key

__all__ = ["snapshot"]


def _snapshot(state: Any, memo: dict[Any, Any]) -> Any:
    if isinstance(state, torch.Tensor):
        key = alias_key(state)
        if key is not None and key in memo:
            return memo[key]  # tied tensors stay one tensor, so they are stored once
        t = state.detach()
        if t.is_meta:
            return state  # no data to copy (saved only as a pickle, with allow_pickle)
        copy = t.to("cpu", copy=True) if t.layout == torch.strided else t.clone()
        if isinstance(state, torch.nn.Parameter):
            copy = torch.nn.Parameter(copy, requires_grad=state.requires_grad)
        elif state.requires_grad:
            copy.requires_grad_(True)
        copy.__dict__.update(vars(state))  # its Python attributes (saved too)
        if key is not None:
            memo[key] = copy
        return copy
    if isinstance(state, np.ndarray):
        if id(state) not in memo:  # one array under two keys stays one array
            memo[id(state)] = (state, state.copy())  # the caller may change it meanwhile
        return memo[id(state)][1]
    if type(state) in (dict, OrderedDict):
        out = type(state)((k, _snapshot(v, memo)) for k, v in state.items())
        if hasattr(state, "_metadata"):
            out._metadata = state._metadata
        return out
    if type(state) in (list, tuple):
        return type(state)(_snapshot(v, memo) for v in state)
    if type(state) in (Counter, defaultdict):
        out = state.copy()  # same type and default_factory
        for k, v in state.items():
            out[k] = _snapshot(v, memo)
        return out
    return state


def snapshot(state: Any) -> Any:
    """A copy of a state tree whose tensors are CPU copies, safe to save while training goes on.

    Tensors that share one view share one copy, and so does a numpy array found under
    several keys. Other leaves are shared, not copied. Copies of tensors on another
    device are on the CPU, and a save of them records the CPU as their device
    (:class:`AsyncCheckpointer` keeps the original device).

    Example:
        >>> w = torch.zeros(2)
        >>> copy = snapshot({"w": w}); w += 1
        >>> copy["w"]
        tensor([0., 0.])
    """
    return _snapshot(state, {})
