"""How an array's stored chunks decode, as one string: what cached chunks are tagged with."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

__all__ = ["EdgeChunks", "chunk_layout", "edge_chunks"]

#: per axis whose last chunk the array's end cuts short: (axis, chunks per grid cell along it
#: (inner chunks per shard; 1 unsharded), index of that last (inner) chunk, its extent)
EdgeChunks = tuple[tuple[int, int, int, int], ...]


def chunk_layout(metadata: Any, pipeline: Any = None) -> str:
    """What decides how an array's stored chunks decode, as one string: the dtype held, the
    chunk shape, the fill value's bits, where chunks lie (the key encoding) and the codecs,
    spelled as ``pipeline`` (the metadata's own codec pipeline by default) decodes them.

    A resize or an attribute change keeps it, and so does metadata another tool rewrote
    with the same codecs spelled otherwise (numcodecs defaults filled in); an array
    replaced by one of another dtype, chunk shape, codecs or fill value gets another one.

    Example:
        >>> from torchzarr.dtypes import data_type
        >>> from torchzarr.metadata import build_array_metadata
        >>> meta = build_array_metadata(zarr_format=3, shape=(10,), chunk_shape=(4,),
        ...     data_type=data_type("float32"), fill_value=0)
        >>> chunk_layout(meta) == chunk_layout(meta.evolve(shape=(20,)))
        True
        >>> chunk_layout(meta) == chunk_layout(meta.evolve(chunk_shape=(8,)))
        False
    """
    pipeline = pipeline if pipeline is not None else metadata.codec_pipeline()
    spec = pipeline.spec
    document = {
        "zarr_format": metadata.zarr_format,
        "data_type": spec.data_type.name if spec.data_type is not None else str(spec.dtype),
        "chunks": list(spec.shape),
        "fill": np.asarray(spec.fill_value, dtype=spec.dtype).tobytes().hex(),
        "key": metadata.chunk_key(tuple(range(len(spec.shape)))),
        "codecs": pipeline.decoding(),
    }
    return json.dumps(document, sort_keys=True, default=repr)


def edge_chunks(
    shape: tuple[int, ...], chunk_shape: tuple[int, ...], inner_shape: tuple[int, ...] | None
) -> EdgeChunks:
    """Where the array's end cuts its last chunks short (the inner chunks of a sharded
    array), per axis: what a cached chunk's tag adds for those chunks, so that one cached
    while the array ended elsewhere (another tool appended or shrank it since) is never
    served for the chunk now there.

    Example:
        >>> edge_chunks((10, 8), (4, 4), None)  # axis 0 ends 2 rows into chunk 2
        ((0, 1, 2, 2),)
        >>> edge_chunks((10,), (8,), (4,))  # a shard of two inner chunks
        ((0, 2, 2, 2),)
    """
    unit = inner_shape if inner_shape is not None else chunk_shape
    edges = []
    for axis, (size, step, cell) in enumerate(zip(shape, unit, chunk_shape, strict=True)):
        if size and step and size % step:
            last = (size - 1) // step
            edges.append((axis, cell // step, last, size - last * step))
    return tuple(edges)
