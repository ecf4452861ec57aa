"""``save_checkpoint`` / ``load_checkpoint`` and the background ``AsyncCheckpointer``."""

from __future__ import annotations

import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, cast

import torch

from torchzarr.checkpoint import commit
from torchzarr.checkpoint.format import TreePlan, alias_key, encode_tree, to_storable
from torchzarr.checkpoint.load import load_checkpoint
from torchzarr.config import config
from torchzarr.core.api import consolidate_metadata, create_group
from torchzarr.core.array import Array

__all__ = ["AsyncCheckpointer", "load_checkpoint", "save_checkpoint", "snapshot"]

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


def _write_tree(
    store: Any, version: str, plan: TreePlan, compressors: Any, chunk_bytes: int
) -> None:
    root = create_group(store, path=version, attributes=plan.groups[""])
    specs: dict[str, Any] = {path: {"attributes": attrs} for path, attrs in plan.groups.items()}
    del specs[""]
    for item in plan.tensors:
        t = item.tensor
        specs[item.path] = {
            "shape": tuple(t.shape),
            "dtype": t.dtype,
            "chunks": _chunks(tuple(t.shape), t.element_size(), chunk_bytes),
            "compressors": compressors,
            "fill_value": None,
            "attributes": item.attributes,
        }
    arrays = root.create_hierarchy(specs)

    def write(index: int) -> None:
        item = plan.tensors[index]
        cast(Array, arrays[item.path])[...] = to_storable(item.tensor)

    workers = max(1, min(config.threads, len(plan.tensors)))
    if workers == 1:
        for index in range(len(plan.tensors)):
            write(index)
    else:
        with ThreadPoolExecutor(workers, thread_name_prefix="torchzarr-ckpt-save") as pool:
            for future in [pool.submit(write, i) for i in range(len(plan.tensors))]:
                future.result()
    # One object describes the whole tree: loading then needs no per-node requests.
    consolidate_metadata(store, path=version)


def save_checkpoint(
    state: Any,
    store: Any,
    *,
    allow_pickle: bool = False,
    compressors: Any = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    keep: int = 1,
    fsync: bool = True,
    storage_options: dict[str, Any] | None = None,
) -> str:
    """Save a state tree to ``store`` atomically; return the committed version's name.

    Each tensor becomes one Zarr array (uncompressed by default: checkpoints of float
    weights barely compress, and raw chunks write at disk speed), other leaves typed JSON.
    The tree goes into a new version group; only when all of it is written does the
    manifest in the root ``zarr.json`` name it. Killed at any moment, the store still holds
    the previous checkpoint, and :func:`load_checkpoint` still returns it.

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
        storage_options: options for the store (for URLs).

    Raises:
        UnrepresentableError: a leaf cannot be stored; the message names its key path.

    Example:
        >>> import torch
        >>> from torchzarr.checkpoint import load_checkpoint, save_checkpoint
        >>> save_checkpoint({"w": torch.ones(2), "step": 7}, "memory://ckpt-doc")
        'v000001'
        >>> load_checkpoint("memory://ckpt-doc")
        {'w': tensor([1., 1.]), 'step': 7}
    """
    plan = encode_tree(state, allow_pickle=allow_pickle)
    st = commit.checkpoint_store(store, "a", storage_options=storage_options, fsync=fsync)
    version = commit.next_version(st)
    _write_tree(st, version, plan, compressors, chunk_bytes)
    commit.commit_version(
        st,
        version,
        {"torch_version": torch.__version__, "nbytes": plan.nbytes, "tensors": len(plan.tensors)},
    )
    commit.prune_versions(st, keep)
    return version


def _snapshot(state: Any, memo: dict[Any, torch.Tensor]) -> Any:
    if isinstance(state, torch.Tensor):
        key = alias_key(state)
        if key is not None and key in memo:
            return memo[key]  # tied tensors stay one tensor, so they are stored once
        t = state.detach()
        copy = t.to("cpu", copy=True) if t.layout == torch.strided else t.clone()
        if isinstance(state, torch.nn.Parameter):
            copy = torch.nn.Parameter(copy, requires_grad=state.requires_grad)
        elif state.requires_grad:
            copy.requires_grad_(True)
        if key is not None:
            memo[key] = copy
        return copy
    if type(state) in (dict, OrderedDict):
        out = type(state)((k, _snapshot(v, memo)) for k, v in state.items())
        if hasattr(state, "_metadata"):
            out._metadata = state._metadata
        return out
    if type(state) in (list, tuple):
        return type(state)(_snapshot(v, memo) for v in state)
    return state


def snapshot(state: Any) -> Any:
    """A copy of a state tree whose tensors are CPU copies, safe to save while training goes on.

    Tensors that share one view share one copy. Other leaves are shared, not copied.

    Example:
        >>> w = torch.zeros(2)
        >>> copy = snapshot({"w": w}); w += 1
        >>> copy["w"]
        tensor([0., 0.])
    """
    return _snapshot(state, {})


class AsyncCheckpointer:
    """Saves checkpoints on a background thread; training continues while they are written.

    :meth:`save` snapshots the tensors (a CPU copy) before it returns, so the caller may
    change them at once. One save runs at a time: a new :meth:`save` first waits for the
    previous one. A failed save raises its error from the next :meth:`save` or :meth:`wait`.

    Example:
        >>> import torch, torchzarr as tz
        >>> saver = AsyncCheckpointer()
        >>> saver.save({"w": torch.ones(2)}, "memory://ckpt-async-doc")
        >>> saver.wait()
        'v000001'
        >>> saver.close()
    """

    def __init__(self, **save_options: Any) -> None:
        self._options = save_options
        self._pool: ThreadPoolExecutor | None = None
        self._pending: Future[str] | None = None
        self._lock = threading.Lock()

    def save(self, state: Any, store: Any, **save_options: Any) -> None:
        """Snapshot ``state`` and save it to ``store`` in the background.

        Takes the keyword arguments of :func:`save_checkpoint` (over the constructor's).
        Raises the error of the previous save, if it failed.
        """
        with self._lock:
            self._wait_locked()
            # Check what can be checked now, so that an unsavable leaf fails in the caller.
            encode_tree(
                state, allow_pickle=bool({**self._options, **save_options}.get("allow_pickle"))
            )
            copy = snapshot(state)
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1, thread_name_prefix="torchzarr-ckpt-async")
            options = {**self._options, **save_options}
            self._pending = self._pool.submit(save_checkpoint, copy, store, **options)

    def _wait_locked(self) -> str | None:
        pending, self._pending = self._pending, None
        return None if pending is None else pending.result()

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
