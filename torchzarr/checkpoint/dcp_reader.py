"""``torch.distributed.checkpoint`` loading from Zarr: :class:`ZarrStorageReader`.

Reads checkpoints written by :class:`~torchzarr.checkpoint.dcp.ZarrStorageWriter` (layout
in :mod:`torchzarr.checkpoint.dcp`): the DCP metadata from the manifest's JSON, any box
of any array straight into the planner's tensors.

Every rank reads the metadata itself (torch >= 2.5), so ranks racing another job's commit
may open different versions. Each rank's local plan carries the version it opened; the
coordinator picks the newest of them for all, and a rank that planned with another
version reads that one instead when its keys have the same shapes, dtypes and arrays
there (else :class:`~torchzarr.errors.CheckpointConflictError`): every rank loads one
version.
"""

from __future__ import annotations

import io
import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import torch
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta, TensorStorageMetadata
from torch.distributed.checkpoint.planner import LoadItemType, LoadPlan, LoadPlanner, ReadItem
from torch.distributed.checkpoint.storage import StorageReader
from torch.futures import Future

from torchzarr.checkpoint import commit, prune
from torchzarr.checkpoint.chunk_check import check_chunks_stored
from torchzarr.checkpoint.committed import refuse_uncommitted
from torchzarr.checkpoint.dcp_checks import (
    check_reader_options,
    pruned_while_loading,
    refuse_filesystem_checkpoint,
    refuse_private_store,
    refuse_resized,
)
from torchzarr.checkpoint.dcp_metadata import KIND, box_region, metadata_from_json
from torchzarr.checkpoint.format import DCP_KEY_ATTRIBUTE
from torchzarr.config import config
from torchzarr.core.api import open_group
from torchzarr.core.array import Array
from torchzarr.errors import (
    CheckpointConflictError,
    ChunkDecodeError,
    GroupNotFoundError,
    MetadataError,
    NodeNotFoundError,
)
from torchzarr.storage import Store

__all__ = ["ZarrStorageReader"]


#: reads of the manifest when the version it names is pruned before it is opened
_OPEN_ATTEMPTS = 3


