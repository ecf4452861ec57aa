"""The ``torchzarr`` command: info, tree, copy, rechunk, consolidate, bench and demo.

Every command takes a path or URL (``s3://``, ``zip://``, ``memory://`` ...) and ``--path``
for a node inside it; errors print one line and exit with status 1. An option value out
of its range (``--rounds 0``) is a usage error, as argparse reports them (status 2), and
nothing is written. Output its reader closes early (``| head -1``), standard output or
error (``--progress``), or that was closed from the start (``>&-``), ends it quietly (141);
Ctrl-C prints ``torchzarr <command>: interrupted`` once the command has cleaned up (130);
SIGTERM and SIGHUP (``kill``, ``timeout``) ``terminated (SIGTERM)`` (143, 129); more of
these signals after the first (a held Ctrl-C key) wait until it has cleaned up and exited.
Running out of memory is one line too (status 1), and so is a warning, printed once
(``torchzarr rechunk: warning: ...``).
Text the output's encoding cannot hold is written as it can (``tree`` in ASCII).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO, cast

import numpy as np
import torch

from torchzarr import telemetry
from torchzarr.cli_leftovers import WriteWatch, copy_leftovers, destination
from torchzarr.cli_options import fill, int_from, megabytes, sizes
from torchzarr.cli_output import Output, ReaderGone, in_command_words, warnings_as_lines
from torchzarr.cli_rechunk import in_option_words
from torchzarr.cli_rechunk import rechunk as run_rechunk
from torchzarr.cli_signals import Stopped, stop_signals_interrupt
from torchzarr.config import config
from torchzarr.core import nodes
from torchzarr.core.api import (
    consolidate_metadata,
    create_group,
    local_file_note,
    open_array,
    open_group,
)
from torchzarr.core.api import open as open_node
from torchzarr.core.array import Array
from torchzarr.core.cache import invalidate_tree_everywhere
from torchzarr.core.consolidated import refresh_consolidated
from torchzarr.core.info import stored_dtype_name
from torchzarr.core.placement import missing_parents, node_docs
from torchzarr.core.printable import printable
from torchzarr.errors import (
    InvalidArgumentError,
    InvalidKeyError,
    NodeExistsError,
    NodeNotFoundError,
    TorchZarrError,
    UnknownCodecError,
    UnknownExtensionError,
    UnsupportedDtypeError,
)
from torchzarr.storage.base import Store
from torchzarr.storage.copy import copy_keys
from torchzarr.storage.overlap import refuse_overlap
from torchzarr.storage.registry import resolve_store

__all__ = ["main"]


def _info(args: argparse.Namespace) -> None:
    node, store = _open_node(args)
    if store is not None:  # an array torchzarr cannot open
        print(_unsupported_info(node, store))
    else:
        print(node.info)


def _open_node(args: argparse.Namespace) -> tuple[Any, Store | None]:
    """The node at ``--path`` of the store, opened to read, or, for an array of a dtype
    torchzarr cannot hold (or of a codec or extension it does not know), its stored
    metadata (its group lists it so) and the store."""
    try:
        return open_node(args.store, mode="r", path=args.path), None
    except (UnsupportedDtypeError, UnknownCodecError, UnknownExtensionError):
        store = resolve_store(args.store, mode="r")
        member = nodes.read_member(store, nodes.normalize_path(args.path))
        if not isinstance(member, nodes.UnsupportedArray):
            raise
        return member, store


def _unsupported_info(member: nodes.UnsupportedArray, store: Store) -> str:
    """What ``info`` shows of an array torchzarr cannot open: its stored metadata."""
    doc, dtype = member.document, stored_dtype_name(member.document)
    if member.zarr_format == 3:
        chunks = doc.get("chunk_grid", {}).get("configuration", {}).get("chunk_shape")
    else:
        chunks = doc.get("chunks")
    rows = [
        ("Name", printable("/" + member.path)),
        ("Zarr format", member.zarr_format),
        ("Shape", tuple(doc.get("shape", ()))),
        ("Data type", f"{printable(dtype)} (no torch dtype: torchzarr cannot read it)")
        if member.is_dtype
        else ("Data type", printable(dtype)),
        ("Chunk shape", tuple(chunks or ())),
        ("Fill value", repr(doc.get("fill_value"))),
        ("Store", repr(store)),
    ]
    if not member.is_dtype:
        rows.insert(3, ("Unreadable", printable(member.reason)))
    return "\n".join(f"{name:<19}: {value}" for name, value in rows)


def _consolidate(args: argparse.Namespace) -> None:
    group = consolidate_metadata(args.store, path=args.path)
    count = _counted(len(group.member_metadata()), "node")  # of dtypes it cannot read too
    print(f"consolidated the metadata of {count} into {printable(group.name)} of {args.store}")


def _tree(args: argparse.Namespace) -> None:
    node, store = _open_node(args)
    if store is not None:  # an array torchzarr cannot open, shown as Group.tree shows it
        print(printable(f"/{node.path} [A] unsupported dtype {stored_dtype_name(node.document)}"))
    elif isinstance(node, Array):
        print(f"{printable(node.name)} [A] {node.shape} {node.dtype}")
    else:
        # --level counts the levels shown (1: direct members); tree() counts from 0
        print(node.tree(level=None if args.level is None else args.level - 1))


def _copy(args: argparse.Namespace) -> None:
    where = (args.dest_path if args.dest_path is not None else args.path).strip("/")
    # Opening creates nothing (copy_keys finds the source's keys before it writes), and
    # the destination stays open until the copy joins its hierarchy: a zip writes its
    # directory once, at the close.
    with resolve_store(args.source, mode="r") as source, destination(args.dest) as dest:
        refuse_overlap("copy", source, args.path, dest, where)
        if where:
            _check_destination(source, args.path.strip("/"), dest, where)
        watched, progress = WriteWatch(dest), _Progress("copy") if args.progress else None
        try:
            result = copy_keys(
                source,
                watched,
                args.path,
                dest_path=args.dest_path,
                overwrite=args.overwrite,
                jobs=args.jobs,
                progress=progress,
                # a consolidated group above must not list the old node over new chunks
                before_write=(lambda: refresh_consolidated(watched, [(where, None)]))
                if where and args.overwrite
                else None,
            )
        except (TorchZarrError, OSError, KeyboardInterrupt) as err:
            if progress is not None:
                progress.end_line()
            if watched.wrote:  # else refused, or stopped before its first write
                err.add_note(copy_leftovers(dest, where, args.dest, args.overwrite))
            raise
        if where:  # a whole store copied keeps the source's consolidated metadata as it is
            try:
                _join_hierarchy(dest, where)
            except (TorchZarrError, OSError, KeyboardInterrupt) as err:
                err.add_note(
                    f"(the copy to {args.dest} path /{where} is complete, but the groups "
                    "above it may not list it yet: run `torchzarr consolidate "
                    f"{args.dest}`, or the copy again, with --overwrite)"
                )
                raise
    keys = _counted(result.keys, "key")
    print(f"copied {keys} ({result.nbytes / 1e6:.1f} MB) to {args.dest} {where or '/'}")


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
        nodes.normalize_path(where, copied)  # no component a metadata name of its format
        missing_parents(dest, where, above, copied, str(nodes.stored_kind(path, docs)))
    except (NodeExistsError, InvalidArgumentError, InvalidKeyError) as err:
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


class _Progress:
    """Reports progress on one line of standard error, rewritten as it goes."""

    def __init__(self, what: str) -> None:
        self.what, self.line_open = what, False

    def __call__(self, done: int, total: int) -> None:
        self.line_open = done < total
        end = "" if self.line_open else "\n"
        print(f"\r{self.what}: {done}/{total} keys", end=end, file=sys.stderr)

    def end_line(self) -> None:
        """End the line left open: a message printed next starts a line of its own."""
        if self.line_open:
            self.line_open = False
            print(file=sys.stderr)


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
    print(f"array {printable(arr.name)}: {arr.shape} {arr.dtype}, chunks {arr.chunks}, {size}")
    print(f"first read {first * 1e3:.1f} ms ({what})")
    print(
        f"{what}: {median * 1e3:.1f} ms median of {args.rounds} "
        f"({nbytes / median / 1e9:.3f} GB/s, {_counted(chunks, 'chunk')} read, "
        f"{_counted(threads, 'thread')})"
    )


def _demo(args: argparse.Namespace) -> None:
    # a directory or zip the demo created and a failure empties goes, with its folders
    with destination(args.store) as store:
        held = args.overwrite and next(iter(store.list_prefix("")), None) is not None
        root = _demo_root(store, args.overwrite)  # refused: nothing was written
        try:
            _write_demo(root, args.rows, args.seed)
        except BaseException as err:  # an interrupt too: a dataset half written goes
            err.add_note(_undo_demo(store, args.store, held))
            raise
    images = _counted(args.rows, "image")
    print(f"wrote {images} and labels to {args.store}; train on them with:")
    print(f"  ds = tz.ZarrIterableDataset(tz.open_group({args.store!r}), batch_size=256)")


def _demo_root(store: Store, overwrite: bool) -> Any:
    """The demo's root group, created in ``store`` (emptied first with ``overwrite``)."""
    try:
        return open_group(store, mode="w" if overwrite else "w-")
    except NodeExistsError as err:  # in the command's words: --overwrite is mode "w"
        message = str(err).replace(" with mode 'w-'", "")
        message = message.replace(
            "; mode 'w' deletes them first", "; --overwrite deletes them first"
        )
        if " already exists at " in message:
            message += ": pass --overwrite to replace it"
        raise NodeExistsError(message) from None


