"""Lightning checkpoints as Zarr: ``ZarrCheckpointIO`` and ``load_from_checkpoint``.

``ZarrCheckpointIO`` plugs into ``lightning`` (or, when only it is installed,
``pytorch_lightning``); ``PLZarrCheckpointIO`` is always the ``pytorch_lightning`` one.

Example:
    >>> import lightning as L, torchzarr as tz  # doctest: +SKIP
    >>> trainer = L.Trainer(plugins=[tz.lightning.ZarrCheckpointIO()])  # doctest: +SKIP
    >>> model = tz.lightning.load_from_checkpoint(MyModel, "ckpts/last.ckpt")  # doctest: +SKIP
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Any

from torchzarr.checkpoint.lightning import CLASS_NAMES, checkpoint_io_class, load_from_checkpoint

if TYPE_CHECKING:  # built on first access by __getattr__ below
    ZarrCheckpointIO: type
    PLZarrCheckpointIO: type

__all__ = ["PLZarrCheckpointIO", "ZarrCheckpointIO", "checkpoint_io_class", "load_from_checkpoint"]


def __getattr__(name: str) -> Any:
    # Lightning is imported only when a plugin class is asked for. Each class is named after
    # the attribute that returns it, so its instances pickle (Trainer(strategy="ddp_spawn")).
    if name == CLASS_NAMES["lightning"]:
        has_lightning = importlib.util.find_spec("lightning") is not None
        has_old_name = importlib.util.find_spec("pytorch_lightning") is not None
        # without either, the error names the package the guides use: lightning
        use_old_name = has_old_name and not has_lightning
        return checkpoint_io_class("pytorch_lightning" if use_old_name else "lightning")
    if name == CLASS_NAMES["pytorch_lightning"]:
        return checkpoint_io_class("pytorch_lightning")
    raise AttributeError(f"module 'torchzarr.lightning' has no attribute {name!r}")
