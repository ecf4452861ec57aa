"""Saves and loads through ``torch.distributed.checkpoint`` that cannot work, refused with why."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.distributed.checkpoint.metadata import Metadata, TensorStorageMetadata
from torch.distributed.checkpoint.planner import SavePlan

from torchzarr.arguments import whole_number
from torchzarr.checkpoint import commit
from torchzarr.errors import (
    ArgumentTypeError,
    CheckpointConflictError,
    InvalidArgumentError,
    MetadataError,
)
from torchzarr.storage import MemoryStore, Store

__all__ = [
    "check_reader_options",
    "fill_cached_plans",
    "overtaken",
    "pruned_while_loading",
    "refuse_filesystem_checkpoint",
    "refuse_private_store",
    "refuse_resized",
    "refuse_shared_zip",
    "refuse_stale_cached_plans",
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


def refuse_shared_zip(path: Any, is_zip: bool, ranks: int) -> None:
    """Refuse a coordinated ``dcp.save`` of several ranks (``ranks`` plans) to a zip, on
    the coordinator before anything is written.

    A zip takes writes from one process: the other ranks cannot see, nor append to, what
    the coordinator writes, and a rank failing there would leave the zip without its
    directory, earlier versions lost with it. Independent saves (``no_dist=True``, a zip
    per process) plan alone and pass.

    Example:
        >>> refuse_shared_zip("ckpt.zip", is_zip=True, ranks=1)  # one process: fine
    """
    if is_zip and ranks > 1:
        raise InvalidArgumentError(
            f"ZarrStorageWriter({path!r}) writes a zip, which takes writes from one process "
            f"only, and {ranks} ranks save: save to a directory or an object store (zip a "
            "finished checkpoint to ship it), or a zip per process with no_dist=True"
        )


def overtaken(st: Store, version: str, err: BaseException) -> CheckpointConflictError | None:
    """The error for a save of ``version`` that failed with ``err`` because another save
    committed a newer version meanwhile (and may have pruned this one), else None.

    Example:
        >>> overtaken(MemoryStore(), "v000001", OSError("disk full")) is None
        True
    """
    if isinstance(err, CheckpointConflictError):
        return err
    try:
        manifest = commit.read_manifest(st)
    except Exception:
        return None
    newer = None if manifest is None else str(manifest.get("version"))
    if newer is None or commit.version_number(newer) <= commit.version_number(version):
        return None
    conflict = CheckpointConflictError(
        f"another save committed {newer} to {st!r} while this save was writing {version}, "
        f"which that save may have pruned: this save's files are deleted ({err})"
    )
    conflict.__cause__ = err
    return conflict


def refuse_private_store(st: Store, err: Exception) -> None:
    """Explain ``err`` (something another rank wrote is missing) for a memory store.

    Example:
        >>> refuse_private_store(MemoryStore(), KeyError("v000001"))  # one process: nothing
    """
    if isinstance(st, MemoryStore) and world_size() > 1:
        raise InvalidArgumentError(
            f"{st!r} is a memory store: it lives in one process, so the other ranks of this "
            f"save or load do not see it ({err}). Use a directory on a file system every rank "
            "mounts, or an object store. (With no_dist=True, which the storage layer is not "
            "told of, no other rank takes part: then nothing was committed there by this "
            "process)"
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


_NO_CACHE_HINT = (
    "save once with DefaultSavePlanner(enable_plan_caching=False) to show ZarrStorageWriter "
    "the plans, or leave plan caching off"
)


def fill_cached_plans(
    path: Any, plans: Sequence[SavePlan], previous: Sequence[SavePlan] | None
) -> list[SavePlan]:
    """Every rank's plan in full, for a save under DCP's plan caching.

    A planner with ``enable_plan_caching=True`` sends the storage writer only the plans
    that changed since its last save: the others arrive empty and not ``usable``, and
    their ranks would write with the plans (and storage data) of that earlier save. Those
    are taken from ``previous``, the full plans of the last save planned in this process.

    Raises:
        InvalidArgumentError: a plan is not ``usable`` and ``previous`` holds no plans for
            as many ranks (nothing written yet).

    Example:
        >>> fill_cached_plans("ckpt", [SavePlan([])], None)[0].usable
        True
    """
    if all(plan.usable for plan in plans):
        return list(plans)
    if previous is None or len(previous) != len(plans):
        raise InvalidArgumentError(
            f"ZarrStorageWriter({path!r}) got plans that DCP's plan caching reused from an "
            "earlier save this process's ZarrStorageWriter did not plan (another storage "
            f"writer's, or another world size). Nothing was written: {_NO_CACHE_HINT}"
        )
    return [plan if plan.usable else old for plan, old in zip(plans, previous, strict=True)]


def _planned_boxes(plans: Sequence[SavePlan]) -> set[tuple[Any, ...]]:
    boxes: set[tuple[Any, ...]] = set()
    for plan in plans:
        for item in plan.items:
            chunk = None if item.tensor_data is None else item.tensor_data.chunk
            box = () if chunk is None else (tuple(chunk.offsets), tuple(chunk.sizes))
            boxes.add((item.index.fqn, *box))
    return boxes


def _metadata_boxes(metadata: Metadata) -> set[tuple[Any, ...]]:
    boxes: set[tuple[Any, ...]] = set()
    for key, entry in metadata.state_dict_metadata.items():
        if isinstance(entry, TensorStorageMetadata):
            boxes.update((key, tuple(c.offsets), tuple(c.sizes)) for c in entry.chunks)
        else:
            boxes.add((key,))
    return boxes


def refuse_stale_cached_plans(path: Any, plans: Sequence[SavePlan], metadata: Metadata) -> None:
    """Refuse to commit a save whose ranks wrote plans that :func:`fill_cached_plans` took
    from an earlier save, when DCP's ``metadata`` describes other keys or boxes (the
    planner cached another state dict's plans: several planners or savers in one process).
    Dtypes, which DCP's own plan comparison ignores too, are checked where the data is,
    by each rank before it writes (:mod:`torchzarr.checkpoint.dcp_dtypes`), and the
    metadata committed names those stored.

    Raises:
        InvalidArgumentError: the written keys and boxes differ from the metadata's.

    Example:
        >>> refuse_stale_cached_plans("ckpt", [SavePlan([])], Metadata({}))  # they agree
    """
    planned, described = _planned_boxes(plans), _metadata_boxes(metadata)
    if planned != described:
        keys = sorted({str(box[0]) for box in planned ^ described})
        raise InvalidArgumentError(
            f"ZarrStorageWriter({path!r}): DCP's plan caching reused plans of an earlier save "
            f"that do not match this save's metadata (keys {keys[:3]}). The save was not "
            f"committed: {_NO_CACHE_HINT}"
        )


def check_reader_options(version: Any, threads: Any) -> None:
    """Check ``ZarrStorageReader``'s ``version`` and ``threads`` when it is built.

    Raises:
        ArgumentTypeError: ``version`` is not a str (nor None), ``threads`` not an int.
        InvalidArgumentError: ``version`` is not a version's name (``"v000001"``), or
            ``threads`` is below 1 (as ``ZarrStorageWriter`` takes it).

    Example:
        >>> check_reader_options("v000003", 4)  # fine
        >>> check_reader_options("3", None)
        Traceback (most recent call last):
        ...
        torchzarr.errors.InvalidArgumentError: ZarrStorageReader(version='3'): ...
    """
    if version is not None:
        why = "a version's name such as 'v000001' (None: the committed one)"
        if not isinstance(version, str):
            raise ArgumentTypeError(f"ZarrStorageReader(version={version!r}): must be {why}")
        if commit.version_number(version) < 0:
            raise InvalidArgumentError(f"ZarrStorageReader(version={version!r}): must be {why}")
    if threads is not None:
        whole_number("ZarrStorageReader threads", threads, 1)


def refuse_filesystem_checkpoint(st: Store) -> None:
    """Explain a store without a manifest that holds torch's ``FileSystemWriter`` output.

    Raises:
        MetadataError: ``st`` holds a ``.metadata`` file (and no torchzarr manifest).

    Example:
        >>> refuse_filesystem_checkpoint(MemoryStore())  # nothing there: nothing to say
    """
    if st.exists(".metadata"):
        raise MetadataError(
            f"{st!r} holds no torchzarr checkpoint: it holds a .metadata file written by "
            "torch's FileSystemWriter: use FileSystemReader (torch.distributed.checkpoint"
            ".FileSystemReader) to load it"
        )


def refuse_resized(fqn: str, shape: tuple[int, ...], size: Sequence[int], where: Any) -> None:
    """Refuse to load key ``fqn`` whose array has ``shape`` when the checkpoint's DCP
    metadata gives it ``size`` (a hand-edited manifest): a larger size would fail on the
    read, a smaller one load part of the tensor.

    Raises:
        MetadataError: the two differ (the message names the key and both).

    Example:
        >>> refuse_resized("w", (4, 2), torch.Size([4, 2]), "ckpt")  # they agree
    """
    if tuple(size) != tuple(shape):
        raise MetadataError(
            f"DCP metadata of the checkpoint in {where!r} gives key {fqn!r} the size "
            f"{list(size)}, but its array holds shape {list(shape)}: the metadata (the "
            "manifest, root zarr.json, or the version's own copy) was edited or damaged"
        )
