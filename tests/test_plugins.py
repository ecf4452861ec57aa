"""PluginGroup: entry points found once, each plugin tried by sweeps once, imports locked."""

from __future__ import annotations

import logging
from importlib.metadata import EntryPoint

import pytest
from plugin_races import race

from torchzarr.plugins import PluginGroup

GROUP = "torchzarr.test-plugins"


def group_of(*eps: EntryPoint, fold_case: bool = False) -> tuple[PluginGroup, list[str]]:
    finds: list[str] = []

    def find(group: str) -> list[EntryPoint]:
        finds.append(group)
        return list(eps)

    return PluginGroup(GROUP, fold_case=fold_case, find=find), finds


def test_entry_points_are_found_once_and_the_first_of_a_name_wins() -> None:
    first, second = EntryPoint("a", "json:dumps", GROUP), EntryPoint("a", "json:loads", GROUP)
    plugins, finds = group_of(first, second)
    assert plugins.entry_point("a") is first and plugins.entry_point("b") is None
    assert plugins.installed() == {"a": first}
    assert finds == [GROUP]


def test_fold_case_keeps_names_in_lower_case() -> None:
    ep = EntryPoint("S3X", "json:dumps", GROUP)
    assert group_of(ep, fold_case=True)[0].installed() == {"s3x": ep}
    assert group_of(ep)[0].installed() == {"S3X": ep}


def test_load_imports_the_entry_point() -> None:
    import json

    plugins, _ = group_of()
    assert plugins.load(EntryPoint("dumps", "json:dumps", GROUP)) is json.dumps
    with pytest.raises(ModuleNotFoundError):  # what the import raises passes through
        plugins.load(EntryPoint("gone", "no_such_module_here:x", GROUP))


def test_a_sweep_tries_each_unregistered_plugin_once_and_logs_failures(
    caplog: pytest.LogCaptureFixture,
) -> None:
    plugins, _ = group_of(*(EntryPoint(n, "json:dumps", GROUP) for n in ("bad", "good", "known")))
    tried: list[str] = []

    def load_name(name: str) -> None:
        tried.append(name)
        if name == "bad":
            raise RuntimeError("broken plugin")

    log = logging.getLogger("torchzarr.test-plugins")
    with caplog.at_level(logging.WARNING, logger=log.name):
        plugins.sweep(lambda name: name == "known", load_name, log)
        plugins.sweep(lambda name: name == "known", load_name, log)
    assert tried == ["bad", "good"]  # each once, registered names skipped
    assert "broken plugin" in caplog.text and GROUP in caplog.text
    assert caplog.text.count("broken plugin") == 1


def test_plugins_of_two_groups_importing_each_others_names_do_not_deadlock() -> None:
    # a codec plugin whose import resolves a store of an unknown scheme (a store sweep),
    # beside a store plugin whose import looks up an unknown codec (a codec sweep): with a
    # lock per group, each thread held its own group's and waited for the other's
    import time

    codecs = PluginGroup("torchzarr.test-codecs")
    stores = PluginGroup("torchzarr.test-stores")
    log = logging.getLogger("torchzarr.test-plugins")

    def codec_import() -> None:
        time.sleep(0.3)
        stores.sweep(lambda name: False, lambda name: None, log)

    def store_import() -> None:
        time.sleep(0.3)
        codecs.sweep(lambda name: False, lambda name: None, log)

    class Plugin:
        def __init__(self, name: str, on_load: object) -> None:
            self.name, self.value, self.on_load = name, f"test:{name}", on_load

        def load(self) -> None:
            self.on_load()  # type: ignore[operator]

    codecs._find = lambda group: [Plugin("c", codec_import)]  # type: ignore[method-assign,assignment]
    stores._find = lambda group: [Plugin("s", store_import)]  # type: ignore[method-assign,assignment]
    race(lambda: codecs.load(codecs.entry_point("c")), lambda: stores.load(stores.entry_point("s")))
