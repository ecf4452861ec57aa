"""Classes in typed JSON, by ``module:qualname``: stored only when a load finds them again,
found on load without importing anything (see :mod:`torchzarr.checkpoint.values`)."""

from __future__ import annotations

import sys
import types
from collections.abc import Mapping
from typing import Any

from torchzarr.errors import MetadataError, TorchZarrError, UnrepresentableError

__all__ = ["class_spec", "namespace", "resolve_class"]


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
        found = resolve_class(spec, ())
    except TorchZarrError:
        return None
    return spec if found is cls else None


def resolve_class(spec: str, path: tuple[Any, ...]) -> type:
    """The class ``spec`` (``module:qualname``) names, looked up in what imported modules and
    classes hold themselves, never through ``getattr``: a module's ``__getattr__`` (numpy's,
    torch's) would import the submodules a checkpoint names.

    Example:
        >>> resolve_class("collections:OrderedDict", ("k",))
        <class 'collections.OrderedDict'>
    """
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
