"""Test helper: a node created by another thread just after the caller looked for it."""

from __future__ import annotations

from typing import Any

import pytest

from torchzarr.core import nodes


def absent_at_first_look(monkeypatch: pytest.MonkeyPatch) -> None:
    """The next metadata read finds nothing, as if another thread created the node just
    after it: what the caller then does is what a race's loser does."""
    real = nodes.read_node
    calls = []

    def read_node(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return None if len(calls) == 1 else real(*args, **kwargs)

    monkeypatch.setattr(nodes, "read_node", read_node)