class ZarrStorageReader(StorageReader):
    """DCP ``StorageReader`` loading a checkpoint written by :class:`ZarrStorageWriter`.

    Metadata is read from JSON, never unpickled. Non-tensor values are handed to the DCP
    planner as the bytes it saved; DCP's default planner deserialises them with
    ``torch.load(weights_only=False)``, so with ``weights_only=True`` (the default) this
    reader first checks each with ``torch.load(weights_only=True)`` (torch's restricted
    unpickler, which runs no arbitrary code) and refuses those that need more.

    Args:
        path: a path, URL or Store; ``checkpoint_id`` given to ``dcp.load`` replaces it.
        weights_only: refuse non-tensor values the restricted unpickler rejects.
        version: a version to read instead of the committed one (must still exist, and
            be one the manifest lists: the committed one or an earlier commit it keeps;
            a version a killed save left is refused with
            :class:`~torchzarr.errors.NodeNotFoundError`).
        storage_options: options for URL stores.
        threads: reads at once (default ``tz.config.threads``).
        verify_chunks: raise :class:`~torchzarr.errors.ChunkDecodeError` when a tensor
            saved with all its chunks lacks one (False: read it as zeros, for tensors
            edited in place since by a tool that leaves out all-zero chunks), as
            ``load_checkpoint(..., verify_chunks=...)``. Checkpoints saved before the
            writer marked its tensors are not checked. A non-tensor value whose bytes
            fail to load is checked for a lost chunk whatever this says.

    Raises:
        InvalidArgumentError: ``version`` is not a version's name (``"v000001"``) or
            ``threads`` is below 1 (:class:`~torchzarr.errors.ArgumentTypeError` for the
            wrong type), checked here.

    Example:
        >>> import torch, torch.distributed.checkpoint as dcp
        >>> from torchzarr.checkpoint.dcp import ZarrStorageWriter
        >>> writer = ZarrStorageWriter("memory://dcp-doc-r")
        >>> _ = dcp.save({"w": torch.ones(3)}, storage_writer=writer, no_dist=True)
        >>> state = {"w": torch.zeros(3)}
        >>> dcp.load(state, storage_reader=ZarrStorageReader("memory://dcp-doc-r"), no_dist=True)
        >>> state["w"]
        tensor([1., 1., 1.])
    """

    def __init__(
        self,
        path: Any,
        *,
        weights_only: bool = True,
        version: str | None = None,
        storage_options: dict[str, Any] | None = None,
        threads: int | None = None,
        verify_chunks: bool = True,
    ) -> None:
        super().__init__()
        check_reader_options(version, threads)  # here, not in the first read
        self.path = path
        self.weights_only = weights_only
        self.version = version
        self.storage_options = storage_options
        self.threads = threads
        self.verify_chunks = verify_chunks
        self.load_id = uuid.uuid4().hex
        self._names: dict[str, str] = {}
        self._root: Any = None
        self._metadata: Metadata | None = None  # what this rank planned the load with
        self._planned: str | None = None  # the version that metadata is of (None: unknown)

    def reset(self, checkpoint_id: str | os.PathLike[str] | None = None) -> None:
        """Start a new load (from ``checkpoint_id`` when given)."""
        if checkpoint_id:
            self.path = checkpoint_id
        self._root = None
        self._planned = None
        self.load_id = uuid.uuid4().hex

    def _manifest(self) -> tuple[Store, dict[str, Any]]:
        st = commit.checkpoint_store(
            self.path, "r", storage_options=self.storage_options, fsync=False
        )
        manifest = commit.read_manifest(st)
        if manifest is None:
            refuse_filesystem_checkpoint(st)
            missing = NodeNotFoundError(f"no committed checkpoint in {st!r}")
            refuse_private_store(st, missing)
            raise missing
        if manifest.get("kind") != KIND or "dcp" not in manifest:
            raise MetadataError(
                f"{st!r} holds a torchzarr checkpoint, not a torch.distributed.checkpoint one: "
                "load it with torchzarr.load_checkpoint"
            )
        return st, manifest

    # No **kwargs: torch retries a failed read as read_metadata(rank=...) only for a
    # reader whose signature has them, then leaves that rank out of the load's
    # collectives; a checkpoint here has one metadata for all ranks, so the first
    # read's error is the one every rank raises.
    def read_metadata(self) -> Metadata:
        """The DCP metadata: the manifest's JSON for the committed version, the version's
        own copy for an older one (``version=``). A version pruned between the manifest's
        read and its opening (a save committed meanwhile) is followed to the new one.

        ``dcp.load`` hands its error on as text: a ``CheckpointException`` whose
        ``failures`` map each rank to an ``AssertionError`` reading ``metadata is None;
        global metadata read failed: <this error>``.

        Raises:
            NodeNotFoundError: no committed checkpoint.
            MetadataError: not a DCP checkpoint (torch's ``FileSystemWriter`` output: the
                message says to use ``FileSystemReader``), or its metadata is malformed.
        """
        for attempt in range(_OPEN_ATTEMPTS):
            st, manifest = self._manifest()
            try:
                self._root = self._open_version(st, manifest)
                break
            except CheckpointConflictError:  # pruned since the manifest was read
                if attempt == _OPEN_ATTEMPTS - 1:
                    raise
        doc, source = manifest["dcp"], _in_manifest(st)
        if self.version is not None and self.version != manifest["version"]:
            doc, source = _own_metadata(self._root, st, self.version, manifest)
        metadata = metadata_from_json(doc, source=source)
        self._planned = self._root.path
        if metadata.storage_meta is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata

    def _open_version(self, st: Store, manifest: dict[str, Any]) -> Any:
        version = self.version or str(manifest["version"])
        try:
            root = open_group(st, mode="r", path=version)
        except GroupNotFoundError:
            latest = None if self.version else commit.read_manifest(st)
            if latest is not None and latest["version"] != version:  # pruned since read
                raise CheckpointConflictError(pruned_while_loading(st, version)) from None
            raise
        if self.version is not None:
            refuse_uncommitted(st, self.version, manifest)  # a killed save's: never read
        return root

    def set_up_storage_reader(
        self, metadata: Metadata, is_coordinator: bool, *args: Any, **kwargs: Any
    ) -> None:
        """Keep the key -> array map of the metadata."""
        names = metadata.storage_data
        if not isinstance(names, dict) or not all(isinstance(n, str) for n in names.values()):
            raise MetadataError(
                f"DCP metadata of {self.path!r} holds no torchzarr storage map (key -> array "
                f"name): {names!r:.200}"
            )
        self._names = dict(metadata.storage_data)
        self._metadata = metadata
        if self._root is None:  # metadata read on another rank and broadcast
            st, manifest = self._manifest()
            self._root = self._open_version(st, manifest)
            self._planned = None  # which version it describes is not known here

    def prepare_local_plan(self, plan: LoadPlan) -> LoadPlan:
        """The plan, with the version this rank opened (every box of every array is
        readable by every rank: nothing else to add)."""
        return replace(plan, storage_data={"version": self._root.path})

    def prepare_global_plan(self, plans: list[LoadPlan]) -> list[LoadPlan]:
        """Coordinator: one version for every rank, the newest the ranks opened (they
        differ when a save committed while the ranks read the manifest)."""
        opened = [p.storage_data.get("version") for p in plans if isinstance(p.storage_data, dict)]
        versions = [str(v) for v in opened if v]
        if not versions:
            return plans
        newest = max(versions, key=commit.version_number)
        return [replace(plan, storage_data={"version": newest}) for plan in plans]

    def _use_version(self, plan: LoadPlan) -> None:
        """Read the version the coordinator picked for every rank (see
        :meth:`prepare_global_plan`), when this rank planned with another one.

        Raises:
            CheckpointConflictError: that version was pruned since, or a key of ``plan``
                has another shape, dtype or array there than this rank planned with.
        """
        picked = plan.storage_data.get("version") if isinstance(plan.storage_data, dict) else None
        if not picked or (picked == self._planned and picked == self._root.path):
            return
        st = self._root.store
        try:
            root = open_group(st, mode="r", path=str(picked))
        except GroupNotFoundError:
            raise CheckpointConflictError(pruned_while_loading(st, str(picked))) from None
        doc, source = _kept_metadata(root), _in_version(st, str(picked))
        if doc is None:  # saved before versions kept their own: only the committed one has it
            manifest = commit.read_manifest(st)
            if manifest is None or manifest.get("version") != picked or "dcp" not in manifest:
                raise CheckpointConflictError(
                    f"the ranks of this load opened different versions of the checkpoint in "
                    f"{st!r} (a save committed meanwhile), and {picked} keeps no DCP metadata "
                    "of its own to check this rank's plan against: load again"
                )
            doc, source = manifest["dcp"], _in_manifest(st)
        fqns = sorted({item.storage_index.fqn for item in plan.items})
        problem = _differs(self._metadata, metadata_from_json(doc, source=source), fqns)
        if problem is not None:
            raise CheckpointConflictError(
                f"the ranks of this load opened different versions of the checkpoint in "
                f"{st!r}: a save committed while they read it, and this rank planned with "
                f"{self._planned or self._root.path} but {picked}, which the others load, "
                f"differs ({problem}): load again"
            )
        self._root, self._planned = root, str(picked)

    def _array(self, fqn: str) -> Array:
        name = self._names.get(fqn)
        if name is None:
            raise NodeNotFoundError(f"key {fqn!r} is not stored in this checkpoint")
        arr = self._root[name]
        if not isinstance(arr, Array):
            raise MetadataError(f"checkpoint member {name!r} for {fqn!r} is not an array")
        return arr

    def _read_bytes(self, item: ReadItem) -> bytes:
        arr = self._array(item.storage_index.fqn)
        return arr[...].numpy().tobytes() if arr.shape[0] else b""

    def _checked_bytes(self, item: ReadItem, raw: bytes) -> io.BytesIO:
        if self.weights_only:
            try:
                torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
            except Exception as err:
                lines = str(err).splitlines()
                why = next(
                    (x for x in lines if "Unsupported global" in x), lines[0] if lines else ""
                )
                raise MetadataError(
                    f"checkpoint value {item.storage_index.fqn!r} needs the full unpickler "
                    f"({why.strip()}); pass ZarrStorageReader(..., weights_only=False) if you "
                    "trust this checkpoint"
                ) from err
        return io.BytesIO(raw)

    def _read_tensor(self, item: ReadItem, target: torch.Tensor) -> None:
        fqn = item.storage_index.fqn
        arr = self._array(fqn)
        entry = None if self._metadata is None else self._metadata.state_dict_metadata.get(fqn)
        if isinstance(entry, TensorStorageMetadata):
            refuse_resized(fqn, arr.shape, entry.size, self.path)
        base = item.storage_index.offset or torch.Size([0] * arr.ndim)
        region = box_region(
            [b + o for b, o in zip(base, item.storage_offsets, strict=True)], item.lengths
        )
        out = target.view(tuple(item.lengths)) if target.is_contiguous() else target
        if target.device.type == "cpu" and target.is_contiguous() and target.dtype == arr.dtype:
            arr.read(region, out=out)
        else:
            target.copy_(arr[region].view(target.shape))

    def _lost_chunk(self, items: list[ReadItem]) -> ChunkDecodeError | None:
        """The error for a chunk (or array) lost from a tensor or value of ``items`` saved
        with every chunk stored (see
        :func:`~torchzarr.checkpoint.chunk_check.check_chunks_stored`), or None."""
        fqns = sorted({item.storage_index.fqn for item in items})
        arrays = {self._names[fqn]: self._array(fqn) for fqn in fqns}
        try:
            check_chunks_stored(self._root, arrays, {self._names[fqn]: (fqn,) for fqn in fqns})
        except ChunkDecodeError as err:
            return err
        return None

    def _lost_value(self, item: ReadItem) -> ChunkDecodeError | None:
        """The error for the lost chunk of a non-empty value that failed to load, or None:
        checked after the failure, for checkpoints saved before values were marked and
        stores that cannot list keys (HTTP)."""
        arr = self._array(item.storage_index.fqn)
        key = f"{arr.path}/{arr.metadata.chunk_key((0,))}"
        if not arr.shape[0] or arr.store.exists(key):
            return None
        return ChunkDecodeError(
            f"checkpoint value {item.storage_index.fqn!r} (array {arr.path}) lacks its chunk "
            f"{key!r}: the checkpoint in {arr.store!r} is damaged (a file lost in a copy or "
            "on disk)"
        )

    def _load_value(self, planner: LoadPlanner, item: ReadItem, raw: bytes) -> None:
        try:
            planner.load_bytes(item, self._checked_bytes(item, raw))
        except Exception as err:
            # checked whatever verify_chunks says: bytes that fail to unpickle because
            # their chunk is gone are a damaged checkpoint, not a value needing pickle
            lost = self._lost_value(item)
            if lost is not None:
                raise lost from err
            raise

    def read_data(self, plan: LoadPlan, planner: LoadPlanner) -> Future[None]:
        """Read every item of ``plan`` straight into the planner's tensors.

        Raises:
            CheckpointConflictError: a newer save pruned the version while it was read
                (some of what was read may be fill values for deleted chunks), or the
                ranks opened different versions whose keys differ.
            ChunkDecodeError: a chunk of a tensor saved with every chunk stored, or of a
                non-tensor value, is missing (the message names the key and the chunk);
                see ``verify_chunks``.
        """
        self._use_version(plan)
        tensor_items = [i for i in plan.items if i.type == LoadItemType.TENSOR]
        values = [(i, self._read_bytes(i)) for i in plan.items if i.type == LoadItemType.BYTE_IO]
        targets = [planner.resolve_tensor(item).detach() for item in tensor_items]
        pairs = list(zip(tensor_items, targets, strict=True))
        workers = max(1, min(self.threads or config.threads, len(pairs)))
        if workers == 1:
            for item, target in pairs:
                self._read_tensor(item, target)
        else:
            with ThreadPoolExecutor(workers, thread_name_prefix="torchzarr-dcp-load") as pool:
                list(pool.map(lambda p: self._read_tensor(*p), pairs))
        damaged = self._lost_chunk(plan.items) if self.verify_chunks else None
        # A missing chunk reads as the fill value: make sure none went missing because a
        # newer save pruned this version meanwhile (its zarr.json is deleted first).
        if not prune.version_intact(self._root.store, self._root.path):
            raise CheckpointConflictError(pruned_while_loading(self._root.store, self._root.path))
        if damaged is not None:
            raise damaged
        for item, raw in values:
            self._load_value(planner, item, raw)
        for item, target in pairs:
            planner.commit_tensor(item, target)
        future: Future[None] = Future()
        future.set_result(None)
        return future

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: str | os.PathLike[str]) -> bool:
        """True for paths and URLs (any store torchzarr can open)."""
        return isinstance(checkpoint_id, (str, os.PathLike))


