"""Lightning integration: a ``CheckpointIO`` that saves Zarr checkpoints, for both packages.

``lightning.pytorch`` and ``pytorch_lightning`` have distinct ``CheckpointIO`` base classes
(an instance of one fails the other's ``Trainer(plugins=...)`` check), so the plugin class
is built once per package by :func:`checkpoint_io_class`, each under its own public name in
``torchzarr.lightning`` (so instances pickle, e.g. for ``Trainer(strategy="ddp_spawn")``).
"""

from __future__ import annotations

import functools
import importlib
import os
import shutil
import threading
from typing import Any

import torch

from torchzarr.checkpoint import commit, prune
from torchzarr.checkpoint.load import load_checkpoint
from torchzarr.checkpoint.save import save_checkpoint
from torchzarr.errors import InvalidArgumentError, MissingDependencyError
from torchzarr.storage import LocalStore, Store, ZipStore

__all__ = ["CLASS_NAMES", "PACKAGES", "checkpoint_io_class", "load_from_checkpoint"]

#: Lightning package name -> its PyTorch sub-package.
PACKAGES = {"lightning": "lightning.pytorch", "pytorch_lightning": "pytorch_lightning"}

#: Lightning package name -> the name of its plugin class in ``torchzarr.lightning``.
CLASS_NAMES = {"lightning": "ZarrCheckpointIO", "pytorch_lightning": "PLZarrCheckpointIO"}


def _module(package: str, sub: str) -> Any:
    if package not in PACKAGES:
        raise InvalidArgumentError(f"package must be one of {sorted(PACKAGES)}, got {package!r}")
    try:
        return importlib.import_module(f"{PACKAGES[package]}.{sub}")
    except ImportError as err:
        extra = "'torchzarr[lightning]'" if package == "lightning" else "pytorch-lightning"
        hint = f"pip install {extra}"
        raise MissingDependencyError(f"{package} is not installed: {hint} ({err})") from err


def _local_path(store: Store) -> str | None:
    """The file or directory behind a local store; None for any other store."""
    if isinstance(store, LocalStore):
        return str(store.root)
    if isinstance(store, ZipStore):
        return store.path
    return None


def _on_cpu(storage: Any, location: str) -> Any:
    """``TorchCheckpointIO``'s default ``map_location``: each tensor stays where it was
    read, on the CPU."""
    return storage


class _ZarrCheckpointIOMixin:
    """The behaviour of ``ZarrCheckpointIO``, independent of which Lightning it plugs into."""

    def __init__(
        self,
        *,
        compressors: Any = None,
        allow_pickle: bool = False,
        fsync: bool = True,
        direct_io: bool = True,
        storage_options: dict[str, Any] | None = None,
        verify_chunks: bool = True,
    ) -> None:
        super().__init__()
        self.verify_chunks = verify_chunks  # False: load tensors edited in place since
        self.compressors = compressors
        self.allow_pickle = allow_pickle
        self.fsync = fsync
        self.direct_io = direct_io
        self.storage_options = storage_options
        # Inside AsyncCheckpointIO saves run on a worker thread while ModelCheckpoint
        # removes old checkpoints from the main thread: never delete a save in progress.
        self._busy = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        # Pickled by Trainer(strategy="ddp_spawn") and deep-copied by users: the settings
        # travel, the lock does not (a save running in this process stays this process's).
        state = self.__dict__.copy()
        del state["_busy"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._busy = threading.Lock()

    def _options(self, storage_options: dict[str, Any] | None) -> dict[str, Any] | None:
        if storage_options is None:
            return self.storage_options
        return {**(self.storage_options or {}), **storage_options}

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None
    ) -> None:
        """Save Lightning's checkpoint dict as a Zarr checkpoint at ``path`` (a directory)."""
        with self._busy:
            self._save(checkpoint, path, storage_options)

    def _save(self, checkpoint: dict[str, Any], path: Any, storage_options: Any) -> None:
        save_checkpoint(
            checkpoint,
            os.fspath(path),
            allow_pickle=self.allow_pickle,
            compressors=self.compressors,
            fsync=self.fsync,
            direct_io=self.direct_io,
            storage_options=self._options(storage_options),
        )

    def load_checkpoint(
        self, path: Any, map_location: Any = _on_cpu, weights_only: bool | None = None
    ) -> dict[str, Any]:
        """Load the checkpoint at ``path``; ``weights_only=True`` refuses pickled leaves.

        As Lightning's ``TorchCheckpointIO``, every tensor loads on the CPU unless
        ``map_location`` says otherwise (None: the device each was saved from), so a
        checkpoint saved on a GPU resumes on any machine.
        """
        allow = self.allow_pickle and weights_only is not True
        result: dict[str, Any] = load_checkpoint(
            os.fspath(path),
            map_location=map_location,
            allow_pickle=allow,
            storage_options=self.storage_options,
            verify_chunks=getattr(self, "verify_chunks", True),  # pickled before it existed
        )
        return result

    def remove_checkpoint(self, path: Any) -> None:
        """Delete the checkpoint at ``path`` (manifest first, so no reader sees half of it).

        A symbolic link (``ModelCheckpoint(save_last="link")``) is removed, not what it
        points to.
        """
        with self._busy:
            self._remove(os.fspath(path))

    def _remove(self, target: str) -> None:
        store = commit.checkpoint_store(
            target, "a", storage_options=self.storage_options, fsync=False
        )
        local = _local_path(store)
        if local is not None and os.path.islink(local):
            # ModelCheckpoint(save_last="link") removes its previous "last" link: the link
            # goes, the checkpoint it points to stays (as with TorchCheckpointIO). A zip read
            # through the link is closed first, so no later write reuses it under this name.
            commit.close_archive(store)
            os.unlink(local)
            return
        prune.remove_all(store)
        if local is None:
            return
        if os.path.isdir(local):
            shutil.rmtree(local, ignore_errors=True)
        elif os.path.isfile(local):  # a zip checkpoint (or a torch.save file): the file goes
            commit.close_archive(store)
            os.remove(local)

    def teardown(self) -> None:
        """Nothing to release: every call opens and closes its own store."""


