"""Names as printed: the characters that would steer a terminal escaped, as ``repr`` does."""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["printable", "printable_list"]

#: C0 controls and DEL, C1 controls, the line and paragraph separators, and the bidi
#: marks, embeddings, overrides and isolates (text shown in an order other than stored)
_STEERING = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")


def printable(name: object) -> str:
    """``name`` as text that can only print as itself: each control character (C0, DEL,
    C1, line separators, bidi controls) escaped as ``repr`` escapes it, the rest
    unchanged, so a node named ``"x\\n└── y"`` cannot fake a line of a tree, nor one
    holding escape sequences retitle or clear the terminal.

    Example:
        >>> print(printable("a\\nb\\x1b[2J\\u202eé日本"))
        a\\nb\\x1b[2J\\u202eé日本
    """
    return _STEERING.sub(lambda found: repr(found.group())[1:-1], str(name))


def printable_list(names: Iterable[object], shown: int = 50) -> str:
    """The first ``shown`` of ``names``, each :func:`printable`, comma-separated, then how
    many more there are (a group of a million members prints one line, not megabytes).

    Example:
        >>> printable_list(["a", "b\\n", "c"], shown=2)
        'a, b\\\\n, ... and 1 more'
    """
    names = list(names)
    text = ", ".join(printable(name) for name in names[:shown])
    more = len(names) - shown
    return f"{text}, ... and {more} more" if more > 0 else text
