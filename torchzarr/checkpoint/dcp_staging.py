"""How ``dcp.async_save`` stages a state dict for ZarrStorageWriter: torch's default copy,
after conjugate and negative views are resolved (that copy keeps their storage, not their
flag)."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch.distributed.checkpoint.staging import AsyncStager, DefaultStager, StagingOptions

__all__ = ["ResolvedViewsStager", "resolved_views"]


def resolved_views(obj: Any, memo: dict[int, Any] | None = None) -> Any:
    """``obj`` with every conjugate or negative view inside its dicts, lists and tuples
    (plain tensors, DTensors, other subclasses) replaced by the values it reads, one copy
    per view object; containers holding none are returned as they are (so tensors shared
    by several keys stay shared).

    Example:
        >>> state = {"z": torch.tensor([1 + 2j]).conj(), "n": [torch.ones(1)]}
        >>> staged = resolved_views(state)
        >>> staged["z"].is_conj(), staged["z"].tolist(), staged["n"] is state["n"]
        (False, [(1-2j)], True)
    """
    memo = {} if memo is None else memo
    if isinstance(obj, torch.Tensor):
        try:
            flagged = obj.is_conj() or obj.is_neg()
        except RuntimeError:  # a kind that answers no such question (ShardedTensor)
            return obj
        if not flagged:
            return obj
        if id(obj) not in memo:
            memo[id(obj)] = obj.detach().resolve_conj().resolve_neg()
        return memo[id(obj)]
    if isinstance(obj, dict):
        changed = {k: new for k, v in obj.items() if (new := resolved_views(v, memo)) is not v}
        if not changed:
            return obj
        out = copy.copy(obj)  # its own type (OrderedDict), the changed values replaced
        out.update(changed)
        return out
    if isinstance(obj, list | tuple):
        items = [resolved_views(v, memo) for v in obj]
        if all(new is old for new, old in zip(items, obj, strict=True)):
            return obj
        if isinstance(obj, list):
            out_list = copy.copy(obj)
            out_list[:] = items
            return out_list
        return type(obj)(*items) if hasattr(obj, "_fields") else type(obj)(items)
    return obj


class ResolvedViewsStager(AsyncStager):
    """The ``AsyncStager`` side of ZarrStorageWriter: ``dcp.async_save`` stages through it.

    It copies as ``async_save`` does for any other writer (torch's ``DefaultStager``: one
    copy per storage, so tied weights stay tied; values such as ``BytesIO`` deep-copied;
    tuple types kept), after :func:`resolved_views`: that copy takes a view's storage
    without its conjugate or negative flag, so such a view would be saved as the values
    under it.
    """

    _synchronize_after_execute: bool = False

    def stage(self, state_dict: Any) -> Any:
        """A CPU copy of ``state_dict``, taken now."""
        stager = DefaultStager(StagingOptions(False, False, False, False))
        try:
            return stager.stage(resolved_views(state_dict))
        finally:
            stager.close()

    def synchronize_staging(self) -> None:
        """Nothing to wait for: :meth:`stage` copies before it returns."""

    def close(self) -> None:
        """Nothing to release: each stage makes and closes its own stager."""
