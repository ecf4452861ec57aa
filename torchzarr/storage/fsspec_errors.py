"""Error helpers of ``FsspecStore``: short causes, range errors, install hints for backends."""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import unquote

from torchzarr.errors import MissingDependencyError, StoreError
from torchzarr.storage.fsspec_requests import run_on_loop
from torchzarr.storage.fsspec_settings import BUCKET_PROTOCOLS, masked
from torchzarr.storage.retry import is_transient

if TYPE_CHECKING:
    from torchzarr.storage.fsspec_store import FsspecStore

__all__ = [
    "batch_label",
    "bucket_exists",
    "bucket_is_gone",
    "describe",
    "error_chain",
    "hidden",
    "hiding_secrets",
    "secrets_of",
    "is_range_error",
    "missing_bucket",
    "missing_dependency",
]

# how S3, GCS and Azure (through their fsspec drivers) say that the bucket itself is gone
_NO_BUCKET = re.compile(
    r"NoSuchBucket|ContainerNotFound|(bucket|container) does not exist", re.IGNORECASE
)

#: lines of an error's message that say nothing of why: request ids, times, bodies
_NOISE = ("requestid", "request id", "time:", "date:", "content:", "x-ms-", "<", "header")
#: how much of an error's message ``describe`` keeps
_REASON_CHARS = 300

#: protocol -> (package that implements it, torchzarr extra that installs it)
_PACKAGES = {
    **dict.fromkeys(("s3", "s3a"), ("s3fs", "s3")),
    **dict.fromkeys(("gs", "gcs"), ("gcsfs", "gcs")),
    **dict.fromkeys(("az", "azure", "abfs", "abfss"), ("adlfs", "azure")),
    **dict.fromkeys(("http", "https"), ("aiohttp", "http")),
}


def describe(exc: BaseException, secrets: tuple[str, ...] = ()) -> str:
    """``"Type: message"`` of an error, with a hint when credentials are the cause: its
    first line, and the lines after it that say why (request ids, times and XML bodies,
    which cloud SDKs append, left out), up to about 300 characters; the passwords of URLs
    in it, and ``secrets``, shown as ``***`` (before it is cut: no part of one shows).

    Example:
        >>> describe(TimeoutError("read timed out\\nRequestId:42"))
        'TimeoutError: read timed out'
        >>> describe(ValueError("Parameter validation failed:\\nInvalid bucket name 'a_b'"))
        "ValueError: Parameter validation failed: Invalid bucket name 'a_b'"
    """
    lines = [x.strip() for x in (str(exc).strip() or repr(exc)).splitlines() if x.strip()]
    reason = [x for x in lines[1:] if not x.lower().startswith(_NOISE)]
    text = lines[0]
    for line in reason:
        if not line.startswith("ErrorCode:"):  # after "failed:" a space, else a "; "
            text += f"{' ' if text.endswith(':') else '; '}{line}"
    text = hidden(masked(text), secrets)
    if len(text) > _REASON_CHARS:
        text = text[: _REASON_CHARS - 3].rstrip() + "..."
    text += "".join(f" ({x})" for x in reason if x.startswith("ErrorCode:"))
    if "credential" in type(exc).__name__.lower() or "credential" in text.lower():
        text += " (pass credentials in storage_options or set them in the environment)"
    return f"{type(exc).__name__}: {text}"


def is_range_error(exc: BaseException) -> bool:
    """True for "416 range not satisfiable" in the dialects of S3, Azure and HTTP.

    Example:
        >>> is_range_error(OSError("InvalidRange: the range is not satisfiable"))
        True
    """
    if 416 in (getattr(exc, "status", None), getattr(exc, "status_code", None)):
        return True
    text = str(exc).lower()
    return any(s in text for s in ("not satisfiable", "invalidrange", "range specified is invalid"))


def missing_dependency(url: str, protocol: str, err: ImportError) -> MissingDependencyError:
    """The error for a URL whose fsspec implementation is not installed, with what to install.

    Example:
        >>> str(missing_dependency("s3://b", "s3", ImportError("no s3fs")))[:30]
        "opening 's3://b' needs an opti"
    """
    package, extra = _PACKAGES.get(protocol, ("its fsspec implementation", ""))
    hint = f"pip install 'torchzarr[{extra}]' (or {package})" if extra else package
    return MissingDependencyError(
        f"opening {url!r} needs an optional package ({err}): install {hint}"
    )


def bucket_is_gone(exc: BaseException) -> bool:
    """True when an error, or one in its chain of causes, says that the bucket or container
    itself does not exist (adlfs raises a plain FileNotFoundError from Azure's
    ``ContainerNotFound``).

    Example:
        >>> bucket_is_gone(FileNotFoundError("The specified bucket does not exist"))
        True
        >>> try:
        ...     try:
        ...         raise OSError("ErrorCode:ContainerNotFound")
        ...     except OSError as cause:
        ...         raise FileNotFoundError("a/c/0") from cause
        ... except FileNotFoundError as err:
        ...     bucket_is_gone(err), bucket_is_gone(FileNotFoundError("a/c/0"))
        (True, False)
    """
    return any(_NO_BUCKET.search(f"{type(e).__name__} {e}") for e in error_chain(exc))


