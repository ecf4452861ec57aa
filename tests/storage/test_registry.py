"""The store registry: custom schemes, and what it refuses."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest
import torch
from plugin_races import race

import torchzarr as tz
from torchzarr.errors import ArgumentTypeError, InvalidArgumentError, UnknownStoreError
from torchzarr.plugins import PluginGroup
from torchzarr.storage import (
    MemoryStore,
    register_store,
    registered_stores,
    registry,
    resolve_store,
)


def test_a_registered_scheme_opens_through_the_public_api():
    made = []

    def factory(url, options):
        made.append((url, options))
        return MemoryStore()

    register_store("tz-test+mem", factory, overwrite=True)
    arr = tz.create_array("TZ-TEST+MEM://data", shape=(3,), dtype=torch.int8)  # any case
    arr[:] = 1
    assert made[0][0].lower().startswith("tz-test+mem://") and "tz-test+mem" in registered_stores()
    with pytest.raises(InvalidArgumentError, match="already registered"):
        register_store("tz-test+mem", factory)


@pytest.mark.parametrize("scheme", ["", "no good", "1abc", "a/b", "s3:"])
def test_malformed_schemes_are_refused(scheme):
    with pytest.raises(InvalidArgumentError, match="URL scheme"):
        register_store(scheme, lambda url, options: MemoryStore())


def test_a_factory_must_be_callable_and_unknown_schemes_are_named(monkeypatch):
    with pytest.raises(ArgumentTypeError, match="callable"):
        register_store("tz-test-bad", "MemoryStore")
    monkeypatch.setattr(registry, "_registry", dict(registry._registry))  # undone after
    register_store("tz-test-dict", lambda url, options: {})
    with pytest.raises(UnknownStoreError, match=r"returned dict .* not a torchzarr Store"):
        tz.open_group("tz-test-dict://x", mode="a")
    with pytest.raises(UnknownStoreError, match="tz-nope"):
        resolve_store("tz-nope://x")


@pytest.mark.parametrize(
    "form", ["FILE://{}", "File://{}", "file://localhost{}", "file://LOCALHOST{}"]
)
def test_file_urls_in_any_case_and_with_localhost(tmp_path, monkeypatch, form):
    monkeypatch.chdir(tmp_path)
    target = tmp_path / "abs" / "a.zarr"
    store = resolve_store(form.format(target), mode="a")
    assert store.root == target
    tz.create_array(form.format(target), shape=(2,), dtype=torch.int8)
    assert (target / "zarr.json").is_file() and sorted(p.name for p in tmp_path.iterdir()) == [
        "abs"
    ]


def test_file_urls_without_an_absolute_path_are_relative_as_in_fsspec(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_store("file://data.zarr", mode="a").root == tmp_path / "data.zarr"
    assert resolve_store("FILE://sub/d.zarr", mode="a").root == tmp_path / "sub" / "d.zarr"
    with pytest.raises(UnknownStoreError, match="names no path"):
        resolve_store("file://", mode="a")


@pytest.mark.parametrize("url", ["{}/x.zarr", "file://{}/x.zarr", "memory://", "memory://named"])
def test_unknown_storage_options_name_the_url_and_the_options(tmp_path, url):
    url = url.format(tmp_path)
    with pytest.raises(UnknownStoreError, match=r"storage_options \['bogus_option'\]") as info:
        resolve_store(url, mode="a", storage_options={"bogus_option": 1})
    assert repr(url) in str(info.value)
    assert resolve_store(url, mode="a", storage_options={}) is not None


def test_a_plugin_factory_refusing_an_option_names_the_url_and_the_options(monkeypatch):
    class Strict(MemoryStore):
        def __init__(self, url, **options):
            if options:
                raise TypeError(f"unexpected options {sorted(options)}")
            super().__init__()

    def refusing(url, options):
        raise UnknownStoreError(f"no bucket in {url!r}")

    monkeypatch.setattr(registry, "_registry", dict(registry._registry))  # undone after
    register_store("tz-test-strict", lambda url, options: Strict(url, **options))
    register_store("tz-test-refusing", refusing)
    with pytest.raises(UnknownStoreError, match=r"storage_options \['tokn'\]") as info:
        tz.open_group("tz-test-strict://bucket/x", storage_options={"tokn": "typo"})
    assert "'tz-test-strict://bucket/x'" in str(info.value)
    assert isinstance(info.value.__cause__, TypeError)
    with pytest.raises(UnknownStoreError, match=r"^no bucket in"):  # a StoreError passes as is
        resolve_store("tz-test-refusing://x")


@pytest.mark.parametrize("url", ["data.zarr", "memory://", "s3://bucket/x", "x.zip"])
@pytest.mark.parametrize("options", [[1, 2], "anon", 5, [("fsync", True)]])
def test_storage_options_that_are_not_a_mapping_are_refused_for_every_store(
    url: str, options: object, tmp_path: Path
) -> None:
    with pytest.raises(ArgumentTypeError, match=r"storage_options of .* must be a mapping"):
        resolve_store(str(tmp_path / url) if "://" not in url else url, storage_options=options)


# -- storage_options with a Store object -------------------------------------------------

_ENTRIES = {
    "open": lambda st, so: tz.open(st, mode="a", storage_options=so),
    "open_group": lambda st, so: tz.open_group(st, mode="a", storage_options=so),
    "open_array": lambda st, so: tz.open_array(
        st, mode="a", shape=(3,), dtype=torch.int8, storage_options=so
    ),
    "create_group": lambda st, so: tz.create_group(st, storage_options=so),
    "create_array": lambda st, so: tz.create_array(st, data=torch.arange(3), storage_options=so),
    "from_array": lambda st, so: tz.from_array(st, data=torch.arange(3), storage_options=so),
    "save_checkpoint": lambda st, so: tz.save_checkpoint(
        {"w": torch.ones(2)}, st, storage_options=so
    ),
}


@pytest.mark.parametrize("entry", sorted(_ENTRIES))
@pytest.mark.parametrize("options", [{"read_only": True}, {"bogus": 1}])
def test_storage_options_with_a_store_object_are_refused_before_any_write(tmp_path, entry, options):
    store = tz.LocalStore(tmp_path / "x.zarr")
    with pytest.raises(ArgumentTypeError, match="given with the store object") as info:
        _ENTRIES[entry](store, options)
    assert isinstance(info.value, TypeError) and repr(store) in str(info.value)
    assert repr(sorted(options)) in str(info.value)
    assert list(store.list_prefix("")) == []  # nothing written, read_only or not
    for fine in (None, {}):
        _ENTRIES[entry](tz.LocalStore(tmp_path / f"ok-{fine!r}.zarr"), fine)


def test_storage_options_with_a_store_object_name_the_store_to_load_from(tmp_path):
    tz.save_checkpoint({"w": torch.ones(2)}, str(tmp_path / "c.zarr"))
    with pytest.raises(ArgumentTypeError, match=r"\['anon'\].*LocalStore"):
        tz.load_checkpoint(tz.LocalStore(tmp_path / "c.zarr"), storage_options={"anon": True})
    with pytest.raises(ArgumentTypeError, match="must be a mapping"):
        resolve_store(MemoryStore(), storage_options=[("read_only", True)])


# -- store plugins from entry points -----------------------------------------------------


@pytest.fixture
def plugins(tmp_path, monkeypatch):
    """``install(package, {scheme: "module:attr"}, module_source)``: a dist-info on sys.path."""
    monkeypatch.setattr(registry, "_registry", dict(registry._registry))
    # found afresh, and undone after
    monkeypatch.setattr(
        registry, "_plugins", PluginGroup(registry.ENTRY_POINT_GROUP, fold_case=True)
    )
    made: list[str] = []

    def install(package: str, eps: dict[str, str], modules: dict[str, str]) -> None:
        root = tmp_path / package
        info = root / f"{package}-0.1.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: 0.1\n")
        lines = "".join(f"{name} = {value}\n" for name, value in eps.items())
        (info / "entry_points.txt").write_text("[torchzarr.stores]\n" + lines)
        for name, source in modules.items():
            (root / f"{name}.py").write_text(source)
            made.append(name)
        monkeypatch.syspath_prepend(str(root))

    yield install
    for name in made:
        sys.modules.pop(name, None)


_GOOD = "from torchzarr.storage.memory import MemoryStore\ndef factory(url, options):\n    return MemoryStore()\n"


@pytest.mark.parametrize("broken_first", [True, False])
def test_a_broken_plugin_fails_only_its_own_scheme(plugins, broken_first):
    def broken():
        plugins("tzbrokenplug", {"tzp-broken": "tz_no_such_module_xyz:factory"}, {})

    if broken_first:
        broken()
    plugins("tzgoodplug", {"TZP-Good": "tz_goodplug_mod:factory"}, {"tz_goodplug_mod": _GOOD})
    if not broken_first:
        broken()  # prepended: found first on sys.path
    assert isinstance(tz.open_group("tzp-good://x", mode="a").store, MemoryStore)
    for _ in range(2):  # the same error each time, never a bare "no store handles"
        with pytest.raises(tz.errors.MissingDependencyError) as info:
            tz.open_group("tzp-broken://x", mode="a")
        text = str(info.value)
        for part in (
            "tzp-broken",
            "tz_no_such_module_xyz:factory",
            "tzbrokenplug",
            "ModuleNotFound",
        ):
            assert part in text
        assert isinstance(info.value.__cause__, ModuleNotFoundError)
    with pytest.raises(UnknownStoreError, match=r"no store handles 'tzp-none://x'.*tzp-broken://"):
        resolve_store("tzp-none://x")
    schemes = registered_stores()
    assert "tzp-good" in schemes and "tzp-broken" in schemes and callable(schemes["tzp-good"])
    with pytest.raises(tz.errors.MissingDependencyError, match="tzbrokenplug"):
        schemes["tzp-broken"]


@pytest.mark.parametrize(
    ("source", "error", "match"),
    [
        (
            "raise RuntimeError('boom at import')\n",
            UnknownStoreError,
            "RuntimeError: boom at import",
        ),
        ("factory = 42\n", UnknownStoreError, "not callable"),
        ("import tz_missing_dependency_xyz\n", tz.errors.MissingDependencyError, "tz_missing_dep"),
    ],
)
def test_a_plugin_that_fails_to_load_names_its_entry_point(plugins, source, error, match):
    plugins("tzbadplug", {"tzp-bad": "tz_badplug_mod:factory"}, {"tz_badplug_mod": source})
    plugins("tzgoodplug", {"tzp-good": "tz_goodplug_mod:factory"}, {"tz_goodplug_mod": _GOOD})
    with pytest.raises(error, match=match) as info:
        tz.open_group("tzp-bad://x", mode="a")
    assert "tzp-bad = tz_badplug_mod:factory" in str(info.value) and "tzbadplug" in str(info.value)
    assert isinstance(tz.open_group("tzp-good://x", mode="a").store, MemoryStore)


_MULTI = (
    "from torchzarr.storage.memory import MemoryStore\n"
    "from torchzarr.storage.registry import register_store\n"
    "def factory(url, options):\n    return MemoryStore()\n"
    "register_store('tzp-multi-side', factory)\n"
)


@pytest.mark.parametrize("lookup", ["resolve", "contains"])
def test_a_scheme_a_plugin_registers_on_import_resolves_without_its_own_entry_point(
    plugins, caplog, lookup
):
    """Its entry point names only its main scheme; its module registers another."""
    plugins("tzbrokenplug", {"tzp-broken": "tz_no_such_module_xyz:factory"}, {})
    plugins("tzmultiplug", {"tzp-multi": "tz_multiplug_mod:factory"}, {"tz_multiplug_mod": _MULTI})
    with caplog.at_level("WARNING", logger="torchzarr.storage"):
        if lookup == "resolve":
            assert isinstance(resolve_store("tzp-multi-side://x", mode="a"), MemoryStore)
        else:
            assert "tzp-multi-side" in registered_stores()
    assert "tzp-broken" in caplog.text  # skipped and logged, not raised
    assert isinstance(resolve_store("tzp-multi://x", mode="a"), MemoryStore)
    with pytest.raises(tz.errors.MissingDependencyError, match="tzbrokenplug"):
        resolve_store("tzp-broken://x")  # still raises for its own scheme
    with pytest.raises(UnknownStoreError, match="no store handles 'tzp-none://x'"):
        resolve_store("tzp-none://x")


def test_threads_resolving_a_scheme_a_slow_plugin_registers_on_import_both_find_it(plugins):

    slow = "import time\ntime.sleep(0.5)\n" + _MULTI.replace("tzp-multi-side", "tzp-slow-side")
    plugins("tzslowplug", {"tzp-slow": "tz_slowplug_mod:factory"}, {"tz_slowplug_mod": slow})
    found: list[object] = []

    def resolve() -> None:
        try:
            found.append(resolve_store("tzp-slow-side://x", mode="a"))
        except Exception as err:  # collected for the assertion
            found.append(err)

    threads = [threading.Thread(target=resolve) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [type(item).__name__ for item in found] == ["MemoryStore", "MemoryStore"]


def test_register_store_wins_over_an_entry_point_of_the_same_scheme(plugins):
    plugins("tzbrokenplug", {"tzp-mine": "tz_no_such_module_xyz:factory"}, {})
    register_store("tzp-mine", lambda url, options: MemoryStore())
    assert isinstance(resolve_store("tzp-mine://x", mode="a"), MemoryStore)


@pytest.mark.parametrize("load", ["resolve", "sweep", "contains"])
def test_register_store_wins_over_an_entry_point_already_loaded(plugins, load):
    plugins("tzgoodplug", {"tzp-loaded": "tz_goodplug_mod:factory"}, {"tz_goodplug_mod": _GOOD})
    if load == "resolve":
        resolve_store("tzp-loaded://x", mode="a")
    elif load == "sweep":  # an unknown scheme loads every plugin
        with pytest.raises(UnknownStoreError):
            resolve_store("tzp-none://x")
    else:
        assert "tzp-none" not in registered_stores()
    mine = MemoryStore()
    register_store("TZP-Loaded", lambda url, options: mine)  # no overwrite=True needed
    assert resolve_store("tzp-loaded://x", mode="a") is mine
    with pytest.raises(InvalidArgumentError, match="already registered for 'tzp-loaded'"):
        register_store("tzp-loaded", lambda url, options: MemoryStore())  # a registration's


def test_registered_schemes_are_looked_up_in_any_case():
    schemes = registered_stores()
    assert "FILE" in schemes and "Memory" in schemes and "NO-SUCH-SCHEME-XYZ" not in schemes
    assert schemes["FILE"] is schemes["file"]


def test_a_factory_that_fails_raises_a_store_error_naming_the_scheme_and_url(monkeypatch):
    monkeypatch.setattr(registry, "_registry", dict(registry._registry))  # undone after

    def bad_bucket(url, options):
        raise ValueError("bad bucket")

    def refusing(url, options):
        raise tz.errors.InvalidKeyError(f"no such key space in {url!r}")

    register_store("tz-test-bad-bucket", bad_bucket)
    register_store("tz-test-refusing", refusing)
    with pytest.raises(
        tz.errors.StoreError,
        match=r"'tz-test-bad-bucket'.*'tz-test-bad-bucket://x'.*ValueError: bad bucket",
    ) as info:
        tz.open_group("tz-test-bad-bucket://x", mode="a")
    assert isinstance(info.value.__cause__, ValueError)
    with pytest.raises(tz.errors.InvalidKeyError, match=r"^no such key space"):  # as it is
        tz.open_group("tz-test-refusing://x", mode="a")


def test_options_of_a_url_store_are_not_passed_again_with_the_store_made(tmp_path):
    """FeatureStore (reopened after mode "w", pickled) and DCP saves resolve the URL once."""
    import pickle

    import torch.distributed.checkpoint as dcp

    from torchzarr.distributed import ZarrStorageReader, ZarrStorageWriter

    options = {"fsync": False}
    features = tz.FeatureStore(str(tmp_path / "f.zarr"), mode="w", storage_options=options)
    assert features.features == ()  # opened: the spec now holds the store made
    assert pickle.loads(pickle.dumps(features)).features == ()
    path = str(tmp_path / "d")
    dcp.save({"w": torch.ones(3)}, storage_writer=ZarrStorageWriter(path, storage_options=options))
    state = {"w": torch.zeros(3)}
    dcp.load(state, storage_reader=ZarrStorageReader(path, storage_options=options))
    assert state["w"].tolist() == [1.0, 1.0, 1.0]


def test_a_plugin_resolving_a_store_on_import_loads_beside_a_sweep(plugins):
    # one thread imports the plugin (its module lock held) and, inside, resolves a scheme
    # no entry point names, which sweeps; another sweeps (the sweep lock held) and imports
    # the same plugin: loaded outside the sweep lock, each waited for the other for ever
    plugins(
        "slowstore",
        {"slowmem": "slow_store:make"},
        {
            "slow_store": "import time\n"
            "from torchzarr.storage import registered_stores\n"
            "time.sleep(0.3)\n"
            "'nosuchscheme' in registered_stores()  # a sweep\n"
            "from torchzarr.storage import MemoryStore\n"
            "def make(url, options):\n"
            "    return MemoryStore()\n"
        },
    )
    registry._plugins.installed()  # the entry points found before the race (a slow scan)
    used, swept = race(
        lambda: registered_stores()["slowmem"], lambda: "other" in registered_stores()
    )
    assert callable(used) and swept is False


@pytest.mark.parametrize("scheme", ["sqlite", "lmdb", "zip"])
def test_a_file_url_with_a_query_is_refused_not_made_into_a_file_name(tmp_path, scheme):
    """``sqlite:///a.db?immutable=1`` made a file named ``a.db?immutable=1``."""
    url = f"{scheme}://{tmp_path}/a.db?immutable=1"
    with pytest.raises(UnknownStoreError, match=r"takes no \?immutable=1 query") as info:
        resolve_store(url, mode="a")
    assert "storage_options" in str(info.value) and list(tmp_path.iterdir()) == []
    # a '?' that is no query stays part of the name
    store = resolve_store(f"{scheme}://{tmp_path}/odd?name.db", mode="a")
    assert store is not None
    store.close()
