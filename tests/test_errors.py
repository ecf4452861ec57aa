"""The exception tree: every error is a TorchZarrError and the built-in it resembles."""

from __future__ import annotations

import inspect

import pytest

from torchzarr import errors

EXPECTED_BUILTINS = {
    "StoreError": OSError,
    "InvalidKeyError": ValueError,
    "ReadOnlyError": PermissionError,
    "UnknownStoreError": ValueError,
    "MissingDependencyError": ImportError,
    "MetadataError": ValueError,
    "NodeNotFoundError": KeyError,
    "NodeExistsError": FileExistsError,
    "UnsupportedDtypeError": TypeError,
    "CodecError": ValueError,
    "ChecksumError": errors.ChunkDecodeError,
    "SelectionError": IndexError,
    "BoundsError": IndexError,
    "ShapeMismatchError": ValueError,
    "AttributeValueError": TypeError,
    "ValueRangeError": OverflowError,
    "InvalidArgumentError": ValueError,
    "ArgumentTypeError": TypeError,
    "OutOfMemoryError": MemoryError,
}


@pytest.mark.parametrize("name,builtin", sorted(EXPECTED_BUILTINS.items()))
def test_error_bases(name, builtin):
    cls = getattr(errors, name)
    assert issubclass(cls, errors.TorchZarrError)
    assert issubclass(cls, builtin)


def test_errors_zarr_python_raises_for_the_same_cases_are_caught_as_there(tmp_path):
    import zarr

    import torchzarr as tz

    missing = str(tmp_path / "missing")
    for opener in (tz.open_group, tz.open_array):  # zarr-python: FileNotFoundError, ValueError
        with pytest.raises(FileNotFoundError) as info:
            opener(missing, mode="r")
        assert isinstance(info.value, ValueError) and isinstance(info.value, KeyError)
    group = tz.open_group(tmp_path / "g", mode="w")
    group.create_array("a", shape=(2,), dtype="i1")
    with pytest.raises(ValueError):  # zarr-python: ContainsArrayError, a ValueError
        group.create_array("a", shape=(2,), dtype="i1")
    read_only = tz.open_array(tmp_path / "g" / "a", mode="r")
    with pytest.raises(ValueError):  # zarr-python: ValueError
        read_only[0] = 1
    zarr_group = zarr.open_group(str(tmp_path / "z"), mode="w")
    zarr_group.create_array("a", shape=(2,), dtype="i1")
    with pytest.raises(ValueError):
        zarr_group.create_array("a", shape=(2,), dtype="i1")  # the same clause catches both


def test_every_error_is_drawn_in_the_docstring():
    doc = errors.__doc__ or ""
    for name, obj in vars(errors).items():
        if inspect.isclass(obj) and issubclass(obj, Exception):
            assert name in doc, f"{name} missing from the tree in errors.py"
    assert sorted(errors.__all__) == errors.__all__


def test_key_error_message_is_not_quoted():
    assert str(errors.NodeNotFoundError("no array at 'a'")) == "no array at 'a'"
