"""``torch.distributed.checkpoint`` storage as Zarr: one array per tensor, JSON metadata, atomic commit.

Layout (plain Zarr v3, the versioned layout of :mod:`torchzarr.checkpoint.commit`)::

    zarr.json          root group; attribute "torchzarr_checkpoint" is the manifest: the
                       committed version and the DCP metadata as JSON. Written last by the
                       coordinator's ``finish()``: the commit.
    v000003/<key>      one array per tensor key, in its global shape; chunk boundaries fall on
                       the ranks' shard boxes, so every chunk has exactly one writer
    v000003/<key>      a non-tensor value: the bytes DCP's planner serialised, as uint8

The coordinator creates the arrays in ``prepare_global_plan`` (it sees every rank's boxes;
a zip's, which one process writes, at the start of its ``write_data``); each rank then
writes only its own boxes, every chunk of them, all-zero ones too: a tensor whose boxes
tile it is marked ``"every_chunk"`` in its key attribute, as is the one chunk of a
non-tensor value, so a load finds a chunk lost later (as ``load_checkpoint`` does).
Each rank checks the dtype of its data against an array before its first write to it
(DCP's plan caching can reuse plans made for another dtype): see
:mod:`torchzarr.checkpoint.dcp_dtypes`; values are never cast.
Loading reads any box of any array, so a checkpoint saved by N ranks loads on M through
DCP's planner. A save to a zip that raises is undone (see :mod:`torchzarr.checkpoint.undo`).
"""

from __future__ import annotations

import io
import os
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import torch
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta
from torch.distributed.checkpoint.planner import SavePlan, SavePlanner, WriteItem, WriteItemType
from torch.distributed.checkpoint.storage import StorageWriter, WriteResult
from torch.futures import Future

from torchzarr.arguments import whole_number
from torchzarr.checkpoint import commit, prune
from torchzarr.checkpoint.dcp_checks import (
    fill_cached_plans,
    overtaken,
    refuse_private_store,
    refuse_shared_zip,
    refuse_stale_cached_plans,
    refuse_uncoordinated_save,
)
from torchzarr.checkpoint.dcp_dtypes import (
    KeyArrays,
    shared_keys,
    stored_metadata,
    tensor_spec,
)
from torchzarr.checkpoint.dcp_metadata import KIND, aligned_chunks, box_region, metadata_to_json
from torchzarr.checkpoint.dcp_reader import ZarrStorageReader
from torchzarr.checkpoint.dcp_staging import ResolvedViewsStager
from torchzarr.checkpoint.format import DCP_KEY_ATTRIBUTE, EVERY_CHUNK, node_name, to_storable
from torchzarr.checkpoint.rawio import sync_local, write_rows
from torchzarr.checkpoint.save import DEFAULT_CHUNK_BYTES, check_save_options, store_every_chunk
from torchzarr.checkpoint.undo import ZipSavepoint, undo_failed_save, zip_savepoint, zip_under
from torchzarr.config import config
from torchzarr.core.api import consolidate_metadata, create_array, create_group, open_group
from torchzarr.errors import GroupNotFoundError, MetadataError
from torchzarr.storage import LocalStore, Store

__all__ = ["KIND", "ZarrStorageReader", "ZarrStorageWriter", "aligned_chunks"]

#: The DCP format version written (that of torch's FileSystemWriter: same planner layout).
DCP_VERSION = "1.0.0"
#: Array attribute naming the DCP key an array holds.
KEY_ATTRIBUTE = DCP_KEY_ATTRIBUTE


def _stop(region: tuple[slice, ...]) -> int:
    return int(region[0].stop) if region else 1


