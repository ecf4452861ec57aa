"""Lightning integration: a ``CheckpointIO`` that saves Zarr checkpoints, for both packages.

``lightning.pytorch`` and ``pytorch_lightning`` have distinct ``CheckpointIO`` base classes
(an instance of one fails the other's ``Trainer(plugins=...)`` check), so the plugin class
is built once per package by :func:`checkpoint_io_class`, each under its own public name in
``torchzarr.lightning`` (so instances pickle, e.g. for ``Trainer(strategy="ddp_spawn")``).
"""

from __future__ import annotations

import argparse
import functools
import importlib
import os
import shutil
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from torchzarr.checkpoint import commit, prune
from torchzarr.checkpoint.committed import local_path
from torchzarr.checkpoint.load import load_checkpoint
from torchzarr.checkpoint.save import check_save_options, save_checkpoint
from torchzarr.errors import (
    ArgumentTypeError,
    InvalidArgumentError,
    MissingDependencyError,
    UnrepresentableError,
)

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
        check_save_options(  # now, not at the first save mid-fit
            {
                "compressors": compressors,
                "allow_pickle": allow_pickle,
                "fsync": fsync,
                "direct_io": direct_io,
                "storage_options": storage_options,
            }
        )
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
        """Load the checkpoint at ``path``. ``weights_only`` as Lightning passes it
        (``trainer.fit(..., weights_only=...)``): True refuses pickled leaves and classes
        off the allowlist even with ``allow_pickle=True``; False allows them (as
        ``torch.load(weights_only=False)``: for checkpoints you trust).

        As Lightning's ``TorchCheckpointIO``, every tensor loads on the CPU unless
        ``map_location`` says otherwise (None: the device each was saved from), so a
        checkpoint saved on a GPU resumes on any machine. A ``path`` that does not exist
        raises a ``FileNotFoundError`` (``GroupNotFoundError``), as ``TorchCheckpointIO``
        does; a ``.ckpt`` that ``TorchCheckpointIO`` wrote says to load it with it.
        """
        allow = _trusted(self.allow_pickle, weights_only)
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
        local = local_path(store)
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
    hparams_file: Any = None,
    strict: bool | None = None,
    *,
    weights_only: bool | None = None,
    allow_pickle: bool = False,
    storage_options: dict[str, Any] | None = None,
    verify_chunks: bool = True,
    **kwargs: Any,
) -> Any:
    """``model_class.load_from_checkpoint`` for Zarr checkpoints (Lightning's calls torch.load).

    Does what Lightning's does: migrates a checkpoint of an older Lightning, replaces the
    saved hyper-parameters by ``hparams_file`` (``.yaml``, ``.yml`` or ``.csv``) if given,
    updates them with ``kwargs``, builds the module from them, calls its
    ``on_load_checkpoint`` and loads the state dict (``strict`` as Lightning's). Works for
    ``LightningModule`` and ``LightningDataModule`` subclasses of either package. As
    Lightning's, tensors saved on a GPU (or MPS, XLA) device this machine lacks load on the
    CPU unless ``map_location`` says otherwise, and a module goes to the device its loaded
    state dict is on. The arguments after ``model_class`` come in the order of Lightning's.
    ``weights_only=True`` refuses pickled leaves and classes off the allowlist even with
    ``allow_pickle=True``; ``weights_only=False`` allows them (a checkpoint you trust).

    Raises:
        UnrepresentableError: the checkpoint's ``hparams_type`` (or
            ``datamodule_hparams_type``), which Lightning calls, is not what Lightning
            writes (a str, a mapping class or ``argparse.Namespace``).
        InvalidArgumentError: ``hparams_file`` is not a ``.csv``, ``.yml`` or ``.yaml``.

    Example:
        >>> model = load_from_checkpoint(MyModel, "ckpts/last.ckpt", lr=0.5)  # doctest: +SKIP
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
    core = _module(package, "core")
    cls: Any = model_class
    if not issubclass(cls, (core.LightningModule, core.LightningDataModule)):
        raise ArgumentTypeError(
            f"model_class must be a LightningModule or LightningDataModule subclass of "
            f"{PACKAGES[package]}, got {model_class!r}"
        )
    allow = _trusted(allow_pickle, weights_only)
    checkpoint = load_checkpoint(
        os.fspath(path),
        map_location=map_location or saving._default_map_location,
        allow_pickle=allow,
        storage_options=storage_options,
        verify_chunks=verify_chunks,
    )
    if not isinstance(checkpoint, dict):
        raise ArgumentTypeError(
            f"the checkpoint at {os.fspath(path)!r} holds a {type(checkpoint).__name__}, not "
            "the dict of a Lightning checkpoint"
        )
    _check_hparams_types(checkpoint)
    if "pytorch-lightning_version" in checkpoint:  # Lightning's (a hand-made dict may lack it)
        migrate = _module(package, "utilities.migration.utils")._pl_migrate_checkpoint
        local = isinstance(path, (str, Path)) and "://" not in str(path)
        checkpoint = migrate(checkpoint, checkpoint_path=path if local else None)
    if hparams_file is not None:
        checkpoint[cls.CHECKPOINT_HYPER_PARAMS_KEY] = _read_hparams(saving, hparams_file)
    checkpoint.setdefault(cls.CHECKPOINT_HYPER_PARAMS_KEY, {}).update(kwargs)
    if issubclass(cls, core.LightningDataModule):
        return saving._load_state(cls, checkpoint, **kwargs)
    model = saving._load_state(cls, checkpoint, strict=strict, **kwargs)
    state_dict = checkpoint["state_dict"]
    if not state_dict:
        warn = _module(package, "utilities.rank_zero").rank_zero_warn
        warn(f"The state dict in {os.fspath(path)!r} contains no parameters.")
        return model
    tensors = (t for t in state_dict.values() if isinstance(t, torch.Tensor))
    return model.to(next(tensors, torch.tensor(0)).device)


#: checkpoint keys whose value Lightning calls with the hyper-parameters on load
HPARAMS_TYPE_KEYS = ("hparams_type", "datamodule_hparams_type")


def _trusted(allow_pickle: bool, weights_only: bool | None) -> bool:
    """Whether a load may unpickle and resolve any class: ``weights_only`` (Lightning's,
    torch.load's) decides when given, else ``allow_pickle``."""
    return allow_pickle if weights_only is None else not weights_only


def _check_hparams_types(checkpoint: dict[str, Any]) -> None:
    """Refuse an ``hparams_type`` Lightning would call that it never writes itself (the type
    of a module's ``hparams``: a mapping class such as omegaconf's ``DictConfig``, a
    ``Namespace``; or a str in old checkpoints). Which classes load at all is decided when
    the checkpoint is read (:func:`~torchzarr.checkpoint.class_names.resolve_class`)."""
    for key in HPARAMS_TYPE_KEYS:
        value = checkpoint.get(key)
        if value is None or isinstance(value, str):
            continue
        if not (isinstance(value, type) and issubclass(value, (Mapping, argparse.Namespace))):
            raise UnrepresentableError(
                f"checkpoint value at [{key!r}] is {value!r:.200}, which Lightning calls with "
                "the hyper-parameters on load, but Lightning writes there only a str, a "
                "mapping class (omegaconf's DictConfig, AttributeDict) or argparse.Namespace: "
                "this checkpoint was not written by Lightning, and is not loaded"
            )


def _read_hparams(saving: Any, hparams_file: Any) -> Any:
    """The hyper-parameters in ``hparams_file``, read as Lightning's load_from_checkpoint
    reads them (yaml, or a csv of key,value rows)."""
    extension = str(hparams_file).split(".")[-1].lower()
    if extension == "csv":
        return saving.load_hparams_from_tags_csv(hparams_file)
    if extension in ("yml", "yaml"):
        return saving.load_hparams_from_yaml(hparams_file)
    raise InvalidArgumentError(
        f"hparams_file must be a .csv, .yml or .yaml file, got {os.fspath(hparams_file)!r}"
    )
