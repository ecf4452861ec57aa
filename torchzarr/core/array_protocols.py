"""How numpy, torch and DLPack consumers take an Array whole: ``__array__`` and ``__dlpack__``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from torchzarr.errors import InvalidArgumentError

if TYPE_CHECKING:
    from torchzarr.dtypes import DataType

__all__ = ["ArrayProtocols"]


class ArrayProtocols:
    """``np.asarray(arr)``, ``torch.as_tensor(arr)``, ``torch.from_dlpack(arr)``: one read.

    Without ``__dlpack__``, ``torch.as_tensor`` and ``torch.tensor`` would take an
    :class:`~torchzarr.Array` as a sequence of row tensors, one read a row, and turn
    one-element rows into scalars (a ``(3, 1)`` array became a ``(3,)`` tensor).
    """

    if TYPE_CHECKING:  # what the class using this one provides (torchzarr.Array)

        @property
        def name(self) -> str: ...
        @property
        def data_type(self) -> DataType: ...
        def __getitem__(self, selection: Any) -> torch.Tensor: ...

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        """The whole array as numpy (bfloat16 and float8 as float32, which numpy holds).

        Example:
            >>> import numpy as np, torchzarr as tz
            >>> np.asarray(tz.create_array("memory://", data=[[1], [2]])).shape
            (2, 1)
        """
        if copy is False:  # numpy 2's protocol: refuse when a copy cannot be avoided
            raise InvalidArgumentError(
                f"array {self.name}: np.array(..., copy=False) cannot hold stored data "
                "without reading it into new memory; use np.asarray(arr)"
            )
        data = self[...]
        if self.data_type.is_reinterpreted:
            data = data.float()
        return np.asarray(data.numpy(), dtype=dtype)

    def __dlpack__(self, **options: Any) -> Any:
        """The whole array, read once, as a DLPack capsule (every torch dtype, bfloat16 too).

        Example:
            >>> import torch, torchzarr as tz
            >>> torch.as_tensor(tz.create_array("memory://", data=[[1], [2]])).shape
            torch.Size([2, 1])
        """
        return self[...].__dlpack__(**options)

    def __dlpack_device__(self) -> tuple[Any, int]:
        """Where :meth:`__dlpack__`'s tensor lies: host memory (reads land on the CPU)."""
        return torch.empty(0).__dlpack_device__()
