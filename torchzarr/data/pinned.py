"""Pinned batch ring and ``DevicePrefetcher``; both fall back quietly to pageable memory without CUDA."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping, MutableSequence
from typing import Any

import torch

from torchzarr.arguments import flag, whole_number
from torchzarr.errors import ArgumentTypeError, InvalidArgumentError
from torchzarr.tensors import cuda_available

__all__ = ["DevicePrefetcher", "PinnedRing", "to_device"]


class PinnedRing:
    """A ring of reusable batch buffers, page-locked when CUDA is there.

    Batches are gathered straight into the next buffer, so pinning costs no second copy. A
    buffer is reused ``slots`` batches later: keep at most ``slots - 2`` batches alive (the
    DevicePrefetcher keeps one in flight). (DataLoader workers use
    :class:`~torchzarr.data.worker_ring.WorkerRing` instead.)

    Args:
        specs: ``{name: (row_shape, dtype)}`` of one sample.
        batch_size: rows per buffer.
        slots: number of buffers.
        pin_memory: ask for page-locked memory (ignored without CUDA).

    Example:
        >>> ring = PinnedRing({"x": ((3,), torch.float32)}, batch_size=4, slots=3)
        >>> ring.next(2)["x"].shape
        torch.Size([2, 3])
    """

    def __init__(
        self,
        specs: dict[str, tuple[tuple[int, ...], torch.dtype]],
        batch_size: int,
        slots: int = 4,
        pin_memory: bool = True,
    ) -> None:
        specs = _checked_specs(specs)
        batch_size = whole_number("batch_size", batch_size, 1)
        slots = whole_number("slots", slots, 2)  # (a ring needs at least 2)
        self.pinned = flag("pin_memory", pin_memory) and cuda_available()
        self.batch_size = batch_size
        self._buffers = [
            {
                name: torch.empty((batch_size, *shape), dtype=dtype, pin_memory=self.pinned)
                for name, (shape, dtype) in specs.items()
            }
            for _ in range(slots)
        ]
        self._next = 0

    def __len__(self) -> int:
        return len(self._buffers)

    def next(self, rows: int) -> dict[str, torch.Tensor]:
        """The next buffers, cut to ``rows`` rows (at most the ring's batch size)."""
        rows = whole_number("rows", rows, 0, self.batch_size)  # at most the ring's batch size
        buffers = self._buffers[self._next]
        self._next = (self._next + 1) % len(self._buffers)
        return {name: t[:rows] for name, t in buffers.items()}


def _checked_specs(specs: Any) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """``specs`` of a :class:`PinnedRing` checked: ``{name: (row_shape, dtype)}``.

    Example:
        >>> _checked_specs({"x": ([3], torch.float32)})
        {'x': ((3,), torch.float32)}
    """
    if not isinstance(specs, Mapping):
        raise ArgumentTypeError(
            f"specs must be a dict of name to (row_shape, dtype), got {type(specs).__name__}"
        )
    out = {}
    for name, spec in specs.items():
        if not (isinstance(spec, tuple | list) and len(spec) == 2):
            raise ArgumentTypeError(f"specs[{name!r}] must be (row_shape, dtype), got {spec!r}")
        shape, dtype = spec
        if not isinstance(dtype, torch.dtype):
            raise ArgumentTypeError(f"specs[{name!r}]: dtype must be a torch.dtype, got {dtype!r}")
        if not isinstance(shape, tuple | list | torch.Size):
            raise ArgumentTypeError(f"specs[{name!r}]: row_shape must be a tuple, got {shape!r}")
        dims = tuple(
            whole_number(f"specs[{name!r}] row_shape[{i}]", n, 0) for i, n in enumerate(shape)
        )
        out[name] = (dims, dtype)
    return out


def to_device(batch: Any, device: torch.device, non_blocking: bool = False) -> Any:
    """Move the tensors inside a batch to ``device``, keeping its containers' types.

    Tensors are found in mappings, lists, tuples (namedtuples included) and dataclasses,
    as PyTorch's ``pin_memory`` does; other objects pass unchanged.

    Example:
        >>> to_device({"x": torch.ones(1)}, torch.device("cpu"))
        {'x': tensor([1.])}
        >>> from collections import namedtuple
        >>> to_device(namedtuple("Pair", "x y")(torch.ones(1), 2), torch.device("cpu"))
        Pair(x=tensor([1.]), y=2)
    """
    return _map_tensors(batch, lambda t: t.to(device, non_blocking=non_blocking))


def _record(batch: Any, stream: Any) -> None:
    """Tell the caching allocator these tensors are used on ``stream`` too."""

    def record(tensor: torch.Tensor) -> torch.Tensor:
        tensor.record_stream(stream)
        return tensor

    _map_tensors(batch, record)


def _map_tensors(data: Any, fn: Callable[[torch.Tensor], Any]) -> Any:
    """``data`` with ``fn(t)`` for every tensor ``t`` in its containers, their types kept."""
    if isinstance(data, torch.Tensor):
        return fn(data)
    if isinstance(data, str | bytes | bytearray):
        return data
    if isinstance(data, Mapping):
        mapped = {k: _map_tensors(v, fn) for k, v in data.items()}
        try:
            if isinstance(data, MutableMapping):  # a copy keeps the type's own attributes
                clone = copy.copy(data)
                clone.update(mapped)
                return clone
            return type(data)(mapped)  # type: ignore[call-arg]
        except TypeError:  # the type takes no copy, update or dict
            return mapped
    if isinstance(data, tuple):
        items = [_map_tensors(v, fn) for v in data]
        if hasattr(data, "_fields"):  # namedtuple
            return type(data)(*items)
        try:
            return type(data)(items)
        except TypeError:
            return tuple(items)
    if isinstance(data, MutableSequence):
        items = [_map_tensors(v, fn) for v in data]
        try:
            sequence = copy.copy(data)
            for i, item in enumerate(items):
                sequence[i] = item
            return sequence
        except TypeError:
            return items
    if dataclasses.is_dataclass(data) and not isinstance(data, type):
        instance = copy.copy(data)
        for field in dataclasses.fields(data):
            if hasattr(data, field.name):
                value = _map_tensors(getattr(data, field.name), fn)
                object.__setattr__(instance, field.name, value)  # frozen dataclasses too
        return instance
    return data


class DevicePrefetcher:
    """Iterate a loader with the next batch already on its way to ``device``.

    On CUDA the copy of batch ``k + 1`` runs with ``non_blocking=True`` on a side stream
    while batch ``k`` trains; the consumer's stream waits for it before use. Pinned source
    batches (``pin_memory=True`` on the dataset or the DataLoader) make the copy truly
    asynchronous. Without CUDA (even when ``device="cuda"``), or for a CPU device, batches
    pass through unchanged.

    On CUDA the loader is one batch ahead of the consumer, and so is a dataset's
    ``state_dict()``: save resume states with ``state_at(step)``, ``step`` counting the
    batches consumed.

    Args:
        loader: any iterable of batches: tensors, or mappings, lists, tuples (namedtuples)
            and dataclasses of them (see :func:`to_device`).
        device: target device, e.g. ``"cuda"`` or ``torch.device("cuda", 1)``.

    Example:
        >>> batches = [torch.ones(2), torch.zeros(2)]
        >>> [b.sum().item() for b in DevicePrefetcher(batches, "cpu")]
        [2.0, 0.0]
    """

    def __init__(self, loader: Iterable[Any], device: str | torch.device) -> None:
        kind = type(loader)
        # (a sequence without __iter__ iterates by index)
        by_index = hasattr(kind, "__getitem__") and hasattr(kind, "__len__")
        iterable = isinstance(loader, Iterable) or by_index
        if not iterable or (isinstance(loader, torch.Tensor) and loader.dim() == 0):
            raise ArgumentTypeError(
                f"DevicePrefetcher: loader must be an iterable of batches (a DataLoader, a "
                f"list), got {kind.__name__}: {loader!r}"
            )
        self.loader = loader
        try:
            device = torch.device(device)
        except TypeError:  # not a str, torch.device or index
            raise ArgumentTypeError(
                "DevicePrefetcher: device must be a str, torch.device or device index, got "
                f"{type(device).__name__}: {device!r}"
            ) from None
        except (RuntimeError, ValueError) as err:  # an unknown name; an index past int64
            raise InvalidArgumentError(f"DevicePrefetcher: no device {device!r} ({err})") from None
        self.cuda = device.type == "cuda" and cuda_available()
        # Without CUDA a "cuda" target quietly stays on the host, as pinning does.
        self.device = device if self.cuda or device.type != "cuda" else torch.device("cpu")
        if self.device.type not in ("cpu", "cuda"):  # mps, xpu, ...: there, or refused now
            try:
                torch.empty(0, device=self.device)
            except (RuntimeError, AssertionError, ImportError) as err:
                raise InvalidArgumentError(
                    f"DevicePrefetcher: device {str(device)!r} is not available here ({err})"
                ) from None

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[Any]:
        if not self.cuda:
            for batch in self.loader:
                yield to_device(batch, self.device) if self.device.type != "cpu" else batch
            return
        stream = torch.cuda.Stream(device=self.device)
        it = iter(self.loader)
        ahead = _send(it, stream, self.device, None)
        while ahead is not None:
            batch, copied = ahead
            current = torch.cuda.current_stream(self.device)
            current.wait_stream(stream)
            _record(batch, current)
            ahead = _send(it, stream, self.device, copied)
            yield batch


def _send(
    it: Iterator[Any], stream: Any, device: torch.device, copied: Any
) -> tuple[Any, Any] | None:
    """The next batch, its copy to ``device`` started on ``stream``, and the event that
    marks the copy done (each iterator keeps its own)."""
    # The host batch of the previous copy may sit in a reused buffer (a pinned ring): the
    # loader must not refill it while the copy could still be reading it. The copy had a
    # whole step to finish, so this wait is almost always free; it bounds how far the host
    # runs ahead of the copies, not of the compute.
    if copied is not None:
        copied.synchronize()
    try:
        batch = next(it)
    except StopIteration:
        return None
    with torch.cuda.stream(stream):
        moved = to_device(batch, device, non_blocking=True)
        done = torch.cuda.Event()
        done.record(stream)
    return moved, done
