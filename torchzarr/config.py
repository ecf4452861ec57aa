"""Process-wide settings: decode threads, batch sizes and cache budgets (``tz.config``)."""

from __future__ import annotations

import contextlib
import math
import numbers
import operator
import os
import re
import sys
import weakref
from dataclasses import dataclass, fields
from typing import Any

from torchzarr.arguments import whole_number
from torchzarr.errors import ArgumentTypeError, InvalidArgumentError
from torchzarr.forksafe import new_lock

__all__ = ["Config", "config", "default_threads", "settings_from_environment"]


def default_threads() -> int:
    """The CPUs this process may use: the engine's default thread count.

    Example:
        >>> default_threads() >= 1
        True
    """
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS
        return max(1, os.cpu_count() or 1)


#: settings in seconds (float, >= 0 or > 0) and whether None is allowed; the rest are ints
_SECONDS = {"retry_backoff": False, "retry_deadline": False, "timeout": True}
#: seconds settings where infinity means "unbounded" (a backoff of forever is no backoff, and
#: an unbounded timeout is None: the clients it reaches cannot wait for infinity)
_INFINITE_OK = {"retry_deadline"}
#: int settings that may be 0 (no retrying; no caching); the rest must be positive
_ZERO_OK = {"retries", "cache_bytes"}


def _fits_a_float(value: int | float) -> bool:
    """Whether ``value`` converts to a float (an int past float range does not)."""
    try:
        float(value)
    except OverflowError:
        return False
    return True


def _validate(key: str, value: Any, none: str = "None") -> Any:
    """``value`` checked for setting ``key``, as the setting holds it (a numpy int as an
    int); ``none`` is how the caller spells None (``none`` in an environment variable).
    A value of a wrong type raises ``ArgumentTypeError``, one out of range
    ``InvalidArgumentError``."""
    if key in _SECONDS:
        return _seconds(key, value, none)
    low = 0 if key in _ZERO_OK else 1
    try:
        return whole_number(f"setting {key!r}", value, low)
    except InvalidArgumentError as error:  # ArgumentTypeError for a wrong type
        kind = "a non-negative" if low == 0 else "a positive"
        raise type(error)(f"setting {key!r} must be {kind} int, got {value!r}") from None


def _seconds(key: str, value: Any, none: str) -> Any:
    """``value`` checked as the seconds setting ``key`` (see :func:`_validate`)."""
    if value is None and _SECONDS[key]:
        return None
    message = f"setting {key!r} must be a number of seconds, got {value!r}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ArgumentTypeError(message)
    if isinstance(value, numbers.Integral):
        value = operator.index(value)  # a numpy int as an int, exact
    elif type(value) is not float:
        value = float(value)  # a numpy float
    if not _fits_a_float(value):
        raise InvalidArgumentError(message)
    if math.isinf(value) and value > 0 and _SECONDS[key]:  # the unbounded timeout is None
        raise InvalidArgumentError(
            f"setting {key!r} must be a finite number of seconds, or {none} for no bound, "
            f"got {value!r}"
        )
    if (
        math.isnan(value)
        or (math.isinf(value) and key not in _INFINITE_OK)
        or value < 0
        or (value == 0 and key != "retry_backoff")
    ):
        raise InvalidArgumentError(message)
    return value


