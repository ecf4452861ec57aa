"""What a store takes as a value: bytes, or any buffer as its bytes in C order (one check for all).

``bytes(value)`` is no such check: ``bytes(3)`` is three zero bytes, ``bytes([1, 2])`` a
list's numbers and ``bytes(True)`` one zero byte. Every store passes its values through
:func:`as_buffer` (or :func:`as_bytes` where it keeps or sends a copy), so each refuses the
same values with the same :class:`~torchzarr.errors.ArgumentTypeError`.
"""

from __future__ import annotations

from typing import Any

from torchzarr.errors import ArgumentTypeError

__all__ = ["as_buffer", "as_bytes", "flat"]


def _view(store: object, key: str, value: Any) -> memoryview:
    """A view of ``value``'s buffer, or the error that names the store and the key."""
    try:
        return memoryview(value)
    except (TypeError, ValueError) as err:  # ValueError: numpy dtypes with no buffer format
        why = f" ({err})" if isinstance(err, ValueError) else ""
        raise ArgumentTypeError(
            f"{store}: the value of key {key!r} must be bytes or a buffer (bytearray, "
            f"memoryview, numpy array), got {type(value).__name__}{why}"
        ) from None


def as_buffer(store: object, key: str, value: Any) -> bytes | memoryview:
    """``value`` as bytes, or as a flat view of unsigned bytes in C order.

    ``bytes`` come back as they are and a C-contiguous buffer as a view of it (no copy);
    only a buffer that is not C-contiguous (a Fortran-ordered array, a strided view) is
    copied, in C order. A numpy scalar is a buffer of its bytes; ints, bools, strings,
    lists and tensors are refused with an ``ArgumentTypeError`` naming ``store`` and ``key``.

    Example:
        >>> import numpy as np
        >>> as_buffer("MyStore", "k", b"ab")
        b'ab'
        >>> bytes(as_buffer("MyStore", "k", np.arange(2, dtype=np.uint16)))
        b'\\x00\\x00\\x01\\x00'
        >>> as_buffer("MyStore", "k", 3)
        Traceback (most recent call last):
        ...
        torchzarr.errors.ArgumentTypeError: MyStore: the value of key 'k' must be bytes or a buffer (bytearray, memoryview, numpy array), got int
    """
    if isinstance(value, bytes):  # the common case first: chunks and metadata are bytes
        return value
    return flat(_view(store, key, value))


def flat(view: memoryview) -> bytes | memoryview:
    """A buffer's bytes in C order as a flat view of unsigned bytes (copied only when they
    are not C-contiguous).

    Example:
        >>> import numpy as np
        >>> bytes(flat(memoryview(np.asfortranarray(np.arange(4, dtype=np.uint8).reshape(2, 2)))))
        b'\\x00\\x01\\x02\\x03'
    """
    if not view.c_contiguous:
        return view.tobytes()  # C order, as every store stores it
    if view.format == "B" and view.ndim == 1:
        return view
    return view.cast("B") if view.nbytes else b""  # no cast of a shape with a zero in it


def as_bytes(store: object, key: str, value: Any) -> bytes:
    """``value`` as ``bytes`` (a copy unless it is bytes), checked as :func:`as_buffer` does.

    Example:
        >>> as_bytes("MyStore", "k", bytearray(b"ab")), as_bytes("MyStore", "k", memoryview(b"abcd")[::2])
        (b'ab', b'ac')
    """
    if isinstance(value, bytes):
        return value
    return _view(store, key, value).tobytes()