def _write_demo(root: Any, rows: int, seed: int) -> None:
    images = root.create_array(
        "images", shape=(rows, 32, 32, 3), dtype=torch.uint8, chunks=(256, 32, 32, 3)
    )
    labels = root.create_array("labels", shape=(rows,), dtype=torch.int64, chunks=(4096,))
    rng = np.random.default_rng(seed)
    classes = rng.integers(0, 256, size=(10, 1, 1, 3), dtype=np.int64)
    for start in range(0, rows, 4096):
        stop = min(rows, start + 4096)
        label = rng.integers(0, 10, size=stop - start)
        noise = rng.integers(-40, 41, size=(stop - start, 32, 32, 3))
        pixels = np.clip(classes[label] + noise, 0, 255).astype(np.uint8)  # learnable classes
        images[start:stop] = pixels
        labels[start:stop] = label
    root.attrs.update({"description": "torchzarr demo: 32x32 RGB images in 10 classes"})
    consolidate_metadata(root.store, path=root.path)  # memory:// anew would be another store


def _undo_demo(store: Store, url: str, held: bool) -> str:
    """Delete the dataset a failed ``demo`` began (it was the only thing in ``store``: the
    demo refuses a store holding any key, or empties it with --overwrite); what became of
    the store, for the error message."""
    try:
        store.delete_prefix("")
        invalidate_tree_everywhere(store.identity, "")
    except (TorchZarrError, OSError):
        return f"(the dataset at {url} is incomplete: run the demo again, with --overwrite)"
    if held:
        return f"(nothing was left at {url}: --overwrite deleted what it held first)"
    return f"(nothing was left at {url})"