@functools.cache
def checkpoint_io_class(package: str = "lightning") -> type:
    """The ``ZarrCheckpointIO`` class for ``package`` ("lightning" or "pytorch_lightning").

    Example:
        >>> cls = checkpoint_io_class("lightning")  # doctest: +SKIP
        >>> trainer = lightning.Trainer(plugins=[cls()])  # doctest: +SKIP
    """
    base = _module(package, "plugins.io").CheckpointIO
    doc = (
        f"``{PACKAGES[package]}`` CheckpointIO writing each checkpoint as a Zarr group.\n\n"
        "Saves are atomic (see :func:`torchzarr.save_checkpoint`) and pickle-free unless\n"
        "``allow_pickle=True``. Works with ModelCheckpoint and inside AsyncCheckpointIO.\n\n"
        "Example:\n"
        "    >>> trainer = Trainer(plugins=[ZarrCheckpointIO()])  # doctest: +SKIP\n"
    )
    return type(
        CLASS_NAMES[package],
        (_ZarrCheckpointIOMixin, base),
        {"__doc__": doc, "__module__": "torchzarr.lightning"},
    )


def load_from_checkpoint(
    model_class: type,
    path: Any,
    map_location: Any = None,
    strict: bool | None = None,
    *,
    allow_pickle: bool = False,
    storage_options: dict[str, Any] | None = None,
    verify_chunks: bool = True,
    **kwargs: Any,
) -> Any:
    """``model_class.load_from_checkpoint`` for Zarr checkpoints (Lightning's calls torch.load).

    Builds the module from the saved hyper-parameters (``kwargs`` override them), calls its
    ``on_load_checkpoint`` and loads the state dict. Works for ``LightningModule`` and
    ``LightningDataModule`` subclasses of either package. As Lightning's, tensors saved on
    a GPU (or MPS, XLA) device this machine lacks load on the CPU unless ``map_location``
    says otherwise, and a module goes to the device its loaded state dict is on.

    Example:
        >>> model = load_from_checkpoint(MyModel, "ckpts/last.ckpt")  # doctest: +SKIP
    """
    package = next(
        (
            name
            for name, sub in PACKAGES.items()
            if any(base.__module__.startswith(sub + ".") for base in model_class.__mro__)
        ),
        "lightning",
    )
    saving = _module(package, "core.saving")
    checkpoint = load_checkpoint(
        os.fspath(path),
        map_location=map_location or saving._default_map_location,
        allow_pickle=allow_pickle,
        storage_options=storage_options,
        verify_chunks=verify_chunks,
    )
    model = saving._load_state(model_class, checkpoint, strict=strict, **kwargs)
    state_dict = checkpoint.get("state_dict")
    if isinstance(state_dict, dict) and state_dict and hasattr(model, "to"):
        tensors = (t for t in state_dict.values() if isinstance(t, torch.Tensor))
        model = model.to(next(tensors, torch.tensor(0)).device)
    return model
