"""Error helpers of ``FsspecStore``: short causes, range errors, install hints for backends."""

from __future__ import annotations

import re

from torchzarr.errors import MissingDependencyError

__all__ = [
    "batch_label",
    "bucket_is_gone",
    "describe",
    "is_range_error",
    "missing_dependency",
]

# how S3, GCS and Azure (through their fsspec drivers) say that the bucket itself is gone
_NO_BUCKET = re.compile(
    r"NoSuchBucket|ContainerNotFound|(bucket|container) does not exist", re.IGNORECASE
)

#: protocol -> (package that implements it, torchzarr extra that installs it)
_PACKAGES = {
    **dict.fromkeys(("s3", "s3a"), ("s3fs", "s3")),
    **dict.fromkeys(("gs", "gcs"), ("gcsfs", "gcs")),
    **dict.fromkeys(("az", "azure", "abfs", "abfss"), ("adlfs", "azure")),
    **dict.fromkeys(("http", "https"), ("aiohttp", "http")),
}


def describe(exc: BaseException) -> str:
    """``"Type: first line"`` of an error, with a hint when credentials are the cause.

    Example:
        >>> describe(TimeoutError("read timed out\\nrequest id 42"))
        'TimeoutError: read timed out'
    """
    # the first line only: cloud SDKs append request ids and whole XML bodies
    lines = (str(exc).strip() or repr(exc)).splitlines()
    text = lines[0] + "".join(f" ({x})" for x in lines[1:] if x.startswith("ErrorCode:"))
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
    """True when an error says that the bucket or container itself does not exist.

    Example:
        >>> bucket_is_gone(FileNotFoundError("The specified bucket does not exist"))
        True
    """
    return bool(_NO_BUCKET.search(f"{type(exc).__name__} {exc}"))


def batch_label(key: str, count: int) -> str:
    """How an error names a key sent with ``count - 1`` others in one request.

    Example:
        >>> batch_label("c/0", 3)
        'c/0 (and 2 more keys sent with it)'
    """
    return key if count == 1 else f"{key} (and {count - 1} more keys sent with it)"
