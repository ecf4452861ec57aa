"""Deletes on object stores (S3, GCS, Azure) that check what they removed, and retry the rest.

A bulk delete can report success while keys remain: S3's DeleteObjects answers HTTP 200
with the keys it refused (``AccessDenied``, ``InternalError``) under ``Errors``, which s3fs
ignores, and adlfs drops the errors of a batch whose first error is a missing blob's. A
delete that leaves chunks behind makes a new array at that path read the old ones, so each
key's outcome is taken from the backend's answer (S3: DeleteObjects with ``Quiet`` off
names every key deleted or refused; Azure: one DELETE per blob, as adlfs sends them; GCS:
gcsfs raises any failure of its batch). Keys whose outcome is unknown are looked for (one listing of the
prefix for a prefix delete, else a lookup per key), as are the keys of a bulk request that
failed transiently as a whole (a timeout may come after part was deleted); the keys still
there are deleted again as the store's retry policy allows, and those that remain are
reported. On S3 a key XML cannot carry, and each key of a DeleteObjects refused as a whole,
is deleted by a request of its own.
"""

from __future__ import annotations

import errno
import functools
import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from torchzarr.storage.fsspec_requests import run_concurrently
from torchzarr.storage.fsspec_settings import BUCKET_PROTOCOLS
from torchzarr.storage.retry import RetryPolicy, is_transient

if TYPE_CHECKING:
    from torchzarr.storage.fsspec_store import FsspecStore

__all__ = [
    "KeyDeleteError",
    "StillThereError",
    "fill_note",
    "names_under",
    "remaining",
    "remove",
    "remove_objects",
]

