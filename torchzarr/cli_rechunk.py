"""The ``torchzarr rechunk`` command: ``from_array`` from the command line, checked before it
writes, with its messages in the command's words and its failures undone."""

from __future__ import annotations

import argparse
import contextlib
import re
from typing import Any

from torchzarr.cli_leftovers import destination
from torchzarr.cli_options import Unrepresentable
from torchzarr.codecs.transpose import TransposeCodec
from torchzarr.core import nodes
from torchzarr.core.api import open_array
from torchzarr.core.array import Array
from torchzarr.core.cache import invalidate_tree_everywhere
from torchzarr.core.consolidated import refresh_consolidated
from torchzarr.core.from_array import KEEP, from_array
from torchzarr.core.placement import node_docs
from torchzarr.core.printable import printable
from torchzarr.errors import (
    CodecError,
    InvalidKeyError,
    MetadataError,
    OutOfMemoryError,
    ReadOnlyError,
    TorchZarrError,
)
from torchzarr.storage.base import Store
from torchzarr.storage.overlap import refuse_overlap
from torchzarr.storage.wrappers import ReadOnlyStore

__all__ = ["OPTION_SPELLINGS", "in_option_words", "rechunk"]


def rechunk(args: argparse.Namespace) -> None:
    """Run ``torchzarr rechunk`` with its parsed ``args``; print what it wrote.

    Example:
        >>> import torch, torchzarr as tz
        >>> _ = tz.create_array("memory://rechunk-doc", data=torch.arange(8), chunks=(2,))
        >>> rechunk(argparse.Namespace(source="memory://rechunk-doc", dest="memory://rechunk-out",
        ...     path="", dest_path=None, chunks=(4,), shards=None, compressors=None,
        ...     fill_value=None, zarr_format=None, overwrite=False))
        wrote / of memory://rechunk-out: (8,) torch.int64, chunks (4,)
    """
    source = open_array(args.source, mode="r", path=args.path)
    if isinstance(args.fill_value, Unrepresentable):  # as coerce_fill_value words it
        raise MetadataError(
            f"fill_value {args.fill_value} does not fit dtype {source.data_type.name}"
        )
    where = _node_path(args.dest_path if args.dest_path is not None else args.path, args, source)
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
    settings |= _v2_layout(source, args.zarr_format or source.zarr_format, args.source)
    with destination(args.dest) as store:  # a zip writes its directory at the close
        refuse_overlap("rechunk", source.store, source.path, store, where)
        new_subtree = _unused_subtree(store, where)
        _check_before_writing(store, settings)
        try:
            dest = from_array(store, **settings)
        except BaseException as err:  # an interrupt too: what was begun is removed
            failed = _out_of_memory(err, source, args) if isinstance(err, MemoryError) else err
            if not isinstance(err, ReadOnlyError):  # refused at once: nothing written
                failed.add_note(_undo_rechunk(store, where, new_subtree, args))
            if failed is err:
                raise
            raise failed from err
    layout = f"chunks {dest.chunks}" + (f", shards {dest.shards}" if dest.shards else "")
    print(f"wrote {printable(dest.name)} of {args.dest}: {dest.shape} {dest.dtype}, {layout}")


def _out_of_memory(err: MemoryError, source: Array, args: argparse.Namespace) -> BaseException:
    """``err``, a chunk or shard too large for the memory this process may take (a container's
    limit, ``ulimit -v``: physical memory may be larger), said in the command's words."""
    why = f": {err}" if str(err) else ""
    return OutOfMemoryError(
        f"ran out of memory copying array {source.name} of {args.source} ({source.shape} "
        f"{source.dtype}) to {args.dest}{why}; a chunk is built whole in memory: pick "
        "smaller --chunks (or --shards)"
    )


def _node_path(path: str, args: argparse.Namespace, source: Array) -> str:
    """``path`` normalized for a node of the Zarr format written (``--zarr-format``, else the
    source's); a name reserved in it, that the other format takes, says to pass that one."""
    written = args.zarr_format or source.zarr_format
    try:
        return nodes.normalize_path(path, written)
    except InvalidKeyError as err:
        other = 5 - written
        try:
            nodes.normalize_path(path, other)
        except InvalidKeyError:
            raise err from None
        raise InvalidKeyError(
            f"{err} (pass --zarr-format {other} for a node of that name)"
        ) from None


def _setting(value: Any) -> Any:
    """An option as ``from_array`` takes it: absent keeps the source's, "none" is None."""
    if value is None:
        return KEEP
    return None if isinstance(value, str) and value.lower() == "none" else value


