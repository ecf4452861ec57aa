"""``save_checkpoint`` / ``load_checkpoint`` and the background ``AsyncCheckpointer``."""

from __future__ import annotations

import atexit
import copy
import inspect
import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, cast

import torch

from torchzarr.arguments import whole_number
from torchzarr.checkpoint import commit, prune
from torchzarr.checkpoint.format import (
    EVERY_CHUNK,
    TENSOR_ATTRIBUTE,
    TensorItem,
    TreePlan,
    encode_tree,
    to_storable,
)
from torchzarr.checkpoint.load import load_checkpoint
from torchzarr.checkpoint.rawio import make_dirs, sync_local, write_rows
from torchzarr.checkpoint.snapshots import snapshot
from torchzarr.checkpoint.threads import run_all
from torchzarr.checkpoint.undo import undo_failed_save, zip_savepoint
from torchzarr.checkpoint.values import format_key_path
from torchzarr.config import config
from torchzarr.core.api import create_group
from torchzarr.core.array import Array
from torchzarr.core.attributes import internal_attributes, json_attributes
from torchzarr.core.consolidated import write_consolidated
from torchzarr.core.create import array_metadata_from_args
from torchzarr.core.pool import refused_at_exit
from torchzarr.core.selection import make_indexer
from torchzarr.errors import ArgumentTypeError, CodecError
from torchzarr.storage import LocalStore

__all__ = [
    "AsyncCheckpointer",
    "check_save_options",
    "load_checkpoint",
    "save_checkpoint",
    "snapshot",
    "store_every_chunk",
]

#: Default chunk size: large chunks write at disk speed; tensors split on axis 0.
DEFAULT_CHUNK_BYTES = 64 * 2**20


