"""JSON for metadata documents: strict by default, clear errors on bad input."""

from __future__ import annotations

import json
from json.encoder import encode_basestring as _quote  # in C: as json.dumps(ensure_ascii=False)
from typing import Any

from torchzarr.errors import MetadataError

__all__ = ["is_utf8", "json_dumps", "json_loads", "lone_surrogate_at", "node_json_dumps"]


#: one encoder per (compact, keep_nonfinite): built once (``json.dumps`` with options makes
#: one per call); a compact one runs in C, an indenting one in Python (3.11)
_ENCODERS = {
    (compact, nonfinite): json.JSONEncoder(
        indent=None if compact else 2,
        separators=(",", ":") if compact else None,
        allow_nan=nonfinite,
        ensure_ascii=False,
    )
    for compact in (False, True)
    for nonfinite in (False, True)
}


def json_dumps(
    doc: Any,
    *,
    key: str | None = None,
    keep_nonfinite: bool = False,
    keep_surrogates: bool = False,
    compact: bool = False,
) -> bytes:
    """Encode a metadata document as strict JSON, UTF-8, indented by 2 like zarr-python
    (``compact``: without whitespace, as tensorstore writes, encoded several times faster).

    Key order is kept as given. NaN and infinities are refused (JSON has no literal for
    them; fill values spell them as strings before they get here), unless
    ``keep_nonfinite``: node documents are rewritten with it, because zarr-python writes
    ``NaN``/``Infinity`` literals in attributes and a resize or an attribute update of such
    a node must carry them over. New attribute values are checked before they get here
    (:func:`torchzarr.core.attributes.json_attributes`), so no new literal is written.

    Text is written as UTF-8 (``ensure_ascii=False``), which has no form for a lone
    surrogate (what ``os.fsdecode`` gives for bytes that are not UTF-8): such a str is
    refused, unless ``keep_surrogates``, which writes each lone surrogate as the JSON
    escape zarr-python writes (``"\\udce9"``), read back as the same str; the rest of the
    document is unchanged. Node documents are rewritten with it, as zarr-python stores
    such values (tensorstore refuses to read them, so new values are refused earlier).

    Args:
        doc: the document (dicts, lists, str, int, float, bool, None).
        key: the store key the document is for, named in the error.
        keep_nonfinite: write NaN and infinities as zarr-python does instead of refusing.
        keep_surrogates: write lone surrogates as JSON escapes instead of refusing.
        compact: no indentation nor spaces (every JSON reader reads either form).

    Raises:
        MetadataError: the document holds a value strict JSON cannot represent, or a
            str UTF-8 cannot encode (a lone surrogate) without ``keep_surrogates``.

    Example:
        >>> json_dumps({"zarr_format": 3})
        b'{\\n  "zarr_format": 3\\n}'
        >>> json_dumps({"scale": float("nan")}, keep_nonfinite=True)
        b'{\\n  "scale": NaN\\n}'
        >>> json_dumps(["caf\\udce9", "é"], keep_surrogates=True)
        b'[\\n  "caf\\\\udce9",\\n  "\\xc3\\xa9"\\n]'
        >>> json_dumps({"a": [1, "b"]}, compact=True)
        b'{"a":[1,"b"]}'
    """
    where = f"{key}: " if key else ""
    try:
        text = _indented(doc, keep_nonfinite) if not compact else None
        if text is None:
            text = _ENCODERS[compact, keep_nonfinite].encode(doc)
    except (TypeError, ValueError) as err:
        raise MetadataError(f"{where}metadata cannot be written as strict JSON: {err}") from None
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate, as os.fsdecode gives for undecodable bytes
        if keep_surrogates:
            # json.dumps puts str characters only inside string literals, and only
            # surrogates fail to encode: "backslashreplace" spells each as "\udce9", the
            # JSON escape zarr-python (ensure_ascii=True) writes for it
            return text.encode("utf-8", "backslashreplace")
        raise MetadataError(
            f"{where}metadata cannot be written as UTF-8: the str {lone_surrogate_at(doc)} holds a "
            "lone surrogate, which UTF-8 cannot encode"
        ) from None


class _Unusual(Exception):
    """A value :func:`_indented` leaves to the ``json`` module (which also words errors)."""


_INFINITY = float("inf")


