"""The v3 codec registry: built-ins, user codecs, entry points, numcodecs names, JSON parsing."""

from __future__ import annotations

import sys
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import pytest
import torch
from plugin_races import race

import torchzarr as tz
import torchzarr.codecs.registry as registry
from torchzarr.codecs.bytes_codec import BytesCodec
from torchzarr.codecs.compressors import GzipCodec, ZstdCodec
from torchzarr.codecs.registry import (
    codec_from_json,
    get_codec_class,
    register_codec,
    registered_codecs,
)
from torchzarr.errors import CodecError, InvalidArgumentError, MetadataError, UnknownCodecError
from torchzarr.plugins import PluginGroup


class ReversedBytes(GzipCodec):
    """A user codec: gzip under another name (enough to tell the registry apart)."""

    codec_name = "example.reversed"


class ReversedAgain(GzipCodec):
    codec_name = "example.reversed"


class PluginCodec(GzipCodec):
    codec_name = "plugin.codec"


@pytest.fixture
def clean_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_registry", dict(registry._registry))
    monkeypatch.setattr(registry, "_plugins", PluginGroup(registry.ENTRY_POINT_GROUP))


def use_entry_points(monkeypatch: pytest.MonkeyPatch, find: Any) -> None:
    """Make the registry's plugins those ``find(group)`` lists, found afresh."""
    monkeypatch.setattr(registry, "_plugins", PluginGroup(registry.ENTRY_POINT_GROUP, find=find))


def test_builtins_are_registered() -> None:
    names = set(registered_codecs())
    assert {"bytes", "transpose", "gzip", "zstd", "blosc", "crc32c", "sharding_indexed"} <= names
    assert get_codec_class("endian") is BytesCodec  # early v3 drafts' name


def test_the_view_is_read_only() -> None:
    view = registered_codecs()
    with pytest.raises(TypeError):
        view["zstd"] = GzipCodec  # type: ignore[index]


def test_numcodecs_names_resolve_on_demand() -> None:
    cls = get_codec_class("numcodecs.zlib")
    assert cls.codec_name == "numcodecs.zlib"
    assert get_codec_class("numcodecs.zlib") is cls


@pytest.mark.parametrize("name", ["nope", "numcodecs.nope", "numcodecs."])
def test_unknown_names_raise_naming_the_codec(name: str) -> None:
    with pytest.raises(UnknownCodecError, match=repr(name).replace(".", r"\.")):
        get_codec_class(name)
    with pytest.raises(UnknownCodecError):
        codec_from_json({"name": name})


@pytest.mark.usefixtures("clean_registry")
def test_register_a_user_codec() -> None:
    register_codec("example.reversed", ReversedBytes)
    codec = codec_from_json({"name": "example.reversed", "configuration": {"level": 2}})
    assert type(codec) is ReversedBytes and codec.to_json()["name"] == "example.reversed"
    assert registered_codecs()["example.reversed"] is ReversedBytes
    register_codec("example.reversed", ReversedBytes)  # the same class again is fine
    with pytest.raises(CodecError, match=r"'example\.reversed' is already registered"):
        register_codec("example.reversed", ReversedAgain)
    register_codec("example.reversed", ReversedAgain, overwrite=True)
    assert get_codec_class("example.reversed") is ReversedAgain


@pytest.mark.usefixtures("clean_registry")
def test_create_array_takes_a_registered_codec_by_its_name() -> None:
    register_codec("example.reversed", ReversedBytes)
    for given in (["example.reversed"], "example.reversed", [{"name": "example.reversed"}]):
        arr = tz.create_array("memory://", shape=(4,), dtype="int16", compressors=given)
        assert arr.metadata.to_json()["codecs"][1] == {
            "name": "example.reversed",
            "configuration": {"level": 5},
        }
        arr[...] = torch.arange(4, dtype=torch.int16)
        assert arr[...].tolist() == [0, 1, 2, 3]
    # names numcodecs knows keep numcodecs' settings: "gzip" is numcodecs' level 1
    chain = tz.create_array("memory://", shape=(4,), dtype="int16", compressors="gzip")
    assert chain.metadata.to_json()["codecs"][1] == {"name": "gzip", "configuration": {"level": 1}}
    with pytest.raises(UnknownCodecError, match=r"'example\.nothing'"):
        tz.create_array("memory://", shape=(4,), dtype="int16", compressors="example.nothing")


@pytest.mark.usefixtures("clean_registry")
@pytest.mark.parametrize(("name", "cls"), [("", GzipCodec), (3, GzipCodec), ("x", dict), ("x", 3)])
def test_register_rejects_bad_names_and_classes(name: Any, cls: Any) -> None:
    with pytest.raises(CodecError):
        register_codec(name, cls)


