"""The curated public API: sorted, importable, documented."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
import re
from pathlib import Path

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


# -- the API reference is complete ------------------------------------------------------------
#
# Every public name (the ``__all__`` of the public modules) and every public member of the
# classes users call methods on must appear in docs/*.md or README.md as inline code:
# ``name`` (or ``tz.name``, ``torchzarr.module.name``) in a section of its module, and
# ``.member`` (or ``Class.member`` anywhere) in a section of its class. A section belongs to
# the modules and classes named in code in its heading and in the headings above it.


_ROOT = Path(__file__).resolve().parents[1]

PUBLIC_MODULES = (
    "torchzarr",
    "torchzarr.errors",
    "torchzarr.codecs",
    "torchzarr.storage",
    "torchzarr.data",
    "torchzarr.checkpoint",
    "torchzarr.checkpoint.dcp",
    "torchzarr.features",
    "torchzarr.distributed",
    "torchzarr.lightning",
    "torchzarr.telemetry",
    "torchzarr.config",
    "torchzarr.testing",
    "torchzarr.testing.store_contract",
    "torchzarr.testing.codec_contract",
)

#: classes whose public methods, properties and fields are documented one by one; a class
#: listed here below another listed one (a store below ``Store``) owes only what it adds
MEMBER_CLASSES = (
    ("torchzarr", "Array"),
    ("torchzarr", "Group"),
    ("torchzarr", "ChunkCache"),
    ("torchzarr.storage", "Store"),
    ("torchzarr.storage", "MemoryStore"),
    ("torchzarr.storage", "LocalStore"),
    ("torchzarr.storage", "ZipStore"),
    ("torchzarr.storage", "FsspecStore"),
    ("torchzarr.storage", "LMDBStore"),
    ("torchzarr.storage", "SQLiteStore"),
    ("torchzarr.storage", "RedisStore"),
    ("torchzarr.storage", "ReadOnlyStore"),
    ("torchzarr.storage", "LoggingStore"),
    ("torchzarr.storage", "LatencyStore"),
    ("torchzarr.storage", "FaultyStore"),
    ("torchzarr.storage", "RetryingStore"),
    ("torchzarr.storage", "RetryPolicy"),
    ("torchzarr.storage", "ByteRange"),
    ("torchzarr.storage", "CopyResult"),
    ("torchzarr.codecs", "Codec"),
    ("torchzarr.codecs", "ArrayArrayCodec"),
    ("torchzarr.codecs", "ArrayBytesCodec"),
    ("torchzarr.codecs", "BytesBytesCodec"),
    ("torchzarr.codecs", "ChunkKeyEncoding"),
    ("torchzarr.data", "ZarrDataset"),
    ("torchzarr.data", "ZarrIterableDataset"),
    ("torchzarr.data", "ChunkBlockSampler"),
    ("torchzarr.data", "DevicePrefetcher"),
    ("torchzarr.data", "PinnedRing"),
    ("torchzarr.data", "Layout"),
    ("torchzarr.checkpoint", "AsyncCheckpointer"),
    ("torchzarr.lightning", "ZarrCheckpointIO"),
    ("torchzarr.lightning", "PLZarrCheckpointIO"),
    ("torchzarr.features", "FeatureStore"),
    ("torchzarr.features", "FeatureBatch"),
    ("torchzarr.telemetry", "Counters"),
    ("torchzarr.config", "Config"),
)

_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*$")
_SPAN = re.compile(r"(`+)(.+?)\1")
_PATH = re.compile(r"\.?[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")
_LINK = re.compile(r"\]\(([^)\s]*)\)")


def _module(name: str):
    # importlib, not ``import a.b as m``: ``torchzarr.config`` the attribute is the settings
    return importlib.import_module(name)


def _public_names() -> list[tuple[str, str]]:
    """``(module, name)`` for every name of a public module's ``__all__``."""
    return [
        (module, name)
        for module in PUBLIC_MODULES
        for name in getattr(_module(module), "__all__", ())
    ]


