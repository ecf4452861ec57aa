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
}


@pytest.mark.parametrize("name,builtin", sorted(EXPECTED_BUILTINS.items()))
def test_error_bases(name, builtin):
    cls = getattr(errors, name)
    assert issubclass(cls, errors.TorchZarrError)
    assert issubclass(cls, builtin)


def test_every_error_is_drawn_in_the_docstring():
    doc = errors.__doc__ or ""
    for name, obj in vars(errors).items():
        if inspect.isclass(obj) and issubclass(obj, Exception):
            assert name in doc, f"{name} missing from the tree in errors.py"
    assert sorted(errors.__all__) == errors.__all__


def test_key_error_message_is_not_quoted():
    assert str(errors.NodeNotFoundError("no array at 'a'")) == "no array at 'a'"
