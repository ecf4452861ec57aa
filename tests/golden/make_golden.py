"""Write the golden stores that tests/golden/test_golden.py reads, with zarr-python and tensorstore.

Usage: python tests/golden/make_golden.py [--only NAME ...] [--force NAME ...]

An existing golden store is never rewritten silently: the script stops with an error unless
the store is named with --force. Commit the stores it writes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"


def expected(case: dict) -> np.ndarray:
    """The values every golden array holds: a deterministic ramp in the case's dtype."""
    n = int(np.prod(case["shape"], dtype=np.int64))
    dtype = np.dtype(case["numpy_dtype"])
    base = np.arange(n, dtype=np.float64) - n // 3
    if dtype.kind == "b":
        values = np.arange(n) % 3 == 0
    elif dtype.kind == "u":
        values = np.arange(n) % 200
    elif dtype.kind == "c":
        values = base + 1j * base[::-1]
    else:
        values = base / 4 if dtype.kind == "f" else base
    return np.asarray(values).astype(dtype).reshape(case["shape"])


CASES = [
    {
        "name": "zarr-v3-zstd-f8",
        "writer": "zarr",
        "zarr_format": 3,
        "numpy_dtype": "<f8",
        "shape": [7, 5],
        "chunks": [3, 2],
        "codecs": "zstd",
    },
    {
        "name": "zarr-v3-blosc-i4-edges",
        "writer": "zarr",
        "zarr_format": 3,
        "numpy_dtype": "<i4",
        "shape": [11],
        "chunks": [4],
        "codecs": "blosc",
    },
    {
        "name": "zarr-v3-sharded-u2",
        "writer": "zarr",
        "zarr_format": 3,
        "numpy_dtype": "<u2",
        "shape": [8, 6],
        "chunks": [2, 3],
        "shards": [4, 6],
        "codecs": "zstd",
    },
    {
        "name": "zarr-v3-gzip-crc32c-c8",
        "writer": "zarr",
        "zarr_format": 3,
        "numpy_dtype": "<c8",
        "shape": [6],
        "chunks": [4],
        "codecs": "gzip-crc32c",
    },
    {
        "name": "zarr-v2-blosc-f4",
        "writer": "zarr",
        "zarr_format": 2,
        "numpy_dtype": "<f4",
        "shape": [9, 4],
        "chunks": [4, 4],
        "codecs": "blosc",
    },
    {
        "name": "zarr-v2-zlib-bigendian-i8-F",
        "writer": "zarr",
        "zarr_format": 2,
        "numpy_dtype": ">i8",
        "shape": [5, 3],
        "chunks": [2, 2],
        "codecs": "zlib",
        "order": "F",
    },
    {
        "name": "zarr-v2-bool",
        "writer": "zarr",
        "zarr_format": 2,
        "numpy_dtype": "|b1",
        "shape": [10],
        "chunks": [3],
        "codecs": "none",
    },
    {
        "name": "ts-zarr3-bf16",
        "writer": "tensorstore",
        "zarr_format": 3,
        "numpy_dtype": "bfloat16",
        "shape": [6],
        "chunks": [4],
        "codecs": "zstd",
    },
    {
        "name": "ts-zarr3-sharded-f2",
        "writer": "tensorstore",
        "zarr_format": 3,
        "numpy_dtype": "<f2",
        "shape": [8, 4],
        "chunks": [2, 2],
        "shards": [4, 4],
        "codecs": "zstd",
    },
    {
        "name": "ts-zarr2-zstd-u4",
        "writer": "tensorstore",
        "zarr_format": 2,
        "numpy_dtype": "<u4",
        "shape": [7, 3],
        "chunks": [3, 3],
        "codecs": "zstd",
    },
]


def _numpy_dtype(case: dict) -> np.dtype:
    if case["numpy_dtype"] == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(case["numpy_dtype"])


def write_zarr(case: dict, path: Path) -> None:
    import numcodecs
    import zarr
    import zarr.codecs

    v3 = {
        "zstd": [zarr.codecs.ZstdCodec(level=1)],
        "blosc": [zarr.codecs.BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")],
        "gzip-crc32c": [zarr.codecs.GzipCodec(level=3), zarr.codecs.Crc32cCodec()],
        "none": None,
    }
    v2 = {
        "blosc": numcodecs.Blosc(cname="lz4", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE),
        "zlib": numcodecs.Zlib(level=2),
        "zstd": numcodecs.Zstd(level=1),
        "none": None,
    }
    kwargs: dict = {
        "shape": case["shape"],
        "chunks": case["chunks"],
        "dtype": case["numpy_dtype"],
        "zarr_format": case["zarr_format"],
    }
    if case["zarr_format"] == 3:
        kwargs["compressors"] = v3[case["codecs"]]
        if "shards" in case:
            kwargs["shards"] = case["shards"]
    else:
        kwargs["compressors"] = v2[case["codecs"]]
        kwargs["order"] = case.get("order", "C")
    z = zarr.create_array(str(path), **kwargs)
    z[...] = expected(case)


def write_tensorstore(case: dict, path: Path) -> None:
    import tensorstore as ts

    spec: dict = {"kvstore": {"driver": "file", "path": str(path)}}
    data = expected({**case, "numpy_dtype": "<f4"}).astype(_numpy_dtype(case))
    if case["zarr_format"] == 3:
        inner = [
            {"name": "bytes", "configuration": {"endian": "little"}},
            {"name": "zstd", "configuration": {"level": 1}},
        ]
        grid = case.get("shards", case["chunks"])
        codecs = (
            inner
            if "shards" not in case
            else [
                {
                    "name": "sharding_indexed",
                    "configuration": {"chunk_shape": case["chunks"], "codecs": inner},
                }
            ]
        )
        spec.update(
            driver="zarr3",
            metadata={
                "shape": case["shape"],
                "data_type": _numpy_dtype(case).name,
                "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": grid}},
                "fill_value": 0,
                "codecs": codecs,
            },
        )
    else:
        spec.update(
            driver="zarr",
            metadata={
                "shape": case["shape"],
                "chunks": case["chunks"],
                "dtype": case["numpy_dtype"],
                "compressor": {"id": "zstd", "level": 1},
                "fill_value": 0,
                "order": "C",
                "filters": None,
            },
        )
    ts.open(spec, create=True).result().write(data).result()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=None)
    parser.add_argument("--force", nargs="*", default=[])
    args = parser.parse_args(argv)
    DATA.mkdir(exist_ok=True)
    for case in CASES:
        if args.only and case["name"] not in args.only:
            continue
        path = DATA / case["name"]
        if path.exists():
            if case["name"] not in args.force:
                print(f"{case['name']}: exists, kept (name it with --force to rewrite)")
                continue
            shutil.rmtree(path)
        (write_zarr if case["writer"] == "zarr" else write_tensorstore)(case, path)
        print(f"{case['name']}: written")
    (HERE / "cases.json").write_text(json.dumps(CASES, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
