"""A race of two plugin lookups in two threads, failing the test if they deadlock."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any


def race(first: Callable[[], Any], second: Callable[[], Any]) -> tuple[Any, Any]:
    """Run ``first`` in a thread and, once it is under way (importing a slow plugin),
    ``second`` in another; their results, or an AssertionError saying they deadlocked."""
    found: dict[str, Any] = {}
    threads = [
        threading.Thread(target=lambda: found.update(first=first()), daemon=True),
        threading.Thread(target=lambda: found.update(second=second()), daemon=True),
    ]
    threads[0].start()
    time.sleep(0.1)  # the first is inside the plugin's import
    threads[1].start()
    for thread in threads:
        thread.join(30)
    assert not any(thread.is_alive() for thread in threads), "deadlocked"
    return found["first"], found["second"]
