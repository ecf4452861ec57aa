"""Saves and loads through ``torch.distributed.checkpoint`` that cannot work, refused with why."""

from __future__ import annotations

from typing import Any

import torch

from torchzarr.errors import InvalidArgumentError
from torchzarr.storage import MemoryStore, Store

__all__ = [
    "pruned_while_loading",
    "refuse_private_store",
    "refuse_uncoordinated_save",
    "world_size",
]


def world_size() -> int:
    """Ranks in the default process group (1 without one).

    Example:
        >>> world_size()
        1
    """
    dist = torch.distributed
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def refuse_uncoordinated_save(path: Any, use_collectives: bool) -> None:
    """Refuse ``dcp.save(..., use_collectives=False)`` when several ranks save.

    Without collectives every rank plans alone and commits its own version holding only
    its shards; the last commit wins and prunes the other ranks' shards.

    Example:
        >>> refuse_uncoordinated_save("ckpt", use_collectives=False)  # one process: fine
    """
    ranks = world_size()
    if use_collectives is False and ranks > 1:
        raise InvalidArgumentError(
            f"ZarrStorageWriter({path!r}) needs dcp.save(..., use_collectives=True) (the "
            f"default) when {ranks} ranks save: a checkpoint is committed once, by the "
            "coordinator, after every rank wrote its shards. For one independent checkpoint "
            "per process, pass no_dist=True (use_collectives left as it is) and a path per rank"
        )


def refuse_private_store(st: Store, err: Exception) -> None:
    """Explain ``err`` (something another rank wrote is missing) for a memory store.

    Example:
        >>> refuse_private_store(MemoryStore(), KeyError("v000001"))  # one process: nothing
    """
    if isinstance(st, MemoryStore) and world_size() > 1:
        raise InvalidArgumentError(
            f"{st!r} is a memory store: it lives in one process, so the other ranks of this "
            f"save or load do not see it ({err}). Use a directory on a file system every rank "
            "mounts, or an object store"
        ) from err


def pruned_while_loading(st: Store, version: str) -> str:
    """The message for a load whose version a newer save deleted meanwhile.

    Example:
        >>> pruned_while_loading(MemoryStore(), "v000001")[:25]
        'version v000001 of the ch'
    """
    return (
        f"version {version} of the checkpoint in {st!r} was deleted while it was being "
        "loaded (a newer save committed and pruned it), so the state dict may be partly "
        "overwritten: load again, from the committed version"
    )
