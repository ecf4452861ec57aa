"""The settings of an ``FsspecStore``: its URL, ``storage_options`` and retry settings, checked.

``retries``, ``retry_backoff`` and ``timeout`` get the checks ``tz.config.set`` makes (a
``Config`` is made with them), whether they are passed to the store or ride in
``storage_options``, so a string, a NaN or a fraction of a retry is refused up front, with
an error naming the setting and the URL, instead of failing later inside a request.
``batch_size`` (the requests of a batch in flight at once) must be an int >= 1; like the
others it is the store's, never passed to the filesystem (s3fs and aiohttp refuse it).
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from torchzarr.arguments import whole_number
from torchzarr.config import Config, config
from torchzarr.errors import ArgumentTypeError, InvalidArgumentError, UnknownStoreError
from torchzarr.storage.base import options_mapping
from torchzarr.storage.store_args import flag

__all__ = [
    "CHAINING",
    "constructor_settings",
    "BUCKET_PROTOCOLS",
    "FROM_CONFIG",
    "SETTING_NAMES",
    "StoreSettings",
    "identity_digest",
    "url_options",
    "masked",
    "url_password",
    "naming_options",
    "normal_endpoint",
    "open_filesystem",
    "same_data_url",
    "split_settings",
    "store_settings",
]

#: protocols whose first path component is a bucket or container that must exist
BUCKET_PROTOCOLS = frozenset({"s3", "s3a", "gs", "gcs", "az", "azure", "abfs", "abfss"})
#: URL schemes that fsspec spells differently
_ALIASES = {"azure": "az"}
#: store settings that may ride in ``storage_options`` (the rest goes to fsspec)
SETTING_NAMES = ("read_only", "retries", "retry_backoff", "timeout", "batch_size")
#: why ``simplecache::s3://...`` opens no store
CHAINING = (
    "fsspec URL chaining ('::', as in 'simplecache::s3://...') is not supported; open the "
    "plain URL, and for a local cache of chunks use Array.with_cache() (a ChunkCache)"
)
FROM_CONFIG: Any = object()  # "take the default of tz.config" (None means "unbounded")
#: fsspec options (s3fs, gcsfs, adlfs, http) that say only how to sign in, not which data
#: is reached: one bucket opened with two key pairs is one store's data
CREDENTIAL_OPTIONS = frozenset(
    {
        "anon",
        "account_key",
        "client_id",
        "client_secret",
        "credential",
        "key",
        "password",
        "sas_token",
        "secret",
        "session_token",
        "tenant_id",
        "token",
    }
)

#: fsspec options that say only how the data is reached (caching, block sizes, concurrency,
#: directories made on write), not which data: left out of the identity too
BEHAVIOUR_OPTIONS = frozenset(
    {
        "asynchronous",
        "auto_mkdir",
        "batch_size",
        "block_size",
        "cache_timeout",
        "cache_type",
        "consistency",
        "default_block_size",
        "default_cache_type",
        "default_fill_cache",
        "listings_expiry_time",
        "loop",
        "max_concurrency",
        "max_paths",
        "project",
        "requester_pays",
        "s3_additional_kwargs",
        "skip_instance_cache",
        "use_listings_cache",
    }
)

#: schemes that reach the same data as another: identities use the second
_SAME_DATA = {"s3a": "s3", "gcs": "gs", "abfs": "az", "abfss": "az", "azure": "az", "local": "file"}


# the password of ``scheme://user:password@host`` (up to the last "@" before the path)
_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*://[^/:@\s'\"]*):[^/\s'\"]*@")
# the same, with the password as a group
_PASSWORD_PART = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^/:@\s'\"]*:([^/\s'\"]*)@")


def masked(text: str) -> str:
    """``text`` with the password of every URL in it shown as ``***``: a URL, or a message
    naming URLs (what reprs, identities and errors show; the store keeps the real URL).

    Example:
        >>> masked("http://alice:s3cr3t@host:8080/data"), masked("s3://bucket/x")
        ('http://alice:***@host:8080/data', 's3://bucket/x')
        >>> masked("FileNotFoundError: 'ftp://bob:p@ss@h/x' and 'https://h/y'")
        "FileNotFoundError: 'ftp://bob:***@h/x' and 'https://h/y'"
    """
    return _PASSWORD.sub(r"\1:***@", text)


def url_password(url: str) -> str | None:
    """The password of ``scheme://user:password@host/...`` (None without one): what errors
    must not show, whether or not a URL is around it (``masked`` finds it only in URLs).

    Example:
        >>> url_password("s3://AKIA:s3cr3t@bucket/x"), url_password("s3://bucket/x")
        ('s3cr3t', None)
    """
    found = _PASSWORD_PART.match(url)
    return found.group(1) or None if found else None


def same_data_url(url: str) -> str:
    """``url`` with the scheme that other schemes of the same data (``s3a``, ``gcs``,
    ``abfs``) stand for: one spelling for identities.

    Example:
        >>> same_data_url("s3a://b/x"), same_data_url("https://h/x")
        ('s3://b/x', 'https://h/x')
    """
    scheme, sep, rest = url.partition("://")
    return f"{_SAME_DATA.get(scheme.lower(), scheme)}://{rest}" if sep else url


@dataclass(frozen=True)
class StoreSettings:
    """An FsspecStore's URL taken apart, its fsspec options and its checked retry settings."""

    protocol: str  # as the URL spells it, in lower case
    fs_protocol: str  # as fsspec spells it
    fs_url: str
    storage_options: dict[str, Any]
    retries: int
    retry_backoff: float
    timeout: float | None
    batch_size: int | None = None  # requests of a batch in flight at once (None: default)


