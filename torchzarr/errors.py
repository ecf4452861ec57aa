"""The one exception tree of torchzarr: every error a user can see is raised from here.

Each error subclasses :class:`TorchZarrError` and, where one fits, a built-in exception, so
``except KeyError`` or ``except IndexError`` keep working in user code::

    TorchZarrError (Exception)
    ├── StoreError (OSError)
    │   ├── InvalidKeyError (ValueError)        a key with "..", an absolute path, a backslash
    │   ├── ReadOnlyError (PermissionError, ValueError) writing to a node opened read-only
    │   └── UnknownStoreError (ValueError)      a URL scheme or store spec nobody registered
    ├── MissingDependencyError (ImportError)    an optional package that is not installed
    ├── MetadataError (ValueError)              malformed .zarray / .zgroup / zarr.json
    │   └── UnknownExtensionError               must_understand extension we do not know
    ├── NodeNotFoundError (KeyError)            no array or group at a path
    │   ├── ArrayNotFoundError (FileNotFoundError, ValueError)  as zarr-python's
    │   ├── GroupNotFoundError (FileNotFoundError, ValueError)
    │   └── MissingIdError                      ids a FeatureStore does not hold
    ├── NodeExistsError (FileExistsError, ValueError) an array or group already at a path
    ├── UnsupportedDtypeError (TypeError)       strings, datetimes, structured dtypes, ...
    ├── CodecError (ValueError)
    │   ├── UnknownCodecError                   a codec name or id no registry knows
    │   └── ChunkDecodeError                    a corrupt or truncated chunk
    │       └── ChecksumError                   a crc32c mismatch
    ├── SelectionError (IndexError)             a selection torchzarr cannot interpret
    │   └── BoundsError                         an index past the extent of an axis
    ├── ShapeMismatchError (ValueError)         data whose shape does not fit the selection
    ├── ValueRangeError (OverflowError)         a Python number out of range for the dtype
    ├── InvalidArgumentError (ValueError)       an argument, setting or state outside what it takes
    │   └── ArgumentTypeError (TypeError)       an argument of a type it does not take
    ├── AttributeValueError (TypeError)         an attribute value JSON cannot hold
    │   └── UnrepresentableError                a checkpoint leaf typed JSON cannot hold
    ├── CheckpointConflictError (RuntimeError)  a newer save of a checkpoint committed first
    ├── OutOfMemoryError (MemoryError)          a result this machine cannot allocate
    └── WorkerBatchError (RuntimeError)         a DataLoader worker's batch that cannot be rebuilt

UnsupportedDtypeError also covers complex data written to a real array, as numpy's TypeError.
The extra built-in bases of ArrayNotFoundError, GroupNotFoundError, NodeExistsError and
ReadOnlyError are those zarr-python's errors for the same cases have (it raises
``ValueError`` subclasses, the not-found ones ``FileNotFoundError`` too), so code written
for zarr-python catches them.

Example:
    >>> import torchzarr as tz
    >>> try:
    ...     tz.open_array("memory://", mode="r")
    ... except tz.errors.NodeNotFoundError as err:
    ...     print(isinstance(err, KeyError))
    True
"""

from __future__ import annotations

__all__ = [
    "ArgumentTypeError",
    "ArrayNotFoundError",
    "AttributeValueError",
    "BoundsError",
    "CheckpointConflictError",
    "ChecksumError",
    "ChunkDecodeError",
    "CodecError",
    "GroupNotFoundError",
    "InvalidArgumentError",
    "InvalidKeyError",
    "MetadataError",
    "MissingDependencyError",
    "MissingIdError",
    "NodeExistsError",
    "NodeNotFoundError",
    "OutOfMemoryError",
    "ReadOnlyError",
    "SelectionError",
    "ShapeMismatchError",
    "StoreError",
    "TorchZarrError",
    "UnknownCodecError",
    "UnknownExtensionError",
    "UnknownStoreError",
    "UnrepresentableError",
    "UnsupportedDtypeError",
    "ValueRangeError",
    "WorkerBatchError",
]


