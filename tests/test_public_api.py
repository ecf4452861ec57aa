"""The curated public API: sorted, importable, documented."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import torchzarr as tz


def test_all_is_sorted_and_importable():
    assert list(tz.__all__) == sorted(tz.__all__)
    for name in tz.__all__:
        assert hasattr(tz, name), name


def test_every_module_says_what_it_owns():
    for info in pkgutil.walk_packages(tz.__path__, "torchzarr."):
        module = importlib.import_module(info.name)
        doc = inspect.getdoc(module)
        assert doc and doc.strip(), f"{info.name} has no module docstring"


def test_public_callables_have_docstrings_with_examples():
    for name in tz.__all__:
        obj = getattr(tz, name)
        if inspect.isfunction(obj) or inspect.isclass(obj) or inspect.ismodule(obj):
            doc = inspect.getdoc(obj) or ""
            assert "Example" in doc, f"tz.{name} lacks an example"


def test_lightning_loads_only_when_used():
    import subprocess
    import sys

    code = (
        "import sys, torchzarr as tz\n"
        "assert 'lightning' not in sys.modules and 'pytorch_lightning' not in sys.modules\n"
        "assert tz.lightning.ZarrCheckpointIO is not None\n"
        "assert 'torchzarr.lightning' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
