"""Group.require_group / require_array raced by threads that all found the node absent:
one creates it, the others open it (as open_group / open_array with mode "a" do)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
import torch
from node_races import absent_at_first_look

import torchzarr as tz
from torchzarr.core import nodes
from torchzarr.errors import NodeExistsError

THREADS = 8


def _all_look_first(monkeypatch: pytest.MonkeyPatch, threads: int) -> None:
    """Each thread's first metadata read waits until every thread has made its own: all
    find the node absent before any creates it (the widest window of the race)."""
    real = nodes.read_node
    start = threading.Barrier(threads, timeout=30)
    seen = threading.local()

    def read_node(*args: Any, **kwargs: Any) -> Any:
        found = real(*args, **kwargs)
        if not getattr(seen, "done", False):
            seen.done = True
            start.wait()
        return found

    monkeypatch.setattr(nodes, "read_node", read_node)


def _race(calls: list[Callable[[], Any]]) -> tuple[list[Any], list[BaseException]]:
    results: list[Any] = []
    errors: list[BaseException] = []

    def run(call: Callable[[], Any]) -> None:
        try:
            results.append(call())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(call,)) for call in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    return results, errors


@pytest.mark.parametrize("name", ["a", "exp1/run2"])
@pytest.mark.parametrize("zarr_format", [2, 3])
def test_threads_requiring_one_new_group_all_get_it(any_store, monkeypatch, zarr_format, name):
    root = tz.open_group(any_store, mode="w", zarr_format=zarr_format)
    _all_look_first(monkeypatch, THREADS)
    results, errors = _race([lambda: root.require_group(name)] * THREADS)
    monkeypatch.undo()
    assert errors == []
    assert [g.path for g in results] == [name] * THREADS
    assert all(isinstance(g, tz.Group) for g in results)
    assert root.group_keys() == [name.split("/")[0]]


@pytest.mark.parametrize("name", ["x", "sub/y"])
@pytest.mark.parametrize("zarr_format", [2, 3])
def test_threads_requiring_one_new_array_all_get_it(any_store, monkeypatch, zarr_format, name):
    root = tz.open_group(any_store, mode="w", zarr_format=zarr_format)
    _all_look_first(monkeypatch, THREADS)
    call = lambda: root.require_array(name, shape=(4,), dtype=torch.float32)  # noqa: E731
    results, errors = _race([call] * THREADS)
    monkeypatch.undo()
    assert errors == []
    assert [(a.path, a.shape, a.dtype) for a in results] == [(name, (4,), torch.float32)] * THREADS


def test_a_raced_require_array_still_checks_shape_and_dtype(monkeypatch):
    root = tz.open_group("memory://", mode="w")
    _all_look_first(monkeypatch, 2)
    results, errors = _race(
        [
            lambda: root.require_array("x", shape=(4,), dtype="int8"),
            lambda: root.require_array("x", shape=(5,), dtype="int8"),
        ]
    )
    monkeypatch.undo()
    assert len(results) == 1 and len(errors) == 1
    assert isinstance(errors[0], NodeExistsError)
    assert "exists with shape" in str(errors[0])  # the winner's, checked
    assert tz.open_array(root.store, path="x").shape == results[0].shape


def test_the_loser_of_a_require_array_race_checks_the_winners_array(monkeypatch):
    root = tz.open_group("memory://", mode="w")
    root.create_array("x", shape=(4,), dtype="int8", fill_value=3)
    absent_at_first_look(monkeypatch)
    assert root.require_array("x", shape=(4,), dtype="int8")[:].tolist() == [3] * 4
    absent_at_first_look(monkeypatch)
    with pytest.raises(NodeExistsError, match=r"array /x exists with shape \(4,\), not \(5,\)"):
        root.require_array("x", shape=(5,), dtype="int8")
    absent_at_first_look(monkeypatch)
    with pytest.raises(NodeExistsError, match="array /x exists with dtype"):
        root.require_array("x", shape=(4,), dtype="int16")


def test_the_loser_of_a_race_for_a_node_of_another_kind_still_raises(monkeypatch):
    root = tz.open_group("memory://", mode="w")
    root.create_group("g")
    root.create_array("x", shape=(4,), dtype="int8")
    absent_at_first_look(monkeypatch)
    with pytest.raises(NodeExistsError, match="group already exists at 'g'"):
        root.require_array("g", shape=(4,), dtype="int8")
    absent_at_first_look(monkeypatch)
    with pytest.raises(NodeExistsError, match="array already exists at 'x'"):
        root.require_group("x")
