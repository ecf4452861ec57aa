"""Entry-point plugins of one group: found once, imported by name when asked for, swept."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from importlib.metadata import EntryPoint, entry_points

from torchzarr.forksafe import new_lock, new_rlock

__all__ = ["PluginGroup"]


#: one lock for every plugin import and sweep of every group (reentrant: a plugin's import
#: may look a name up in turn): a sweep never finds a plugin marked swept while another
#: thread imports it, and a codec plugin whose import resolves a store while a store
#: plugin's import looks a codec up (in another thread) cannot each wait for the other
_IMPORT_LOCK = new_rlock()


def _installed_entry_points(group: str) -> Iterable[EntryPoint]:
    return entry_points(group=group)


class PluginGroup:
    """The installed entry points of one group, each imported on its own when first needed.

    A registry (codecs by name, stores by URL scheme) keeps its own table and asks this
    object for the plugin of a name it lacks (:meth:`load`), or for all plugins not yet
    tried (:meth:`sweep`: a plugin's module may register more names than its entry point
    gives). Every plugin import, of every group, runs under one reentrant lock, so a
    plugin that looks a name up (of its group or another) while it is being imported
    cannot deadlock against a sweep in another thread.

    Args:
        group: the entry-point group, e.g. ``"torchzarr.codecs"``.
        fold_case: names are case-insensitive (URL schemes): kept in lower case.
        find: ``find(group)`` lists the entry points (``importlib.metadata`` by default).

    Example:
        >>> plugins = PluginGroup("torchzarr.example-group")
        >>> plugins.entry_point("none") is None
        True
        >>> plugins.sweep(lambda name: False, print, logging.getLogger("example"))
    """

    def __init__(
        self,
        group: str,
        *,
        fold_case: bool = False,
        find: Callable[[str], Iterable[EntryPoint]] = _installed_entry_points,
    ) -> None:
        self.group = group
        self._fold_case = fold_case
        self._find = find
        self._found: dict[str, EntryPoint] | None = None
        self._swept: set[str] = set()  # the names a sweep has tried, each tried once
        self._lock = new_lock()

    def installed(self) -> dict[str, EntryPoint]:
        """The group's entry points by name, found (not loaded) once; the first of a name wins.

        Example:
            >>> PluginGroup("torchzarr.example-group").installed()
            {}
        """
        with self._lock:
            if self._found is None:
                found: dict[str, EntryPoint] = {}
                for ep in self._find(self.group):
                    found.setdefault(ep.name.lower() if self._fold_case else ep.name, ep)
                self._found = found
            return self._found

    def entry_point(self, name: str) -> EntryPoint | None:
        """The entry point that gives ``name``, or None.

        Example:
            >>> PluginGroup("torchzarr.example-group").entry_point("zstd") is None
            True
        """
        return self.installed().get(name)

    def load(self, ep: EntryPoint) -> object:
        """``ep.load()`` under the plugins' import lock; what the import raises passes through.

        Example:
            >>> ep = EntryPoint("dumps", "json:dumps", "torchzarr.example-group")
            >>> PluginGroup("torchzarr.example-group").load(ep).__name__
            'dumps'
        """
        # every plugin import under the one (reentrant) lock: a lookup in one thread and a
        # sweep in another would otherwise each hold what the other waits for (the module's
        # import lock, this lock) when the plugin looks a name up on import
        with _IMPORT_LOCK:
            return ep.load()

    def sweep(
        self,
        is_registered: Callable[[str], bool],
        load_name: Callable[[str], object],
        log: logging.Logger,
    ) -> None:
        """Call ``load_name(name)`` for each plugin not registered and not swept before.

        A plugin that fails is logged as a warning on ``log`` and skipped: it raises again
        only when its own name is looked up.

        Example:
            >>> PluginGroup("torchzarr.example-group").sweep(
            ...     lambda name: False, print, logging.getLogger("example"))
        """
        with _IMPORT_LOCK:
            for name in sorted(self.installed()):
                with self._lock:
                    if is_registered(name) or name in self._swept:
                        continue
                    self._swept.add(name)
                try:
                    load_name(name)
                except Exception as err:  # raised again when its own name is looked up
                    log.warning("skipped a plugin of %s: %s", self.group, err)
