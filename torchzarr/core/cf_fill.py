"""xarray's missing-value marker carried between Zarr v2 and v3 by ``from_array``.

xarray reads a v2 array's marker (CF's ``_FillValue``) from its fill value, and a v3 array's
only from its ``_FillValue`` attribute, encoded as xarray's ``FillValueCoder`` does: a bool
as is, an integer as a JSON integer, a float as the base64 of its little-endian float64
bytes (whatever the float's width), a complex as a list of two such strings.
"""

from __future__ import annotations

import base64
import binascii
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np

from torchzarr.core.attributes import StoredAttributes
from torchzarr.core.create import XARRAY_DIMENSIONS
from torchzarr.dtypes import DataType
from torchzarr.errors import InvalidArgumentError, MetadataError
from torchzarr.metadata.fill import coerce_fill_value, coerce_user_fill_value

__all__ = ["FILL_ATTRIBUTE", "carry_marker", "decode_marker", "encode_marker"]

#: the attribute xarray keeps a v3 variable's missing-value marker in
FILL_ATTRIBUTE = "_FillValue"


def _b64_float(value: Any) -> float:
    """The float64 whose little-endian bytes ``value`` is the base64 of."""
    if not isinstance(value, str | bytes):
        raise TypeError(f"expected base64 text, got {type(value).__name__}")
    raw = base64.b64decode(value, validate=True)
    return float(struct.unpack("<d", raw)[0])  # struct.error where not 8 bytes


def _to_b64(value: float) -> str:
    return base64.standard_b64encode(struct.pack("<d", float(value))).decode()


def decode_marker(value: Any, dt: DataType) -> tuple[bool, Any]:
    """``(True, marker)`` for a v3 ``_FillValue`` attribute that xarray decodes for ``dt``,
    else ``(False, None)`` (not base64, wrong length or type).

    Example:
        >>> from torchzarr.dtypes import data_type
        >>> decode_marker("AAAAAAA4j8A=", data_type("float32")), decode_marker(-1, data_type("int16"))
        ((True, -999.0), (True, -1))
        >>> decode_marker(-999.0, data_type("float32"))  # xarray wants base64 for a float
        (False, None)
    """
    try:
        if dt.name == "bool":
            return True, bool(value)
        if dt.is_complex:
            if not (isinstance(value, list | tuple) and len(value) == 2):
                return False, None
            return True, complex(_b64_float(value[0]), _b64_float(value[1]))
        if dt.is_float:
            return True, _b64_float(value)
        if isinstance(value, int | float | np.integer | np.floating):
            return True, int(value)
    except (TypeError, ValueError, OverflowError, binascii.Error, struct.error):
        pass
    return False, None


def encode_marker(value: Any, dt: DataType) -> Any:
    """A fill value as xarray's ``FillValueCoder.encode`` writes a v3 ``_FillValue``.

    Example:
        >>> from torchzarr.dtypes import data_type
        >>> encode_marker(float("nan"), data_type("float32")), encode_marker(-1, data_type("int16"))
        ('AAAAAAAA+H8=', -1)
    """
    if dt.name == "bool":
        return bool(value)
    if dt.is_complex:
        value = complex(value)
        return [_to_b64(value.real), _to_b64(value.imag)]
    if dt.is_float:
        return _to_b64(float(value))
    return int(value)


def _same_stored(a: np.generic, b: np.generic) -> bool:
    """Whether two storage scalars of one dtype are the same value (NaN equal to NaN)."""
    pair = np.array([a, b])
    equal_nan = pair.dtype.kind in "fc"
    return bool(np.array_equal(pair[:1], pair[1:], equal_nan=equal_nan))