def _in_manifest(st: Store) -> str:
    """Where the committed version's DCP metadata is, for error messages."""
    return f"the DCP metadata in the manifest (root zarr.json) of the checkpoint in {st!r}"


def _in_version(st: Store, version: str) -> str:
    """Where a version's own copy of its DCP metadata is, for error messages."""
    return f"the DCP metadata of version {version!r} ({version}/zarr.json) in {st!r}"


def _own_metadata(root: Any, st: Store, version: str, manifest: dict[str, Any]) -> tuple[Any, str]:
    """The DCP metadata a version keeps of its own, and where it is. A version saved
    before it was kept there reads through the committed version's (the manifest's)
    where every key of that has an array of its shape in the version, as it did then;
    else it is refused. (A version no manifest lists is refused before: see
    :func:`~torchzarr.checkpoint.committed.refuse_uncommitted`.)"""
    own = _kept_metadata(root)
    if own is not None:
        return own, _in_version(st, version)
    if _fits(root, metadata_from_json(manifest["dcp"], source=_in_manifest(st))):
        return manifest["dcp"], _in_manifest(st)
    raise MetadataError(
        f"version {version!r} of {st!r} keeps no DCP metadata of its own (it was saved "
        "before torchzarr kept it per version) and its arrays differ from the committed "
        f"version {manifest['version']!r}'s: only that one can be loaded with DCP"
    )


