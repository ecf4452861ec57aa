"""Classes in typed JSON, by ``module:qualname``: stored only when a load finds them again,
found on load without importing anything, and resolved only from an allowlist (as torch's
weights-only unpickler) unless ``allow_pickle=True`` (see :mod:`torchzarr.checkpoint.values`).

A checkpoint that names a class gets it called by whoever uses the value (Lightning calls
``hparams_type`` with the hyper-parameters): a class such as ``subprocess.Popen`` would run
a command. So a load resolves only :data:`SAFE_CLASSES`, the classes of
:data:`SAFE_CLASS_NAMES` (when their package is imported), numpy's scalar and dtype classes,
and those the user allowed for ``torch.load(weights_only=True)`` with
``torch.serialization.add_safe_globals``.
"""

from __future__ import annotations

import argparse
import sys
import types
from collections import Counter, OrderedDict, defaultdict, deque
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from torchzarr.errors import MetadataError, TorchZarrError, UnrepresentableError

__all__ = [
    "SAFE_CLASSES",
    "SAFE_CLASS_NAMES",
    "class_allowed",
    "class_spec",
    "namespace",
    "resolve_class",
]

#: Classes every load resolves: calling one with a checkpoint's values runs no user code.
SAFE_CLASSES: frozenset[type] = frozenset(
    {int, float, complex, bool, str, bytes, list, tuple, dict, set, frozenset}
    | {OrderedDict, Counter, defaultdict, deque, argparse.Namespace}
    | {torch.Size, torch.dtype, torch.device, torch.Tensor, torch.nn.Parameter}
)

#: Classes of packages torchzarr does not import (Lightning's hyper-parameter dicts,
#: omegaconf's configs), resolved by every load once their module is imported.
SAFE_CLASS_NAMES: tuple[str, ...] = (
    "lightning.fabric.utilities.data:AttributeDict",
    "lightning_fabric.utilities.data:AttributeDict",
    "lightning.pytorch.utilities.parsing:AttributeDict",
    "pytorch_lightning.utilities.parsing:AttributeDict",
    "omegaconf.dictconfig:DictConfig",
    "omegaconf.listconfig:ListConfig",
)


def _where(path: tuple[Any, ...]) -> str:
    return "".join(f"[{key!r}]" for key in path) or "<root>"  # as values.format_key_path


def class_spec(cls: type) -> str | None:
    """``module:qualname`` of ``cls`` when a load resolves it back to ``cls`` itself (as
    :func:`resolve_class` does), else None: ``NoneType``, ``function`` and local classes
    name nothing a load can find.

    Example:
        >>> class_spec(int), class_spec(type(None))
        ('builtins:int', None)
    """
    spec = f"{cls.__module__}:{cls.__qualname__}"
    try:
        found = _lookup(spec, ())  # what a load finds, allowed or not (saving is not loading)
    except TorchZarrError:
        return None
    return spec if found is cls else None


def resolve_class(spec: str, path: tuple[Any, ...], *, allow_pickle: bool = False) -> type:
    """The class ``spec`` (``module:qualname``) names, if :func:`class_allowed` (or
    ``allow_pickle``: the user trusts the checkpoint); looked up in what imported modules and
    classes hold themselves, never through ``getattr``: a module's ``__getattr__`` (numpy's,
    torch's) would import the submodules a checkpoint names.

    Raises:
        UnrepresentableError: the class is not allowed (naming ``path`` and how to allow
            it), or its module is not imported.
        MetadataError: ``spec`` names no class.

    Example:
        >>> resolve_class("collections:OrderedDict", ("k",))
        <class 'collections.OrderedDict'>
        >>> import subprocess
        >>> resolve_class("subprocess:Popen", ("k",))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        torchzarr.errors.UnrepresentableError: checkpoint value at ['k'] is the class 'subprocess:Popen', ...
    """
    cls = _lookup(spec, path)
    if allow_pickle or class_allowed(cls):
        return cls
    name = f"{cls.__module__}.{cls.__qualname__}"
    raise UnrepresentableError(
        f"checkpoint value at {_where(path)} is the class {spec!r}, which a load resolves "
        "only when allowed (whoever uses the value may call the class, running its code): "
        f"if you trust it, allow it with torch.serialization.add_safe_globals([{name}]) "
        "(as for torch.load(weights_only=True)), or pass allow_pickle=True if you trust "
        "this checkpoint"
    )


def class_allowed(cls: type) -> bool:
    """Whether a load without ``allow_pickle`` resolves ``cls``: one of
    :data:`SAFE_CLASSES`, a class :data:`SAFE_CLASS_NAMES` names (its module imported), a
    numpy scalar or dtype class, or one given to ``torch.serialization.add_safe_globals``
    (or its ``safe_globals`` context manager). Exactly these classes: not their subclasses.

    Example:
        >>> import subprocess
        >>> class_allowed(OrderedDict), class_allowed(np.float32), class_allowed(subprocess.Popen)
        (True, True, False)
    """
    if cls in SAFE_CLASSES or _numpy_class(cls):
        return True
    if class_spec(cls) in SAFE_CLASS_NAMES:  # (found again by that name: not a look-alike)
        return True
    for entry in torch.serialization.get_safe_globals():  # entries may be (obj, "name")
        if (entry[0] if isinstance(entry, tuple) else entry) is cls:
            return True
    return False


def _numpy_class(cls: type) -> bool:
    """Whether ``cls`` is one of numpy's own scalar types (``np.float32``) or dtype classes
    (``np.dtypes.Float32DType``), not a subclass defined elsewhere."""
    if not issubclass(cls, (np.generic, np.dtype)):
        return False
    return any(vars(module).get(cls.__name__) is cls for module in (np, np.dtypes))


def _lookup(spec: str, path: tuple[Any, ...]) -> type:
    """The class ``spec`` names in imported modules, allowed or not (see
    :func:`resolve_class`)."""
    module_name, _, qualname = spec.partition(":")
    obj: Any = sys.modules.get(module_name)
    if obj is None:
        raise UnrepresentableError(
            f"checkpoint value at {_where(path)} is the class {spec!r}; import "
            f"{module_name!r} before loading (torchzarr never imports code on load)"
        )
    for part in qualname.split("."):
        held = namespace(obj)
        if part not in held and isinstance(obj, types.ModuleType) and "__path__" in held:
            raise UnrepresentableError(  # perhaps a submodule not imported yet
                f"checkpoint value at {_where(path)} is the class {spec!r}, and the "
                f"package {obj.__name__!r} holds no {part!r}: if {obj.__name__}.{part} is a "
                "module, import it before loading (torchzarr never imports code on load)"
            )
        obj = held.get(part)
    if not isinstance(obj, type):
        raise MetadataError(f"checkpoint value at {_where(path)}: no class {spec!r}")
    return obj


def namespace(obj: Any) -> Mapping[str, Any]:
    """What a module or class holds itself (no ``__getattr__`` hook, no descriptor runs);
    nothing for other objects.

    Example:
        >>> "OrderedDict" in namespace(sys.modules["collections"]), namespace(1)
        (True, {})
    """
    if isinstance(obj, (types.ModuleType, type)):
        return vars(obj)
    return {}