def split_settings(
    url: str, storage_options: Mapping[str, Any] | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``storage_options`` of ``url`` as (fsspec options, store settings: ``retries`` ...).

    Example:
        >>> split_settings("s3://b/x", {"anon": True, "retries": 2})
        ({'anon': True}, {'retries': 2})
    """
    options = dict(options_mapping(f"storage_options of {masked(url)!r}", storage_options))
    settings = {name: options.pop(name) for name in SETTING_NAMES if name in options}
    return options, settings


def identity_digest(storage_options: Mapping[str, Any]) -> str | None:
    """A digest of the options that tell apart the data a URL reaches (an endpoint, an
    account), credentials and settings of behaviour (``auto_mkdir``, caching) left out; None
    when there are none. Spellings of one endpoint are one (see :func:`naming_options`).

    Example:
        >>> identity_digest({"key": "a", "secret": "b", "auto_mkdir": True}) is None
        True
        >>> identity_digest({"endpoint_url": "http://x"}) == identity_digest(
        ...     {"client_kwargs": {"endpoint_url": "HTTP://X:80/"}, "key": "a"}
        ... )
        True
    """
    naming = sorted(naming_options(storage_options).items(), key=lambda item: item[0])
    return hashlib.sha256(repr(naming).encode()).hexdigest()[:16] if naming else None


@functools.lru_cache(maxsize=256)
def url_options(fs_protocol: str, fs_url: str) -> tuple[tuple[str, Any], ...]:
    """The options the filesystem reads from ``fs_url`` itself (an FTP host, an abfs
    account): they tell data apart as storage options do. None where its package is
    missing (the store raises that when it opens).

    Example:
        >>> url_options("memory", "memory://a/b")
        ()
    """
    import fsspec

    try:
        found = fsspec.get_filesystem_class(fs_protocol)._get_kwargs_from_urls(fs_url)
    except (ImportError, ValueError):
        return ()
    return tuple(sorted(found.items())) if isinstance(found, dict) else ()


def naming_options(storage_options: Mapping[str, Any]) -> dict[str, Any]:
    """The options that tell data apart, each in one spelling: the endpoint (s3fs's
    ``endpoint_url``, top-level or in ``client_kwargs``, gcsfs's ``endpoint_url``) as
    ``endpoint_url``, normalized (scheme and host in lower case, a default port and a
    trailing ``/`` dropped); an AWS region (``client_kwargs`` or ``config_kwargs``) only
    when no endpoint is given (a custom endpoint's region selects no other data); an Azure
    account (``account_name``, ``account_host`` or a ``connection_string``'s endpoint) as
    ``account_name`` on its default endpoint, else as ``account_url``.

    Example:
        >>> naming_options({"endpoint_url": "https://H:443/", "client_kwargs": {
        ...     "region_name": "eu-west-1", "read_timeout": 5}, "key": "k"})
        {'endpoint_url': 'https://h'}
        >>> naming_options({"connection_string": "AccountName=acc;AccountKey=k"})
        {'account_name': 'acc'}
    """
    options = {
        name: value
        for name, value in storage_options.items()
        if name not in CREDENTIAL_OPTIONS and name not in BEHAVIOUR_OPTIONS
    }
    client, configured = (_mapping(options.pop(name, None)) for name in _CLIENT_SETTINGS)
    # s3fs: the top-level endpoint_url takes precedence over client_kwargs'
    endpoint = options.pop("endpoint_url", None) or client.get("endpoint_url")
    if endpoint:
        options["endpoint_url"] = normal_endpoint(endpoint)
    else:  # botocore: the client's region over the Config's
        region = client.get("region_name") or configured.get("region_name")
        if region:
            options["client_kwargs"] = [("region_name", region)]
    options.update(_azure_account(options))
    return {name: value for name, value in options.items() if value is not None}


#: s3fs's dicts of botocore client settings: only their endpoint and region name data
_CLIENT_SETTINGS = ("client_kwargs", "config_kwargs")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_AZURE_SUFFIX = "core.windows.net"


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def normal_endpoint(url: Any) -> Any:
    """``url`` of an endpoint in one spelling: scheme and host in lower case, the port
    dropped where it is the scheme's default, no trailing ``/``, no password.

    Example:
        >>> normal_endpoint("HTTP://Minio.Local:80/"), normal_endpoint("http://h:9000/x/")
        ('http://minio.local', 'http://h:9000/x')
    """
    if not isinstance(url, str):
        return url
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    try:
        port, host = parts.port, parts.hostname
    except ValueError:  # not a port: left as given
        return url.strip().rstrip("/")
    if not scheme or not host:
        return url.strip().rstrip("/")
    host = f"[{host}]" if ":" in host else host
    netloc = host if port in (None, _DEFAULT_PORTS.get(scheme)) else f"{host}:{port}"
    if parts.username:
        netloc = f"{parts.username}@{netloc}"
    return urlunsplit((scheme, netloc, parts.path.rstrip("/"), parts.query, ""))


def _azure_account(options: dict[str, Any]) -> dict[str, Any]:
    """adlfs's account, from its ``connection_string`` (which it prefers), else from
    ``account_name`` and ``account_host``: as ``account_name`` where it is the account's
    default endpoint, else as ``account_url``; the options it came from set to None."""
    connection, name = options.get("connection_string"), options.get("account_name")
    host = options.get("account_host")
    if isinstance(connection, str):
        fields = {}
        for part in connection.split(";"):
            key, sep, value = part.partition("=")
            if sep:
                fields[key.strip().lower()] = value.strip()
        name = fields.get("accountname")
        if "blobendpoint" in fields:
            url = normal_endpoint(fields["blobendpoint"])
        elif name:
            scheme = fields.get("defaultendpointsprotocol", "https").lower()
            suffix = fields.get("endpointsuffix", _AZURE_SUFFIX).lower()
            url = f"{scheme}://{name.lower()}.blob.{suffix}"
        else:  # the development storage or a form not known: its fields but credentials
            kept = ("accountkey", "sharedaccesssignature")
            return {"connection_string": sorted(i for i in fields.items() if i[0] not in kept)}
    elif isinstance(name, str) and name:
        url = normal_endpoint(
            f"https://{host}" if host else f"https://{name}.blob.core.windows.net"
        )
    else:
        return {}
    out: dict[str, Any] = {"connection_string": None, "account_name": None, "account_host": None}
    if isinstance(name, str) and url == f"https://{name.lower()}.blob.{_AZURE_SUFFIX}":
        out["account_name"] = name.lower()
    else:
        out["account_url"] = url
    return out


def _checked(url: str, name: str, value: Any) -> Any:
    """``value`` of setting ``name`` as ``tz.config.set`` takes it (a numpy number as the
    Python number), else a clear error."""
    try:
        return getattr(Config(**{name: value}), name)  # the checks of tz.config.set
    except InvalidArgumentError as err:
        raise type(err)(f"invalid store setting for {masked(url)!r}: {err}") from None


def _batch_size(url: str, value: Any) -> int | None:
    """``batch_size`` as an int >= 1 (None: the default), else a clear error."""
    try:
        return None if value is None else whole_number("setting 'batch_size'", value, 1)
    except InvalidArgumentError as err:
        raise type(err)(f"invalid store setting for {masked(url)!r}: {err}") from None


def store_settings(
    url: Any,
    storage_options: Any,
    retries: Any = None,
    retry_backoff: Any = None,
    timeout: Any = FROM_CONFIG,
    batch_size: Any = None,
) -> StoreSettings:
    """Check an FsspecStore's arguments; ``None`` (``FROM_CONFIG`` for ``timeout``) takes
    the setting of ``tz.config``.

    Example:
        >>> store_settings("AZURE://c/data", None, retries=0).fs_url
        'az://c/data'
        >>> store_settings("s3://b/x", {}, retries=1.5)
        Traceback (most recent call last):
        ...
        torchzarr.errors.ArgumentTypeError: invalid store setting for 's3://b/x': \
setting 'retries' must be a non-negative int, got 1.5
    """
    if isinstance(url, str) and "::" in url.partition("://")[0]:
        raise UnknownStoreError(f"cannot open {masked(url)!r}: {CHAINING}")
    if not isinstance(url, str) or not url or "::" in url:
        shown = masked(url) if isinstance(url, str) else url
        raise UnknownStoreError(f"an fsspec store needs one plain URL, got {shown!r}")
    protocol, sep, rest = url.partition("://")
    protocol, rest = (protocol.lower(), rest) if sep else ("file", url)
    if protocol in BUCKET_PROTOCOLS and not rest.strip("/"):
        raise UnknownStoreError(f"URL {masked(url)!r} names no bucket or container")
    options = dict(options_mapping(f"storage_options of {masked(url)!r}", storage_options))
    if options.get("asynchronous"):  # fsspec's methods then run on no loop: every call fails
        raise InvalidArgumentError(
            f"invalid storage_options for {masked(url)!r}: asynchronous="
            f"{options['asynchronous']!r} is not supported: torchzarr drives the filesystem's "
            "event loop itself (from its own threads, inside asyncio code too); leave "
            "'asynchronous' out"
        )
    fs_protocol = _ALIASES.get(protocol, protocol)
    return StoreSettings(
        protocol=protocol,
        fs_protocol=fs_protocol,
        fs_url=f"{fs_protocol}://{rest}",
        storage_options=options,
        retries=_checked(url, "retries", config.retries if retries is None else retries),
        retry_backoff=_checked(
            url, "retry_backoff", config.retry_backoff if retry_backoff is None else retry_backoff
        ),
        timeout=_checked(url, "timeout", config.timeout if timeout is FROM_CONFIG else timeout),
        batch_size=_batch_size(url, batch_size),
    )


def constructor_settings(
    url: Any,
    storage_options: Any,
    read_only: bool,
    retries: Any = None,
    retry_backoff: Any = None,
    timeout: Any = FROM_CONFIG,
    batch_size: Any = None,
) -> tuple[StoreSettings, bool]:
    """An FsspecStore's checked settings and ``read_only``, from its arguments and from
    ``storage_options``, where ``retries``, ``retry_backoff``, ``timeout``, ``batch_size``
    and ``read_only`` may ride (as ``tz.open_*`` passes them); one given both ways, with two
    values, is refused.

    Example:
        >>> settings, read_only = constructor_settings("s3://b/x", {"retries": 0}, False)
        >>> settings.retries, settings.storage_options, read_only
        (0, {}, False)
    """
    options, riding = split_settings(url, storage_options)
    try:  # "false" is no False: a string is refused
        read_only = flag("read_only", riding.pop("read_only", False)) or flag(
            "read_only", read_only
        )
    except ArgumentTypeError as err:
        raise ArgumentTypeError(f"invalid store setting for {masked(url)!r}: {err}") from None
    given = {
        "retries": retries,
        "retry_backoff": retry_backoff,
        "timeout": timeout,
        "batch_size": batch_size,
    }
    for name, value in riding.items():
        if given[name] not in (None, FROM_CONFIG) and given[name] != value:
            raise InvalidArgumentError(
                f"{name} given twice for {masked(url)!r}: {given[name]!r}, and {value!r} in storage_options"
            )
        given[name] = value
    return store_settings(url, options, **given), read_only


def open_filesystem(cls: Any, fs_url: str, options: Mapping[str, Any]) -> Any:
    """A filesystem of its own (never fsspec's cached instance: forks) of class ``cls`` for
    ``fs_url``, with the options its URL carries (an FTP host) under ``options``.

    Example:
        >>> from fsspec.implementations.memory import MemoryFileSystem
        >>> open_filesystem(MemoryFileSystem, "memory://b/x", {}) is MemoryFileSystem()
        False
    """
    options = {**cls._get_kwargs_from_urls(fs_url), **options}
    return cls(**{**options, "skip_instance_cache": True})