def _chunks(shape: tuple[int, ...], itemsize: int, chunk_bytes: int) -> tuple[int, ...]:
    """Whole trailing axes, as many leading rows as fit in ``chunk_bytes`` (at least one)."""
    if not shape:
        return ()
    row = itemsize
    for extent in shape[1:]:
        row *= max(1, extent)
    rows = max(1, min(max(1, shape[0]), chunk_bytes // row))
    return (rows, *(max(1, extent) for extent in shape[1:]))


def _units(array: Array, t: torch.Tensor) -> list[tuple[int, int]]:
    """Row ranges of whole chunks, written in parallel (local stores; elsewhere all rows)."""
    rows = t.shape[0] if t.dim() else 1
    per_chunk = array.chunks[0] if t.dim() else 1
    if not t.numel() or not isinstance(array.store, LocalStore):
        return [(0, rows)]
    return [(lo, min(rows, lo + per_chunk)) for lo in range(0, rows, per_chunk)]


def store_every_chunk(array: Array, selection: Any, data: torch.Tensor) -> None:
    """``array[selection] = data``, storing the chunks that are all zeros too (the engine
    leaves those out): a load of an array marked ``every_chunk`` finds a lost chunk.

    ``array`` must not be sharded.

    Example:
        >>> import torchzarr as tz
        >>> arr = tz.create_array("memory://", shape=(4,), dtype=torch.float32, chunks=(2,))
        >>> store_every_chunk(arr, slice(0, 4), torch.zeros(4))
        >>> arr.nchunks_initialized
        2
    """
    indexer = make_indexer(selection, array.shape, array.chunks)  # never sharded here
    array._write(indexer, data, write_empty_chunks=True)


def _array_metadata(
    item: TensorItem, compressors: Any, chunk_bytes: int, templates: dict[Any, Any]
) -> Any:
    """The metadata of ``item``'s array, with the tensor's attributes.

    Built and validated once per shape, dtype and chunk shape (the tensors of a model
    share a few); each tensor's copy differs only in its attributes, checked here as
    ``create_array`` checks them. The copy keeps the template's internal attributes (a
    raw dtype's name), on which its chunk spec and codecs depend, so they stay valid:
    validating every copy again cost more than the rest of writing a small tensor.
    """
    t = item.tensor
    chunks = _chunks(tuple(t.shape), t.element_size(), chunk_bytes)
    # every chunk of this grid is stored: a rewrite on another grid drops the claim
    item.attributes[TENSOR_ATTRIBUTE][EVERY_CHUNK] = list(chunks)
    key = (tuple(t.shape), t.dtype, chunks)
    template = templates.get(key)
    if template is None:
        template = templates[key] = array_metadata_from_args(
            shape=tuple(t.shape),
            dtype=t.dtype,
            chunks=chunks,
            compressors=compressors,
            fill_value=None,
            # c.0.0 files, not c/0/0: no directories to create, flush and delete per array
            chunk_key_encoding={"name": "default", "configuration": {"separator": "."}},
        )
    metadata = copy.copy(template)
    attributes = {**json_attributes(item.attributes), **internal_attributes(template)}
    object.__setattr__(metadata, "attributes", attributes)  # frozen: set as __init__ does
    return metadata


def _write_tree(
    store: Any,
    version: str,
    plan: TreePlan,
    compressors: Any,
    chunk_bytes: int,
) -> None:
    root = create_group(store, path=version, attributes=plan.groups[""])
    specs: dict[str, Any] = {path: {"attributes": attrs} for path, attrs in plan.groups.items()}
    del specs[""]
    templates: dict[Any, Any] = {}
    for item in plan.tensors:
        specs[item.path] = _array_metadata(item, compressors, chunk_bytes, templates)
    make_dirs(store, version, specs)  # a local store's files then go straight in
    arrays = root.create_hierarchy(specs)
    work: list[tuple[TensorItem, Array, torch.Tensor, int, int]] = []
    for item in plan.tensors:
        array, t = cast(Array, arrays[item.path]), item.tensor
        if t.device.type == "cpu" and t.is_contiguous() and not (t.is_conj() or t.is_neg()):
            t = to_storable(t)  # no copy: its chunks can go out one by one
            work.extend((item, array, t, lo, hi) for lo, hi in _units(array, t))
        else:  # copied when written, so only a few copies live at once
            work.append((item, array, t, -1, -1))

    def write(unit: tuple[TensorItem, Array, torch.Tensor, int, int]) -> None:
        try:
            write_unit(*unit[1:])
        except CodecError as err:  # a codec that cannot take this tensor: say which one
            t = unit[0].tensor
            raise type(err)(
                f"checkpoint tensor {format_key_path(unit[0].key_path)} (dtype {t.dtype}, "
                f"shape {tuple(t.shape)}): {err}"
            ) from err

    def write_unit(array: Array, t: torch.Tensor, lo: int, hi: int) -> None:
        if lo < 0:
            t = to_storable(t)
            lo, hi = 0, (t.shape[0] if t.dim() else 1)
        if not t.numel() or not t.dim():
            store_every_chunk(array, ..., t)
            return
        piece = t[lo:hi]
        # Raw local chunks go from the tensor's memory straight to their files.
        if not write_rows(array, lo, hi, piece):
            store_every_chunk(array, slice(lo, hi), piece)  # whole chunks: units never share one

    # Raw local chunks: one writer. Copying into the page cache is quick and the disk does
    # best with one stream: two writers measured slower (0.4-0.6 GB/s against 0.8-1.1
    # for one, 1 GB, 2 cores). Encoding or network stores: all threads.
    raw_local = compressors is None and isinstance(store, LocalStore)
    run_all(write, work, 1 if raw_local else config.threads, "torchzarr-ckpt-save")
    # One object describes the whole tree: loading then needs no per-node requests. Built
    # from the metadata just written (consolidate_metadata would list and parse it again).
    members = sorted((rel, node.metadata) for rel, node in arrays.items())
    write_consolidated(store, version, members, root.metadata)


def save_checkpoint(
    state: Any,
    store: Any,
    *,
    allow_pickle: bool = False,
    compressors: Any = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    keep: int = 1,
    fsync: bool = True,
    direct_io: bool = True,
    storage_options: dict[str, Any] | None = None,
) -> str:
    """Save a state tree to ``store`` atomically; return the committed version's name.

    Each tensor becomes one Zarr array (uncompressed by default: checkpoints of float
    weights barely compress, and raw chunks write at disk speed), other leaves typed JSON.
    The tree goes into a new version group; only when all of it is written does the
    manifest in the root ``zarr.json`` name it. Killed at any moment, the store still holds
    the previous checkpoint, and :func:`load_checkpoint` still returns it (but for a zip
    file killed during a save: it has no directory then; see ``docs/checkpoints.md``).
    A save that raises before its commit leaves the previous checkpoint the one loaded;
    one that raises after it (its prune of old versions failed) has committed. A zip, also
    under a wrapper such as ``LoggingStore``, is cut back to the previous checkpoint in
    both cases (also when its directory did not fit after the commit), unless other
    writers changed it during the save: the error's note says which happened.

    Args:
        state: dict, OrderedDict, list or tuple of tensors, containers and plain values.
        store: a path, URL or Store (the checkpoint's own directory or prefix).
        allow_pickle: pickle leaves typed JSON cannot hold (int/str/float/bool/None,
            containers, torch.Size, torch.dtype, numpy scalars and classes can) instead of
            raising; loading them then needs ``allow_pickle=True`` too.
        compressors: numcodecs codecs or a preset name for the tensors' chunks (None: raw).
        chunk_bytes: target chunk size; tensors are split along their first axis.
        keep: committed versions to keep (1: only the new one).
        fsync: flush local files to disk before committing (durable against power loss).
        direct_io: write large local chunk files past the page cache (``O_DIRECT`` where
            the file system allows it): saves run at disk speed and leave the page cache
            to the training data; a load right after reads from disk.
        storage_options: options for the store (for URLs).

    Raises:
        UnrepresentableError: a leaf cannot be stored; the message names its key path.
        ReadOnlyError: the store is read-only (nothing is written).
        StoreError: writing failed (a full disk); the previous checkpoint stays but for a
            failure after the commit (see above).

    Example:
        >>> import torch
        >>> from torchzarr.checkpoint import load_checkpoint, save_checkpoint
        >>> save_checkpoint({"w": torch.ones(2), "step": 7}, "memory://ckpt-doc")
        'v000001'
        >>> load_checkpoint("memory://ckpt-doc")
        {'w': tensor([1., 1.]), 'step': 7}
    """
    check_save_options({"keep": keep, "chunk_bytes": chunk_bytes, "compressors": compressors})
    if isinstance(state, _Snapshot):  # an AsyncCheckpointer's, encoded in its caller
        plan = state.plan
    else:
        plan = encode_tree(state, allow_pickle=allow_pickle)
    st = commit.checkpoint_store(store, "a", storage_options=storage_options, fsync=False)
    local = st if isinstance(st, LocalStore) else None
    durable = local is not None and (fsync or local.fsync)
    if local is not None:
        # Files are written without a flush each, then flushed together before the commit.
        st = local = commit.with_flush_settings(local, False, direct_io)
    with commit.reserved_version(st) as version:  # a read-only store is refused here
        savepoint = zip_savepoint(st)
        committed = False  # from then on the manifest and older versions are the save's
        try:
            _write_tree(st, version, plan, compressors, chunk_bytes)
            if durable:
                sync_local(st, version)  # all the manifest names is on disk before it is written
            commit.commit_version(
                commit.with_flush_settings(local, True, False)
                if durable and local is not None
                else st,
                version,
                {
                    "torch_version": torch.__version__,
                    "nbytes": plan.nbytes,
                    "tensors": len(plan.tensors),
                },
            )
            committed = True
            prune.prune_later(st, keep)  # after the commit, never before: crash safety
            commit.close_archive(st)  # a zip's directory on disk: the commit survives a crash
        except BaseException as err:
            undo_failed_save(st, version, savepoint, committed, err)
            raise
    return version


def check_save_options(options: dict[str, Any]) -> None:
    """Raise what :func:`save_checkpoint` would for these keyword options (unknown names, bad
    counts, ``compressors`` that build no codecs), writing nothing.

    Example:
        >>> check_save_options({"keep": 2, "fsync": False})
        >>> check_save_options({"kep": 2})
        Traceback (most recent call last):
        ...
        torchzarr.errors.ArgumentTypeError: save_checkpoint() takes no option 'kep' (it takes allow_pickle, chunk_bytes, compressors, direct_io, fsync, keep, storage_options)
    """
    taken = sorted(
        name
        for name, parameter in inspect.signature(save_checkpoint).parameters.items()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
    )
    for name in options:
        if name not in taken:
            raise ArgumentTypeError(
                f"save_checkpoint() takes no option {name!r} (it takes {', '.join(taken)})"
            )
    for name in ("keep", "chunk_bytes"):
        whole_number(name, options.get(name, 1), 1)  # numpy ints too, as every count
    if options.get("compressors") is not None:  # built as each saved tensor's array is
        array_metadata_from_args(
            shape=(1,), dtype=torch.float32, compressors=options["compressors"]
        )


class _Snapshot:
    """A state tree encoded in the caller of :meth:`AsyncCheckpointer.save`, its tensors
    copied to the CPU: the plan keeps what the encoding took from the originals (their
    device, Python attributes, shared arrays), the copies keep their values."""

    def __init__(self, state: Any, allow_pickle: bool) -> None:
        self.plan = encode_tree(state, allow_pickle=allow_pickle)
        for item in self.plan.tensors:  # strided tensors with data only (encode_tree checks)
            item.tensor = item.tensor.detach().to("cpu", copy=True)


_log = logging.getLogger("torchzarr.checkpoint")
#: background saves whose outcome no caller has read yet, with their stores
_UNREAD: dict[Future[str], Any] = {}
_UNREAD_LOCK = threading.Lock()


@atexit.register
def _report_unread_failures() -> None:
    """Log the errors of background saves nobody waited for: at exit, after Python has let
    them finish (their threads are not daemons), so that no failure goes unseen."""
    with _UNREAD_LOCK:
        unread = list(_UNREAD.items())
        _UNREAD.clear()
    for future, store in unread:
        err = future.exception() if future.done() and not future.cancelled() else None
        if err is not None:
            _log.error(
                "a background checkpoint save to %r failed and was not written (nobody "
                "called AsyncCheckpointer.wait() or close()): %s: %s",
                store,
                type(err).__name__,
                err,
                exc_info=err,
            )


def _forget_if_saved(future: Future[str]) -> None:
    if not future.cancelled() and future.exception() is None:
        with _UNREAD_LOCK:
            _UNREAD.pop(future, None)  # nothing to report


def _chain_failed_save(err: BaseException, previous: Exception, previous_store: Any) -> None:
    """Make ``err`` (a save refused up front) also report the earlier save that failed."""
    err.add_note(
        f"The previous background save (to {previous_store!r}) failed as well and was not "
        f"written: {type(previous).__name__}: {previous}"
    )
    err.__context__ = previous  # shown first in the traceback, even after "raise ... from None"
    err.__suppress_context__ = False


class AsyncCheckpointer:
    """Saves checkpoints on a background thread; training continues while they are written.

    :meth:`save` encodes the state and snapshots the tensors (a CPU copy; their device,
    Python attributes and sharing are recorded from the originals) before it returns, so
    the caller may change them at once. One save runs at a time: a new :meth:`save` first
    waits for the previous one. A failed save raises its error from the next :meth:`save`
    (which starts its own save all the same) or :meth:`wait`. When that next :meth:`save`
    is refused up front too (a leaf that cannot be stored), it raises its own error, which
    names the failed earlier save in a note and carries its error as ``__context__``:
    neither was written. A save still running when the script ends is finished before
    Python exits; if it fails and nobody waited for it, its error is logged (logger
    ``torchzarr.checkpoint``, level ERROR) at exit.

    Example:
        >>> import torch, torchzarr as tz
        >>> saver = AsyncCheckpointer()
        >>> saver.save({"w": torch.ones(2)}, "memory://ckpt-async-doc")
        >>> saver.wait()
        'v000001'
        >>> saver.close()
    """

    def __init__(self, **save_options: Any) -> None:
        check_save_options(save_options)  # in the caller, not later from the thread
        self._options = save_options
        self._pool: ThreadPoolExecutor | None = None
        self._pending: Future[str] | None = None
        self._pending_store: Any = None
        self._lock = threading.Lock()

    def save(self, state: Any, store: Any, **save_options: Any) -> None:
        """Snapshot ``state`` and save it to ``store`` in the background.

        Takes the keyword arguments of :func:`save_checkpoint` (over the constructor's).
        Raises the error of the previous save, if it failed, after this one is under way:
        a caller that catches it and goes on loses no later checkpoint. If this save is
        refused before it starts (e.g. :class:`~torchzarr.errors.UnrepresentableError`),
        its error is raised instead, noting the previous save's failure and chained to it
        (``__context__``).
        """
        previous: Exception | None = None
        options = {**self._options, **save_options}
        with self._lock:
            previous_store = self._pending_store
            try:
                self._wait_locked()
            except Exception as err:
                previous = err
            try:
                # Encoded here, so that an unsavable leaf fails in the caller and later
                # changes to the state do not reach the save.
                check_save_options(options)
                copy = _Snapshot(state, bool(options.get("allow_pickle")))
            except BaseException as err:
                if previous is not None:
                    _chain_failed_save(err, previous, previous_store)
                raise
            self._pending = self._submit(copy, store, options)
            self._pending_store = store
            with _UNREAD_LOCK:
                _UNREAD[self._pending] = store
            self._pending.add_done_callback(_forget_if_saved)
        if previous is not None:
            raise previous

    def _submit(self, copy: _Snapshot, store: Any, options: dict[str, Any]) -> Future[str]:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="torchzarr-ckpt-async")
        try:
            return self._pool.submit(save_checkpoint, copy, store, **options)
        except RuntimeError as err:  # the interpreter is exiting (an atexit handler): save now
            if not refused_at_exit(err):
                raise
        done: Future[str] = Future()
        try:
            done.set_result(save_checkpoint(copy, store, **options))
        except Exception as err:
            done.set_exception(err)
        return done

    def _wait_locked(self) -> str | None:
        pending, self._pending = self._pending, None
        if pending is None:
            return None
        with _UNREAD_LOCK:
            _UNREAD.pop(pending, None)  # its outcome is read: reported here, not at exit
        return pending.result()

    def wait(self) -> str | None:
        """Wait for the save in progress; return its version, or raise its error."""
        with self._lock:
            return self._wait_locked()

    @property
    def busy(self) -> bool:
        """True while a save is being written."""
        pending = self._pending
        return pending is not None and not pending.done()

    def close(self) -> None:
        """Wait for the save in progress (raising its error) and stop the thread."""
        try:
            self.wait()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None

    def __enter__(self) -> AsyncCheckpointer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
