"""DevicePrefetcher's stream logic on a machine without CUDA: torch.cuda's streams and
events are replaced by recorders, so the order of copies and waits can be checked."""

from __future__ import annotations

import contextlib
from typing import ClassVar

import torch

from torchzarr.data import DevicePrefetcher, pinned


class _Event:
    made: ClassVar[list[_Event]] = []

    def __init__(self) -> None:
        self.recorded = self.synchronized = False
        _Event.made.append(self)

    def record(self, stream) -> None:
        self.recorded = True

    def synchronize(self) -> None:
        assert self.recorded
        self.synchronized = True


class _Stream:
    def __init__(self, device=None) -> None:
        self.waited = 0

    def wait_stream(self, other) -> None:
        self.waited += 1


def _fake_cuda(monkeypatch):
    _Event.made = []
    current = _Stream()
    monkeypatch.setattr(torch.cuda, "Stream", _Stream)
    monkeypatch.setattr(torch.cuda, "Event", _Event)
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: current)
    monkeypatch.setattr(pinned, "cuda_available", lambda: True)
    monkeypatch.setattr(pinned, "to_device", lambda batch, device, non_blocking: batch.clone())
    monkeypatch.setattr(pinned, "_record", lambda batch, stream: None)
    return current


def test_each_copy_is_waited_for_before_the_loader_moves_on(monkeypatch):
    current = _fake_cuda(monkeypatch)
    out = list(DevicePrefetcher([torch.full((2,), float(i)) for i in range(4)], "cuda"))
    assert [float(b[0]) for b in out] == [0.0, 1.0, 2.0, 3.0]
    assert current.waited == 4 and len(_Event.made) == 4
    # each copy was waited for before the next batch was drawn, the last one at the end
    assert [e.synchronized for e in _Event.made] == [True, True, True, True]


def test_two_iterators_wait_for_their_own_copies(monkeypatch):
    _fake_cuda(monkeypatch)
    drawn: list[tuple[int, int]] = []  # (iterator, batch) in the order the loader gave them
    copy_of: dict[tuple[int, int], _Event] = {}
    made = _Event.__init__

    def tagged(event: _Event) -> None:  # an event marks the copy of the batch last drawn
        made(event)
        copy_of[drawn[-1]] = event

    monkeypatch.setattr(_Event, "__init__", tagged)

    class Loader:
        started = 0

        def __iter__(self):
            me, Loader.started = Loader.started, Loader.started + 1
            for i in range(3):
                if i:  # the copy out of this iterator's previous buffer must be done
                    assert copy_of[(me, i - 1)].synchronized, (me, i)
                drawn.append((me, i))
                yield torch.full((2,), float(10 * me + i))

    prefetcher = DevicePrefetcher(Loader(), "cuda")
    first, second = iter(prefetcher), iter(prefetcher)
    got = []
    for _ in range(3):
        got += [float(next(first)[0]), float(next(second)[0])]
    assert got == [0.0, 10.0, 1.0, 11.0, 2.0, 12.0]
    assert len(copy_of) == 6


def test_to_device_keeps_container_types_and_moves_every_tensor():
    from collections import OrderedDict, UserDict, UserList, namedtuple
    from dataclasses import dataclass

    pair = namedtuple("pair", "x y")

    class Batch(dict):
        pass

    @dataclass(frozen=True)
    class Box:
        x: torch.Tensor
        n: int

    batch = Batch(
        named=pair(torch.ones(1), 2),
        user=UserDict(x=torch.ones(1)),
        ordered=OrderedDict(x=torch.ones(1)),
        items=UserList([torch.ones(1)]),
        box=Box(torch.ones(1), 3),
        tags=("a", torch.ones(1)),
    )
    batch.note = "kept"
    moved = pinned.to_device(batch, torch.device("meta"))
    assert type(moved) is Batch and moved.note == "kept"
    assert {k: type(v) for k, v in moved.items()} == {k: type(v) for k, v in batch.items()}
    assert moved["named"].y == 2 and moved["box"].n == 3 and moved["tags"][0] == "a"
    tensors = [
        moved["named"].x,
        moved["user"]["x"],
        moved["ordered"]["x"],
        moved["items"][0],
        moved["box"].x,
        moved["tags"][1],
    ]
    assert all(t.device.type == "meta" for t in tensors)
    assert batch["user"]["x"].device.type == "cpu"  # the input is left as it was
    out = next(iter(DevicePrefetcher([pair(torch.ones(1), torch.zeros(1))], "meta")))
    assert type(out) is pair and out.x.device.type == "meta"
