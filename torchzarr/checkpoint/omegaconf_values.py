"""Typed JSON of omegaconf's ``DictConfig`` and ``ListConfig`` (Hydra configs), no pickle.

A config is stored as its plain content, interpolations unresolved
(``OmegaConf.to_container(cfg, resolve=False)``: ``"${a}"`` stays that text), with the
class to rebuild and the root's ``struct`` / ``readonly`` flags when set::

    OmegaConf.create({"a": 1, "b": "${a}"})
        -> {"omegaconf": {"class": "DictConfig",
                          "content": {"dict": [["a", 1], ["b", "${a}"]]}}}

A load rebuilds the same class from that content, importing omegaconf for it (only when
a checkpoint holds a config); without omegaconf installed it raises
:class:`~torchzarr.errors.MissingDependencyError`. Unless ``allow_pickle=True``, the
content must be plain JSON values (dicts, lists, str, int, float, bool, None, bytes):
nothing but the config class itself is constructed. What plain content cannot hold is not
kept: a structured config comes back as a plain ``DictConfig`` (its dataclass gone), the
flags of nested nodes are dropped, and an interpolation resolves, when read, with the
resolvers registered in the loading process.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any

from torchzarr.errors import MetadataError, MissingDependencyError, UnrepresentableError

__all__ = ["CONFIG_CLASSES", "config_class", "decode_config", "encode_config"]

#: the omegaconf classes stored, by name, with the type of their plain content
CONFIG_CLASSES: dict[str, type] = {"DictConfig": dict, "ListConfig": list}
#: root flags a stored config keeps
_FLAGS = ("struct", "readonly")
_PLAIN_LEAVES = (str, int, float, bool, type(None), bytes)


def _where(path: tuple[Any, ...]) -> str:
    return "".join(f"[{key!r}]" for key in path) or "<root>"  # as values.format_key_path


def config_class(value: Any) -> str | None:
    """``"DictConfig"`` or ``"ListConfig"`` when ``value`` is exactly one (not a
    subclass), else None; omegaconf is never imported for it.

    Example:
        >>> from omegaconf import OmegaConf  # doctest: +SKIP
        >>> config_class(OmegaConf.create([1])), config_class({})  # doctest: +SKIP
        ('ListConfig', None)
    """
    omegaconf = sys.modules.get("omegaconf")
    if omegaconf is None:  # not imported: value is no config
        return None
    for name in CONFIG_CLASSES:
        if type(value) is vars(omegaconf).get(name):
            return name
    return None


def encode_config(value: Any, path: tuple[Any, ...], encode: Callable[[Any], Any]) -> Any:
    """The typed JSON of the config ``value`` (see :func:`config_class`); ``encode`` turns
    its plain content into typed JSON (and raises naming the key path of what it cannot).

    Raises:
        UnrepresentableError: the content is not a dict or list (a config that is None or
            missing as a whole) or holds other values than plain JSON ones (objects of an
            ``allow_objects`` config, an Enum, a Path); with ``allow_pickle=True`` the
            caller pickles such a config whole instead.

    Example:
        >>> from omegaconf import OmegaConf  # doctest: +SKIP
        >>> encode_config(OmegaConf.create({"b": "${a}"}), (), lambda c: c)  # doctest: +SKIP
        {'omegaconf': {'class': 'DictConfig', 'content': {'b': '${a}'}}}
    """
    name = config_class(value)
    omegaconf: Any = sys.modules["omegaconf"]
    try:
        content = omegaconf.OmegaConf.to_container(value, resolve=False)
    except Exception as err:  # omegaconf's own errors (older versions: a config None)
        raise UnrepresentableError(
            f"checkpoint value at {_where(path)}: the omegaconf {name} cannot be stored "
            f"({type(err).__name__}: {err})"
        ) from None
    if name is None or type(content) is not CONFIG_CLASSES[name]:  # None or ??? as a whole
        raise UnrepresentableError(
            f"checkpoint value at {_where(path)}: the omegaconf {name} holds "
            f"{content!r:.60} as a whole, which it cannot be rebuilt from (save it with "
            "allow_pickle=True, or leave it out)"
        )
    _check_plain(content, path, UnrepresentableError)  # an allow_objects config's objects
    body: dict[str, Any] = {"class": name, "content": encode(content)}
    flags = {flag: True for flag in _FLAGS if getattr(omegaconf.OmegaConf, f"is_{flag}")(value)}
    if flags:
        body["flags"] = flags
    return {"omegaconf": body}


def _check_plain(
    content: Any, path: tuple[Any, ...], error: type[Exception] = MetadataError
) -> None:
    """Raise ``error`` unless ``content`` holds only what plain config content holds (the
    checks that keep a load from constructing anything else, such as an allowed dataclass
    that omegaconf would instantiate; and a save from storing what no load takes back)."""
    stack: list[tuple[Any, tuple[Any, ...]]] = [(content, path)]
    while stack:
        item, where = stack.pop()
        if type(item) is dict:
            stack.extend((key, where) for key in item)  # a key names its parent
            stack.extend((value, (*where, key)) for key, value in item.items())
        elif type(item) is list:
            stack.extend((value, (*where, i)) for i, value in enumerate(item))
        elif type(item) not in _PLAIN_LEAVES:
            raise error(
                f"checkpoint value at {_where(where)}: an omegaconf config holds "
                f"{type(item).__qualname__} {item!r:.100}, not plain JSON content (use "
                "allow_pickle=True if you trust this checkpoint)"
            )


def decode_config(
    body: Any, path: tuple[Any, ...], decode: Callable[[Any], Any], allow_pickle: bool
) -> Any:
    """The config whose typed JSON body is ``body`` (inverse of :func:`encode_config`);
    ``decode`` turns typed JSON back into plain content.

    Raises:
        MissingDependencyError: omegaconf is not installed (the message names the key
            path, and how to load the rest of the checkpoint).
        MetadataError: ``body`` is malformed, or its content is not plain JSON values
            (unless ``allow_pickle``) or is refused by omegaconf.

    Example:
        >>> decode_config(  # doctest: +SKIP
        ...     {"class": "ListConfig", "content": [1, "${0}"]}, (), lambda c: c, False
        ... )
        [1, '${0}']
    """
    name = body.get("class") if isinstance(body, dict) else None
    flags = body.get("flags", {}) if isinstance(body, dict) else None
    if (
        name not in CONFIG_CLASSES
        or set(body) - {"class", "content", "flags"}
        or not isinstance(flags, dict)
        or not all(flag in _FLAGS and on is True for flag, on in flags.items())
    ):
        raise MetadataError(f"checkpoint value at {_where(path)}: bad typed JSON for 'omegaconf'")
    try:
        omegaconf: Any = importlib.import_module("omegaconf")
    except ImportError:
        raise MissingDependencyError(
            f"checkpoint value at {_where(path)} is an omegaconf {name} (a Hydra config): "
            "install omegaconf to load it (pip install omegaconf), or load the other keys "
            "with keys=[...]"
        ) from None
    content = decode(body.get("content"))
    if type(content) is not CONFIG_CLASSES[name]:
        raise MetadataError(
            f"checkpoint value at {_where(path)}: an omegaconf {name} holds a "
            f"{type(content).__qualname__}, not a {CONFIG_CLASSES[name].__name__}"
        )
    if not allow_pickle:
        _check_plain(content, path)
    try:
        config = vars(omegaconf)[name](content)
        for flag in _FLAGS:  # struct, then readonly
            if flag in flags:
                getattr(omegaconf.OmegaConf, f"set_{flag}")(config, True)
    except Exception as err:  # omegaconf's errors: a value or key it does not take
        raise MetadataError(
            f"checkpoint value at {_where(path)}: omegaconf refuses the stored {name} "
            f"({type(err).__name__}: {err})"
        ) from None
    return config