#: the most keys one S3 DeleteObjects request takes
_S3_BATCH = 1000
_GLOB_CHARS = frozenset("*?[")
#: a chunk's key: its last component is a chunk index ("c/0/1", "0.1")
_CHUNK_KEY = re.compile(r"(^|/)\d+(\.\d+)*$")
_SOME_MISSING: Any = object()
#: a character an XML 1.0 body cannot carry, or (CR) carries only as a reference
_NOT_IN_XML = re.compile("[^\t\n\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


class KeyDeleteError(OSError):
    """A key that a bulk delete refused, with the backend's error code (``AccessDenied``).

    Example:
        >>> str(KeyDeleteError("InternalError", "We encountered an internal error"))
        'InternalError: We encountered an internal error'
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}" if message else code)
        # as botocore's ClientError carries it: is_transient reads the code (SlowDown ...)
        self.response = {"Error": {"Code": code, "Message": message}}


class StillThereError(OSError):
    """An object found after a delete that reported no error for it (it is tried again).

    Example:
        >>> str(StillThereError())
        'the object is still there after a delete that reported no error'
    """

    def __init__(self) -> None:
        super().__init__("the object is still there after a delete that reported no error")


class _Unknown:
    """The outcome of a path's delete is not known (``cause``: the batch's error, if any)."""

    def __init__(self, cause: BaseException | None = None) -> None:
        self.cause = cause


Outcome = Any  # None (gone), an exception (failed), or _Unknown


async def _s3_delete(fs: Any, paths: Sequence[str]) -> dict[str, Outcome]:
    """One DeleteObjects request, ``Quiet`` off: the answer names each key deleted or refused."""
    split = [fs.split_path(path) for path in paths]
    outcome: dict[str, Outcome] = dict.fromkeys(paths, _Unknown())
    by_key = {key: path for path, (_, key, _) in zip(paths, split, strict=True)}
    objects = [{"Key": key} for key in by_key]
    answer = await fs._call_s3(
        "delete_objects", Bucket=split[0][0], Delete={"Objects": objects, "Quiet": False}
    )
    for path in paths:
        fs.invalidate_cache(path)
        fs.invalidate_cache(fs._parent(path))
    for done in answer.get("Deleted") or ():
        if done.get("Key") in by_key:
            outcome[by_key[done["Key"]]] = None
    for error in answer.get("Errors") or ():
        if error.get("Key") in by_key:
            code, message = str(error.get("Code", "Error")), str(error.get("Message", ""))
            outcome[by_key[error["Key"]]] = KeyDeleteError(code, message)
    return outcome


def _refused_as_malformed(error: BaseException) -> bool:
    """Whether a DeleteObjects failed as a whole for its form (``MalformedXML``,
    ``InvalidRequest``: s3fs's EINVAL), not for access or a missing bucket, which each
    key's own request would meet again."""
    return isinstance(error, OSError) and error.errno == errno.EINVAL


async def _one_delete(fs: Any, path: str) -> dict[str, Outcome]:
    """One DELETE request: a missing object is gone already."""
    try:
        await fs._rm_file(path)
    except FileNotFoundError:
        pass
    except Exception as exc:
        return {path: exc}
    return {path: None}


async def _bulk_delete(fs: Any, paths: Sequence[str], raises: bool) -> dict[str, Outcome]:
    """``fs.rm`` of ``paths``: a FileNotFoundError when none was there. With ``raises``
    (gcsfs's batched delete) it raises any failure but a missing object's, so success
    means every key is gone; any other filesystem's says nothing of each key. After an
    error no key's outcome is known."""
    try:
        await fs._rm(list(paths))
    except FileNotFoundError:
        pass
    except Exception as exc:
        return dict.fromkeys(paths, _Unknown(exc))
    return dict.fromkeys(paths, None if raises else _Unknown())


def _requests(fs: Any, paths: list[str]) -> list[tuple[list[str], Any]]:
    """The bulk requests that delete ``paths``: (their paths, a call giving the outcomes)."""
    kind = type(fs).__name__
    if kind == "S3FileSystem":
        # a key XML cannot carry (a control character) goes alone, in its URL: the XML
        # body of a DeleteObjects holding it is refused as a whole
        single = [path for path in paths if _NOT_IN_XML.search(path)]
        paths = [path for path in paths if not _NOT_IN_XML.search(path)]
        parts = [paths[i : i + _S3_BATCH] for i in range(0, len(paths), _S3_BATCH)]
        calls = [(part, functools.partial(_s3_delete, fs, part)) for part in parts]
        return calls + [([path], functools.partial(_one_delete, fs, path)) for path in single]
    if kind == "AzureBlobFileSystem":
        return [([path], functools.partial(_one_delete, fs, path)) for path in paths]
    bulk = functools.partial(_bulk_delete, raises=kind == "GCSFileSystem")
    # rm() globs: names with glob characters go one by one
    plain = [path for path in paths if not _GLOB_CHARS.intersection(path)]
    single = [path for path in paths if _GLOB_CHARS.intersection(path)]
    calls = [(plain, functools.partial(bulk, fs, plain))] if plain else []
    return calls + [([path], functools.partial(_one_delete, fs, path)) for path in single]


def _still_there_each(fs: Any, paths: Sequence[str], timeout: float | None) -> list[Any]:
    """Look up each path: its info (still there), or the lookup's error."""
    for path in paths:
        fs.invalidate_cache(path)
    return run_concurrently(fs, [functools.partial(fs._info, path) for path in paths], timeout)


def _look_for(
    fs: Any,
    unknown: dict[str, _Unknown],
    timeout: float | None,
    listed: Callable[[], set[str]] | None,
) -> dict[str, Outcome]:
    """The outcomes of the paths whose delete said nothing of them: gone (None), or an
    error: the batch's, or StillThereError; a failed lookup's error when none tells."""
    paths = list(unknown)
    found: list[Any]
    try:
        if listed is not None:  # one listing of the prefix for them all
            there = listed()
            found = [path in there for path in paths]
        else:
            found = _still_there_each(fs, paths, timeout)
    except Exception as exc:
        found = [exc] * len(paths)
    outcome: dict[str, Outcome] = {}
    for path, info in zip(paths, found, strict=True):
        if info is False or isinstance(info, FileNotFoundError):
            outcome[path] = None
        elif isinstance(info, BaseException):
            outcome[path] = unknown[path].cause or info
        else:
            outcome[path] = unknown[path].cause or StillThereError()
    return outcome


def _again(error: BaseException | None) -> bool:
    """Whether a path that failed with ``error`` is deleted again."""
    return error is not None and (isinstance(error, StillThereError) or is_transient(error))


def remove_objects(
    fs: Any,
    paths: Sequence[str],
    timeout: float | None,
    policy: RetryPolicy,
    listed: Callable[[], set[str]] | None = None,
) -> tuple[dict[str, BaseException], int]:
    """Delete ``paths`` from an async object-store filesystem, each key's outcome checked.

    Keys a bulk request refused transiently (``InternalError``, ``SlowDown``), and keys
    still found after a delete that reported nothing, are deleted again as ``policy``
    allows. ``listed()`` gives the paths a listing of the deleted prefix finds (one request
    for all keys whose outcome is unknown); without it each is looked up on its own.
    Returns the paths that remain with their error, and the attempts made.

    Example:
        >>> from fsspec.implementations.memory import MemoryFileSystem
        >>> from fsspec.implementations.asyn_wrapper import AsyncFileSystemWrapper
        >>> fs = AsyncFileSystemWrapper(MemoryFileSystem(skip_instance_cache=True))
        >>> fs.pipe({"/doc-rm/a": b"1", "/doc-rm/b": b"2"})
        >>> remove_objects(fs, ["/doc-rm/a", "/doc-rm/b"], 5, RetryPolicy())
        ({}, 1)
        >>> fs.find("/doc-rm")
        []
    """
    failures: dict[str, BaseException] = {}
    pending, made = list(dict.fromkeys(paths)), 0
    for attempt in policy.attempts() if pending else ():
        made = attempt + 1
        outcome: dict[str, Outcome] = {}
        requests = _requests(fs, pending)
        # at most 3 DeleteObjects of 1000 keys at once, as s3fs sends them (S3 throttles)
        limit = 3 if type(fs).__name__ == "S3FileSystem" else None
        answers = run_concurrently(fs, [call for _, call in requests], timeout, limit)
        refused: list[str] = []  # the keys of batches refused as a whole: sent one by one
        for (sent, call), answer in zip(requests, answers, strict=True):
            if not isinstance(answer, BaseException):
                outcome.update(answer)
            elif is_transient(answer):  # timed out, say: part of it may have been done
                outcome.update(dict.fromkeys(sent, _Unknown(answer)))
            elif call.func is _s3_delete and _refused_as_malformed(answer):
                refused += sent  # its XML body refused: a key it cannot carry?
            else:
                outcome.update(dict.fromkeys(sent, answer))
        singles = [functools.partial(_one_delete, fs, path) for path in refused]
        for path, answer in zip(
            refused, run_concurrently(fs, singles, timeout) if refused else [], strict=True
        ):
            outcome.update({path: answer} if isinstance(answer, BaseException) else answer)
        unknown = {p: o for p, o in outcome.items() if isinstance(o, _Unknown)}
        if unknown:
            outcome.update(_look_for(fs, unknown, timeout, listed))
        for path in pending:
            if outcome[path] is None:
                failures.pop(path, None)
            else:
                failures[path] = outcome[path]
        pending = [path for path in pending if _again(failures.get(path))]
        if not pending:
            break
    return failures, made


def remaining(
    names: Mapping[str, str], failures: Mapping[str, BaseException], note: str = ""
) -> tuple[str, str, BaseException]:
    """What an error names of the keys a delete left: the first (in the order asked), the
    words that follow it in the message (a few more keys, how many remain, ``note``), and
    the first key's error.

    Example:
        >>> names = {"/b/a": "a", "/b/c": "c"}
        >>> remaining(names, {"/b/a": OSError("x"), "/b/c": OSError("y")})
        ('a', " (and 'c': 2 keys remain)", OSError('x'))
    """
    left = [path for path in names if path in failures]
    words = []
    if len(left) > 1:
        others = ", ".join(repr(names[path]) for path in left[1:4])
        others += f" and {len(left) - 4} more" if len(left) > 4 else ""
        words.append(f"and {others}: {len(left)} keys remain")
    words += [note] if note else []
    return names[left[0]], f" ({'; '.join(words)})" if words else "", failures[left[0]]


def fill_note(keys: Sequence[str]) -> str:
    """What the error of a failed delete of ``keys`` adds when chunks are among them: the
    delete may be how a write stored chunks of only fill values.

    Example:
        >>> fill_note(["a/c/0/1"]), fill_note(["a/zarr.json"])
        ('a chunk written with only fill values is deleted, not stored', '')
    """
    if any(_CHUNK_KEY.search(key) for key in keys):
        return "a chunk written with only fill values is deleted, not stored"
    return ""


def names_under(store: FsspecStore, prefix: str) -> dict[str, str]:
    """The objects of ``store`` whose name below its root starts with ``prefix``, keys or
    not (``pre//x``): path -> name.

    Example:
        >>> from torchzarr.storage.fsspec_store import FsspecStore
        >>> store = FsspecStore("memory://doc-names-under")
        >>> store.set_many({"a/0": b"x", "b/0": b"z"})
        >>> names_under(store, "a/")
        {'/doc-names-under/a/0': 'a/0'}
    """
    base = store.paths.listing_base(prefix)
    store.fs.invalidate_cache(base)
    found = store._run("list", prefix or "/", "find", base, missing=[])
    names = [(path, store.paths.name_of(path)) for path in found]
    return {path: name for path, name in names if name and name.startswith(prefix)}


def remove(
    store: FsspecStore,
    names: dict[str, str],
    listed: Callable[[], set[str]] | None = None,
    note: str = "",
) -> None:
    """Delete the objects of ``store`` at the paths of ``names`` (path -> the key an error
    names); missing ones are no error. On object stores each key's outcome is checked (see
    :func:`remove_objects`; ``listed``: a listing of the deleted prefix), and the keys that
    remain raise a StoreError naming them (and ``note``).

    Example:
        >>> from torchzarr.storage.fsspec_store import FsspecStore
        >>> store = FsspecStore("memory://doc-remove")
        >>> store.set_many({"a": b"x", "b": b"z"})
        >>> remove(store, {store.paths.path("a"): "a", store.paths.path("never"): "never"})
        >>> sorted(store.list_prefix(""))
        ['b']
    """
    if not names:
        return
    fs, paths = store.fs, list(names)
    if store.protocol in BUCKET_PROTOCOLS and getattr(fs, "async_impl", False):
        failures, made = remove_objects(fs, paths, store.timeout, store.policy, listed)
        fs.invalidate_cache(store.paths.root)
        if failures:
            key, more, cause = remaining(names, failures, note)
            raise store._fail(cause, "delete", key, made, more) from cause
        return
    # one bulk request (rm() globs: names with glob characters go one by one), then each
    # on its own if some were missing
    more = f" ({note})" if note else ""
    single = [path for path in paths if _GLOB_CHARS.intersection(path)]
    batched = [path for path in paths if not _GLOB_CHARS.intersection(path)]
    if len(batched) > 1:
        first = names[batched[0]]
        answer = store._run("delete", first, "rm", batched, missing=_SOME_MISSING, more=more)
        batched = batched if answer is _SOME_MISSING else []
    for path in single + batched:
        store._run("delete", names[path], "rm_file", path, missing=None, more=more)
    fs.invalidate_cache(store.paths.root)