def carry_marker(
    name: str,
    source_attrs: Mapping[str, Any],
    source: tuple[int, DataType, Any],
    dest: tuple[int, DataType],
    fill_value: tuple[bool, Any],
    attributes: StoredAttributes | None,
) -> tuple[Any, StoredAttributes | None]:
    """The copy's fill value and kept attributes with xarray's marker moved to where the
    copy's format holds it: a v3 source's ``_FillValue`` attribute becomes a v2 copy's fill
    value; a v2 xarray variable's fill value is added as a v3 copy's ``_FillValue``.

    Args:
        name: the source, for errors.
        source_attrs: the source's attributes.
        source: its Zarr format, data type and fill value (None: a v2 null).
        dest: the copy's Zarr format and data type.
        fill_value: whether the user gave one, and the fill value chosen so far.
        attributes: the source's attributes as the copy keeps them (None: none kept).

    Raises:
        InvalidArgumentError: a fill value given for a v2 copy that is not the marker.

    Example:
        >>> from torchzarr.dtypes import data_type
        >>> f4 = data_type("float32")
        >>> carry_marker("v", {"_FillValue": "AAAAAAA4j8A="}, (3, f4, float("nan")), (2, f4),
        ...     (False, float("nan")), StoredAttributes({"_FillValue": "AAAAAAA4j8A="}))
        (np.float32(-999.0), {})
    """
    (source_format, source_dt, source_fill), (dest_format, dest_dt) = source, dest
    given, chosen = fill_value
    if source_format == 3 and dest_format == 2 and FILL_ATTRIBUTE in source_attrs:
        ok, marker = decode_marker(source_attrs[FILL_ATTRIBUTE], source_dt)
        try:
            stored = coerce_fill_value(marker, dest_dt) if ok else None
        except MetadataError:
            stored = None
        if stored is None:
            return chosen, attributes  # not a marker xarray reads: copied as stored
        if given:
            _check_given(name, chosen, stored, dest_dt, source_attrs[FILL_ATTRIBUTE])
        if attributes is not None:
            attributes = StoredAttributes(
                {k: v for k, v in attributes.items() if k != FILL_ATTRIBUTE}
            )
        return chosen if given else stored, attributes
    if source_format != 3 and dest_format == 3 and attributes and FILL_ATTRIBUTE in attributes:
        return chosen, _encoded_for_v3(attributes, dest_dt)
    if (
        source_format == 2
        and dest_format == 3
        and source_fill is not None
        and XARRAY_DIMENSIONS in source_attrs
        and FILL_ATTRIBUTE not in source_attrs
        and attributes is not None
    ):
        attributes = StoredAttributes(attributes)
        attributes[FILL_ATTRIBUTE] = encode_marker(source_fill, dest_dt)
    return chosen, attributes


def _encoded_for_v3(attributes: StoredAttributes, dt: DataType) -> StoredAttributes:
    """``attributes`` with a plain number in ``_FillValue`` (as a v2 array or an xarray
    variable in memory holds it) encoded as xarray reads a v3 one: xarray refuses to open a
    v3 group with a raw float there. Markers already in xarray's v3 form stay as they are."""
    raw = attributes[FILL_ATTRIBUTE]
    plain = isinstance(raw, int | float | np.integer | np.floating) and not isinstance(
        raw, bool | np.bool_
    )
    if not plain or decode_marker(raw, dt)[0]:
        return attributes
    try:
        encoded = encode_marker(raw, dt)
    except (TypeError, ValueError, OverflowError):
        return attributes
    return StoredAttributes({**attributes, FILL_ATTRIBUTE: encoded})


def _check_given(name: str, given: Any, marker: np.generic, dt: DataType, raw: Any) -> None:
    """A fill value given for a v2 copy must be the marker xarray reads from it."""
    try:
        same = given is not None and _same_stored(coerce_user_fill_value(given, dt), marker)
    except MetadataError:
        return  # create_array names the fill value that does not fit the dtype
    if not same:
        raise InvalidArgumentError(
            f"from_array of {name}: fill_value {given!r} differs from xarray's missing-value "
            f"marker {marker.item()!r} ({FILL_ATTRIBUTE} attribute {raw!r}); a Zarr v2 array "
            "holds that marker in its fill value: leave fill_value out (or pass the marker)"
        )