class TorchZarrError(Exception):
    """Base class of every error torchzarr raises.

    Example:
        >>> try:
        ...     raise BoundsError("index 10 is out of bounds for axis 0 with extent 4")
        ... except TorchZarrError as err:
        ...     print(type(err).__name__)
        BoundsError
    """

    def __str__(self) -> str:
        # KeyError quotes its message; keep ours readable whatever the built-in base.
        return str(self.args[0]) if len(self.args) == 1 else super().__str__()


class StoreError(TorchZarrError, OSError):
    """A store could not do what was asked (I/O failed, or the request was invalid)."""


class InvalidKeyError(StoreError, ValueError):
    """A key that could escape the store's root or is not a valid Zarr key."""


class ReadOnlyError(StoreError, PermissionError, ValueError):
    """A write to a store, array or group opened read-only."""


class UnknownStoreError(StoreError, ValueError):
    """A URL scheme or store specification that no registered store handles."""


class MissingDependencyError(TorchZarrError, ImportError):
    """An optional dependency is not installed; the message says what to install."""


class MetadataError(TorchZarrError, ValueError):
    """Zarr metadata that is malformed or violates the specification."""


class UnknownExtensionError(MetadataError):
    """An extension marked ``must_understand`` that torchzarr does not implement."""


class NodeNotFoundError(TorchZarrError, KeyError):
    """No array or group exists at the given path."""


class ArrayNotFoundError(NodeNotFoundError, FileNotFoundError, ValueError):
    """No array exists at the given path."""


class GroupNotFoundError(NodeNotFoundError, FileNotFoundError, ValueError):
    """No group exists at the given path."""


class MissingIdError(NodeNotFoundError):
    """Entity ids that a feature store does not hold (the message names the first ones)."""


class NodeExistsError(TorchZarrError, FileExistsError, ValueError):
    """An array or group already exists where a new one was to be created."""


class UnsupportedDtypeError(TorchZarrError, TypeError):
    """A data type torchzarr cannot represent as a tensor (strings, datetimes, records)."""


class CodecError(TorchZarrError, ValueError):
    """A codec is misconfigured or failed."""


class UnknownCodecError(CodecError):
    """A codec name or numcodecs id that no registry knows."""


class ChunkDecodeError(CodecError):
    """A stored chunk could not be decoded: corrupt, truncated or of the wrong size."""


class ChecksumError(ChunkDecodeError):
    """A chunk's checksum does not match its content."""


class SelectionError(TorchZarrError, IndexError):
    """A selection that cannot be applied to the array (wrong type, negative step, ...)."""


class BoundsError(SelectionError):
    """An integer index past the extent of an axis."""


class ShapeMismatchError(TorchZarrError, ValueError):
    """Data whose shape cannot be broadcast to the selection it is written to."""


class ValueRangeError(TorchZarrError, OverflowError):
    """A Python number written to an array whose dtype cannot hold it (300 to uint8)."""


class InvalidArgumentError(TorchZarrError, ValueError):
    """An argument, setting or saved state outside what it takes (``batch_size=0``)."""


class ArgumentTypeError(InvalidArgumentError, TypeError):
    """An argument of a type it does not take (a list where an Array is expected)."""


class AttributeValueError(TorchZarrError, TypeError):
    """An attribute value that cannot be stored as JSON."""


class UnrepresentableError(AttributeValueError):
    """A checkpoint leaf that typed JSON cannot hold and that may not be pickled."""


class CheckpointConflictError(TorchZarrError, RuntimeError):
    """Another save committed a newer version of a checkpoint while this one was writing."""


class OutOfMemoryError(TorchZarrError, MemoryError):
    """A result (a read's tensor) larger than the memory this machine can allocate."""


class WorkerBatchError(TorchZarrError, RuntimeError):
    """A batch from a DataLoader worker's shared ring that cannot be rebuilt intact."""
