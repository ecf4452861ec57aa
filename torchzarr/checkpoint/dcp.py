"""``torch.distributed.checkpoint`` storage as Zarr: one array per tensor, JSON metadata, atomic commit.

Layout (plain Zarr v3, the versioned layout of :mod:`torchzarr.checkpoint.commit`)::

    zarr.json          root group; attribute "torchzarr_checkpoint" is the manifest: the
                       committed version and the DCP metadata as JSON. Written last by the
                       coordinator's ``finish()``: the commit.
    v000003/<key>      one array per tensor key, in its global shape; chunk boundaries fall on
                       the ranks' shard boxes, so every chunk has exactly one writer
    v000003/<key>      a non-tensor value: the bytes DCP's planner serialised, as uint8

The coordinator creates the arrays in ``prepare_global_plan`` (it sees every rank's boxes);
each rank then writes only its own boxes. Loading reads any box of any array, so a
checkpoint saved by N ranks loads on M through DCP's planner.
"""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import torch
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta
from torch.distributed.checkpoint.planner import (
    LoadItemType,
    LoadPlan,
    LoadPlanner,
    ReadItem,
    SavePlan,
    SavePlanner,
    WriteItem,
    WriteItemType,
)
from torch.distributed.checkpoint.storage import StorageReader, StorageWriter, WriteResult
from torch.futures import Future

from torchzarr.checkpoint import commit
from torchzarr.checkpoint.dcp_checks import (
    pruned_while_loading,
    refuse_private_store,
    refuse_uncoordinated_save,
)
from torchzarr.checkpoint.dcp_metadata import aligned_chunks, metadata_from_json, metadata_to_json
from torchzarr.checkpoint.format import DCP_KEY_ATTRIBUTE, node_name, to_storable
from torchzarr.checkpoint.rawio import sync_local, write_rows
from torchzarr.checkpoint.save import DEFAULT_CHUNK_BYTES
from torchzarr.config import config
from torchzarr.core.api import consolidate_metadata, create_array, create_group, open_group
from torchzarr.core.array import Array
from torchzarr.errors import (
    CheckpointConflictError,
    GroupNotFoundError,
    MetadataError,
    NodeNotFoundError,
)
from torchzarr.storage import LocalStore, Store

__all__ = ["KIND", "ZarrStorageReader", "ZarrStorageWriter", "aligned_chunks"]

#: ``kind`` field of the manifest of a DCP checkpoint.
KIND = "torch.distributed.checkpoint"
#: The DCP format version written (that of torch's FileSystemWriter: same planner layout).
DCP_VERSION = "1.0.0"
#: Array attribute naming the DCP key an array holds.
KEY_ATTRIBUTE = DCP_KEY_ATTRIBUTE


def _stop(region: tuple[slice, ...]) -> int:
    return int(region[0].stop) if region else 1


def _region(offsets: Sequence[int], sizes: Sequence[int]) -> tuple[slice, ...]:
    return tuple(slice(o, o + s) for o, s in zip(offsets, sizes, strict=True))