def _kept_metadata(root: Any) -> Any:
    """The DCP metadata document the version group ``root`` keeps of its own, or None (a
    version saved before torchzarr kept it per version)."""
    own = root.attrs.get(DCP_KEY_ATTRIBUTE)
    return (
        own["dcp"] if isinstance(own, dict) and own.get("kind") == KIND and "dcp" in own else None
    )


def _fits(root: Any, metadata: Metadata) -> bool:
    """Whether ``root`` (a version's group) holds, for every key of ``metadata``, an array
    where its storage map says, of the shape it says."""
    names = metadata.storage_data if isinstance(metadata.storage_data, dict) else {}
    for fqn, entry in metadata.state_dict_metadata.items():
        name = names.get(fqn)
        if not isinstance(name, str) or name not in root:
            return False
        if isinstance(entry, TensorStorageMetadata) and root[name].shape != tuple(entry.size):
            return False
    return True


def _differs(planned: Metadata | None, theirs: Metadata, fqns: list[str]) -> str | None:
    """How the keys ``fqns`` differ in ``theirs`` from ``planned`` (kind, shape, dtype,
    array name), or None when a plan made with either reads the same arrays. The boxes
    saved may differ: any box of an array is read the same way."""
    if planned is None:
        return "no metadata planned with"
    if set(planned.state_dict_metadata) != set(theirs.state_dict_metadata):
        # a partial load (allow_partial_load, keys=) would miss keys the others load
        new = sorted(set(theirs.state_dict_metadata) - set(planned.state_dict_metadata))
        gone = sorted(set(planned.state_dict_metadata) - set(theirs.state_dict_metadata))
        return f"its keys differ (added {new[:3]}, removed {gone[:3]})"
    mine_names = planned.storage_data if isinstance(planned.storage_data, dict) else {}
    their_names = theirs.storage_data if isinstance(theirs.storage_data, dict) else {}
    for fqn in fqns:
        mine = planned.state_dict_metadata.get(fqn)
        their = theirs.state_dict_metadata.get(fqn)
        if their is None or mine_names.get(fqn) != their_names.get(fqn):
            return f"key {fqn!r} is not stored there as it was"
        if isinstance(mine, TensorStorageMetadata) != isinstance(their, TensorStorageMetadata):
            return f"key {fqn!r} is a tensor in one and a value in the other"
        if isinstance(mine, TensorStorageMetadata) and isinstance(their, TensorStorageMetadata):
            was = (tuple(mine.size), mine.properties.dtype)
            now = (tuple(their.size), their.properties.dtype)
            if was != now:
                return f"key {fqn!r} is {now[1]} of shape {now[0]}, not {was[1]} of {was[0]}"
    return None