class FakeEntryPoint:
    def __init__(self, name: str, target: Any) -> None:
        self.name, self.value, self._target = name, f"plugin:{name}", target

    def load(self) -> Any:
        if isinstance(self._target, Exception):
            raise self._target
        return self._target


@pytest.mark.usefixtures("clean_registry")
def test_entry_points_load_lazily_on_a_miss(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def fake_entry_points(group: str) -> list[FakeEntryPoint]:
        calls.append(group)
        return [FakeEntryPoint("plugin.codec", PluginCodec), FakeEntryPoint("zstd", GzipCodec)]

    use_entry_points(monkeypatch, fake_entry_points)
    assert get_codec_class("zstd") is ZstdCodec and calls == []  # a hit loads nothing
    assert get_codec_class("plugin.codec") is PluginCodec
    assert calls == ["torchzarr.codecs"]
    assert get_codec_class("zstd") is ZstdCodec  # built-ins win over plugins
    get_codec_class("plugin.codec")
    assert calls == ["torchzarr.codecs"]  # loaded once


@pytest.mark.usefixtures("clean_registry")
def test_a_broken_entry_point_names_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    use_entry_points(monkeypatch, lambda group: [FakeEntryPoint("bad", ImportError("gone"))])
    with pytest.raises(CodecError, match=r"codec 'bad': entry point 'plugin:bad'.*ImportError"):
        get_codec_class("bad")


@pytest.mark.usefixtures("clean_registry")
@pytest.mark.parametrize("broken", [ImportError("gone"), RuntimeError("boom"), "not a class", dict])
def test_a_broken_codec_plugin_fails_only_its_own_name(
    monkeypatch: pytest.MonkeyPatch, broken: Any
) -> None:
    eps = [FakeEntryPoint("bad", broken), FakeEntryPoint("plugin.codec", PluginCodec)]
    use_entry_points(monkeypatch, lambda group: eps)
    with pytest.raises(CodecError, match=r"codec 'bad': entry point 'plugin:bad'"):
        get_codec_class("bad")
    assert get_codec_class("plugin.codec") is PluginCodec  # the good plugin still loads
    assert get_codec_class("numcodecs.zlib").codec_name == "numcodecs.zlib"
    assert "plugin.codec" in registered_codecs() and "bad" not in registered_codecs()
    with pytest.raises(CodecError, match=r"entry point 'plugin:bad'"):  # tried again, again
        codec_from_json({"name": "bad"})


@pytest.mark.usefixtures("clean_registry")
def test_a_broken_codec_plugin_does_not_hide_names_found_by_a_sweep(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    eps = [FakeEntryPoint("bad", ImportError("gone")), FakeEntryPoint("plugin.codec", PluginCodec)]
    use_entry_points(monkeypatch, lambda group: eps)
    with pytest.raises(UnknownCodecError, match="'nope'"):
        get_codec_class("nope")  # sweeps: the broken one is skipped, the good one loaded
    assert registry._registry["plugin.codec"] is PluginCodec


@pytest.mark.usefixtures("clean_registry")
def test_register_refuses_a_name_other_than_the_codec_name(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(InvalidArgumentError, match=r"'legacy\.reversed'.*'example\.reversed'"):
        register_codec("legacy.reversed", ReversedBytes)
    assert "legacy.reversed" not in registered_codecs()
    eps = [FakeEntryPoint("legacy.plugin", PluginCodec)]
    use_entry_points(monkeypatch, lambda group: eps)
    with pytest.raises(CodecError, match=r"codec_name is 'plugin\.codec'"):
        get_codec_class("legacy.plugin")


class StrictXor(GzipCodec):
    """Validates its settings with ValueError, as plugin codecs commonly do."""

    codec_name = "example.strict"

    @classmethod
    def from_config(cls, configuration: dict[str, Any]) -> GzipCodec:
        if configuration.get("key", 0) > 255:
            raise ValueError(f"key must be a byte, got {configuration['key']}")
        return cls()


@pytest.mark.usefixtures("clean_registry")
def test_a_codecs_value_error_is_a_metadata_error_naming_codec_and_configuration() -> None:
    register_codec("example.strict", StrictXor)
    match = r"codec 'example\.strict': invalid configuration \{'key': 999\}: key must be a byte"
    with pytest.raises(MetadataError, match=match):
        codec_from_json({"name": "example.strict", "configuration": {"key": 999}})
    with pytest.raises(MetadataError, match="endian must be"):  # torchzarr's own pass as they are
        codec_from_json({"name": "bytes", "configuration": {"endian": "middle"}})


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ("zstd", {"name": "zstd", "configuration": {"level": 0, "checksum": False}}),
        ({"name": "crc32c"}, {"name": "crc32c"}),
        ({"name": "bytes"}, {"name": "bytes"}),  # tensorstore leaves configuration out
        ({"name": "gzip", "configuration": None}, {"name": "gzip", "configuration": {"level": 5}}),
        (
            {"name": "zstd", "configuration": {"level": 1}, "must_understand": True},
            {"name": "zstd", "configuration": {"level": 1, "checksum": False}},
        ),
        (
            {"name": "endian", "configuration": {"endian": "big"}},
            {"name": "bytes", "configuration": {"endian": "big"}},
        ),
        (
            {"name": "numcodecs.zlib", "configuration": {"level": 3}},
            {"name": "numcodecs.zlib", "configuration": {"level": 3}},
        ),
    ],
)
def test_codec_from_json(doc: Any, expected: dict[str, Any]) -> None:
    assert codec_from_json(doc).to_json() == expected


def test_codec_instances_pass_through() -> None:
    codec = ZstdCodec(4)
    assert codec_from_json(codec) is codec


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"configuration": {}}, "must be an object with a string 'name'"),
        (["zstd"], "must be an object with a string 'name'"),
        ({"name": 3}, "must be an object with a string 'name'"),
        ({"name": "zstd", "config": {}}, "codec 'zstd': unknown key(s) ['config']"),
        ({"name": "zstd", "configuration": [1]}, "codec 'zstd': configuration must be an object"),
        ({"name": "zstd", "configuration": {"level": "max"}}, "zstd codec: level must be an int"),
        ({"name": "zstd", "configuration": {"lvl": 1}}, "unknown configuration key(s) ['lvl']"),
        ({"name": "zstd", "configuration": {"checksum": 1}}, "checksum must be true or false"),
        (
            {"name": "gzip", "configuration": {"level": 10}},
            "gzip codec: level must be an int in [0, 9]",
        ),
        (
            {"name": "bytes", "configuration": {"endian": "middle"}},
            "endian must be 'little' or 'big'",
        ),
        ({"name": "transpose"}, "transpose codec: configuration needs 'order'"),
        ({"name": "transpose", "configuration": {"order": [0, 0]}}, "must be a permutation"),
        (
            {"name": "transpose", "configuration": {"order": "X"}},
            "must be a permutation or 'C'/'F'",
        ),
        ({"name": "blosc", "configuration": {"cname": "lzo"}}, "blosc codec: cname must be one of"),
        (
            {"name": "blosc", "configuration": {"shuffle": "all"}},
            "blosc codec: shuffle must be one",
        ),
        (
            {"name": "blosc", "configuration": {"typesize": 0}},
            "typesize must be an int in [1, 255]",
        ),
        ({"name": "crc32c", "configuration": {"x": 1}}, "crc32c codec: unknown configuration"),
        (
            {"name": "numcodecs.zlib", "configuration": {"lvl": 1}},
            "numcodecs.zlib: numcodecs codec",
        ),
        (
            {"name": "sharding_indexed", "configuration": {"chunk_shape": [2], "codecs": []}},
            "sharding_indexed: codecs is empty",
        ),
        (
            {
                "name": "sharding_indexed",
                "configuration": {"chunk_shape": [2], "index_codecs": []},
            },
            "sharding_indexed: index_codecs is empty",
        ),
    ],
)
def test_bad_json_raises_metadata_errors(doc: Any, message: str) -> None:
    with pytest.raises(MetadataError) as info:
        codec_from_json(doc)
    assert message in str(info.value)


def test_a_plugin_looking_up_a_codec_on_import_loads_beside_a_sweep(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # one thread imports the plugin (its module lock held) and, inside, looks a codec up,
    # which sweeps; another sweeps (the sweep lock held) and imports the same plugin: with
    # the plugin loaded outside the sweep lock, each waited for the other for ever
    (tmp_path / "slow_plugin.py").write_text(
        "import time\n"
        "from torchzarr.codecs.registry import get_codec_class\n"
        "from torchzarr.codecs.compressors import GzipCodec\n"
        "time.sleep(0.3)\n"
        "get_codec_class('numcodecs.zlib')  # a name no entry point gives: a sweep\n"
        "class SlowCodec(GzipCodec):\n"
        "    codec_name = 'test.slow'\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "slow_plugin", raising=False)
    plugin = EntryPoint("test.slow", "slow_plugin:SlowCodec", registry.ENTRY_POINT_GROUP)
    use_entry_points(monkeypatch, lambda group: [plugin])
    looked_up, swept = race(
        lambda: get_codec_class("test.slow"), lambda: "test.slow" in registered_codecs()
    )
    assert looked_up.__name__ == "SlowCodec" and swept is True