@dataclass
class Config:
    """Settings read by the engine at each call; change them with :meth:`set`.

    Settings are process-wide: every thread sees the same values. ``config.threads = 4``
    (or ``config.set(threads=4)`` not used in a ``with``) is a lasting change. Used in a
    ``with``, :meth:`set` changes its settings for the block and, on leaving it, undoes
    its own changes only:

    - settings the block did not set keep whatever they were changed to meanwhile;
    - blocks may overlap, nested in one thread or open at once in several threads: a
      setting then has the value of the most recently opened block still open that set
      it, and gets back the value it had outside all of them once the last one closes,
      whatever order they close in;
    - a lasting change of a setting made while blocks that set it are open is kept:
      leaving those blocks no longer touches it.

    Attributes:
        threads: decode/encode threads of the engine's pool (default: usable CPUs).
        io_batch_bytes: decoded bytes fetched per batch of a large read or write (bounds
            memory), in at most 65536 chunks (``engine.BATCH_CHUNKS``) however small they are.
        task_bytes: decoded bytes grouped into one pool task (small chunks are batched so that
            dispatch does not dominate).
        cache_bytes: budget of the shared decoded-chunk cache (used by arrays opened with a
            cache and the datasets; a feature store makes its own of this size): the shared
            cache follows a change at its next use, evicting least recently used chunks down
            to a lowered budget. 0 turns caching off.
        retries: retries of a transient remote error (0 disables retrying); read when a
            remote store or a ``RetryPolicy`` is made.
        retry_backoff: seconds before the first retry, doubled for each further one.
        retry_deadline: seconds all attempts of one call may take together, sleeps included
            (``math.inf``: no bound but ``retries``).
        timeout: seconds one request to a remote store may take (None: unbounded).

    The process-wide ``tz.config`` starts from the environment where it names a setting:
    ``TORCHZARR_THREADS=4``, ``TORCHZARR_CACHE_BYTES=0``, ``TORCHZARR_TIMEOUT=none``
    (the setting's name in capitals; ints as digits, seconds as numbers; ``inf`` for
    ``retry_deadline`` and ``none`` for ``timeout`` mean no bound). Processes started by ``spawn`` or ``forkserver`` (DataLoader
    workers among them) inherit the environment, not changes made in Python.

    Example:
        >>> from torchzarr.config import config
        >>> with config.set(threads=1):
        ...     config.threads
        1
    """

    threads: int = default_threads()
    io_batch_bytes: int = 256 << 20
    task_bytes: int = 1 << 20
    cache_bytes: int = 512 << 20
    retries: int = 3
    retry_backoff: float = 0.2
    retry_deadline: float = 300.0
    timeout: float | None = 120.0

    def __post_init__(self) -> None:
        self._lock = new_lock()
        # the changes of the blocks open now (oldest first), each under its token
        self._blocks: list[tuple[object, dict[str, Any]]] = []
        # for each setting some open block changed: its value outside all of them
        self._outside: dict[str, Any] = {}
        # tokens of changes whose context manager was dropped without a ``with``
        self._abandoned: list[object] = []

    def __setattr__(self, name: str, value: Any) -> None:
        # ``config.threads = 4`` is checked like ``config.set(threads=4)``; a misspelt name
        # is an error rather than a setting nothing reads
        if name.startswith("_"):
            object.__setattr__(self, name, value)
            return
        value = self._check_setting(name, value)
        if "_lock" not in self.__dict__:  # the dataclass's __init__: no block open yet
            object.__setattr__(self, name, value)
            return
        with self._lock:
            self._settle_abandoned()
            self._make_lasting(name, value, below=len(self._blocks))

    def _check_setting(self, name: str, value: Any) -> Any:
        """``value`` checked for setting ``name``, as the setting holds it."""
        names = {f.name for f in fields(self)}
        if name not in names:
            raise ArgumentTypeError(f"unknown torchzarr setting {name!r}; known: {sorted(names)}")
        return _validate(name, value)

    def set(self, **changes: Any) -> contextlib.AbstractContextManager[None]:
        """Change settings now; used in a ``with``, undo these changes on leaving it.

        Only the settings given are restored, and blocks open at once (in one thread or in
        several) each undo only their own change; see the class docstring. The result opens
        one ``with`` block: entering it again raises ``InvalidArgumentError``.

        Example:
            >>> with config.set(threads=2):
            ...     config.threads
            2
            >>> config.set(retries=5)  # doctest: +ELLIPSIS
            <torchzarr.config._Changes object at ...>
            >>> config.retries = 3
        """
        changes = {key: self._check_setting(key, value) for key, value in changes.items()}
        token = object()
        with self._lock:
            self._settle_abandoned()
            for key, value in changes.items():
                if not any(key in block for _, block in self._blocks):
                    self._outside[key] = getattr(self, key)
                object.__setattr__(self, key, value)
            self._blocks.append((token, dict(changes)))
        return _Changes(self, token)

    def _close(self, token: object) -> None:
        """Undo the changes of one block (a no-op once they are undone or made lasting)."""
        with self._lock:
            self._settle_abandoned()
            index = self._find(token)
            if index is None:
                return
            _, changes = self._blocks.pop(index)
            for key in changes:
                self._show(key)

    def _abandon(self, token: object) -> None:
        # called when a ``set`` result is garbage: maybe in the middle of code holding the
        # lock, so only note it (list.append is atomic); the next change settles it
        self._abandoned.append(token)

    def _settle_abandoned(self) -> None:
        """Make the changes of ``set`` calls never used in a ``with`` lasting (hold the lock):
        the same values, without keeping a block open forever."""
        while self._abandoned:
            index = self._find(self._abandoned.pop())
            if index is not None:
                _, changes = self._blocks.pop(index)
                for key, value in changes.items():
                    self._make_lasting(key, value, below=index)

    def _find(self, token: object) -> int | None:
        for index, (mine, _) in enumerate(self._blocks):
            if mine is token:
                return index
        return None

    def _make_lasting(self, key: str, value: Any, below: int) -> None:
        """Make ``value`` the lasting value of ``key`` as of the time the first ``below`` open
        blocks were open: they no longer restore it; blocks opened later still override it
        while open (hold the lock)."""
        for _, changes in self._blocks[:below]:
            changes.pop(key, None)
        self._outside[key] = value
        self._show(key)

    def _show(self, key: str) -> None:
        """Set ``key`` to the value of the latest open block that sets it, else to its value
        outside all blocks (hold the lock)."""
        for _, changes in reversed(self._blocks):
            if key in changes:
                object.__setattr__(self, key, changes[key])
                return
        if key in self._outside:
            object.__setattr__(self, key, self._outside.pop(key))


