"""The ``torchzarr`` command: info, tree, copy, rechunk, consolidate, bench and demo.

Every command takes a path or URL (``s3://``, ``zip://``, ``memory://`` ...) and ``--path``
for a node inside it; errors print one line and exit with status 1. An option value out
of its range (``--rounds 0``) is a usage error, as argparse reports them (status 2), and
nothing is written. Output its reader closes early (``| head -1``) ends it quietly (141).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO, cast

import numpy as np
import torch

from torchzarr import telemetry
from torchzarr.config import config
from torchzarr.core import nodes
from torchzarr.core.api import consolidate_metadata, create_group, open_array, open_group
from torchzarr.core.api import open as open_node
from torchzarr.core.array import Array
from torchzarr.core.cache import invalidate_tree_everywhere
from torchzarr.core.consolidated import refresh_consolidated
from torchzarr.core.from_array import KEEP, from_array
from torchzarr.core.info import stored_dtype_name
from torchzarr.core.placement import missing_parents, node_docs
from torchzarr.errors import (
    InvalidArgumentError,
    NodeExistsError,
    ReadOnlyError,
    TorchZarrError,
    UnsupportedDtypeError,
)
from torchzarr.storage.base import Store
from torchzarr.storage.copy import copy_keys
from torchzarr.storage.registry import resolve_store
from torchzarr.storage.wrappers import ReadOnlyStore

__all__ = ["main"]


def _info(args: argparse.Namespace) -> None:
    try:
        node = open_node(args.store, mode="r", path=args.path)
    except UnsupportedDtypeError:  # listed by its group: described from its metadata
        store = resolve_store(args.store, mode="r")
        member = nodes.read_member(store, nodes.normalize_path(args.path))
        if not isinstance(member, nodes.UnsupportedArray):
            raise
        print(_unsupported_info(member, store))
        return
    print(node.info)


def _unsupported_info(member: nodes.UnsupportedArray, store: Store) -> str:
    """What ``info`` shows of an array torchzarr cannot open: its stored metadata."""
    doc, dtype = member.document, stored_dtype_name(member.document)
    if member.zarr_format == 3:
        chunks = doc.get("chunk_grid", {}).get("configuration", {}).get("chunk_shape")
    else:
        chunks = doc.get("chunks")
    rows = [
        ("Name", "/" + member.path),
        ("Zarr format", member.zarr_format),
        ("Shape", tuple(doc.get("shape", ()))),
        ("Data type", f"{dtype} (no torch dtype: torchzarr cannot read it)"),
        ("Chunk shape", tuple(chunks or ())),
        ("Fill value", repr(doc.get("fill_value"))),
        ("Store", repr(store)),
    ]
    return "\n".join(f"{name:<19}: {value}" for name, value in rows)


def _consolidate(args: argparse.Namespace) -> None:
    group = consolidate_metadata(args.store, path=args.path)
    count = len(group.member_metadata())  # arrays of dtypes torchzarr cannot read too
    print(f"consolidated the metadata of {count} nodes into {group.name} of {args.store}")


def _tree(args: argparse.Namespace) -> None:
    node = open_node(args.store, mode="r", path=args.path)
    if isinstance(node, Array):
        print(f"{node.name} [A] {node.shape} {node.dtype}")
    else:
        # --level counts the levels shown (1: direct members); tree() counts from 0
        print(node.tree(level=None if args.level is None else args.level - 1))


def _copy(args: argparse.Namespace) -> None:
    where = (args.dest_path if args.dest_path is not None else args.path).strip("/")
    # Opening creates nothing (copy_keys finds the source's keys before it writes), and
    # the destination stays open until the copy joins its hierarchy: a zip writes its
    # directory once, at the close.
    with resolve_store(args.source, mode="r") as source, resolve_store(args.dest, mode="a") as dest:
        if where:
            _check_destination(source, args.path.strip("/"), dest, where)
        result = copy_keys(
            source,
            dest,
            args.path,
            dest_path=args.dest_path,
            overwrite=args.overwrite,
            jobs=args.jobs,
            progress=_progress_printer("copy") if args.progress else None,
        )
        if where:  # a whole store copied keeps the source's consolidated metadata as it is
            _join_hierarchy(dest, where)
    print(f"copied {result.keys} keys ({result.nbytes / 1e6:.1f} MB) to {args.dest} {where or '/'}")


def _check_destination(source: Store, path: str, dest: Store, where: str) -> None:
    """Refuse, before anything is written, to copy the node at ``path`` to ``where``, below
    the root of ``dest``, where no group would list it: below an array, or in a group of
    the other Zarr format (the missing parents are created in the node's format). Keys that
    are no node (chunks alone) may go anywhere.
    """
    docs = source.get_many(nodes.node_keys(path, None))
    copied = nodes.stored_format(path, docs)
    if copied is None:
        return
    above = node_docs(dest, nodes.ancestors(where)[:-1])
    try:
        missing_parents(dest, where, above, copied, str(nodes.stored_kind(path, docs)))
    except (NodeExistsError, InvalidArgumentError) as err:
        raise type(err)(f"nothing was copied: {err}") from None


def _join_hierarchy(store: Store, path: str) -> None:
    """Make the node copied to ``path`` a member of the hierarchy around it.

    Its missing parent groups are created (in its Zarr format, which
    :func:`_check_destination` made sure the nearest group above has), and the
    consolidated metadata of the groups above it is brought up to date: the node it
    replaced leaves it, the copy and every node below it enter it. Keys that are no node
    (chunks alone) are left as they are.
    """
    copied = nodes.read_member(store, path)
    if copied is None:
        return
    parent = path.rpartition("/")[0]
    if nodes.read_kind(store, parent) is None:
        create_group(store, path=parent, zarr_format=copied.zarr_format)  # and its parents
    below: list[tuple[str, Any]] = []
    if not (isinstance(copied, nodes.UnsupportedArray) or hasattr(copied, "shape")):  # a group
        below = open_group(store, mode="r+", path=path, use_consolidated=False).member_metadata()
    changes = [(path, None), (path, copied)]
    refresh_consolidated(store, changes + [(nodes.join_path(path, r), m) for r, m in below])


def _sizes(text: str) -> tuple[int, ...] | str:
    """``--chunks 256,3072`` as a tuple of ints of at least 1, or "none" (``--shards none``)."""
    if text.strip().lower() == "none":
        return "none"
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sizes like 256,3072, got {text!r}") from None
    if min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"sizes must be >= 1, got {text!r}")
    return sizes


def _fill(text: str) -> int | float | complex | str:
    """A ``--fill-value``: "none" (no fill value), else a number (nan, inf and 1+2j too)."""
    if text.strip().lower() == "none":
        return "none"
    for kind in (int, float, complex):
        try:
            return kind(text)
        except ValueError:
            continue
    raise argparse.ArgumentTypeError(f"must be a number or none, got {text!r}")


def _setting(value: Any) -> Any:
    """An option as ``from_array`` takes it: absent keeps the source's, "none" is None."""
    if value is None:
        return KEEP
    return None if isinstance(value, str) and value.lower() == "none" else value


def _int_from(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """An option type: an int of at least ``minimum`` (and at most ``maximum``)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an int, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be <= {maximum}, got {value}")
        return value

    return parse


def _megabytes(text: str) -> float:
    """``--max-mb``: a number of megabytes above 0 (``inf``: no limit)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if math.isnan(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text!r}")
    return value


def _rechunk(args: argparse.Namespace) -> None:
    source = open_array(args.source, mode="r", path=args.path)
    where = nodes.normalize_path(args.dest_path if args.dest_path is not None else args.path)
    settings = {
        "data": source,
        "path": where,
        "chunks": _setting(args.chunks),
        "shards": _setting(args.shards),
        "compressors": _setting(args.compressors),
        "fill_value": _setting(args.fill_value),
        "zarr_format": args.zarr_format,
        "overwrite": args.overwrite,
    }
    with resolve_store(args.dest, mode="a") as store:  # a zip writes its directory at the close
        new_subtree = _unused_subtree(store, where)
        _check_before_writing(store, settings)
        try:
            dest = from_array(store, **settings)
        except BaseException as err:
            if not isinstance(err, ReadOnlyError):  # refused at once: nothing written
                err.add_note(_undo_rechunk(store, where, new_subtree, args.dest))
            raise
    layout = f"chunks {dest.chunks}" + (f", shards {dest.shards}" if dest.shards else "")
    print(f"wrote {dest.name} of {args.dest}: {dest.shape} {dest.dtype}, {layout}")


#: ``from_array``'s words for its arguments, as the ``rechunk`` options spell them
_OPTION_SPELLINGS = (
    ("from_array", "rechunk"),
    ("pass shards= too", "pass --shards too"),
    ("or None for no sharding", "or --shards none for no sharding"),
)


class _Trial(ReadOnlyStore):
    """A store's data, read-only: what ``from_array`` checks before writing runs on it."""

    def __repr__(self) -> str:
        return repr(self.inner)  # messages name the store the command was given

    def delete_prefix(self, prefix: str) -> None:
        self._check_writable(prefix or "/")  # refused before listing what is there


def _check_before_writing(store: Store, settings: dict[str, Any]) -> None:
    """Make every check ``from_array`` makes before it writes (settings, the place in the
    hierarchy, the source not overwritten) on ``store`` read-only: a refusal raises here,
    having written nothing; the first write ends the trial."""
    try:
        from_array(_Trial(store), write_data=False, **settings)
    except ReadOnlyError:
        return
    except InvalidArgumentError as err:
        message = str(err)
        for python, option in _OPTION_SPELLINGS:
            message = message.replace(python, option)
        raise type(err)(message) from None


def _unused_subtree(store: Store, path: str) -> str | None:
    """The topmost of ``path`` and its missing parent groups when no key is under it: all
    that creating a node at ``path`` adds, which a failed creation may remove."""
    docs = node_docs(store, nodes.ancestors(path))
    missing = [p for p in nodes.ancestors(path) if nodes.stored_kind(p, docs) is None]
    prefix = missing[0] + "/" if missing and missing[0] else ""
    return missing[0] if missing and next(iter(store.list_prefix(prefix)), None) is None else None


def _undo_rechunk(store: Store, path: str, new_subtree: str | None, dest: str) -> str:
    """Remove what a failed ``rechunk`` wrote under ``new_subtree`` (where nothing was
    before); what became of the destination, for the error message."""
    where = f"/{path} of {dest}"
    with contextlib.suppress(TorchZarrError, OSError):
        if new_subtree is not None:  # nothing else there to delete
            store.delete_prefix(new_subtree + "/" if new_subtree else "")
            invalidate_tree_everywhere(store.identity, new_subtree)
            refresh_consolidated(store, [(new_subtree, None)] if new_subtree else [])
            return f"(nothing was left at {where})"
    return f"(the array at {where} is left partly written: --overwrite replaces it)"


def _progress_printer(what: str) -> Any:
    def report(done: int, total: int) -> None:
        print(f"\r{what}: {done}/{total} keys", end="" if done < total else "\n", file=sys.stderr)

    return report


def _bench(args: argparse.Namespace) -> None:
    arr = open_array(args.store, mode="r", path=args.path)
    threads = args.threads or config.threads
    selection: Any = Ellipsis
    shape = arr.shape
    if arr.ndim and arr.nbytes > args.max_mb * 1e6:  # a leading slab that fits the budget
        rows = max(1, int(shape[0] * args.max_mb * 1e6 // arr.nbytes))
        selection, shape = slice(0, rows), (rows, *shape[1:])
    out = torch.empty(shape, dtype=arr.dtype)
    nbytes = out.numel() * out.element_size()
    with config.set(threads=threads):
        start = time.perf_counter()
        arr.read(selection, out=out)  # also warms the page cache and the engine's threads
        first = time.perf_counter() - start
        before = telemetry.snapshot()
        times = []
        for _ in range(args.rounds):
            start = time.perf_counter()
            arr.read(selection, out=out)
            times.append(time.perf_counter() - start)
        after = telemetry.snapshot()
    median = max(statistics.median(times), 1e-9)
    chunks = (after["chunks_fetched"] - before["chunks_fetched"]) // args.rounds
    what = "full read" if selection is Ellipsis else f"rows 0:{shape[0]}"
    size = f"{arr.nbytes / 1e6:.1f} MB"
    print(f"array {arr.name}: {arr.shape} {arr.dtype}, chunks {arr.chunks}, {size}")
    print(f"first read {first * 1e3:.1f} ms ({what})")
    print(
        f"{what}: {median * 1e3:.1f} ms median of {args.rounds} "
        f"({nbytes / median / 1e9:.3f} GB/s, {chunks} chunks read, {threads} threads)"
    )


def _demo(args: argparse.Namespace) -> None:
    rows = args.rows
    root = open_group(args.store, mode="w" if args.overwrite else "w-")
    images = root.create_array(
        "images", shape=(rows, 32, 32, 3), dtype=torch.uint8, chunks=(256, 32, 32, 3)
    )
    labels = root.create_array("labels", shape=(rows,), dtype=torch.int64, chunks=(4096,))
    rng = np.random.default_rng(args.seed)
    classes = rng.integers(0, 256, size=(10, 1, 1, 3), dtype=np.int64)
    for start in range(0, rows, 4096):
        stop = min(rows, start + 4096)
        label = rng.integers(0, 10, size=stop - start)
        noise = rng.integers(-40, 41, size=(stop - start, 32, 32, 3))
        pixels = np.clip(classes[label] + noise, 0, 255).astype(np.uint8)  # learnable classes
        images[start:stop] = pixels
        labels[start:stop] = label
    root.attrs.update({"description": "torchzarr demo: 32x32 RGB images in 10 classes"})
    consolidate_metadata(args.store)
    print(f"wrote {rows} images and labels to {args.store}; train on them with:")
    print(f"  ds = tz.ZarrIterableDataset(tz.open_group({args.store!r}), batch_size=256)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="torchzarr", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, run: Any, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        sub.set_defaults(run=run)
        return sub

    info = command("info", _info, "describe an array or a group")
    tree = command("tree", _tree, "print the hierarchy below a group")
    bench = command("bench", _bench, "time full reads of an array (GB/s)")
    consolidate = command(
        "consolidate", _consolidate, "gather a group's metadata into it (one read to open)"
    )
    for sub in (info, tree, bench, consolidate):
        sub.add_argument("store", help="path or URL of the store")
        sub.add_argument("--path", default="", help="node inside the store")
    tree.add_argument(
        "--level", type=_int_from(1), default=None, help="levels to show (1: direct members)"
    )
    bench.add_argument("--rounds", type=_int_from(1), default=5, help="timed reads (default 5)")
    bench.add_argument(
        "--threads", type=_int_from(0), default=0, help="decode threads (default 0: all)"
    )
    bench.add_argument(
        "--max-mb", type=_megabytes, default=4096, help="read at most this many MB (leading rows)"
    )

    copy = command("copy", _copy, "copy a hierarchy between stores, bytes unchanged")
    copy.add_argument("source", help="path or URL to copy from")
    copy.add_argument("dest", help="path or URL to copy to (a .zip path makes a zip)")
    copy.add_argument("--path", default="", help="node to copy (default: everything)")
    copy.add_argument("--dest-path", default=None, help="where it lands (default: --path)")
    copy.add_argument("--overwrite", action="store_true", help="replace what dest holds there")
    copy.add_argument("--jobs", type=_int_from(1), default=8, help="batches in flight (default 8)")
    copy.add_argument("--progress", action="store_true", help="report progress on stderr")

    rechunk = command(
        "rechunk", _rechunk, "copy an array with other chunks, shards or codecs (tz.from_array)"
    )
    rechunk.add_argument("source", help="path or URL holding the array")
    rechunk.add_argument("dest", help="path or URL to write the new array to")
    rechunk.add_argument("--path", default="", help="the array inside source")
    rechunk.add_argument("--dest-path", default=None, help="where it lands (default: --path)")
    rechunk.add_argument("--chunks", type=_sizes, help="e.g. 256,3072 (default: keep)")
    rechunk.add_argument("--shards", type=_sizes, help="e.g. 16384,3072, or none (default: keep)")
    rechunk.add_argument(
        "--compressors", default=None, help="zstd, fast, balanced, small, none (default: keep)"
    )
    rechunk.add_argument(
        "--fill-value",
        type=_fill,
        help="e.g. 0, nan, --fill-value=-inf, or none for no fill value (default: keep)",
    )
    rechunk.add_argument("--zarr-format", type=int, choices=(2, 3), default=None)
    rechunk.add_argument("--overwrite", action="store_true", help="replace an existing node")

    demo = command("demo", _demo, "write a small image dataset to try the datasets on")
    demo.add_argument("store", help="path or URL to create")
    demo.add_argument(
        "--rows", type=_int_from(1, 2**63 - 1), default=10_000, help="images (default 10000)"
    )
    demo.add_argument("--seed", type=_int_from(0), default=0, help="random seed (>= 0)")
    demo.add_argument("--overwrite", action="store_true", help="replace an existing store")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``torchzarr`` command line; the exit status.

    Example:
        >>> from torchzarr.core.api import open_group
        >>> _ = open_group("memory://cli-doc", mode="w").create_array("x", shape=(2,), dtype="int8")
        >>> main(["tree", "memory://cli-doc"])
        /
        └── x [A] (2,) torch.int8
        0
    """
    output = _Output(sys.stdout)
    try:
        with contextlib.redirect_stdout(cast(TextIO, output)):
            try:
                return _run(argv)
            finally:
                output.flush()  # here, where a closed pipe is seen, rather than at the exit
    except _ReaderGone:
        _discard_output()
        return 141  # as a shell reports a process stopped by a closed pipe (128 + SIGPIPE)


def _run(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    try:
        args.run(args)
    except (TorchZarrError, OSError) as err:
        notes = "".join(f" {note}" for note in getattr(err, "__notes__", ()))
        print(f"torchzarr {args.command}: {err}{notes}", file=sys.stderr)
        return 1
    return 0


class _ReaderGone(Exception):
    """The reader of standard output closed it (``torchzarr info x | head -1``)."""


class _Output:
    """Standard output, whose reader going away raises :class:`_ReaderGone`: no error of
    the command (a store's broken connection still is one)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> Any:
        return self._call("write", text)

    def flush(self) -> None:
        self._call("flush")

    def _call(self, method: str, *args: Any) -> Any:
        try:
            return getattr(self._stream, method)(*args)
        except BrokenPipeError:
            raise _ReaderGone from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _discard_output() -> None:
    """Point standard output at the null device: the interpreter's flush at the exit then
    does not report the closed pipe again (Python's documentation: "Note on SIGPIPE")."""
    with contextlib.suppress(OSError, ValueError, AttributeError):  # no file descriptor
        output = sys.stdout.fileno()
        os.dup2(os.open(os.devnull, os.O_WRONLY), output)


if __name__ == "__main__":  # pragma: no cover - ``python -m torchzarr.cli``
    raise SystemExit(main())
