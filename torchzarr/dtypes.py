"""The one data-type table: Zarr v2 typestr <-> v3 data_type <-> numpy <-> torch.

torchzarr keeps every chunk in a numpy *storage* dtype (native byte order). Types numpy
lacks (bfloat16, float8) are stored as unsigned integers of the same width and reinterpreted
as the matching torch dtype at the tensor boundary (``tensors.py``), so nothing below
``core`` needs torch or ml_dtypes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from torchzarr.errors import UnsupportedDtypeError

__all__ = [
    "RAW_DTYPE_ATTRIBUTE",
    "DataType",
    "all_data_types",
    "has_v2_form",
    "data_type",
    "parse_v2_dtype",
    "parse_v3_dtype",
    "raw_bits_dtype",
]


#: Attribute naming the real dtype of an array stored as raw unsigned bits, for dtypes the
#: format has no name for (float8_e4m3fn in v3, float8 in v2). Peers open such an array as
#: uint8/uint16; torchzarr reads it back as the real dtype.
RAW_DTYPE_ATTRIBUTE = "_torchzarr_dtype"


@dataclass(frozen=True)
class DataType:
    """One row of the table.

    Attributes:
        name: canonical name, the v3 ``data_type`` where the spec has one (``"float32"``).
        storage: numpy dtype chunks are decoded to, native byte order.
        torch_name: attribute of the ``torch`` module holding the matching dtype.
        v2_typestr: little-endian v2 ``dtype`` string (``"<f4"``), or None if v2 has none.
        v3_name: v3 ``data_type`` name, or None where no spec or registry names it.
        is_float: True for floating point kinds (NaN-aware fill comparisons).

    Example:
        >>> data_type("bfloat16").storage
        dtype('uint16')
    """

    name: str
    storage: np.dtype[Any]
    torch_name: str
    v2_typestr: str | None
    v3_name: str | None
    is_float: bool = False
    is_complex: bool = False

    @property
    def itemsize(self) -> int:
        """Bytes per element."""
        return int(self.storage.itemsize)

    @property
    def is_reinterpreted(self) -> bool:
        """True when numpy holds the raw bits of a type it does not know (bfloat16, float8)."""
        return self.storage.kind == "u" and self.is_float

    def __repr__(self) -> str:
        return f"DataType({self.name!r})"


def _row(
    name: str,
    storage: str,
    v2: str | None,
    v3: str | None = "",
    *,
    torch_name: str | None = None,
    is_float: bool = False,
    is_complex: bool = False,
) -> DataType:
    return DataType(
        name=name,
        storage=np.dtype(storage),
        torch_name=torch_name or name,
        v2_typestr=v2,
        v3_name=name if v3 == "" else v3,
        is_float=is_float,
        is_complex=is_complex,
    )


_TABLE: tuple[DataType, ...] = (
    _row("bool", "bool", "|b1"),
    _row("int8", "int8", "|i1"),
    _row("int16", "int16", "<i2"),
    _row("int32", "int32", "<i4"),
    _row("int64", "int64", "<i8"),
    _row("uint8", "uint8", "|u1"),
    _row("uint16", "uint16", "<u2"),
    _row("uint32", "uint32", "<u4"),
    _row("uint64", "uint64", "<u8"),
    _row("float16", "float16", "<f2", is_float=True),
    # tensorstore's v2 driver spells bfloat16 this way; zarr-python has no v2 name for it.
    _row("bfloat16", "uint16", "bfloat16", is_float=True),
    _row("float32", "float32", "<f4", is_float=True),
    _row("float64", "float64", "<f8", is_float=True),
    _row("complex64", "complex64", "<c8", is_complex=True),
    _row("complex128", "complex128", "<c16", is_complex=True),
    _row("float8_e4m3fn", "uint8", None, None, is_float=True),
    _row("float8_e5m2", "uint8", None, is_float=True),
    _row("float8_e4m3fnuz", "uint8", None, is_float=True),
    _row("float8_e5m2fnuz", "uint8", None, is_float=True),
    _row("float8_e8m0fnu", "uint8", None, None, is_float=True),
)

_BY_NAME: dict[str, DataType] = {dt.name: dt for dt in _TABLE}
_BY_V3: dict[str, DataType] = {dt.v3_name: dt for dt in _TABLE if dt.v3_name}
# Read-only names: tensorstore writes these float8 kinds under their own names, which the
# Zarr registry lacks; torchzarr reads them, and writes raw bits plus an attribute instead.
_BY_V3.update({dt.name: dt for dt in _TABLE if dt.v3_name is None and dt.name.startswith("float8")})
# tensorstore's v2 driver spells the float8 kinds by name in .zarray: read them, and write
# the name back when such an array's metadata changes (new arrays take raw bits instead)
_V2_NAMES = frozenset(dt.name for dt in _TABLE if dt.name.startswith("float8"))
_BY_NUMPY: dict[np.dtype[Any], DataType] = {
    dt.storage: dt for dt in _TABLE if not dt.is_reinterpreted
}


def all_data_types() -> tuple[DataType, ...]:
    """Every data type torchzarr supports.

    Example:
        >>> "bfloat16" in [dt.name for dt in all_data_types()]
        True
    """
    return _TABLE


def _holds_data(what: object) -> bool:
    """Whether ``what`` is data given where a dtype was wanted (a tensor, an ndarray)."""
    return not isinstance(what, type | np.dtype) and hasattr(what, "dtype")


def _numpy_dtype(value: object) -> np.dtype[Any]:
    """``np.dtype(value)``; a value that names no dtype (a tensor, ``"a1,,"``, ``","``)
    raises UnsupportedDtypeError naming it, not numpy's TypeError, ValueError or
    SyntaxError."""
    try:
        return np.dtype(value)  # type: ignore[call-overload]
    except (TypeError, ValueError, SyntaxError):
        raise _unsupported(value) from None


def _unsupported(what: object) -> UnsupportedDtypeError:
    hint = " (an array or tensor, not a dtype: pass its .dtype)" if _holds_data(what) else ""
    return UnsupportedDtypeError(
        f"unsupported dtype {what!r}{hint}: torchzarr stores bool, signed and unsigned integers, "
        "floating point (float16, bfloat16, float8, float32, float64) and complex numbers; "
        "strings, datetimes and structured dtypes have no tensor equivalent"
    )


def data_type(value: object) -> DataType:
    """Resolve a dtype given as a DataType, name, numpy dtype or torch dtype.

    Example:
        >>> data_type("float32").name, data_type(np.dtype(">i2")).name
        ('float32', 'int16')
    """
    if isinstance(value, DataType):
        return value
    if isinstance(value, str):
        if value in _BY_NAME:
            return _BY_NAME[value]
        # other names mean what numpy (and so zarr-python) takes them to mean: "float" is
        # float64 and "int" int64, where torch.float is float32 and torch.int int32
        return data_type(_numpy_dtype(value))
    text = str(value)
    if text.startswith("torch."):  # a torch.dtype, without importing torch here
        name = text.removeprefix("torch.")  # torch.float prints as torch.float32
        if name in _BY_NAME:
            return _BY_NAME[name]
        raise _unsupported(value)
    npdt = _numpy_dtype(value)
    if npdt.fields is not None or npdt.subdtype is not None:
        raise _unsupported(npdt)
    try:
        native = npdt.newbyteorder("=")
    except (TypeError, ValueError):  # new-style dtypes (numpy's StringDType) have no byte order
        raise _unsupported(npdt) from None
    found = _BY_NUMPY.get(native)
    if found is None:
        if npdt.name == "bfloat16":  # ml_dtypes
            return _BY_NAME["bfloat16"]
        if npdt.name in _BY_NAME:  # ml_dtypes float8 kinds
            return _BY_NAME[npdt.name]
        raise _unsupported(npdt)
    return found


def parse_v2_dtype(typestr: object) -> tuple[DataType, str]:
    """Parse a v2 ``.zarray`` dtype; return the data type and its byte order (``<``/``>``/``|``).

    Example:
        >>> parse_v2_dtype(">f8")
        (DataType('float64'), '>')
    """
    if not isinstance(typestr, str):
        raise _unsupported(typestr)  # structured dtypes are lists in v2
    if typestr == "bfloat16":
        return _BY_NAME["bfloat16"], "<"
    if typestr in _V2_NAMES:  # tensorstore's name of a float8 kind
        return _BY_NAME[typestr], "|"
    npdt = _numpy_dtype(typestr)  # "," or "i4,(" too: an unsupported member, not a crash
    if npdt.kind not in "biufc" or npdt.fields is not None:
        raise _unsupported(typestr)
    order = typestr[0] if typestr[0] in "<>|" else ("<" if npdt.isnative else ">")
    if npdt.itemsize == 1:
        order = "|"
    return data_type(npdt), order


def parse_v3_dtype(name: object) -> DataType:
    """Parse a v3 ``data_type``.

    Example:
        >>> parse_v3_dtype("bfloat16").torch_name
        'bfloat16'
    """
    if isinstance(name, str) and name in _BY_V3:
        return _BY_V3[name]
    raise _unsupported(name)


def has_v2_form(dt: DataType) -> bool:
    """Whether ``dt`` can stand in a v2 ``.zarray``: a numpy typestr, or tensorstore's name of
    bfloat16 and the float8 kinds (new torchzarr arrays store float8 as raw bits instead).

    Example:
        >>> has_v2_form(data_type("float8_e5m2")), has_v2_form(data_type("float32"))
        (True, True)
    """
    return dt.v2_typestr is not None or dt.name in _V2_NAMES


def v2_typestr(dt: DataType, byteorder: str = "<") -> str:
    """The v2 dtype string for ``dt`` in the given byte order.

    Example:
        >>> v2_typestr(data_type("int32"), ">")
        '>i4'
    """
    if dt.v2_typestr is None:
        if dt.name in _V2_NAMES:
            return dt.name  # as tensorstore writes it
        raise UnsupportedDtypeError(f"dtype {dt.name!r} has no Zarr v2 representation")
    if dt.v2_typestr[0] == "<" and byteorder in "<>":
        return byteorder + dt.v2_typestr[1:]
    return dt.v2_typestr


def raw_bits_dtype(attributes: Mapping[str, Any], stored: DataType) -> DataType | None:
    """The dtype that :data:`RAW_DTYPE_ATTRIBUTE` in ``attributes`` names, when it is valid
    for an array stored as ``stored``: a dtype held as raw unsigned bits (float8, ...) whose
    storage type is the one stored. Else (no such attribute, or a value that cannot be
    meant so: a plain user attribute) None.

    Example:
        >>> raw_bits_dtype({RAW_DTYPE_ATTRIBUTE: "float8_e4m3fn"}, data_type("uint8")).name
        'float8_e4m3fn'
        >>> raw_bits_dtype({RAW_DTYPE_ATTRIBUTE: "float8_e4m3fn"}, data_type("int8")) is None
        True
    """
    name = attributes.get(RAW_DTYPE_ATTRIBUTE)
    if not isinstance(name, str):
        return None
    try:
        logical = data_type(name)
    except UnsupportedDtypeError:
        return None
    ok = logical.is_reinterpreted and stored == data_type(logical.storage)
    return logical if ok else None