class _Changes(contextlib.AbstractContextManager[None]):
    """What :meth:`Config.set` returns: its changes, undone at the end of a ``with``."""

    def __init__(self, owner: Config, token: object) -> None:
        self._owner, self._token = owner, token
        self._entered = False
        # dropped without a ``with``: the changes become lasting
        self._finalizer = weakref.finalize(self, owner._abandon, token)
        self._finalizer.atexit = False

    def __enter__(self) -> None:
        # the changes were made by ``set`` and are undone by the first ``with``: a second one
        # would change nothing, so it is refused rather than silently doing nothing
        if self._entered:
            raise InvalidArgumentError(
                "a config.set(...) result opens one with-block only; "
                "call config.set(...) again for another block"
            )
        self._entered = True
        return None

    def __exit__(self, *exc_info: object) -> None:
        self._finalizer.detach()
        self._owner._close(self._token)


_ENVIRONMENT_PREFIX = "TORCHZARR_"


def _parse_environment_value(key: str, variable: str, text: str) -> Any:
    """The value of setting ``key`` spelt ``text`` in environment variable ``variable``."""
    spelt = text.strip()
    value: Any
    try:
        if key in _SECONDS:
            value = None if spelt.lower() == "none" else float(spelt)
        else:
            value = int(spelt)
    except ValueError:
        value = spelt  # refused below with the setting's own message
    try:
        return _validate(key, value, none="none")
    except InvalidArgumentError as error:
        raise InvalidArgumentError(f"environment variable {variable}={text!r}: {error}") from None


def settings_from_environment(environment: dict[str, str] | None = None) -> dict[str, Any]:
    """The settings that ``TORCHZARR_<NAME>`` environment variables give, checked.

    ``tz.config`` starts from them at import; an invalid value raises
    ``InvalidArgumentError`` naming the variable. Unknown ``TORCHZARR_`` variables are
    ignored (they may belong to a newer version).

    Example:
        >>> settings_from_environment({"TORCHZARR_THREADS": "3", "TORCHZARR_TIMEOUT": "none"})
        {'threads': 3, 'timeout': None}
    """
    source = os.environ if environment is None else environment
    found: dict[str, Any] = {}
    for field in fields(Config):
        variable = _ENVIRONMENT_PREFIX + field.name.upper()
        if variable in source:
            found[field.name] = _parse_environment_value(field.name, variable, source[variable])
    return found


def _running_the_command_line() -> bool:
    """Whether this process runs the ``torchzarr`` command: its console script (named
    ``torchzarr``, ``torchzarr.exe`` or ``torchzarr-script.py``), ``python -m torchzarr`` or
    ``python -m torchzarr.cli`` (``sys.argv[0]`` is ``-m`` while that module is looked for).
    """
    argv = getattr(sys, "argv", None) or [""]
    name = re.sub(r"(-script\.pyw?|\.exe)$", "", os.path.basename(argv[0]))
    if name == "torchzarr":
        return True
    if argv[0] != "-m":
        return False
    options = sys.orig_argv[1:]
    for index, option in enumerate(options):
        if option.startswith("-m"):
            module = option[2:] or (options[index + 1] if index + 1 < len(options) else "")
            return module in ("torchzarr", "torchzarr.__main__", "torchzarr.cli")
    return False


def _settings_at_import() -> dict[str, Any]:
    """The environment's settings, which ``import torchzarr`` refuses when invalid.

    The ``torchzarr`` command imports this package before its ``main`` can catch anything:
    there the error is reported as the command's others are, in one line with status 1
    (rather than a traceback, even for ``torchzarr --help``).
    """
    try:
        return settings_from_environment()
    except InvalidArgumentError as error:
        if not _running_the_command_line():
            raise
        print(f"torchzarr: {error}", file=sys.stderr)
        raise SystemExit(1) from None


config = Config(**_settings_at_import())