def _counted(count: int, noun: str) -> str:
    """``count`` and ``noun``, plural unless one: "1 key", "3 keys"."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _parser() -> argparse.ArgumentParser:
    summary = __doc__.splitlines()[0].replace("``", "")  # as text, not reStructuredText
    parser = argparse.ArgumentParser(prog="torchzarr", description=summary)
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
        "--level", type=int_from(1), default=None, help="levels to show (1: direct members)"
    )
    bench.add_argument("--rounds", type=int_from(1), default=5, help="timed reads (default 5)")
    bench.add_argument(
        "--threads", type=int_from(0), default=0, help="decode threads (default 0: all)"
    )
    bench.add_argument(
        "--max-mb", type=megabytes, default=4096, help="read at most this many MB (leading rows)"
    )

    copy = command("copy", _copy, "copy a hierarchy between stores, bytes unchanged")
    copy.add_argument("source", help="path or URL to copy from")
    copy.add_argument("dest", help="path or URL to copy to (a .zip path makes a zip)")
    copy.add_argument("--path", default="", help="node to copy (default: everything)")
    copy.add_argument("--dest-path", default=None, help="where it lands (default: --path)")
    copy.add_argument("--overwrite", action="store_true", help="replace what dest holds there")
    copy.add_argument("--jobs", type=int_from(1), default=8, help="batches in flight (default 8)")
    copy.add_argument("--progress", action="store_true", help="report progress on stderr")

    rechunk = command(
        "rechunk", run_rechunk, "copy an array with other chunks, shards or codecs (tz.from_array)"
    )
    rechunk.set_defaults(reword=in_option_words)  # its warnings in its options' words
    rechunk.add_argument("source", help="path or URL holding the array")
    rechunk.add_argument("dest", help="path or URL to write the new array to")
    rechunk.add_argument("--path", default="", help="the array inside source")
    rechunk.add_argument("--dest-path", default=None, help="where it lands (default: --path)")
    rechunk.add_argument("--chunks", type=sizes, help="e.g. 256,3072 (default: keep)")
    rechunk.add_argument("--shards", type=sizes, help="e.g. 16384,3072, or none (default: keep)")
    rechunk.add_argument(
        "--compressors", default=None, help="zstd, fast, balanced, small, none (default: keep)"
    )
    rechunk.add_argument(
        "--fill-value",
        type=fill,
        help="e.g. 0, nan, --fill-value=-inf, or none for no fill value (default: keep)",
    )
    rechunk.add_argument(
        "--zarr-format",
        type=int,
        choices=(2, 3),
        default=None,
        help="Zarr format of the new array (default: keep)",
    )
    rechunk.add_argument("--overwrite", action="store_true", help="replace an existing node")

    demo = command("demo", _demo, "write a small image dataset to try the datasets on")
    demo.add_argument("store", help="path or URL to create")
    demo.add_argument(
        "--rows", type=int_from(1, 2**63 - 1), default=10_000, help="images (default 10000)"
    )
    demo.add_argument("--seed", type=int_from(0), default=0, help="random seed (>= 0)")
    demo.add_argument("--overwrite", action="store_true", help="replace an existing store")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``torchzarr`` command line; the exit status. With ``argv`` None (the process's
    own command line, as the ``torchzarr`` script runs it), a stop signal leaves the later
    ones ignored until the process exits; else the signal handlers are put back.

    Example:
        >>> from torchzarr.core.api import open_group
        >>> _ = open_group("memory://cli-doc", mode="w").create_array("x", shape=(2,), dtype="int8")
        >>> main(["tree", "memory://cli-doc"])
        /
        └── x [A] (2,) torch.int8
        0
    """
    streams = Output(sys.stdout), Output(sys.stderr)
    try:
        with (
            contextlib.redirect_stdout(cast(TextIO, streams[0])),
            contextlib.redirect_stderr(cast(TextIO, streams[1])),
        ):
            try:
                return _run(argv)
            finally:
                streams[0].flush()  # here, where a closed pipe is seen, rather than at the exit
    except ReaderGone:
        for stream in streams:
            stream.discard()
        return 141  # as a shell reports a process stopped by a closed pipe (128 + SIGPIPE)


