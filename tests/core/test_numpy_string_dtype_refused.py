"""numpy's variable-width StringDType (what zarr-python 3 returns for v3 string arrays) is
refused like every other string dtype: ``UnsupportedDtypeError`` naming it, nothing written."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import zarr

import torchzarr as tz
from torchzarr.dtypes import data_type
from torchzarr.errors import UnsupportedDtypeError

pytestmark = pytest.mark.skipif(
    not hasattr(np.dtypes, "StringDType"), reason="numpy < 2 has no StringDType"
)


def _strings() -> np.ndarray:
    return np.array(["a", "bb"], dtype=np.dtypes.StringDType())


def test_data_type_refuses_string_dtype_by_name():
    with pytest.raises(UnsupportedDtypeError, match=r"unsupported dtype StringDType\(\)"):
        data_type(np.dtypes.StringDType())
    with pytest.raises(UnsupportedDtypeError, match="StringDType"):
        data_type(_strings().dtype)


def test_creating_an_array_of_string_dtype_is_refused_and_writes_nothing():
    store = tz.storage.MemoryStore()
    with pytest.raises(UnsupportedDtypeError, match="StringDType"):
        tz.create_array(store, shape=(2,), dtype=np.dtypes.StringDType())
    with pytest.raises(UnsupportedDtypeError, match="StringDType"):
        tz.create_array(store, data=_strings())
    with pytest.raises(UnsupportedDtypeError, match="StringDType"):
        tz.from_array(store, data=_strings())
    assert list(store.list_prefix("")) == []
    group = tz.open_group(store, mode="w")
    with pytest.raises(UnsupportedDtypeError, match="StringDType"):
        group["names"] = _strings()
    assert list(group) == []


def test_copying_a_zarr_python_string_array_is_refused():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        source = zarr.create_array(zarr.storage.MemoryStore(), shape=(2,), dtype=str)
        source[:] = np.array(["a", "bb"])
    with pytest.raises(UnsupportedDtypeError, match="StringDType"):
        tz.from_array("memory://", data=source)
