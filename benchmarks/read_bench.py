"""Side-by-side read/write benchmarks: torchzarr against zarr-python, tensorstore, numpy
and a codec-only decode limit, on the same stores, in interleaved rounds.

Usage:
    python benchmarks/read_bench.py --profile smoke            # under a minute, CI runs it
    python benchmarks/read_bench.py --profile full --json benchmarks/results/read.json
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import latency_http
from harness import Scenario, run_scenarios

import torchzarr as tz

PROFILES = {
    # rows x cols of float32; full: 8192 x 8192 = 256 MiB, as in the figures of FACTS.md;
    # remote: a side x side array of 256 KiB chunks behind an HTTP server with this delay
    "smoke": {"side": 1024, "rounds": 3, "remote_side": 512, "remote_delay": 0.005},
    "full": {"side": 8192, "rounds": 5, "remote_side": 4096, "remote_delay": 0.005},
}


def _compressor(name: str) -> Any:
    if name == "zstd":
        return numcodecs.Zstd(level=1)
    if name == "blosc-lz4":
        return numcodecs.Blosc(cname="lz4", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE)
    return None


def _zarr_compressor(name: str) -> Any:
    import zarr.codecs

    if name == "zstd":
        return zarr.codecs.ZstdCodec(level=1)
    if name == "blosc-lz4":
        return zarr.codecs.BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")
    return None


def _make_store(
    root: Path, data: np.ndarray, chunks: tuple[int, ...], codec: str, shards: Any = None
) -> Path:
    import zarr

    tag = f"-shards{'x'.join(map(str, shards))}" if shards else ""
    path = root / f"{codec}-{'x'.join(map(str, chunks))}-{data.shape[0]}{tag}"
    if not path.exists():
        z = zarr.create_array(
            str(path),
            shape=data.shape,
            chunks=chunks,
            dtype=data.dtype,
            compressors=_zarr_compressor(codec),
            zarr_format=3,
            shards=shards,
        )
        z[:] = data
    return path


def _codec_limit(path: Path, codec: str, threads: int) -> Any:
    """Decode every chunk with the bytes already in memory, on ``threads`` threads."""
    files = [p for p in (path / "c").rglob("*") if p.is_file()]
    blobs = [p.read_bytes() for p in files]
    comp = _compressor(codec)
    pool = ThreadPoolExecutor(threads)

    def decode(blob: bytes) -> Any:
        return comp.decode(blob) if comp is not None else np.frombuffer(blob, dtype=np.uint8).copy()

    return lambda: list(pool.map(decode, blobs))


def _contenders(path: Path, selection: Any, with_limit: str | None, threads: int) -> dict[str, Any]:
    import tensorstore as ts
    import zarr

    ours = tz.open_array(path, mode="r")
    theirs = zarr.open_array(str(path), mode="r")
    spec = {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(path)}}
    ctx = ts.Context(
        {"cache_pool": {"total_bytes_limit": 0}, "data_copy_concurrency": {"limit": threads}}
    )
    tstore = ts.open(spec, read=True, context=ctx).result()
    out = {
        "torchzarr": lambda: ours[selection],
        "zarr-python": lambda: theirs[selection],
        "tensorstore": lambda: tstore[selection].read().result(),
    }
    if with_limit is not None:
        out["codec-limit"] = _codec_limit(path, with_limit, threads)
    return out


def build(root: Path, profile: dict[str, Any], servers: contextlib.ExitStack) -> list[Scenario]:
    side = profile["side"]
    threads = len(os.sched_getaffinity(0))
    rng = np.random.default_rng(0)
    # Compressible but not trivial: smooth values with noise, as real features are.
    data = (np.cumsum(rng.standard_normal((side, side)), axis=1) / 8).astype(np.float32)
    nbytes = data.nbytes
    scenarios: list[Scenario] = []
    big = (max(1, (1 << 20) // (4 * side)), side)  # about 1 MiB chunks
    small = (64, 64)  # 16 KiB chunks
    for codec in ("zstd", "blosc-lz4", "none"):
        path = _make_store(root, data, big, codec)
        scenarios.append(
            Scenario(
                f"full read, {codec}, 1 MiB chunks",
                nbytes,
                _contenders(path, slice(None), codec, threads),
                "codec-limit",
            )
        )
    path = _make_store(root, data, small, "zstd")
    scenarios.append(
        Scenario(
            "full read, zstd, 16 KiB chunks",
            nbytes,
            _contenders(path, slice(None), "zstd", threads),
            "codec-limit",
        )
    )
    path = _make_store(root, data, big, "zstd")
    half = side // 2
    aligned = (slice(big[0], min(side, big[0] * 3)), slice(None))
    scenarios.append(
        Scenario(
            "aligned slab, zstd", data[aligned].nbytes, _contenders(path, aligned, None, threads)
        )
    )
    unaligned = (slice(big[0] // 2 + 1, half + 3), slice(5, side - 7))
    scenarios.append(
        Scenario(
            "unaligned slab, zstd",
            data[unaligned].nbytes,
            _contenders(path, unaligned, None, threads),
        )
    )
    rows = np.sort(rng.choice(side, size=min(256, side), replace=False))
    scenarios.append(
        Scenario(
            "random 256-row gather, zstd",
            len(rows) * side * 4,
            _contenders(path, (rows, slice(None)), None, threads),
        )
    )
    singles = [int(r) for r in rng.choice(side, size=32, replace=False)]
    scenarios.append(
        Scenario("32 single-row reads, zstd", 32 * side * 4, _row_contenders(path, singles))
    )
    tiny_side = max(64, side // 4)
    tiny = data[:tiny_side, :tiny_side].copy()
    path = _make_store(root, tiny, (16, 16), "zstd")  # 1 KiB chunks
    scenarios.append(
        Scenario(
            "full read, zstd, 1 KiB chunks",
            tiny.nbytes,
            _contenders(path, slice(None), "zstd", threads),
            "codec-limit",
        )
    )
    path = _make_store(root, data, big, "zstd", shards=(min(side, big[0] * 8), side))
    partial = (slice(big[0] + 3, big[0] * 3 - 5), slice(None))
    scenarios.append(
        Scenario(
            "sharded partial read, zstd",
            data[partial].nbytes,
            _contenders(path, partial, None, threads),
        )
    )
    scenarios.append(
        Scenario("write, zstd, 1 MiB chunks, fsync", nbytes, _write_contenders(root, data, big))
    )
    scenarios.append(_remote_scenario(root, data, profile, servers))
    return scenarios


def _remote_scenario(
    root: Path, data: np.ndarray, profile: dict[str, Any], servers: contextlib.ExitStack
) -> Scenario:
    """A full read over HTTP from a loopback server that delays every request (a stand-in
    for object storage: latency bound, each reader with its own concurrency)."""
    import tensorstore as ts
    import zarr

    side, delay = profile["remote_side"], profile["remote_delay"]
    small = data[:side, :side].copy()
    chunks = (max(1, (256 << 10) // (4 * min(side, 256))), min(side, 256))  # 256 KiB
    path = _make_store(root, small, chunks, "zstd")
    url = f"{servers.enter_context(latency_http.serving(root, delay))}/{path.name}"
    ours = tz.open_array(url, mode="r")
    theirs = zarr.open_array(url, mode="r")
    tstore = ts.open(
        {"driver": "zarr3", "kvstore": {"driver": "http", "base_url": url}}, read=True
    ).result()
    return Scenario(
        f"remote full read, zstd, 256 KiB chunks, {delay * 1e3:g} ms a request",
        small.nbytes,
        {
            "torchzarr": lambda: ours[:],
            "zarr-python": lambda: theirs[:],
            "tensorstore": lambda: tstore.read().result(),
        },
    )


def _row_contenders(path: Path, rows: list[int]) -> dict[str, Any]:
    import tensorstore as ts
    import zarr

    ours = tz.open_array(path, mode="r")
    theirs = zarr.open_array(str(path), mode="r")
    tstore = ts.open(
        {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(path)}}, read=True
    ).result()
    return {
        "torchzarr": lambda: [ours[r] for r in rows],
        "zarr-python": lambda: [theirs[r] for r in rows],
        "tensorstore": lambda: [tstore[r].read().result() for r in rows],
    }


def _write_contenders(root: Path, data: np.ndarray, chunks: tuple[int, ...]) -> dict[str, Any]:
    """Each call writes the whole array to a fresh store and syncs it to disk in the timer."""
    import tensorstore as ts
    import zarr

    counter = iter(range(10**6))

    def fresh(label: str) -> Path:
        path = root / f"write-{label}-{next(counter)}"
        return path

    def ours() -> None:
        path = fresh("tz")
        arr = tz.create_array(
            tz.LocalStore(path, fsync=True), shape=data.shape, chunks=chunks, dtype=data.dtype
        )
        arr[:] = data
        shutil.rmtree(path)

    def theirs() -> None:
        path = fresh("zarr")
        z = zarr.create_array(
            str(path),
            shape=data.shape,
            chunks=chunks,
            dtype=data.dtype,
            compressors=_zarr_compressor("zstd"),
        )
        z[:] = data
        os.sync()
        shutil.rmtree(path)

    def tstore() -> None:
        path = fresh("ts")
        meta = {
            "shape": list(data.shape),
            "data_type": "float32",
            "fill_value": 0,
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(chunks)}},
            "codecs": [
                {"name": "bytes", "configuration": {"endian": "little"}},
                {"name": "zstd", "configuration": {"level": 1}},
            ],
        }
        t = ts.open(
            {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(path)}, "metadata": meta},
            create=True,
        ).result()
        t[...].write(data).result()
        os.sync()
        shutil.rmtree(path)

    return {"torchzarr": ours, "zarr-python": theirs, "tensorstore": tstore}


def main(argv: list[str] | None = None) -> int:
    with contextlib.ExitStack() as servers:  # HTTP servers of the remote scenario
        return run_scenarios(
            argv,
            __doc__,
            PROFILES,
            lambda root, profile: build(root, profile, servers),
            "torchzarr-bench-",
        )


if __name__ == "__main__":
    raise SystemExit(main())
