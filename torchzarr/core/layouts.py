"""How an array's stored chunks decode, as one string: what cached chunks are tagged with."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

__all__ = ["chunk_layout"]


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