def _v2_layout(source: Array, zarr_format: int, name: str) -> dict[str, Any]:
    """The settings that write a v3 ``source`` whose chunks are transposed as Zarr v2 does:
    its memory order "F" (every axis reversed), with no filter; no transpose: none."""
    filters = source.filters
    transposes = [f for f in filters if isinstance(f, TransposeCodec)]
    if zarr_format != 2 or source.zarr_format != 3 or not transposes:
        return {}
    axes = tuple(range(source.ndim))
    order = transposes[0].order
    order = axes if order == "C" else axes[::-1] if order == "F" else order
    if len(filters) == 1 and order == axes:
        return {"filters": None}
    if len(filters) == 1 and order == axes[::-1]:
        return {"filters": None, "order": "F"}
    names = [f.codec_name for f in filters]
    raise CodecError(
        f"array {source.name} of {name} has filters {names} (transpose order {list(order)}) "
        "with no Zarr v2 form, so rechunk cannot write it as --zarr-format 2: Zarr v2 "
        "stores chunks transposed only as memory order 'F' (every axis reversed) and no "
        "other filter; leave out --zarr-format 2 to keep Zarr v3"
    )


#: ``from_array``'s and ``create_array``'s words for their arguments, as the ``rechunk``
#: options spell them: (regular expression, replacement) pairs, applied in turn
OPTION_SPELLINGS = (
    ("from_array", "rechunk"),
    ("pass shards= too", "pass --shards too"),
    ("or None for no sharding", "or --shards none for no sharding"),
    ("shards need zarr_format=3", "shards need --zarr-format 3"),
    # the node there is refused for want of --overwrite, whatever the formats
    (
        r"(already exists at .*?)(, and zarr_format=[23] was asked)?$",
        r"\1: pass --overwrite to replace it",
    ),
    (
        "have no Zarr v2 form: pass filters= explicitly",
        "have no Zarr v2 form, and rechunk has no option to replace them: leave out "
        "--zarr-format 2 to keep Zarr v3",
    ),
    ("pass compressors= explicitly", "pass --compressors"),
    ("pass chunks=", "pass --chunks"),
    # a filter of a Zarr v2 source that Zarr v3 takes among the compressors only
    (
        r"^(filter .*) is not an array -> array codec but (.*) codec: pass it in \w+=.*$",
        r"the source's \1 is \2 codec, which Zarr v3 takes only among the compressors, and "
        "rechunk has no option to move it: leave out --zarr-format 3 to keep Zarr v2",
    ),
    # a node of the other format than the group above it (rechunk can change its format)
    (
        r"\(a node in it must be Zarr v([23]): pass zarr_format=[23]\)",
        r"(a node in it must be Zarr v\1: pass --zarr-format \1)",
    ),
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
    in the command's words, having written nothing; the first write ends the trial."""
    try:
        from_array(_Trial(store), write_data=False, **settings)
    except ReadOnlyError:
        return
    except TorchZarrError as err:
        message = in_option_words(str(err))
        if message == str(err):
            raise
        raise type(err)(message) from None


def in_option_words(message: str) -> str:
    """``message``, of ``from_array`` or ``create_array``, in the words of the ``rechunk``
    options (:data:`OPTION_SPELLINGS`): a refusal or a warning.

    Example:
        >>> in_option_words("pass chunks= (such as the shard shape) to choose the v2 chunks")
        'pass --chunks (such as the shard shape) to choose the v2 chunks'
    """
    for python, option in OPTION_SPELLINGS:
        message = re.sub(python, option, message)
    return message


def _unused_subtree(store: Store, path: str) -> str | None:
    """The topmost of ``path`` and its missing parent groups when no key is under it: all
    that creating a node at ``path`` adds, which a failed creation may remove."""
    docs = node_docs(store, nodes.ancestors(path))
    missing = [p for p in nodes.ancestors(path) if nodes.stored_kind(p, docs) is None]
    prefix = missing[0] + "/" if missing and missing[0] else ""
    return missing[0] if missing and next(iter(store.list_prefix(prefix)), None) is None else None


def _undo_rechunk(store: Store, path: str, new_subtree: str | None, args: Any) -> str:
    """Remove what a failed ``rechunk`` wrote under ``new_subtree`` (where nothing was
    before); what became of the destination, for the error message."""
    where = f"/{path} of {args.dest}"
    with contextlib.suppress(TorchZarrError, OSError):
        if new_subtree is not None:  # nothing else there to delete
            store.delete_prefix(new_subtree + "/" if new_subtree else "")
            invalidate_tree_everywhere(store.identity, new_subtree)
            refresh_consolidated(store, [(new_subtree, None)] if new_subtree else [])
            return f"(nothing was left at {where})"
    with contextlib.suppress(TorchZarrError, OSError):
        if nodes.read_kind(store, path) is None:  # the copy removed the array it began
            if args.overwrite:
                return f"(no array is left at {where}: --overwrite deleted the one there first)"
            return f"(no array is left at {where}: what was there before stays as it was)"
    return f"(the array at {where} is left partly written: --overwrite replaces it)"