class ZarrStorageWriter(StorageWriter):
    """DCP ``StorageWriter`` saving a checkpoint as a Zarr group (see the module docstring).

    Args:
        path: a path, URL (``memory://``, ``s3://``, ...) or Store; ``checkpoint_id`` given
            to ``dcp.save`` replaces it.
        compressors: numcodecs codecs or a preset for the chunks (None: raw, the fastest).
        chunk_bytes: largest chunk; shard boxes bigger than this are split.
        fsync: flush local files before the commit.
        direct_io: write large local chunk files past the page cache (``O_DIRECT`` where
            the file system allows it), as ``save_checkpoint`` does.
        keep: committed versions kept in the store (1: only the new one).
        storage_options: options for URL stores.
        threads: tensors written at once per rank (default ``tz.config.threads``; 1 for
            uncompressed local chunks, which one stream writes fastest).

    Example:
        >>> import torch, torch.distributed.checkpoint as dcp
        >>> writer = ZarrStorageWriter("memory://dcp-doc")
        >>> _ = dcp.save({"w": torch.ones(3)}, storage_writer=writer, no_dist=True)
    """

    def __init__(
        self,
        path: Any,
        *,
        compressors: Any = None,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        fsync: bool = True,
        direct_io: bool = True,
        keep: int = 1,
        storage_options: dict[str, Any] | None = None,
        threads: int | None = None,
    ) -> None:
        super().__init__()
        self.path = path
        self.compressors = compressors
        self.chunk_bytes = chunk_bytes
        self.fsync = fsync
        self.direct_io = direct_io
        self.keep = keep
        self.storage_options = storage_options
        self.threads = threads
        self.save_id = uuid.uuid4().hex
        self.is_coordinator = False
        self._store: Store | None = None
        self._version: str | None = None

    def _st(self) -> Store:
        if self._store is None:
            # Written without a flush per file: sync_local flushes each rank's files at once.
            self._store = commit.checkpoint_store(
                self.path,
                "a",
                storage_options=self.storage_options,
                fsync=False,
                direct_io=self.direct_io,
            )
        return self._store

    def reset(self, checkpoint_id: str | os.PathLike[str] | None = None) -> None:
        """Start a new save (to ``checkpoint_id`` when given)."""
        if checkpoint_id:
            self.path = checkpoint_id
        self._store = None
        self._version = None
        self.save_id = uuid.uuid4().hex

    def set_up_storage_writer(self, is_coordinator: bool, *args: Any, **kwargs: Any) -> None:
        """Remember this rank's role; refuse a save of several ranks without collectives.

        Raises:
            InvalidArgumentError: ``dcp.save(..., use_collectives=False)`` in a process
                group of more than one rank.
        """
        refuse_uncoordinated_save(self.path, kwargs.get("use_collectives", True))
        self.is_coordinator = is_coordinator

    def prepare_local_plan(self, plan: SavePlan) -> SavePlan:
        """Nothing to add locally: the layout needs every rank's boxes."""
        return plan

    def prepare_global_plan(self, plans: list[SavePlan]) -> list[SavePlan]:
        """Coordinator: pick the version, lay out and create every array, tell each rank."""
        st = self._st()
        version = self._version = commit.reserve_version(st)
        tensors: dict[str, list[WriteItem]] = {}
        names: dict[str, str] = {}
        used: set[str] = set()
        for item in sorted((i for p in plans for i in p.items), key=lambda i: i.index.fqn):
            fqn = item.index.fqn
            if fqn not in names:
                names[fqn] = node_name(fqn, used)
            if item.type != WriteItemType.BYTE_IO:
                tensors.setdefault(fqn, []).append(item)
        try:  # once its group is there, no other save takes the name
            root = create_group(st, path=version, attributes={KEY_ATTRIBUTE: {"kind": KIND}})
        finally:
            commit.release_version(st, version)
        specs: dict[str, Any] = {}
        for fqn, items in tensors.items():
            data = items[0].tensor_data
            if data is None:
                raise MetadataError(f"DCP write item for {fqn!r} has no tensor_data")
            dtype = data.properties.dtype
            shape = tuple(data.size)
            boxes = [(i.tensor_data.chunk.offsets, i.tensor_data.chunk.sizes) for i in items]  # type: ignore[union-attr]
            itemsize = torch.empty((), dtype=dtype).element_size()
            specs[names[fqn]] = {
                "shape": shape,
                "dtype": dtype,
                "chunks": aligned_chunks(shape, boxes, itemsize, self.chunk_bytes),
                "compressors": self.compressors,
                "fill_value": None,
                # c.0.1 files, not c/0/1: no directory per row of chunks to create and delete
                "chunk_key_encoding": {"name": "default", "configuration": {"separator": "."}},
                "attributes": {KEY_ATTRIBUTE: {"key": fqn, "kind": "tensor"}},
            }
        if specs:
            root.create_hierarchy(specs)
        return [
            replace(
                plan,
                storage_data={
                    "version": version,
                    "names": {i.index.fqn: names[i.index.fqn] for i in plan.items},
                },
            )
            for plan in plans
        ]

    def _write_item(self, root: Any, name: str, item: WriteItem, data: Any) -> WriteResult:
        if item.type == WriteItemType.BYTE_IO:
            raw = data.getvalue() if isinstance(data, io.BytesIO) else bytes(data)
            arr = create_array(
                root.store,
                path=f"{root.path}/{name}",
                shape=(len(raw),),
                dtype=torch.uint8,
                chunks=(max(1, len(raw)),),
                compressors=self.compressors,
                fill_value=None,
                attributes={KEY_ATTRIBUTE: {"key": item.index.fqn, "kind": "bytes"}},
                overwrite=True,
            )
            if raw:
                arr[...] = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
            return WriteResult(index=item.index, size_in_bytes=len(raw), storage_data=name)
        chunk = item.tensor_data.chunk  # type: ignore[union-attr]
        t = to_storable(data)
        arr = root[name]
        region = _region(chunk.offsets, chunk.sizes)
        whole_rows = all(r == slice(0, n) for r, n in zip(region[1:], arr.shape[1:], strict=True))
        start = region[0].start if region else 0
        if t.numel() and not (whole_rows and write_rows(arr, start, _stop(region), t)):
            arr[region] = t.reshape(tuple(chunk.sizes))
        return WriteResult(
            index=item.index, size_in_bytes=t.numel() * t.element_size(), storage_data=name
        )

    def write_data(self, plan: SavePlan, planner: SavePlanner) -> Future[list[WriteResult]]:
        """Write this rank's boxes and bytes items (tensors resolved one at a time)."""
        info = plan.storage_data
        st = self._st()
        try:
            root = open_group(st, mode="r+", path=info["version"], use_consolidated=False)
        except GroupNotFoundError as err:
            refuse_private_store(st, err)
            raise
        names = info["names"]

        def one(item: WriteItem) -> WriteResult:
            return self._write_item(root, names[item.index.fqn], item, planner.resolve_data(item))

        # Raw local chunks: one writer by default, as save_checkpoint (one disk stream).
        raw_local = self.compressors is None and isinstance(st, LocalStore)
        workers = max(1, min(self.threads or (1 if raw_local else config.threads), len(plan.items)))
        if workers == 1:
            results = [one(item) for item in plan.items]
        else:
            with ThreadPoolExecutor(workers, thread_name_prefix="torchzarr-dcp-save") as pool:
                results = list(pool.map(one, plan.items))
        if self.fsync:
            sync_local(st, info["version"])
        future: Future[list[WriteResult]] = Future()
        future.set_result(results)
        return future

    def finish(self, metadata: Metadata, results: list[list[WriteResult]]) -> None:
        """Coordinator: consolidate the version, then commit it with the metadata as JSON."""
        metadata.version = DCP_VERSION
        metadata.storage_data = {r.index.fqn: r.storage_data for rs in results for r in rs}
        metadata.storage_meta = self.storage_meta()
        doc = metadata_to_json(metadata)
        st = self._st()
        version = self._version
        if version is None:
            raise MetadataError("finish() called before prepare_global_plan() on the coordinator")
        consolidate_metadata(st, path=version)
        if self.fsync:
            sync_local(st, version)  # all the manifest names is on disk before it is written
        durable = commit.checkpoint_store(
            st, "a", storage_options=self.storage_options, fsync=self.fsync
        )
        info = {"kind": KIND, "torch_version": torch.__version__, "dcp": doc}
        try:
            commit.commit_version(durable, version, info)
        except CheckpointConflictError:
            commit.delete_version(st, version)
            raise
        commit.prune_later(st, self.keep)  # after the commit: crash safety
        commit.close_archive(st)  # a zip's directory on disk: the commit survives a crash

    def storage_meta(self) -> StorageMeta | None:
        """The checkpoint id and this save's id."""
        path = self.path if isinstance(self.path, (str, os.PathLike)) else repr(self.path)
        return StorageMeta(checkpoint_id=os.fspath(path), save_id=self.save_id)

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: str | os.PathLike[str]) -> bool:
        """True for paths and URLs (any store torchzarr can open)."""
        return isinstance(checkpoint_id, (str, os.PathLike))


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
        version: a version to read instead of the committed one (must still exist).
        storage_options: options for URL stores.
        threads: reads at once (default ``tz.config.threads``).

    Example:
        >>> import torch, torch.distributed.checkpoint as dcp
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
    ) -> None:
        super().__init__()
        self.path = path
        self.weights_only = weights_only
        self.version = version
        self.storage_options = storage_options
        self.threads = threads
        self.load_id = uuid.uuid4().hex
        self._names: dict[str, str] = {}
        self._root: Any = None

    def reset(self, checkpoint_id: str | os.PathLike[str] | None = None) -> None:
        """Start a new load (from ``checkpoint_id`` when given)."""
        if checkpoint_id:
            self.path = checkpoint_id
        self._root = None
        self.load_id = uuid.uuid4().hex

    def _manifest(self) -> tuple[Store, dict[str, Any]]:
        st = commit.checkpoint_store(
            self.path, "r", storage_options=self.storage_options, fsync=False
        )
        manifest = commit.read_manifest(st)
        if manifest is None:
            missing = NodeNotFoundError(f"no committed checkpoint in {st!r}")
            refuse_private_store(st, missing)
            raise missing
        if manifest.get("kind") != KIND or "dcp" not in manifest:
            raise MetadataError(
                f"{st!r} holds a torchzarr checkpoint, not a torch.distributed.checkpoint one: "
                "load it with torchzarr.load_checkpoint"
            )
        return st, manifest

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        """The DCP metadata, from the manifest's JSON."""
        st, manifest = self._manifest()
        metadata = metadata_from_json(manifest["dcp"])
        if metadata.storage_meta is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        self._root = self._open_version(st, manifest)
        return metadata

    def _open_version(self, st: Store, manifest: dict[str, Any]) -> Any:
        version = self.version or str(manifest["version"])
        try:
            return open_group(st, mode="r", path=version)
        except GroupNotFoundError:
            latest = None if self.version else commit.read_manifest(st)
            if latest is not None and latest["version"] != version:  # pruned since read
                raise CheckpointConflictError(pruned_while_loading(st, version)) from None
            raise

    def set_up_storage_reader(
        self, metadata: Metadata, is_coordinator: bool, *args: Any, **kwargs: Any
    ) -> None:
        """Keep the key -> array map of the metadata."""
        if not isinstance(metadata.storage_data, dict):
            raise MetadataError("DCP metadata holds no torchzarr storage map")
        self._names = dict(metadata.storage_data)
        if self._root is None:  # metadata read on another rank and broadcast
            st, manifest = self._manifest()
            self._root = self._open_version(st, manifest)

    def prepare_local_plan(self, plan: LoadPlan) -> LoadPlan:
        """Nothing to add: every box of every array is readable by every rank."""
        return plan

    def prepare_global_plan(self, plans: list[LoadPlan]) -> list[LoadPlan]:
        """Nothing to add."""
        return plans

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
        arr = self._array(item.storage_index.fqn)
        base = item.storage_index.offset or torch.Size([0] * arr.ndim)
        region = _region(
            [b + o for b, o in zip(base, item.storage_offsets, strict=True)], item.lengths
        )
        out = target.view(tuple(item.lengths)) if target.is_contiguous() else target
        if target.device.type == "cpu" and target.is_contiguous() and target.dtype == arr.dtype:
            arr.read(region, out=out)
        else:
            target.copy_(arr[region].view(target.shape))

    def read_data(self, plan: LoadPlan, planner: LoadPlanner) -> Future[None]:
        """Read every item of ``plan`` straight into the planner's tensors.

        Raises:
            CheckpointConflictError: a newer save pruned the version while it was read
                (some of what was read may be fill values for deleted chunks).
        """
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
        # A missing chunk reads as the fill value: make sure none went missing because a
        # newer save pruned this version meanwhile (its zarr.json is deleted first).
        if not commit.version_intact(self._root.store, self._root.path):
            raise CheckpointConflictError(pruned_while_loading(self._root.store, self._root.path))
        for item, raw in values:
            planner.load_bytes(item, self._checked_bytes(item, raw))
        for item, target in pairs:
            planner.commit_tensor(item, target)
        future: Future[None] = Future()
        future.set_result(None)
        return future

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: str | os.PathLike[str]) -> bool:
        """True for paths and URLs (any store torchzarr can open)."""
        return isinstance(checkpoint_id, (str, os.PathLike))