class ZarrStorageWriter(StorageWriter, ResolvedViewsStager):
    """DCP ``StorageWriter`` saving a checkpoint as a Zarr group (see the module docstring).

    It is its own ``AsyncStager`` (:class:`~torchzarr.checkpoint.dcp_staging.ResolvedViewsStager`):
    ``dcp.async_save`` copies the state dict as it does for other writers, conjugate and
    negative views resolved first, so they are saved as they read.

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

    Raises:
        InvalidArgumentError: ``keep``, ``chunk_bytes`` or ``threads`` below 1
            (:class:`~torchzarr.errors.ArgumentTypeError` when not an int), checked here
            as ``save_checkpoint`` checks them.

    Example:
        >>> import torch, torch.distributed.checkpoint as dcp
        >>> writer = ZarrStorageWriter("memory://dcp-doc")
        >>> _ = dcp.save({"w": torch.ones(3)}, storage_writer=writer, no_dist=True)
    """

    # The full plans of the last save planned in this process (see fill_cached_plans).
    _last_plans: list[SavePlan] | None = None
    _last_plans_lock = threading.Lock()

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
        StorageWriter.__init__(self)
        # as save_checkpoint checks them: in the caller, not after the commit (a bad keep
        # would fail in the background prune, and the store fill up)
        check_save_options({"keep": keep, "chunk_bytes": chunk_bytes, "compressors": compressors})
        if threads is not None:
            whole_number("threads", threads, 1)
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
        self._savepoint: ZipSavepoint | None = None  # a zip as it was before this save
        self._pending: dict[str, Any] | None = None  # a zip's arrays, created in write_data
        self._reused: list[SavePlan] | None = None  # plans of an earlier save, written again
        self._dtypes: dict[str, torch.dtype] = {}  # each tensor key's array's, as laid out

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
        self._drop_pending()
        self._store = None
        self._version = None
        self._savepoint = None
        self._reused = None
        self.save_id = uuid.uuid4().hex

    def _drop_pending(self) -> None:
        """Give up the version of a zip save that never reached ``write_data`` (DCP failed
        between; nothing was written)."""
        if self._pending is not None and self._version is not None and self._store is not None:
            commit.release_version(self._store, self._version)
        self._pending = None

    def set_up_storage_writer(self, is_coordinator: bool, *args: Any, **kwargs: Any) -> None:
        """Remember this rank's role; refuse a save of several ranks without collectives.

        Raises:
            InvalidArgumentError: ``dcp.save(..., use_collectives=False)`` in a process
                group of more than one rank.
        """
        refuse_uncoordinated_save(self.path, kwargs.get("use_collectives", True))
        self._drop_pending()
        self.is_coordinator = is_coordinator

    def prepare_local_plan(self, plan: SavePlan) -> SavePlan:
        """Nothing to add locally: the layout needs every rank's boxes."""
        return plan

    def _layout(self, plans: list[SavePlan]) -> tuple[dict[str, str], dict[str, Any]]:
        """Each key's member name, and the array specs of the tensors (nothing written)."""
        tensors: dict[str, list[WriteItem]] = {}
        names: dict[str, str] = {}
        used: set[str] = set()
        for item in sorted((i for p in plans for i in p.items), key=lambda i: i.index.fqn):
            fqn = item.index.fqn
            if fqn not in names:
                names[fqn] = node_name(fqn, used)
            if item.type != WriteItemType.BYTE_IO:
                tensors.setdefault(fqn, []).append(item)
        specs = {names[fqn]: self._spec(fqn, items) for fqn, items in tensors.items()}
        self._dtypes = {fqn: specs[names[fqn]]["dtype"] for fqn in tensors}
        return names, specs

    def _spec(self, fqn: str, items: list[WriteItem], dtype: Any = None) -> dict[str, Any]:
        """The array spec of tensor key ``fqn`` (see :func:`tensor_spec`), for data of
        ``dtype`` (None: the dtype its items say)."""
        return tensor_spec(self.path, fqn, items, dtype, self.chunk_bytes, self.compressors)

    def prepare_global_plan(self, plans: list[SavePlan]) -> list[SavePlan]:
        """Coordinator: pick the version, lay out and create every array, tell each rank.

        Under DCP's plan caching the plans that did not change since the last save arrive
        empty: they are filled in from that save's (see
        :func:`~torchzarr.checkpoint.dcp_checks.fill_cached_plans`), and every rank gets
        its full plan with this save's version, never the cached one naming an older
        version. A zip's arrays are created at the start of ``write_data`` instead (one
        process writes a zip), so a failure in DCP before it leaves the zip untouched.
        """
        st = self._st()
        is_zip = zip_under(st) is not None
        refuse_shared_zip(self.path, is_zip, len(plans))  # before anything is written
        cls = ZarrStorageWriter
        with cls._last_plans_lock:
            full = fill_cached_plans(self.path, plans, cls._last_plans)
            cls._last_plans = full  # as the planner's cache holds them now
        self._reused = None if all(plan.usable for plan in plans) else full
        names, specs = self._layout(full)
        shared = shared_keys(full)  # written by several ranks: never laid out again by one
        version = self._version = commit.reserve_version(st)
        if is_zip:
            self._pending = specs
        else:
            self._create_version(st, version, specs)
        return [
            replace(
                plan,
                storage_data={
                    "version": version,
                    "names": {i.index.fqn: names[i.index.fqn] for i in plan.items},
                    "shared": sorted({i.index.fqn for i in plan.items} & shared),
                },
                usable=True,
            )
            for plan in full
        ]

    def _create_version(self, st: Store, version: str, specs: dict[str, Any]) -> None:
        """Create the version's group and arrays (a zip's savepoint taken first)."""
        try:
            self._savepoint = zip_savepoint(st)  # before this save writes anything
            try:  # once its group is there, no other save takes the name
                root = create_group(st, path=version, attributes={KEY_ATTRIBUTE: {"kind": KIND}})
            finally:
                commit.release_version(st, version)
            if specs:
                root.create_hierarchy(specs)
        except BaseException as err:
            self._undo(err, committed=False)
            raise

    def _undo(self, err: BaseException, committed: bool) -> None:
        """Put a zip back as it was before this save, which raised ``err`` (see
        :func:`~torchzarr.checkpoint.undo.undo_failed_save`). Other stores keep the
        partial version: other ranks may still be writing to it."""
        savepoint, self._savepoint = self._savepoint, None
        if savepoint is not None and self._version is not None:
            undo_failed_save(self._st(), self._version, savepoint, committed, err)

    def _write_item(
        self, root: Any, name: str, item: WriteItem, data: Any, arrays: KeyArrays
    ) -> WriteResult:
        if item.type == WriteItemType.BYTE_IO:
            raw = data.getvalue() if isinstance(data, io.BytesIO) else bytes(data)
            key_info: dict[str, Any] = {"key": item.index.fqn, "kind": "bytes"}
            if raw:  # its one chunk is stored (all zeros too), so a load finds it lost
                key_info[EVERY_CHUNK] = [len(raw)]
            arr = create_array(
                root.store,
                path=f"{root.path}/{name}",
                shape=(len(raw),),
                dtype=torch.uint8,
                chunks=(max(1, len(raw)),),
                compressors=self.compressors,
                fill_value=None,
                attributes={KEY_ATTRIBUTE: key_info},
                overwrite=True,
            )
            if raw:
                store_every_chunk(arr, ..., torch.frombuffer(bytearray(raw), dtype=torch.uint8))
            return WriteResult(index=item.index, size_in_bytes=len(raw), storage_data=name)
        chunk = item.tensor_data.chunk  # type: ignore[union-attr]
        t = to_storable(data)
        fqn = item.index.fqn
        # laid out again in t's dtype where it may; an array other ranks write takes only
        # widened data (never a cast that loses what was saved)
        arr = arrays.array(fqn, name, t.dtype)
        region = box_region(chunk.offsets, chunk.sizes)
        whole_rows = all(r == slice(0, n) for r, n in zip(region[1:], arr.shape[1:], strict=True))
        start = region[0].start if region else 0
        if t.numel() and not (whole_rows and write_rows(arr, start, _stop(region), t)):
            # whole chunks (they lie inside this box), all-zero ones too: see _layout
            store_every_chunk(arr, region, t.reshape(tuple(chunk.sizes)))
        retyped = fqn in arrays.retyped  # told to finish(), for the metadata's dtype
        stored = {"name": name, "dtype": str(t.dtype).removeprefix("torch.")} if retyped else name
        return WriteResult(
            index=item.index, size_in_bytes=t.numel() * t.element_size(), storage_data=stored
        )

    def write_data(self, plan: SavePlan, planner: SavePlanner) -> Future[list[WriteResult]]:
        """Write this rank's boxes and bytes items (tensors resolved one at a time).

        A failure on the coordinator undoes a zip save (see :meth:`_undo`) before it raises.
        """
        pending, self._pending = self._pending, None
        if pending is not None and self._version is not None:
            self._create_version(self._st(), self._version, pending)
        try:
            results = self._write_plan(plan, planner)
        except BaseException as err:
            self._undo(err, committed=False)
            version = (plan.storage_data or {}).get("version") or self._version
            conflict = None if version is None else overtaken(self._st(), version, err)
            if conflict is not None and version is not None:  # a newer save pruned it
                prune.delete_version(self._st(), version)  # late writes recreated files
                if conflict is not err:
                    raise conflict from err
            raise
        future: Future[list[WriteResult]] = Future()
        future.set_result(results)
        return future

    def _write_plan(self, plan: SavePlan, planner: SavePlanner) -> list[WriteResult]:
        info = plan.storage_data
        st = self._st()
        try:
            root = open_group(st, mode="r+", path=info["version"], use_consolidated=False)
        except GroupNotFoundError as err:
            refuse_private_store(st, err)
            raise
        names = info["names"]
        arrays = KeyArrays(root, plan.items, set(info.get("shared", ())), self._spec, self.path)

        def one(item: WriteItem) -> WriteResult:
            name, data = names[item.index.fqn], planner.resolve_data(item)
            return self._write_item(root, name, item, data, arrays)

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
        return results

    def finish(self, metadata: Metadata, results: list[list[WriteResult]]) -> None:
        """Coordinator: consolidate the version, then commit it with the metadata as JSON.

        A zip save that fails here, also after its commit (its prune, or its directory
        that does not fit), is undone: the zip holds the previous checkpoint again.
        """
        version = self._version
        if version is None:
            raise MetadataError("finish() called before prepare_global_plan() on the coordinator")
        st = self._st()
        committed = False
        try:
            if self._reused is not None:
                refuse_stale_cached_plans(self.path, self._reused, metadata)
            metadata.version = DCP_VERSION
            # dtypes as stored: plans reused by DCP's plan caching may say others
            metadata.storage_data = stored_metadata(metadata, self._dtypes, results)
            metadata.storage_meta = self.storage_meta()
            doc = metadata_to_json(metadata)
            # the version's own copy: a load of it once newer ones are committed reads it
            version_root = open_group(st, mode="r+", path=version, use_consolidated=False)
            version_root.attrs[KEY_ATTRIBUTE] = {"kind": KIND, "dcp": doc}
            consolidate_metadata(st, path=version)
            if self.fsync:
                sync_local(st, version)  # all the manifest names is on disk before it is written
            durable = commit.checkpoint_store(st, "a", fsync=self.fsync)  # st: options applied
            info = {"kind": KIND, "torch_version": torch.__version__, "dcp": doc}
            commit.commit_version(durable, version, info)
            committed = True
            prune.prune_later(st, self.keep)  # after the commit: crash safety
            commit.close_archive(st)  # a zip's directory on disk: the commit survives a crash
        except BaseException as err:
            if self._savepoint is not None:
                self._undo(err, committed)
                raise
            if committed or prune.names_committed(st, version):  # committed, whatever failed
                raise
            prune.delete_version(st, version)  # every rank is done with it: never committed
            conflict = overtaken(st, version, err)
            if conflict is not None and conflict is not err:
                raise conflict from err
            raise
        self._savepoint = None

    def storage_meta(self) -> StorageMeta | None:
        """The checkpoint id and this save's id."""
        path = self.path if isinstance(self.path, (str, os.PathLike)) else repr(self.path)
        return StorageMeta(checkpoint_id=os.fspath(path), save_id=self.save_id)

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: str | os.PathLike[str]) -> bool:
        """True for paths and URLs (any store torchzarr can open)."""
        return isinstance(checkpoint_id, (str, os.PathLike))