def _run(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    try:
        # the process's own command line (argv None): a stop signal seen leaves the later
        # ones ignored until it exits, so that a held Ctrl-C cannot cut its exit short
        with (
            stop_signals_interrupt(keep_ignored=argv is None),
            warnings_as_lines(args.command, getattr(args, "reword", None)),
        ):
            args.run(args)
    except (TorchZarrError, OSError, KeyboardInterrupt, MemoryError) as err:
        # an interrupt (Ctrl-C, SIGTERM) comes here once the command's cleanup ran
        if isinstance(err, Stopped):
            said, status = f"terminated ({err})", 128 + err.signum  # as a shell reports it
        elif isinstance(err, KeyboardInterrupt):
            said, status = "interrupted", 130  # 128 + SIGINT
        elif isinstance(err, MemoryError) and not isinstance(err, TorchZarrError):
            said, status = "ran out of memory" + (f": {err}" if str(err) else ""), 1
        else:
            said, status = in_command_words(str(err)) + _file_note(args, err), 1
        notes = "".join(f" {note}" for note in getattr(err, "__notes__", ()))
        print(printable(f"torchzarr {args.command}: {said}{notes}"), file=sys.stderr)
        return status
    return 0


def _file_note(args: argparse.Namespace, err: BaseException) -> str:
    """For a node not found in a local store whose root is a file, or below one, a note
    saying so (looked for on that error path only), unless the error says it already."""
    location = getattr(args, "source", getattr(args, "store", None))  # the store read
    if not isinstance(err, NodeNotFoundError) or not isinstance(location, str):
        return ""
    if "://" in location and not location.startswith("file:"):
        return ""
    try:
        note = local_file_note(resolve_store(location, mode="r"))
    except (TorchZarrError, OSError):
        return ""
    return "" if note in str(err) else note


if __name__ == "__main__":  # pragma: no cover - ``python -m torchzarr.cli``
    raise SystemExit(main())