def _indented(doc: Any, allow_nan: bool) -> str | None:
    """``json.dumps(doc, indent=2, ensure_ascii=False, allow_nan=allow_nan)``, the same text
    twice as fast as the ``json`` module's indenting encoder (pure Python, unlike its
    compact one), for documents of plain dicts with str keys, lists, tuples, str, int,
    float, bool and None; None for anything else (subclasses, other keys, a cycle, a
    non-finite float that is refused), which the ``json`` module then encodes or refuses.

    Example:
        >>> print(_indented({"a": [1, {}]}, False))
        {
          "a": [
            1,
            {}
          ]
        }
    """
    parts: list[str] = []
    append = parts.append

    def encode(value: Any, pad: str) -> None:
        kind = type(value)
        if kind is str:
            append(_quote(value))
        elif kind is dict or kind is list or kind is tuple:
            if not value:
                append("{}" if kind is dict else "[]")
                return
            inner = pad + "  "
            separator = ("{" if kind is dict else "[") + inner
            for item in value.items() if kind is dict else value:
                append(separator)
                if kind is dict:
                    if type(item[0]) is not str:
                        raise _Unusual  # json converts int, float, bool, None keys
                    append(_quote(item[0]))
                    append(": ")
                    item = item[1]
                encode(item, inner)
                separator = "," + inner
            append(pad + ("}" if kind is dict else "]"))
        elif value is None or value is True or value is False:
            append("null" if value is None else "true" if value else "false")
        elif kind is int:
            append(int.__repr__(value))
        elif kind is float and value - value == 0:  # finite
            append(float.__repr__(value))
        elif kind is float and allow_nan:
            append("NaN" if value != value else "Infinity" if value > 0 else "-Infinity")
        else:
            raise _Unusual

    try:
        encode(doc, "\n")
    except (_Unusual, RecursionError):  # RecursionError: a cycle, or nesting past the limit
        return None
    return "".join(parts)


def node_json_dumps(doc: Any, *, key: str | None = None, compact: bool = False) -> bytes:
    """:func:`json_dumps` of a node document (or consolidated metadata), which may carry
    values read from a peer's documents: their NaN literals and lone surrogates are written
    back as zarr-python writes them (new values were checked when they came in).
    ``compact`` for consolidated metadata: one large document, read by programs.

    Example:
        >>> node_json_dumps({"a": float("nan")}).split()
        [b'{', b'"a":', b'NaN', b'}']
    """
    return json_dumps(doc, key=key, keep_nonfinite=True, keep_surrogates=True, compact=compact)


def lone_surrogate_at(doc: Any) -> str:
    r"""Which str in ``doc`` (a key or a value) UTF-8 cannot encode, and where, for messages.

    Example:
        >>> print(lone_surrogate_at({"a": ["x", chr(0xDCE9)]}))
        '\udce9' at ['a'][1]
    """
    pending: list[tuple[Any, str]] = [(doc, "")]
    while pending:
        value, where = pending.pop()
        if isinstance(value, str) and not is_utf8(value):
            return f"{value!r} at {where or 'the top'}"
        if isinstance(value, dict):
            for key in value:
                if isinstance(key, str) and not is_utf8(key):
                    return f"{key!r} (a key) at {where or 'the top'}"
            items = [(item, f"{where}[{key!r}]") for key, item in value.items()]
        elif isinstance(value, (list, tuple)):
            items = [(item, f"{where}[{i}]") for i, item in enumerate(value)]
        else:
            continue
        pending.extend(reversed(items))  # popped in document order
    return "<unknown>"


def is_utf8(text: str) -> bool:
    """Whether ``text`` encodes as UTF-8 (no lone surrogates), as JSON documents must.

    Example:
        >>> is_utf8("a"), is_utf8(chr(0xD800))
        (True, False)
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def json_loads(data: bytes | bytearray | memoryview | str, *, key: str) -> dict[str, Any]:
    """Decode the JSON object stored at ``key``.

    Reading is lenient where peers are sloppy: zarr-python writes ``NaN``/``Infinity``
    literals inside attributes, so they are accepted here (and become floats).

    Raises:
        MetadataError: naming ``key``, when the bytes are not UTF-8 JSON or not an object
            (or hold what Python cannot parse: nesting past the recursion limit, an
            integer of more digits than ``sys.get_int_max_str_digits()``).

    Example:
        >>> json_loads(b'{"a": 1}', key="zarr.json")
        {'a': 1}
    """
    try:
        text = data if isinstance(data, str) else bytes(data).decode("utf-8-sig")
        doc = json.loads(text)
    except (ValueError, RecursionError) as err:  # bad UTF-8 or JSON, an int of > 4300 digits
        raise MetadataError(f"{key}: not valid JSON ({err})") from None
    if not isinstance(doc, dict):
        raise MetadataError(f"{key}: expected a JSON object, got {type(doc).__name__}")
    return doc