def bucket_exists(
    fs: Any, bucket: str, call: Callable[..., Any], timeout: float | None = None
) -> bool | None:
    """Whether ``bucket`` exists: False only when the server says it does not; True when
    it does, or when the probe is refused (credentials that may read objects but not ask
    about the bucket: it may well exist); None when the probe failed transiently.
    ``call(method, *args)`` runs a method of ``fs`` (with the store's ``timeout``).

    s3fs's ``exists(bucket)`` gives False on any error (a 403 too): S3 is asked with one
    HeadBucket request, whose 404 alone means "no such bucket".

    Example:
        >>> import fsspec
        >>> fs = fsspec.filesystem("memory")
        >>> bucket_exists(fs, "/doc-no-bucket", lambda method, *args: getattr(fs, method)(*args))
        False
    """
    try:
        if type(fs).__name__ == "S3FileSystem":
            run_on_loop(fs, fs._call_s3, "head_bucket", Bucket=bucket, timeout=timeout)
            return True
        return bool(call("exists", bucket))
    except FileNotFoundError:
        return False
    except Exception as exc:
        return None if is_transient(exc) else True


def missing_bucket(store: FsspecStore, exc: BaseException | None = None) -> StoreError | None:
    """A StoreError if the bucket or container of ``store``'s URL does not exist.

    Checked once while it exists, and again whenever an error ``exc`` (or one of its
    causes) says the bucket is gone (deleted since; that error is trusted, without a
    probe): its keys must not read as missing chunks. A probe that is refused or fails
    says nothing: the original error stands.

    Example:
        >>> from torchzarr.storage.fsspec_store import FsspecStore
        >>> missing_bucket(FsspecStore("memory://doc-bucket")) is None  # no buckets there
        True
    """
    gone = exc is not None and bucket_is_gone(exc)  # the server said so: no probe needed
    if gone:
        store._bucket_checked = False
    if store._bucket_checked or store.protocol not in BUCKET_PROTOCOLS:
        return None
    bucket = store.paths.root.split("/", 1)[0]
    exists = None if gone else bucket_exists(store.fs, bucket, store._call, store.timeout)
    if exists is not False and not gone:
        store._bucket_checked = exists is True  # after a transient failure: asked again
        return None
    return StoreError(
        f"bucket or container {bucket!r} of {store._shown!r} does not exist "
        "(create it first, or check the URL and the endpoint in storage_options)"
    )


def error_chain(exc: BaseException, limit: int = 16) -> list[BaseException]:
    """``exc`` and the errors it was raised from or while handling (``__cause__``,
    ``__context__``), each once, at most ``limit``.

    Example:
        >>> err = ValueError("outer")
        >>> err.__context__ = KeyError("inner")
        >>> error_chain(err)
        [ValueError('outer'), KeyError('inner')]
    """
    found: list[BaseException] = []
    todo = [exc]
    while todo and len(found) < limit:
        current = todo.pop(0)
        if any(current is seen for seen in found):
            continue
        found.append(current)
        todo += [e for e in (current.__cause__, current.__context__) if e is not None]
    return found


def batch_label(key: str, count: int) -> str:
    """How an error names a key sent with ``count - 1`` others in one request.

    Example:
        >>> batch_label("c/0", 3)
        'c/0 (and 2 more keys sent with it)'
    """
    return key if count == 1 else f"{key} (and {count - 1} more keys sent with it)"


def secrets_of(password: str | None) -> tuple[str, ...]:
    """The spellings of a URL's password that errors must not show: as written, and
    percent-decoded (None, or one of fewer than 3 characters: none to hide).

    Example:
        >>> secrets_of("p%40ss-w0rd")
        ('p%40ss-w0rd', 'p@ss-w0rd')
    """
    if not password or len(password) < 3:
        return ()
    return tuple(dict.fromkeys((password, unquote(password))))


def hidden(text: str, secrets: tuple[str, ...]) -> str:
    """``text`` with each of ``secrets`` shown as ``***``.

    Example:
        >>> hidden('Invalid bucket name "AKIA:s3cr3t@bkt"', ("s3cr3t",))
        'Invalid bucket name "AKIA:***@bkt"'
    """
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def _shows(exc: BaseException, secrets: tuple[str, ...]) -> bool:
    text = f"{exc} {exc!r}"
    return any(secret in text for secret in secrets)


def _cut(err: BaseException, secrets: tuple[str, ...]) -> None:
    """Drop the chain of ``err`` (what a traceback prints under it) if an error in it
    shows one of ``secrets``: ``err``'s own message names the cause, masked."""
    if secrets and any(_shows(e, secrets) for e in error_chain(err)[1:]):
        err.__cause__ = None  # (this also keeps __context__ from being printed)
        err.__context__ = None


_C = TypeVar("_C", bound=type)


def hiding_secrets(*names: str) -> Callable[[_C], _C]:
    """Class decorator: the methods ``names`` of the class (generators too) raise their
    errors without the chain of causes when a cause shows a secret of the object
    (its ``_secrets``: the password of its URL), as ``raise ... from None`` would.

    Example:
        >>> @hiding_secrets("get")
        ... class Store:
        ...     _secrets = ("s3cr3t",)
        ...     def get(self):
        ...         try:
        ...             raise ValueError("bucket 'k:s3cr3t@b'")
        ...         except ValueError as err:
        ...             raise OSError("cannot read from 'k:***@b'") from err
        >>> try:
        ...     Store().get()
        ... except OSError as err:
        ...     print(err, err.__cause__, err.__context__)
        cannot read from 'k:***@b' None None
    """

    def wrap(method: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.isgeneratorfunction(method):

            @functools.wraps(method)
            def generate(self: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
                try:
                    yield from method(self, *args, **kwargs)
                except Exception as err:
                    _cut(err, self._secrets)
                    raise

            return generate

        @functools.wraps(method)
        def call(self: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return method(self, *args, **kwargs)
            except Exception as err:
                _cut(err, self._secrets)
                raise

        return call

    def decorate(cls: _C) -> _C:
        for name in names:
            setattr(cls, name, wrap(getattr(cls, name)))
        return cls

    return decorate