def _members(cls: type) -> set[str]:
    """Public attributes torchzarr defines on ``cls`` (its torchzarr bases' too), and the
    fields of a dataclass; not what it inherits from torch, Lightning or the standard library."""
    names = set()
    for klass in cls.__mro__:
        if klass.__module__.split(".")[0] == "torchzarr":
            names.update(name for name in vars(klass) if not name.startswith("_"))
    if dataclasses.is_dataclass(cls):
        names.update(f.name for f in dataclasses.fields(cls) if not f.name.startswith("_"))
    return names


def _public_members() -> list[tuple[str, str]]:
    """``(class name, member)`` for the members of :data:`MEMBER_CLASSES` (less what a
    listed base class already owes)."""
    classes = [getattr(_module(module), name) for module, name in MEMBER_CLASSES]
    out = []
    for cls in classes:
        inherited = set()
        for base in cls.__mro__[1:]:
            if base in classes:
                inherited |= _members(base)
        out += [(cls.__name__, member) for member in sorted(_members(cls) - inherited)]
    return out


def _code_paths(text: str) -> list[str]:
    """The dotted name each inline code span of ``text`` starts with (``tz.open`` of
    ``tz.open(path)``, ``.read`` of ``.read(out=None)``)."""
    paths = []
    for match in _SPAN.finditer(text):
        name = _PATH.match(match.group(2).strip())
        if name:
            paths.append(name.group(0))
    return paths


def _doc_files() -> list[Path]:
    return [_ROOT / "README.md", *sorted((_ROOT / "docs").glob("*.md"))]


def _documented() -> list[tuple[str, frozenset[str]]]:
    """``(code path, owners of its section)`` for every inline code span of the docs."""
    found = []
    for path in _doc_files():
        stack: list[tuple[int, frozenset[str]]] = []  # open headings: (level, owners)
        fenced = False
        for line in path.read_text(encoding="utf-8").splitlines():
            if _FENCE.match(line):
                fenced = not fenced
                continue
            if fenced:
                continue
            heading = _HEADING.match(line)
            outer = frozenset().union(*(owners for _, owners in stack))
            if heading:
                level = len(heading.group(1))
                while stack and stack[-1][0] >= level:
                    stack.pop()
                outer = frozenset().union(*(owners for _, owners in stack))
                named = frozenset(_code_paths(heading.group(2)))
                found += [(p, outer) for p in named]
                stack.append((level, named))
                continue
            found += [(p, outer) for p in _code_paths(line)]
    return found


def _qualifiers(module: str) -> set[str]:
    return {module, "tz" + module[len("torchzarr") :]}


def _names_for(owner: str, owners: frozenset[str]) -> bool:
    return any(o == owner or o.endswith("." + owner) for o in owners)


def test_every_public_name_is_documented():
    spans = _documented()
    paths = {path for path, _ in spans}
    missing = []
    for module, name in _public_names():
        quals = _qualifiers(module)
        if any(f"{q}.{name}" in paths for q in quals):
            continue
        if any(p == name and any(_names_for(q, owners) for q in quals) for p, owners in spans):
            continue
        missing.append(f"{module}.{name}")
    for cls, member in _public_members():
        qualified = f"{cls}.{member}"
        if any(p == qualified or p.endswith("." + qualified) for p in paths):
            continue
        if any(p.lstrip(".") == member and _names_for(cls, owners) for p, owners in spans):
            continue
        missing.append(qualified)
    assert not missing, (
        f"{len(missing)} public names are not documented (add them to docs/api.md, as "
        f"`name` in their module's section or `.member` in their class's): " + ", ".join(missing)
    )


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to ``-``."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    anchors, seen = set(), {}
    fenced = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if _FENCE.match(line):
            fenced = not fenced
            continue
        heading = None if fenced else _HEADING.match(line)
        if heading:
            slug = _slug(heading.group(2))
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def test_api_reference_links_resolve():
    api = _ROOT / "docs" / "api.md"
    broken = []
    for target in _LINK.findall(api.read_text(encoding="utf-8")):
        if "://" in target:
            continue
        file, _, anchor = target.partition("#")
        page = (api.parent / file) if file else api
        if not page.is_file() or (anchor and anchor not in _anchors(page)):
            broken.append(target)
    assert not broken, f"links of docs/api.md that lead nowhere: {broken}"
    assert "docs/api.md" in (_ROOT / "README.md").read_text(encoding="utf-8")
